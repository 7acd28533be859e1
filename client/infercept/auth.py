"""Bearer-token authentication for the two services and their clients.

A server started with tokens (a token file, or one token in an environment variable) answers every
RPC except the health service with UNAUTHENTICATED unless the call carries the metadata
``authorization: Bearer <token>`` with one of its tokens. Tokens are compared in constant time.

Token file: one token per line, optionally preceded by a name (``NAME TOKEN``); blank lines and
lines starting with ``#`` are skipped. The name is the caller's identity (the owner of the
requests it creates); a token without a name gets ``token-<line number>``.

Clients attach the header with an interceptor on their channel (`BearerToken`), so no call site
has to remember it.
"""

from __future__ import annotations

import collections
import hmac
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

METADATA_KEY = "authorization"
SCHEME = "Bearer "
# Health must answer without a token: container probes and supervisors have none.
OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/",)
ANONYMOUS = ""  # the identity of every caller of a server without tokens


class TokenFileError(ValueError):
    """The token file is missing, unreadable or holds no token."""


def load_tokens(path: str | Path | None, env_var: str | None = None) -> dict[str, str]:
    """Token -> identity, from the file at `path`, else from the environment variable `env_var`
    (one token, identity "env"); {} (authentication off) when neither is set.
    Raises TokenFileError for an unreadable or empty file."""
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise TokenFileError(f"cannot read the token file {path}: {error}") from error
        tokens = _parse_token_lines(lines)
        if not tokens:
            raise TokenFileError(f"the token file {path} holds no token")
        return tokens
    value = os.environ.get(env_var, "").strip() if env_var else ""
    return {value: "env"} if value else {}


def _parse_token_lines(lines: Sequence[str]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise TokenFileError(f"token file line {number}: expected TOKEN or NAME TOKEN")
        name, token = (fields[0], fields[1]) if len(fields) == 2 else (f"token-{number}", fields[0])
        tokens[token] = name
    return tokens


def read_token(path: str | Path | None, env_var: str | None = None) -> str | None:
    """The one token a client presents: the first token of the file at `path`, else the value of
    `env_var`; None when neither is set."""
    tokens = load_tokens(path, env_var)
    return next(iter(tokens), None)


class Authenticator:
    """Who a call's metadata says the caller is, given the server's tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        """tokens: token -> identity; empty means authentication is off (everyone is ANONYMOUS)."""
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]

    @property
    def is_enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """The caller's identity, or None if authentication is on and no valid token was sent."""
        if not self._tokens:
            return ANONYMOUS
        presented = _bearer(metadata)
        if presented is None:
            return None
        found = None
        for token, identity in self._tokens:
            # Every token is compared (in constant time), so the answer's timing says nothing
            # about which token, or how much of one, matched.
            if hmac.compare_digest(token, presented):
                found = identity
        return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if text.startswith(SCHEME):
                return text[len(SCHEME) :].strip().encode()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every RPC but health with UNAUTHENTICATED unless it carries a valid bearer token."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        if self._authenticator.identify(handler_call_details.invocation_metadata) is not None:
            return handler
        return _refusing_handler(handler)


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""
    message = "a valid token is required: send metadata 'authorization: Bearer <token>'"

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    serializer = handler.response_serializer
    deserializer = handler.request_deserializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)


def caller_identity(authenticator: Authenticator, context: grpc.aio.ServicerContext) -> str:
    """The identity of an RPC's caller (the interceptor has already refused invalid tokens)."""
    identity = authenticator.identify(context.invocation_metadata())
    return ANONYMOUS if identity is None else identity


# ----- the client side -----

_CallDetails = collections.namedtuple(
    "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _SyncCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


def _with_token(metadata: Any, header: tuple[str, str]) -> list[tuple[str, Any]]:
    return [*(metadata or ()), header]


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A blocking channel's interceptor adding ``authorization: Bearer <token>`` to every call:
    ``grpc.intercept_channel(channel, BearerToken(token))``."""

    def __init__(self, token: str) -> None:
        self.header = (METADATA_KEY, SCHEME + token)

    def _details(self, details: Any) -> _SyncCallDetails:
        return _SyncCallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self.header),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def aio_token_interceptors(token: str | None) -> list[Any]:  # grpc-stubs lack the aio interceptors
    """Interceptors for a grpc.aio channel that add the bearer token to every call ([] if None)."""
    if token is None:
        return []
    header = (METADATA_KEY, SCHEME + token)
    return [
        _AioUnaryUnary(header),
        _AioUnaryStream(header),
        _AioStreamUnary(header),
        _AioStreamStream(header),
    ]


class _AioTokenBase:
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, self.header)),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnary(_AioTokenBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStream(_AioTokenBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnary(_AioTokenBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStream(_AioTokenBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)
