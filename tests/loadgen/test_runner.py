"""A plan becomes a request: seeded random ids, greedy sampling, a script of its calls."""

from __future__ import annotations

import pytest

from infercept.events import Intercepted, Resumed, TokenDelta
from infercept.types import ScriptedCall
from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tooling.loadgen.runner import _cut_record, _Launched, _Progress, request_inputs

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


def test_a_request_cut_at_the_windows_end_keeps_what_it_had_streamed() -> None:
    progress = _Progress()
    progress.observe(TokenDelta((7, 8, 9), ""), now=100.0)
    progress.observe(Intercepted("qa", "", 15, 0, "discard"), now=100.5)
    progress.observe(Resumed(3, 0, 0, 15), now=101.5)  # a call of 1 s that returned 3 tokens
    progress.observe(TokenDelta((4,), ""), now=101.6)
    progress.observe(Intercepted("qa", "", 19, 1, "discard"), now=102.0)  # still running at the end
    launched = _Launched(PLAN, sent_s=1.5, task=None, progress=progress)  # type: ignore[arg-type]
    record = _cut_record(launched, progress, start=99.0, window_end_s=4.0)  # the end: t = 103
    assert (record.completed, record.cut_s, record.arrival_s) == (False, 4.0, 1.5)
    assert (record.generated_tokens, record.returned_tokens) == (4, 3)
    assert record.tool_time_s == pytest.approx(1.0 + 1.0)  # the returned call, and 1 s of the running one
