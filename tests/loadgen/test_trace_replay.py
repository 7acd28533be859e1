"""The authors' trace, replayed as their harness does: statistics, arrivals, truncation."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tooling.loadgen.trace_replay import (
    PACKAGED_TRUNCATED_TRACE,
    harness_arrivals,
    packaged_trace_path,
    read_keyed_trace,
    replay_trace,
    truncate,
)
from tooling.loadgen.truncation import count_prompt_only

# The traces README's table (after truncation at 2048; means): prompt, calls, generated before a
# call, returned per call, call duration (s), final context.
README_TABLE = {
    "math": (405, 2.81, 130, 21, 8.3e-05, 939),
    "qa": (934, 3.04, 189, 57, 0.71, 1847),
    "ve": (1973, 5.11, 4, 10, 0.085, 2048),
    "chatbot": (108, 3.46, 59, 40, 28.2, 753),
    "image": (108, 6.9, None, None, 19.9, 500),  # alternating media call and human turn
    "tts": (108, 6.9, None, None, 17.2, 504),
}
FILE_MIX = {"math": 98, "qa": 50, "ve": 54, "chatbot": 65, "image": 65, "tts": 65}


@pytest.fixture(scope="module")
def replayed() -> list[RequestPlan]:
    # About 24,000 draws: the per-augmentation means settle within a few percent.
    return replay_trace(rate=40.0, duration_s=600.0, seed=0, max_model_len=2048)


def augmentation_means(plans: list[RequestPlan], name: str) -> tuple[float, ...]:
    plans = [p for p in plans if p.workload == name]
    calls = [s for p in plans for s in p.segments[:-1]]
    return (
        float(np.mean([p.prompt_tokens for p in plans])),
        float(np.mean([p.num_calls for p in plans])),
        float(np.mean([s.generated_tokens for s in calls])),
        float(np.mean([s.returned_tokens for s in calls])),
        float(np.mean([s.duration_s for s in calls])),
        float(np.mean([p.context_tokens for p in plans])),
    )


@pytest.mark.parametrize("name", list(README_TABLE))
def test_the_replay_matches_the_readme_table_per_augmentation(replayed: list[RequestPlan], name: str) -> None:
    for measured, expected in zip(augmentation_means(replayed, name), README_TABLE[name], strict=True):
        if expected is not None:
            assert measured == pytest.approx(expected, rel=0.06)


def test_requests_are_drawn_in_the_files_proportions(replayed: list[RequestPlan]) -> None:
    counts = Counter(p.workload for p in replayed)
    total, file_total = sum(counts.values()), sum(FILE_MIX.values())
    for name, num_in_file in FILE_MIX.items():
        assert counts[name] / total == pytest.approx(num_in_file / file_total, abs=0.01)


def test_the_first_int_rate_plus_one_arrive_at_zero_then_poisson() -> None:
    arrivals = harness_arrivals(2.5, 2000.0, np.random.default_rng(0))
    assert arrivals[:3] == [0.0, 0.0, 0.0] and arrivals[3] > 0
    gaps = np.diff(arrivals[2:])
    assert (gaps > 0).all() and max(arrivals) < 2000.0
    assert float(gaps.mean()) == pytest.approx(1 / 2.5, rel=0.05)
    assert harness_arrivals(0.5, 10.0, np.random.default_rng(0))[:1] == [0.0]


def test_the_poisson_arrivals_begin_after_the_gaps_of_the_requests_at_zero_as_the_harness_pops_them() -> None:
    # The harness draws a running sum of gaps for every request; the first int(rate) + 1 go in
    # at t = 0 with their times popped unused, so the next arrives at the sum of int(rate) + 2
    # gaps: on average (int(rate) + 2) / rate, where a plain Poisson start would give 1 / rate.
    rate = 2.5
    firsts = [harness_arrivals(rate, 100.0, np.random.default_rng(seed))[3] for seed in range(2000)]
    assert float(np.mean(firsts)) == pytest.approx((int(rate) + 2) / rate, rel=0.05)
    rng = np.random.default_rng(7)
    gaps = rng.exponential(1 / rate, size=4)
    assert harness_arrivals(rate, 100.0, np.random.default_rng(7))[3] == pytest.approx(float(gaps.sum()))


def test_the_same_seed_gives_the_same_replay_and_another_seed_another() -> None:
    first = replay_trace(1.5, 300.0, seed=3, max_model_len=2048)
    assert first == replay_trace(1.5, 300.0, seed=3, max_model_len=2048)
    assert first != replay_trace(1.5, 300.0, seed=4, max_model_len=2048)
    assert [p.index for p in first] == list(range(len(first)))


def test_generation_stops_where_the_context_reaches_the_model_length() -> None:
    segments = [Segment(10, "t", 1.0, 5), Segment(10, "t", 1.0, 5), Segment(10)]
    assert truncate(100, segments, 1000) == (100, segments)  # fits: unchanged
    # Context 100 -> 110 -> 115 -> 120 (stops: the second call never happens).
    assert truncate(100, segments, 120) == (100, [Segment(10, "t", 1.0, 5), Segment(5)])
    # The call's result is cut to leave room for one more generated token.
    assert truncate(100, segments, 113) == (100, [Segment(10, "t", 1.0, 2), Segment(1)])
    assert truncate(500, segments, 300) == (299, [Segment(1)])  # a prompt past the length


def test_requests_left_only_their_prompt_are_counted() -> None:
    segments = [Segment(10, "t", 1.0, 5), Segment(10)]
    truncated = [truncate(prompt, segments, 300) for prompt in (500, 300, 299, 298, 100)]
    plans = [RequestPlan(i, 0.0, "t", prompt, tuple(kept)) for i, (prompt, kept) in enumerate(truncated)]
    # 500 and 300 are cut to 299, and 299 fits only one token: three end after it. 298 generates 2.
    assert count_prompt_only(plans, 300) == 3
    assert count_prompt_only(plans, 2048) == 0  # at another length they are whole requests


def test_truncation_makes_the_calls_the_authors_2048_file_keeps() -> None:
    full = read_keyed_trace(packaged_trace_path())
    reference = json.loads(packaged_trace_path(PACKAGED_TRUNCATED_TRACE).read_text())
    differing = []
    for key, (prompt, segments) in full.items():
        prompt, kept = truncate(prompt, segments, 2048)
        assert prompt + sum(s.generated_tokens + s.returned_tokens for s in kept) <= 2048
        if len(kept) - 1 != sum("api_time" in s for s in reference[key]):
            differing.append(key)
    # The two the 2048 file differs on end on a call that returns nothing, which we keep.
    assert len(differing) <= 2 and all(full[key][1][-2].returned_tokens == 0 for key in differing)


def test_the_replay_scales_call_durations_when_asked() -> None:
    plans = replay_trace(1.0, 60.0, 0, 2048)
    scaled = replay_trace(1.0, 60.0, 0, 2048, duration_scale=0.5)
    assert [s.duration_s * 0.5 for p in plans for s in p.segments] == pytest.approx(
        [s.duration_s for p in scaled for s in p.segments]
    )


def test_the_replay_draws_only_the_augmentations_asked_for() -> None:
    plans = replay_trace(2.0, 300.0, 0, 2048, augmentations=("math",))
    assert plans and {p.workload for p in plans} == {"math"}
    mixed = Counter(p.workload for p in replay_trace(2.0, 300.0, 0, 2048, augmentations=("chatbot", "image")))
    assert set(mixed) == {"chatbot", "image"}  # both, in their equal proportions in the file
    assert len(replay_trace(2.0, 300.0, 0, 2048)) == len(plans)  # the same arrivals
    with pytest.raises(ValueError, match="no requests of"):
        replay_trace(1.0, 60.0, 0, 2048, augmentations=("nope",))
