"""Bad input gets a precise status, and the server keeps serving everyone else.

Garbage goes over the wire as raw bytes; each kind ends its session with a precise status and
frees whatever its request held (GetStats shows every block free).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from infercept.channel import MAX_MESSAGE_BYTES
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import MAX_NAME_CHARS, PROMPT_BYTES_PER_TOKEN_BOUND
from tests.e2e.conftest import BLOCK_SIZE, NUM_DEVICE_BLOCKS, launched, stack_args
from tests.e2e.raw_session import RawSession, generate_event
from tests.e2e.test_disconnect import _wait_until_idle
from tooling.launcher import Stack, launch

MAX_MODEL_LEN = NUM_DEVICE_BLOCKS * BLOCK_SIZE  # the device pool caps the default model's 2048
PAUSE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack, with a short pause timeout so that an unanswered interception expires."""
    with launched(tmp_path_factory, "swap", "--pause-timeout-s", str(PAUSE_TIMEOUT_S)) as running:
        yield running


def _refusal(session: RawSession) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        session.until("finished")
    return refused.value


def _sampling(**fields: Any) -> gen.ClientEvent:
    return gen.ClientEvent(
        generate=gen.GenerateRequest(prompt_token_ids=[1, 2, 3], sampling=gen.SamplingParams(**fields))
    )


BAD_REQUESTS = {
    "empty prompt": (grpc.StatusCode.INVALID_ARGUMENT, generate_event([])),
    "prompt over the maximum length": (grpc.StatusCode.OUT_OF_RANGE, generate_event([5] * MAX_MODEL_LEN)),
    "max_tokens zero": (grpc.StatusCode.INVALID_ARGUMENT, _sampling(max_tokens=0)),
    "negative temperature": (grpc.StatusCode.INVALID_ARGUMENT, _sampling(max_tokens=4, temperature=-0.5)),
    "top_p above one": (grpc.StatusCode.INVALID_ARGUMENT, _sampling(max_tokens=4, top_p=1.5)),
    "top_p negative": (grpc.StatusCode.INVALID_ARGUMENT, _sampling(max_tokens=4, top_p=-0.1)),
    "token outside the vocabulary": (grpc.StatusCode.INVALID_ARGUMENT, generate_event([1, 100_000])),
    "tool result first": (
        grpc.StatusCode.FAILED_PRECONDITION,
        gen.ClientEvent(tool_result=gen.ToolResult(token_ids=[1])),
    ),
    "tool name too long": (
        grpc.StatusCode.INVALID_ARGUMENT,
        generate_event([1, 2], tools=[gen.ToolSpec(name="t" * (MAX_NAME_CHARS + 1), stop_token_ids=[5])]),
    ),
}


