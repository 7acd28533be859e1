"""Bad input gets a precise status, and the server keeps serving everyone else."""

from __future__ import annotations

import grpc
import pytest

from infercept.launcher import Stack
from infercept.v1 import generation_pb2 as gen
from tests.e2e.conftest import BLOCK_SIZE, NUM_DEVICE_BLOCKS
from tests.e2e.raw_session import RawSession, generate_event

MAX_MODEL_LEN = NUM_DEVICE_BLOCKS * BLOCK_SIZE  # the device pool caps the default model's 2048


def _refusal(session: RawSession) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        session.until("finished")
    return refused.value


def _sampling(**fields: object) -> gen.ClientEvent:
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


def test_tool_result_with_no_pending_interception(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=400))
    session.until("tokens")
    session.send(gen.ClientEvent(tool_result=gen.ToolResult(token_ids=[7])))
    error = _refusal(session)
    assert (
        error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no interception pending" in error.details()
    )
    session.close()


def test_second_request_on_one_stream(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    session.send(generate_event([1, 2, 3], max_tokens=400))
    session.until("accepted")
    session.send(generate_event([4, 5, 6]))
    error = _refusal(session)
    assert (
        error.code() == grpc.StatusCode.FAILED_PRECONDITION and "one request per session" in error.details()
    )
    session.close()


def test_tool_result_past_the_maximum_length(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    script = [gen.ScriptedCall(after_tokens=2, tool="big")]
    session.send(generate_event([1, 2, 3], max_tokens=10, script=script))
    session.until("intercepted")
    session.send(gen.ClientEvent(tool_result=gen.ToolResult(token_ids=[9] * MAX_MODEL_LEN)))
    error = _refusal(session)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE and "maximum model length" in error.details()
    session.close()


def test_abort_of_an_unknown_request(stack: Stack) -> None:
    session = RawSession(stack.scheduler_address)
    for request_id in ("123456", "not-a-number"):
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
