"""A plan becomes a request: seeded random ids, greedy sampling, a script of its calls."""

from __future__ import annotations

from infercept.loadgen.runner import request_inputs
from infercept.loadgen.spec import RequestPlan, Segment
from infercept.types import ScriptedCall

PLAN = RequestPlan(
    index=4,
    arrival_s=1.5,
    workload="qa",
    prompt_tokens=12,
    segments=(Segment(5, "qa", 0.7, 3), Segment(2, "qa", 0.2, 0), Segment(9)),
)


def test_a_plan_becomes_a_scripted_greedy_request() -> None:
    prompt_ids, sampling, script = request_inputs(PLAN, vocab_size=258, seed=0)
    assert len(prompt_ids) == 12 and all(0 <= i < 258 for i in prompt_ids)
    assert (sampling.max_tokens, sampling.temperature, sampling.ignore_eos) == (16, 0.0, True)
    assert [(c.after_tokens, c.tool, c.wait_s, len(c.returned_token_ids)) for c in script] == [
        (5, "qa", 0.7, 3),
        (2, "qa", 0.2, 0),
    ]
    assert all(isinstance(c, ScriptedCall) for c in script)


def test_ids_are_seeded_by_the_run_seed_and_the_request() -> None:
    assert request_inputs(PLAN, 258, 0) == request_inputs(PLAN, 258, 0)
    assert request_inputs(PLAN, 258, 0)[0] != request_inputs(PLAN, 258, 1)[0]
    other = RequestPlan(5, 1.5, "qa", 12, PLAN.segments)
    assert request_inputs(PLAN, 258, 0)[0] != request_inputs(other, 258, 0)[0]