def _text_prompt(num_bytes: int) -> bytes:
    request = gen.GenerateRequest(prompt="ab" * (num_bytes // 2), sampling=gen.SamplingParams(max_tokens=4))
    return gen.ClientEvent(generate=request).SerializeToString()


# Raw bytes on the wire. ClientEvent.generate is field 1 (tag 0x0a: length-delimited); so is
# GenerateRequest.prompt, a string that must be valid UTF-8.
GARBAGE = {
    "random bytes": (grpc.StatusCode.INVALID_ARGUMENT, bytes(range(256))),
    "an invalid wire type": (grpc.StatusCode.INVALID_ARGUMENT, b"\x0f\xff\xff"),
    "a truncated message": (grpc.StatusCode.INVALID_ARGUMENT, b"\x0a\x10\x0a\x02hi"),
    "invalid UTF-8 in the prompt": (grpc.StatusCode.INVALID_ARGUMENT, b"\x0a\x04\x0a\x02\xff\xfe"),
    # generate sent as a varint: protobuf keeps it as an unknown field, so the event is unset.
    "the event with the wrong wire type": (grpc.StatusCode.INVALID_ARGUMENT, b"\x08\x05"),
    "a message over the size limit": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        _text_prompt(MAX_MESSAGE_BYTES + 1),
    ),
    "a text prompt too long to tokenize": (
        grpc.StatusCode.OUT_OF_RANGE,
        _text_prompt(MAX_MODEL_LEN * PROMPT_BYTES_PER_TOKEN_BOUND + 2),
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_request_is_refused_precisely(stack: Stack, case: str) -> None:
    code, event = BAD_REQUESTS[case]
    session = RawSession(stack.scheduler_address)
    session.send(event)
    error = _refusal(session)
    assert error.code() == code, error.details()
    assert error.details()
    session.close()


@pytest.mark.parametrize("case", GARBAGE, ids=list(GARBAGE))
def test_garbage_is_refused_precisely(stack: Stack, case: str) -> None:
    code, data = GARBAGE[case]
    session = RawSession(stack.scheduler_address)
    session.send(data)
    error = _refusal(session)
    assert error.code() == code, error.details()
    session.close()


def _paused_session(stack: Stack) -> RawSession:
    session = RawSession(stack.scheduler_address)
    session.send(
        generate_event(list(range(40)), max_tokens=50, script=[gen.ScriptedCall(after_tokens=3, tool="t")])
    )
    session.until("intercepted")
    return session


def _assert_all_free(stack: Stack) -> None:
    stats = _wait_until_idle(stack.scheduler_address)
    assert stats.device_blocks_free == stats.device_blocks_total
    assert stats.host_blocks_free == stats.host_blocks_total
    assert stats.requests_by_state["paused"] == stats.requests_by_state["waiting"] == 0


def test_invalid_utf8_while_paused_ends_the_session_and_frees_the_request(stack: Stack) -> None:
    session = _paused_session(stack)
    session.send(b"\x1a\x04\x0a\x02\xff\xfe")  # ToolResult.text (field 3, then 1), not UTF-8
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "decoded" in (error.details() or "")
    session.close()
    _assert_all_free(stack)


def test_an_unanswered_interception_expires_and_frees_the_request(stack: Stack) -> None:
    session = _paused_session(stack)  # and then silence, with the stream open
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no tool result" in (error.details() or "")
    session.close()
    _assert_all_free(stack)


def test_a_refusal_for_load_carries_a_retry_hint_over_the_wire(tmp_path: Path) -> None:
    executor_args, scheduler_args = stack_args("swap")
    with launch(executor_args, [*scheduler_args, "--max-live-requests", "1"], log_dir=tmp_path) as full:
        holder = _paused_session(full)  # the one live slot
        refused = RawSession(full.scheduler_address)
        refused.send(generate_event([1, 2, 3]))
        error = _refusal(refused)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        hint = {datum.key: datum.value for datum in error.trailing_metadata() or ()}
        assert int(hint["retry-after-ms"]) > 0
        holder.close()
        refused.close()


def test_tool_result_with_no_pending_interception(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=400))
    session.until("tokens")
    session.send(gen.ClientEvent(tool_result=gen.ToolResult(token_ids=[7])))
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no interception pending" in (
        error.details() or ""
    )
    session.close()


def test_second_request_on_one_stream(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=400))
    session.until("accepted")
    session.send(generate_event([4, 5, 6]))
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "one request per session" in (
        error.details() or ""
    )
    session.close()


def test_tool_result_past_the_maximum_length(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    script = [gen.ScriptedCall(after_tokens=2, tool="big")]
    session.send(generate_event([1, 2, 3], max_tokens=10, script=script))
    session.until("intercepted")
    session.send(gen.ClientEvent(tool_result=gen.ToolResult(token_ids=[9] * MAX_MODEL_LEN)))
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE and "maximum model length" in (error.details() or "")
    session.close()


def test_abort_of_an_unknown_request(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    for request_id in ("123456", "not-a-number", "٩٥", "1" * 10_000):
        with pytest.raises(grpc.RpcError) as refused:
            session.stub.Abort(gen.AbortRequest(request_id=request_id))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    session.close()


def test_abort_ends_the_session_with_finished_abort(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=1000))
    accepted = session.until("accepted").accepted
    session.stub.Abort(gen.AbortRequest(request_id=accepted.request_id))
    assert session.until("finished").finished.finish_reason == "abort"
    session.close()


def test_the_server_still_serves_after_all_that(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=5))
    finished = session.until("finished").finished
    assert finished.finish_reason == "length" and finished.usage.generated_tokens == 5
    session.close()
    _assert_all_free(stack)
