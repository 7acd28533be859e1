"""The Session protocol without I/O: SessionState driven with hand-built server messages."""

from __future__ import annotations

import inspect

import pytest

from infercept import Finished, InferceptError, Intercepted, ScriptedCall, TokenDelta, Tool
from infercept.session import SessionState
from infercept.types import RequestSpec
from infercept.v1 import generation_pb2 as pb


def tokens(*token_ids: int, text: str = "") -> pb.ServerEvent:
    return pb.ServerEvent(tokens=pb.TokenDelta(token_ids=token_ids, text=text))


def intercepted(tool: str, index: int, call_text: str = "") -> pb.ServerEvent:
    return pb.ServerEvent(
        intercepted=pb.Intercepted(tool=tool, call_text=call_text, index=index, context_action="discard")
    )


def finished(reason: str = "length") -> pb.ServerEvent:
    return pb.ServerEvent(finished=pb.Finished(finish_reason=reason, usage=pb.Usage(generated_tokens=3)))


def test_assembles_ids_text_interceptions_and_timings() -> None:
    state = SessionState(
        RequestSpec(
            prompt_token_ids=[7, 8],
            tools=[Tool("calc", "</calc>", str)],
            script=[ScriptedCall(1, "qa", wait_s=0.5, returned_token_ids=[50, 51])],
        )
    )
    assert state.open(now=10.0).generate.prompt_token_ids == [7, 8]
    state.on_message(pb.ServerEvent(accepted=pb.Accepted(request_id="r1", num_prompt_tokens=2)), now=10.1)
    assert isinstance(state.on_message(tokens(1, text="x"), now=10.2), TokenDelta)
    assert isinstance(state.on_message(intercepted("qa", 0), now=10.3), Intercepted)
    assert state.pending_call is not None and state.pending_call.script is not None
    assert state.start_call(now=10.3).tool_started.expected_duration_s == 0.5
    assert list(state.finish_call((50, 51), now=10.8).tool_result.token_ids) == [50, 51]
    state.on_message(pb.ServerEvent(resumed=pb.Resumed(num_returned_tokens=2)), now=10.9)
    state.on_message(tokens(2, 3, text="yz"), now=11.0)
    state.on_message(intercepted("calc", 1, call_text="1+2"), now=11.1)
    assert state.pending_call is not None and state.pending_call.tool is not None
    state.start_call(now=11.1)
    assert state.finish_call("3", now=11.3).tool_result.text == "3"
    assert isinstance(state.on_message(finished(), now=11.5), Finished)

    result = state.result()
    assert result.request_id == "r1" and result.prompt_token_ids == [7, 8]
    assert result.output_token_ids == [1, 50, 51, 2, 3]  # the text result has no ids
    assert result.text == "xyz3"
    first, second = result.interceptions
    assert (first.tool, first.is_scripted, first.output_offset, first.returned_token_ids) == (
        "qa",
        True,
        1,
        (50, 51),
    )
    assert first.resumed is not None and first.resumed.num_returned_tokens == 2
    assert (second.call_text, second.is_scripted, second.returned_text, second.resumed) == (
        "1+2",
        False,
        "3",
        None,
    )
    assert first.wait_s == pytest.approx(0.5) and result.tool_time_s == pytest.approx(0.7)
    assert (result.arrival_s, result.first_token_s, result.finish_s) == (10.0, 10.2, 11.5)
    assert result.normalized_latency_s == pytest.approx((1.5 - 0.7) / 3)


def test_script_answers_first_when_its_name_matches() -> None:
    state = SessionState(
        RequestSpec(
            prompt="p",
            tools=[Tool("calc", "</calc>", str)],
            script=[ScriptedCall(5, "calc", returned_text="s")],
        )
    )
    state.on_message(intercepted("calc", 0), now=0.0)
    assert state.pending_call is not None and state.pending_call.script is not None
    state.start_call(now=0.0)
    state.finish_call("s", now=0.0)
    state.on_message(intercepted("calc", 1), now=0.0)
    assert state.pending_call is not None and state.pending_call.tool is not None


def test_protocol_violations() -> None:
    state = SessionState(RequestSpec(prompt="p", script=[ScriptedCall(1, "qa"), ScriptedCall(1, "qa")]))
    with pytest.raises(RuntimeError, match="not finished"):
        state.result()
    with pytest.raises(InferceptError, match=r"PROTOCOL_ERROR: .*without Finished"):
        state.check_finished()
    state.on_message(intercepted("qa", 0), now=0.0)
    with pytest.raises(InferceptError, match=r"PROTOCOL_ERROR: .*before the previous call"):
        state.on_message(intercepted("qa", 1), now=0.0)
    with pytest.raises(InferceptError, match=r"UNKNOWN_TOOL: .*'search'"):
        SessionState(RequestSpec(prompt="p")).on_message(intercepted("search", 0), now=0.0)


def test_events_after_finished_and_unknown_kinds_are_skipped() -> None:
    state = SessionState(RequestSpec(prompt="p"))
    assert state.on_message(pb.ServerEvent(), now=0.0) is None
    state.on_message(finished("eos"), now=1.0)
    assert state.on_message(tokens(9), now=2.0) is None
    assert state.result().output_token_ids == [] and state.result().finish_reason == "eos"


@pytest.mark.parametrize(
    ("output", "expected_ids"), [([1, 2], (1, 2)), ((3,), (3,)), (range(2), (0, 1)), ([], ())]
)
def test_tool_outputs_as_token_ids(output: object, expected_ids: tuple[int, ...]) -> None:
    state = SessionState(RequestSpec(prompt="p", tools=[Tool("t", "x", str)]))
    state.on_message(intercepted("t", 0), now=0.0)
    state.start_call(now=0.0)
    assert tuple(state.finish_call(output, now=0.0).tool_result.token_ids) == expected_ids


async def _coroutine() -> str:
    return "never awaited"


@pytest.mark.parametrize(
    ("output", "message"),
    [({"a": 1}, "returned dict"), ([1, -1], "cannot be sent"), (["a"], "cannot be sent"), (None, "NoneType")],
)
def test_bad_tool_outputs_fail_the_tool(output: object, message: str) -> None:
    state = SessionState(RequestSpec(prompt="p", tools=[Tool("t", "x", str)]))
    state.on_message(intercepted("t", 0), now=0.0)
    state.start_call(now=0.0)
    with pytest.raises(InferceptError, match=f"TOOL_FAILED: tool 't' .*{message}"):
        state.finish_call(output, now=0.0)


def test_a_coroutine_output_is_closed_and_fails() -> None:
    state = SessionState(RequestSpec(prompt="p", tools=[Tool("t", "x", str)]))
    state.on_message(intercepted("t", 0), now=0.0)
    state.start_call(now=0.0)
    coroutine = _coroutine()
    with pytest.raises(InferceptError, match=r"TOOL_FAILED: .*async tools need AsyncClient"):
        state.finish_call(coroutine, now=0.0)
    assert inspect.getcoroutinestate(coroutine) == "CORO_CLOSED"  # no "never awaited" warning


def test_unencodable_requests_are_invalid_arguments() -> None:
    with pytest.raises(InferceptError, match="INVALID_ARGUMENT: cannot encode the request"):
        SessionState(RequestSpec(prompt_token_ids=[-1]))
