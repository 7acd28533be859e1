"""Resubmitting a broken request: what reopen() sends, when a request may be resumed, backoff."""

from __future__ import annotations

import pytest

from infercept import InferceptError, ResumePolicy, SamplingParams, ScriptedCall, Tool
from infercept.session import SessionState
from infercept.types import RequestSpec
from infercept.v1 import generation_pb2 as pb
from tests.client.test_session import intercepted, tokens


def accepted(request_id: str, seed: int) -> pb.ServerEvent:
    return pb.ServerEvent(accepted=pb.Accepted(request_id=request_id, num_prompt_tokens=2, seed=seed))


def test_reopen_sends_every_segment_with_its_tool_result_and_the_servers_seed() -> None:
    state = SessionState(
        RequestSpec(
            prompt_token_ids=[7, 8],
            sampling=SamplingParams(max_tokens=9),
            tools=[Tool("echo", "</e>", lambda text: "said " + text)],
            script=[ScriptedCall(2, "qa", returned_token_ids=[50, 51])],
        )
    )
    state.open(now=0.0)
    state.on_message(accepted("r1", seed=1234), now=0.0)
    state.on_message(tokens(1, 2), now=0.1)
    state.on_message(intercepted("qa", 0), now=0.2)
    state.start_call(now=0.2)
    state.finish_call((50, 51), now=0.3)
    state.on_message(tokens(3), now=0.4)
    state.on_message(intercepted("echo", 1, call_text="hi"), now=0.5)
    state.start_call(now=0.5)
    state.finish_call("said hi", now=0.6)
    state.on_message(tokens(4, 5), now=0.7)
    assert state.can_resume(InferceptError("UNAVAILABLE", "the scheduler went away"))

    request = state.reopen().generate
    assert list(request.prompt_token_ids) == [7, 8] and request.sampling.seed == 1234
    assert request.resume.previous_request_id == "r1"
    segments = [
        (
            list(s.generated_token_ids),
            s.HasField("tool_result"),
            list(s.tool_result.token_ids),
            s.tool_result.text,
        )
        for s in request.resume.segments
    ]
    assert segments == [([1, 2], True, [50, 51], ""), ([3], True, [], "said hi"), ([4, 5], False, [], "")]
    # The resumed stream's Accepted is taken silently; what follows extends the same result.
    assert state.on_message(accepted("r2", seed=1234), now=1.0) is None
    state.on_message(tokens(6), now=1.1)
    state.on_message(pb.ServerEvent(finished=pb.Finished(finish_reason="length")), now=1.2)
    result = state.result()
    assert result.output_token_ids == [1, 2, 50, 51, 3, 4, 5, 6]
    assert (result.request_id, result.seed, result.num_resumptions) == ("r2", 1234, 1)


def test_only_an_unavailable_unfinished_request_without_a_pending_call_is_resumed() -> None:
    state = SessionState(RequestSpec(prompt_token_ids=[1], script=[ScriptedCall(1, "qa")]))
    state.open(now=0.0)
    assert not state.can_resume(InferceptError("INVALID_ARGUMENT", "bad"))
    state.on_message(intercepted("qa", 0), now=0.1)
    assert not state.can_resume(InferceptError("UNAVAILABLE", "gone"))  # its tool is running
    state.start_call(now=0.1)
    state.finish_call((), now=0.2)
    state.on_message(pb.ServerEvent(finished=pb.Finished(finish_reason="length")), now=0.3)
    assert not state.can_resume(InferceptError("UNAVAILABLE", "gone"))


def test_backoff_doubles_up_to_its_cap_and_bad_policies_are_refused() -> None:
    policy = ResumePolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        ResumePolicy(max_attempts=-1)
