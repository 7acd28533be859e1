"""A request resumed with what its client already received continues exactly where it was."""

from __future__ import annotations

import pytest

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError
from scheduler_svc.resume import effective_seed
from tests.scheduler.harness import Harness, generate_request


def by_position(request_id: int, position: int) -> int:
    """Tokens that depend on the position only, so two schedulers can be compared."""
    return 1 + (position * 7) % 200


def segment(generated: list[int], returned: list[int] | None = None) -> gen.ResumeSegment:
    message = gen.ResumeSegment(generated_token_ids=generated)
    if returned is not None:
        message.tool_result.token_ids.extend(returned)
    return message


def first_run() -> tuple[list[int], gen.Finished]:
    """A request with one scripted pause after 3 tokens, answered with [9, 9], to its end."""
    h = Harness(rule=by_position)
    rid = h.add(generate_request(max_tokens=8, script=[(3, "t")]))
    h.run_until_paused(rid)
    h.resume(rid, [9, 9])
    h.run()
    return h.tokens(rid), h.finished(rid)


def test_a_resumed_request_streams_only_what_follows_and_skips_the_calls_already_made() -> None:
    tokens, finished = first_run()
    h = Harness(rule=by_position)
    request = generate_request(max_tokens=8, script=[(3, "t")])
    request.resume.segments.extend([segment(tokens[:3], [9, 9]), segment(tokens[3:5])])
    rid = h.add(request)
    h.run()
    assert h.tokens(rid) == tokens[5:]  # the same tokens at the same positions
    assert h.interceptions(rid) == []  # the scripted call was made before the break
    usage = h.finished(rid).usage
    assert (usage.generated_tokens, usage.returned_tokens, usage.interceptions) == (8, 2, 1)
    assert finished.usage.generated_tokens == 8


def test_a_request_resumed_right_at_its_pause_is_intercepted_at_once() -> None:
    tokens, _ = first_run()
    h = Harness(rule=by_position)
    request = generate_request(max_tokens=8, script=[(3, "t")])
    request.resume.segments.append(segment(tokens[:3]))
    rid = h.add(request)
    (intercepted,) = h.interceptions(rid)
    assert intercepted.tool == "t" and intercepted.num_context_tokens == 5 + 3
    h.resume(rid, [9, 9])
    h.run()
    assert h.tokens(rid) == tokens[3:]


def test_a_request_resumed_with_all_its_tokens_finishes_at_once() -> None:
    h = Harness(rule=by_position)
    request = generate_request(max_tokens=4)
    request.resume.segments.append(segment([7, 7, 7, 7]))
    rid = h.add(request)
    assert h.finished(rid).finish_reason == "length" and not h.scheduler.requests


def test_a_resume_with_more_tokens_than_max_tokens_is_refused() -> None:
    request = generate_request(max_tokens=2)
    request.resume.segments.append(segment([7, 7, 7]))
    with pytest.raises(RequestError) as refused:
        Harness().add(request)
    assert refused.value.code == "INVALID_ARGUMENT"


def test_accepted_tells_the_seed_the_request_samples_with() -> None:
    h = Harness()
    unseeded = h.add(generate_request())
    seeded = h.add(generate_request(seed=42))
    assert h.events[unseeded][0].accepted.seed == effective_seed(unseeded)
    assert h.events[seeded][0].accepted.seed == 42
