"""Client (blocking) against the protocol peer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from infercept import (
    Accepted,
    Client,
    Finished,
    InferceptError,
    Intercepted,
    Resumed,
    SamplingParams,
    ScriptedCall,
    TokenDelta,
    Tool,
)
from infercept.v1 import generation_pb2 as pb
from tests.client.protocol_server import ProtocolPeer, SessionRecord

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)


@pytest.fixture
def client(peer: tuple[str, ProtocolPeer]) -> Iterator[Client]:
    with Client(peer[0]) as client:
        yield client


def record_of(peer: ProtocolPeer, request_id: str) -> SessionRecord:
    return peer.sessions[request_id]


def test_script_returns_ids_in_place_after_real_waits(client: Client, peer: tuple[str, ProtocolPeer]) -> None:
    script = [
        ScriptedCall(after_tokens=4, tool="qa", wait_s=0.2, returned_token_ids=[100, 101]),
        ScriptedCall(after_tokens=3, tool="search", wait_s=0.1, returned_token_ids=[200]),
    ]
    result = client.generate(prompt_token_ids=[1, 2, 3], sampling=GREEDY, script=script)

    # Generated tokens are 0, 1, ..., 6, 0, ...; the returned ids sit where the calls were.
    assert result.output_token_ids == [0, 1, 2, 3, 100, 101, 4, 5, 6, 200, 0, 1, 2]
    assert result.finish_reason == "length" and result.prompt_token_ids == [1, 2, 3]
    assert (result.usage.generated_tokens, result.usage.returned_tokens, result.usage.interceptions) == (
        10,
        3,
        2,
    )
    qa, search = result.interceptions
    assert (qa.tool, qa.index, qa.output_offset, qa.context_action) == ("qa", 0, 4, "preserve")
    assert (search.tool, search.index, search.output_offset, search.context_action) == (
        "search",
        1,
        9,
        "swap",
    )
    assert qa.is_scripted and qa.returned_token_ids == (100, 101)
    assert qa.resumed is not None and qa.resumed.num_returned_tokens == 2
    assert qa.wait_s >= 0.2 and search.wait_s >= 0.1 and result.tool_time_s == qa.wait_s + search.wait_s
    assert result.first_token_s is not None and result.arrival_s < result.first_token_s < result.finish_s

    # What the server saw: Intercepted, ToolStarted with the hint, ToolResult no sooner than wait_s.
    log = record_of(peer[1], result.request_id).log
    kinds = [m.WhichOneof("event") if isinstance(m, pb.ClientEvent) else "intercepted" for _, m in log]
    assert kinds == ["intercepted", "tool_started", "tool_result"] * 2
    assert [m.tool_started.expected_duration_s for _, m in log[1::3]] == [0.2, 0.1]  # type: ignore[union-attr]
    assert [list(m.tool_result.token_ids) for _, m in log[2::3]] == [[100, 101], [200]]  # type: ignore[union-attr]
    assert log[2][0] - log[0][0] >= 0.2 and log[5][0] - log[3][0] >= 0.1


def test_stop_string_tool_runs_fn_and_sends_text(client: Client, peer: tuple[str, ProtocolPeer]) -> None:
    calls: list[str] = []

    def calc(expression: str) -> str:
        calls.append(expression)
        return str(eval(expression))  # the peer only ever writes "1+2"

    tool = Tool("calc", "</calc>", calc, opening_marker="<calc>", expected_duration_s=0.5)
    result = client.generate("hello", sampling=SamplingParams(max_tokens=8), tools=[tool])

    assert calls == ["1+2"]
    assert result.text == "abc<calc>1+2</calc>3 a"  # the text result sits where it was returned
    assert result.output_token_ids == [0, 1, 2, 3, 4, 5, 6, 0]  # text results carry no ids
    assert result.num_prompt_tokens == 5 and result.prompt_token_ids is None
    (interception,) = result.interceptions
    assert (interception.call_text, interception.returned_text, interception.is_scripted) == (
        "1+2",
        "3",
        False,
    )
    assert interception.resumed is not None and interception.resumed.num_returned_tokens == 1
    log = record_of(peer[1], result.request_id).log
    assert log[1][1].tool_started.expected_duration_s == 0.5  # type: ignore[union-attr]
    assert log[2][1].tool_result == pb.ToolResult(text="3")  # type: ignore[union-attr]


def test_token_id_trigger_tool_returns_ids(client: Client) -> None:
    tool = Tool("lookup", [4, 5], lambda text: [42, 43])
    result = client.generate(prompt_token_ids=[1], sampling=SamplingParams(max_tokens=7), tools=[tool])
    assert result.output_token_ids == [0, 1, 2, 3, 4, 5, 42, 43, 6]
    # With a token-id trigger the call text is the whole segment, trigger included.
    assert result.interceptions[0].call_text == "abc<calc>1+2</calc>"


def test_a_raising_tool_aborts_the_request(client: Client, peer: tuple[str, ProtocolPeer]) -> None:
    def broken(text: str) -> str:
        raise ValueError("boom")

    stream = client.stream(prompt="p", sampling=GREEDY, tools=[Tool("calc", "</calc>", broken)])
    with pytest.raises(InferceptError) as info:
        for _ in stream:
            pass
    assert (
        info.value.code == "TOOL_FAILED" and "'calc'" in info.value.message and "boom" in info.value.message
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert record_of(peer[1], stream.request_id).cancelled.wait(5), "the server saw the stream cancelled"


def test_stream_yields_events_in_order(client: Client) -> None:
    stream = client.stream(
        prompt_token_ids=[1],
        sampling=SamplingParams(max_tokens=3),
        script=[ScriptedCall(after_tokens=2, tool="qa", returned_token_ids=[9])],
    )
    events = list(stream)
    assert [type(event) for event in events] == [
        Accepted,
        TokenDelta,
        TokenDelta,
        Intercepted,
        Resumed,
        TokenDelta,
        Finished,
    ]
    accepted, finished = events[0], events[-1]
    assert isinstance(accepted, Accepted) and accepted.request_id == stream.request_id
    assert isinstance(finished, Finished) and finished.usage.returned_tokens == 1
    assert stream.result.output_token_ids == [0, 1, 9, 2]
    with pytest.raises(RuntimeError, match="only once"):
        list(stream)


def test_server_errors_become_inferceptErrors(client: Client) -> None:
    with pytest.raises(InferceptError) as info:
        client.generate(prompt="p", sampling=SamplingParams(max_tokens=0))
    assert (info.value.code, info.value.message) == (
        "INVALID_ARGUMENT",
        "sampling.max_tokens must be > 0, got 0",
    )
    assert str(info.value) == "INVALID_ARGUMENT: sampling.max_tokens must be > 0, got 0"
    with pytest.raises(InferceptError, match="INVALID_ARGUMENT: exactly one of prompt"):
        client.generate(prompt="p", prompt_token_ids=[1])
    with pytest.raises(InferceptError, match="NOT_FOUND: no live request 'nope'"):
        client.abort("nope")


def test_deadline_exceeded(client: Client) -> None:
    script = [ScriptedCall(after_tokens=1, tool="qa", wait_s=0.3)]
    with pytest.raises(InferceptError) as info:
        client.generate(prompt="p", sampling=GREEDY, script=script, timeout_s=0.1)
    assert info.value.code == "DEADLINE_EXCEEDED"


def test_async_tools_are_refused(client: Client) -> None:
    async def lookup(text: str) -> str:
        return text

    with pytest.raises(TypeError, match="AsyncClient"):
        client.generate(prompt="p", tools=[Tool("lookup", "x", lookup)])


def test_server_stats_and_info(client: Client) -> None:
    client.generate(prompt="p", sampling=SamplingParams(max_tokens=2))
    stats = client.server_stats()
    assert {"device_blocks_free", "device_blocks_total", "host_blocks_free", "host_blocks_total"} <= set(
        stats
    )
    assert stats["device_blocks_total"] == 64 and stats["decode_tokens"] >= 2
    assert isinstance(stats["requests_by_state"], dict) and stats["requests_by_state"]["finished"] >= 1
    info = client.server_info()
    assert (info.model, info.num_device_blocks, info.block_size_tokens) == ("protocol-peer", 64, 16)


def test_abort_by_id_finishes_with_abort(slow_peer: tuple[str, ProtocolPeer]) -> None:
    with Client(slow_peer[0]) as client:
        stream = client.stream(prompt="p", sampling=SamplingParams(max_tokens=1000))
        for event in stream:
            if isinstance(event, Accepted):
                client.abort(event.request_id)
        assert stream.result.finish_reason == "abort" and stream.result.usage.generated_tokens < 1000


def test_leaving_a_stream_early_cancels_it(slow_peer: tuple[str, ProtocolPeer]) -> None:
    with Client(slow_peer[0]) as client:
        stream = client.stream(prompt="p", sampling=SamplingParams(max_tokens=1000))
        for event in stream:
            if isinstance(event, TokenDelta):
                break
        assert slow_peer[1].sessions[stream.request_id].cancelled.wait(5)


def test_closing_the_client_mid_request_cancels_it(peer: tuple[str, ProtocolPeer]) -> None:
    client = Client(peer[0])
    errors: list[InferceptError] = []
    program_id = "close-mid-request"

    def run() -> None:
        script = [ScriptedCall(after_tokens=1, tool="qa", wait_s=30.0)]
        try:
            client.generate(prompt="p", sampling=GREEDY, script=script, program_id=program_id)
        except InferceptError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    record = peer[1].wait_for_session(program_id)
    assert record.tool_started.wait(5)
    client.close()
    thread.join(5)  # a bounded wait: the 30 s call is still running unless close() cut it short
    assert not thread.is_alive(), "close() cut the 30 s wait short"
    assert [error.code for error in errors] == ["CANCELLED"]
    assert record.cancelled.wait(5), "the server saw the stream cancelled"
    with pytest.raises(InferceptError, match="CANCELLED: the client is closed"):
        client.stream(prompt="p")
