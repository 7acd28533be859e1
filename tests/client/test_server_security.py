"""The servers' shared security (svc_common.serving, auth, tls) on an in-process server: bearer
tokens, TLS and mutual TLS, exclusive ports, and the clients' token interceptors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infercept.auth import TokenFileError, load_tokens
from infercept.channel import open_aio_channel, open_channel
from infercept.tls import ClientTls, TlsConfigError, channel_credentials
from svc_common import serving
from svc_common.auth import Authenticator
from svc_common.healthcheck import check
from svc_common.tls import ServerTls
from tests.certs import Pki, make_pki

ECHO = "/test.Echo/Echo"
TOKENS = {"alice-secret": "alice", "bob-secret": "bob"}


def _echo_handler() -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    return grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )


async def _serve(security: serving.ServerSecurity) -> tuple[grpc.aio.Server, int]:
    server, health = serving.new_server("test.Echo", security.interceptors())
    server.add_generic_rpc_handlers((_echo_handler(),))
    port = serving.bind(server, "127.0.0.1:0", security.credentials())
    await server.start()
    await serving.set_serving(health, "test.Echo")
    return server, port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def token_server() -> AsyncIterator[int]:
    server, port = await _serve(serving.ServerSecurity(tokens=TOKENS))
    yield port
    await server.stop(None)


async def _echo(
    port: int, token: str | None = None, credentials: grpc.ChannelCredentials | None = None
) -> bytes:
    async with open_aio_channel(f"127.0.0.1:{port}", (), credentials, token) as channel:
        response: bytes = await channel.unary_unary(ECHO, None, None)(b"ping", timeout=5)
        return response


@pytest.mark.parametrize(
    "token", [None, "wrong-secret", "alice-secre", ""], ids=["none", "wrong", "prefix", "empty"]
)
async def test_a_call_without_a_valid_token_is_unauthenticated(token_server: int, token: str | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _echo(token_server, token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in (refused.value.details() or "")


async def test_a_call_with_a_valid_token_is_served(token_server: int) -> None:
    assert await _echo(token_server, "alice-secret") == b"ping"
    assert await _echo(token_server, "bob-secret") == b"ping"


async def test_the_blocking_channel_sends_the_token_too(token_server: int) -> None:
    def call() -> bytes:
        with open_channel(f"127.0.0.1:{token_server}", (), token="bob-secret") as channel:
            response: bytes = channel.unary_unary(ECHO, None, None)(b"sync", timeout=5)
            return response

    assert await asyncio.to_thread(call) == b"sync"


async def test_health_answers_without_a_token(token_server: int) -> None:
    async with open_aio_channel(f"127.0.0.1:{token_server}", ()) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_the_authenticator_names_the_caller_by_its_token() -> None:
    auth = Authenticator(TOKENS)
    assert auth.identify([("authorization", "Bearer bob-secret")]) == "bob"
    assert auth.identify([("authorization", "bob-secret")]) is None  # no scheme
    assert auth.identify([]) is None
    assert Authenticator({}).identify([]) == ""  # authentication off: everyone is anonymous


def test_the_token_file_gives_names_and_the_environment_one_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# clients\nalice a-secret\n\nb-secret\n")
    assert load_tokens(path) == {"a-secret": "alice", "b-secret": "token-4"}
    monkeypatch.setenv("SOME_TOKEN", "env-secret")
    assert load_tokens(None, "SOME_TOKEN") == {"env-secret": "env"}
    assert load_tokens(None, "UNSET_TOKEN_VARIABLE") == {}
    path.write_text("# nothing\n")
    with pytest.raises(TokenFileError):
        load_tokens(path)


async def test_tls_serves_a_client_that_trusts_the_ca_and_refuses_plaintext(pki: Pki) -> None:
    server, port = await _serve(serving.ServerSecurity(tls=ServerTls(pki.server_cert, pki.server_key)))
    try:
        assert await _echo(port, credentials=channel_credentials(pki.ca_pem)) == b"ping"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _echo(port)  # plaintext
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        serving_, _ = await asyncio.to_thread(check, f"127.0.0.1:{port}", "", 5.0, pki.ca_pem)
        assert serving_
    finally:
        await server.stop(None)


async def test_tls_refuses_a_client_that_does_not_trust_the_servers_ca(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    server, port = await _serve(serving.ServerSecurity(tls=ServerTls(pki.server_cert, pki.server_key)))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _echo(port, credentials=channel_credentials(other.ca_pem))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_mutual_tls_requires_a_client_certificate_signed_by_the_client_ca(pki: Pki) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, client_ca_path=pki.ca)
    server, port = await _serve(serving.ServerSecurity(tls=tls))
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await _echo(port, credentials=channel_credentials(pki.ca_pem))  # no client certificate
        client = ClientTls(pki.ca, pki.client_cert, pki.client_key)
        assert await _echo(port, credentials=client.credentials()) == b"ping"
    finally:
        await server.stop(None)


def test_incomplete_tls_flags_are_refused() -> None:
    with pytest.raises(TlsConfigError):
        ServerTls.from_flags("cert.pem", None)
    with pytest.raises(TlsConfigError):
        ServerTls.from_flags(None, None, "ca.pem")
    with pytest.raises(TlsConfigError):
        ClientTls.from_flags(None, "client.pem", "client.key")
    assert ServerTls.from_flags(None, None) is None and ClientTls.from_flags(None) is None


async def test_a_second_server_cannot_bind_a_port_already_served() -> None:
    first, port = await _serve(serving.ServerSecurity())
    second, _ = serving.new_server("test.Echo")
    try:
        with pytest.raises(OSError, match="another server"):
            serving.bind(second, f"127.0.0.1:{port}")
        assert await _echo(port) == b"ping"  # the first one still has it
    finally:
        await first.stop(None)
        await second.stop(None)
