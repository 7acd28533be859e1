"""RequestSpec and ClientConfig: the one definition of what both clients take."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from infercept import AsyncClient, Client, InferceptError, SamplingParams, ScriptedCall, Tool
from infercept.resume import NO_RESUME
from infercept.types import ClientConfig, RequestSpec, as_keywords
from tests.client.protocol_server import ProtocolPeer

REQUEST_METHODS = [Client.generate, Client.stream, AsyncClient.generate, AsyncClient.stream]


def _fields(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of every parameter but `self`."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values() if p.name != "self"]


@pytest.mark.parametrize("method", REQUEST_METHODS, ids=lambda m: m.__qualname__)
def test_every_request_method_takes_the_fields_of_request_spec(method: Callable[..., Any]) -> None:
    assert _fields(inspect.signature(method)) == _fields(inspect.signature(RequestSpec))
    assert inspect.signature(method).parameters["prompt"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


@pytest.mark.parametrize("client_type", [Client, AsyncClient])
def test_both_clients_take_the_fields_of_client_config(client_type: type[Any]) -> None:
    assert _fields(inspect.signature(client_type)) == _fields(inspect.signature(ClientConfig))


def test_the_spec_is_the_request_message() -> None:
    spec = RequestSpec(
        "2+2=",
        sampling=SamplingParams(max_tokens=4, seed=7),
        tools=[Tool("calc", "</calc>", str, opening_marker="<calc>"), Tool.function("now", str)],
        script=[ScriptedCall(3, "qa", wait_s=0.5)],
        program_id="p1",
    )
    request = spec.to_proto()
    assert (request.prompt, request.program_id, request.sampling.seed) == ("2+2=", "p1", 7)
    assert [t.name for t in request.tools] == ["calc"] and len(request.tool_schemas_json) == 1
    assert [(c.after_tokens, c.tool, c.expected_duration_s) for c in request.script] == [(3, "qa", 0.5)]
    assert RequestSpec().to_proto().sampling == SamplingParams().to_proto()  # None: the defaults


def test_both_clients_send_the_spec_of_their_keyword_arguments(peer: tuple[str, ProtocolPeer]) -> None:
    address, servicer = peer
    arguments: dict[str, Any] = {
        "prompt_token_ids": [1, 2, 3],
        "sampling": SamplingParams(max_tokens=5, temperature=0.0, seed=3),
        "script": [ScriptedCall(2, "qa", returned_token_ids=[9])],
        "program_id": "prog",
        "timeout_s": 30.0,
    }
    expected = RequestSpec(**arguments).to_proto()
    with Client(address, resume=NO_RESUME) as client:
        sync_result = client.generate(**arguments)

    async def generate() -> str:
        async with AsyncClient(address, resume=NO_RESUME) as client:
            return (await client.generate(**arguments)).request_id

    async_request_id = asyncio.run(generate())
    assert servicer.sessions[sync_result.request_id].request == expected
    assert servicer.sessions[async_request_id].request == expected
    assert [i.returned_token_ids for i in sync_result.interceptions] == [(9,)]


def _refusal(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, InferceptError)) as raised:
        call()
    return type(raised.value), str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"prompt_token_ids": [-1]}, (InferceptError, "INVALID_ARGUMENT: cannot encode the request")),
        (
            {"messages": [{"content": "no role"}]},
            (InferceptError, "INVALID_ARGUMENT: cannot encode the request"),
        ),
        ({"max_tokens": 4}, (TypeError, "unexpected keyword argument 'max_tokens'")),
    ],
)
def test_both_clients_refuse_bad_arguments_alike(
    arguments: dict[str, Any], expected: tuple[type, str]
) -> None:
    with Client("127.0.0.1:1") as client:
        sync_refusals = [_refusal(lambda: client.stream(**arguments))]

    async def refusals() -> list[tuple[type[BaseException], str]]:
        async with AsyncClient("127.0.0.1:1") as client:
            stream_refusal = _refusal(lambda: client.stream(**arguments))
            with pytest.raises((TypeError, InferceptError)) as raised:
                await client.generate(**arguments)
            return [stream_refusal, (type(raised.value), str(raised.value))]

    found = sync_refusals + asyncio.run(refusals())
    assert len(set(found)) == 1, found  # the same type and message from every entry point
    (error_type, message), *_ = found
    assert error_type is expected[0] and expected[1] in message


def test_a_client_keeps_its_config() -> None:
    with Client("127.0.0.1:1", token="t", resume=NO_RESUME) as client:
        assert client.config == ClientConfig("127.0.0.1:1", token="t", resume=NO_RESUME)
        assert (client.address, client.resume) == ("127.0.0.1:1", NO_RESUME)
    with pytest.raises(TypeError, match="tls"):
        Client("127.0.0.1:1", tls=True)  # type: ignore[call-arg]


def test_a_held_spec_passes_as_keywords_unchanged(peer: tuple[str, ProtocolPeer]) -> None:
    address, servicer = peer
    config = ClientConfig(address, resume=NO_RESUME)
    spec = RequestSpec(prompt_token_ids=[4, 5], sampling=SamplingParams(max_tokens=3), program_id="held")
    assert as_keywords(spec)["sampling"] is spec.sampling  # the values themselves, not copies
    with Client(**as_keywords(config)) as client:
        assert client.config == config
        result = client.generate(**as_keywords(spec))
    assert servicer.sessions[result.request_id].request == spec.to_proto()
