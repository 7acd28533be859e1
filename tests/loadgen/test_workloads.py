"""The generated workloads follow WORKLOADS.md's table, fit the model length, and are seeded."""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tooling.loadgen.workloads import (
    AUGMENTATIONS,
    Assumptions,
    fit_to_length,
    generate_plans,
    poisson_arrivals,
    split_context,
)

UNCLIPPED = 10**6  # a model length no drawn context reaches: the table's statistics unbiased
TABLE1 = Assumptions(statistics="table1")  # the paper's Table 1, the documented alternative
NUM_DRAWS_RATE, NUM_DRAWS_SPAN_S = 1000.0, 3.0  # about 3000 requests per augmentation
NUM_STANDARD_ERRORS = 4.0


@functools.cache
def draws(workload: str, seed: int = 7, max_model_len: int = UNCLIPPED) -> list[RequestPlan]:
    """About 3000 plans (shared by the tests; do not modify them)."""
    plans = generate_plans(workload, NUM_DRAWS_RATE, NUM_DRAWS_SPAN_S, seed, max_model_len, TABLE1)
    assert len(plans) > 2500
    return plans


def assert_mean_and_spread(values: Sequence[float], expected: tuple[float, float], what: str) -> None:
    """The sample mean within NUM_STANDARD_ERRORS of the expected mean, the spread within 15%."""
    mean, spread = expected
    sample_mean, sample_spread = float(np.mean(values)), float(np.std(values))
    standard_error = spread / math.sqrt(len(values))
    assert abs(sample_mean - mean) < NUM_STANDARD_ERRORS * standard_error, (what, sample_mean, mean)
    assert abs(sample_spread - spread) < 0.15 * spread, (what, sample_spread, spread)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_statistics_match_the_table(name: str) -> None:
    augmentation = AUGMENTATIONS[name]
    plans = draws(name)
    # Stochastic rounding of a fractional part p adds p(1 − p) to the variance of the number of
    # calls: 1/6 on average over uniform fractional parts.
    mean_calls, spread_calls = augmentation.num_calls
    calls_spread = math.sqrt(spread_calls**2 + 1 / 6)
    assert_mean_and_spread([p.num_calls for p in plans], (mean_calls, calls_spread), f"{name} calls")
    durations = [s.duration_s for p in plans for s in p.segments[:-1]]
    assert_mean_and_spread(durations, augmentation.call_duration_s, f"{name} durations")
    contexts = [p.context_tokens for p in plans]
    assert_mean_and_spread(contexts, augmentation.context_tokens, f"{name} context")
    assert min(p.num_calls for p in plans) >= 1
    assert min(durations) > 0


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_contexts_split_as_assumed(name: str) -> None:
    a = Assumptions()
    for plan in draws(name)[:500]:
        assert plan.workload == name
        assert plan.segments[-1].tool is None and plan.segments[-1].returned_tokens == 0
        assert all(s.tool == name for s in plan.segments[:-1])
        assert all(s.generated_tokens >= a.min_generated_tokens for s in plan.segments)
        assert plan.prompt_tokens >= a.min_prompt_tokens
        assert abs(plan.prompt_tokens - a.prompt_share * plan.context_tokens) <= 1
        for s in plan.segments[:-1]:
            budget = s.generated_tokens + s.returned_tokens
            assert abs(s.returned_tokens - a.returned_share * budget) <= 1


def test_clipping_holds_at_the_papers_length_and_keeps_the_calls() -> None:
    a = Assumptions()
    for name in AUGMENTATIONS:
        clipped, unclipped = draws(name, max_model_len=2048), draws(name)
        assert max(p.context_tokens for p in clipped) <= 2048
        assert [p.num_calls for p in clipped] == [p.num_calls for p in unclipped]
        for short, full in zip(clipped, unclipped, strict=True):
            assert short.context_tokens == min(full.context_tokens, 2048)
            assert all(s.generated_tokens >= a.min_generated_tokens for s in short.segments)
            assert [s.duration_s for s in short.segments] == [s.duration_s for s in full.segments]


def test_a_tiny_model_length_drops_calls_rather_than_fail() -> None:
    plans = generate_plans("ve", 100.0, 2.0, 0, 64, TABLE1)
    assert plans and max(p.context_tokens for p in plans) <= 64
    assert max(p.num_calls for p in plans) == (64 - 8) // 2 - 1  # the floors of 28 segments


def test_fit_to_length_scales_every_part() -> None:
    segments = [Segment(50, "t", 1.0, 50), Segment(100)]
    assert fit_to_length(100, segments, 150, 8, 2) == (50, [Segment(25, "t", 1.0, 25), Segment(50)])
    assert fit_to_length(100, segments, 400, 8, 2) == (100, segments)  # fits already
    # Floors lift the small parts; the excess comes off what is above its floor.
    prompt, fitted = fit_to_length(10, [Segment(1, "t", 0.5, 0), Segment(300)], 30, 8, 2)
    assert prompt + sum(s.generated_tokens + s.returned_tokens for s in fitted) == 30
    assert (prompt, fitted) == (8, [Segment(2, "t", 0.5, 0), Segment(20)])
    # 8 + 3 · 2 > 12: the last call goes, its segment becomes the last one.
    prompt, fitted = fit_to_length(
        8, [Segment(2, "a", 1.0, 1), Segment(2, "b", 2.0, 1), Segment(2)], 12, 8, 2
    )
    assert (prompt, fitted) == (8, [Segment(2, "a", 1.0, 0), Segment(2)])
    with pytest.raises(ValueError):
        fit_to_length(8, [Segment(2)], 9, 8, 2)


def test_split_context_adds_up() -> None:
    a = Assumptions(prompt_share=0.5, returned_share=0.25)
    prompt, segments = split_context(103, [1.0, 2.0], "t", a)
    assert prompt == 52  # round(51.5) to even
    assert segments == [Segment(13, "t", 1.0, 4), Segment(13, "t", 2.0, 4), Segment(17)]
    assert prompt + sum(s.generated_tokens + s.returned_tokens for s in segments) == 103


def test_the_same_seed_gives_the_same_plans() -> None:
    assert generate_plans("mixed", 5.0, 60.0, 3, 2048) == generate_plans("mixed", 5.0, 60.0, 3, 2048)
    assert generate_plans("mixed", 5.0, 60.0, 3, 2048) != generate_plans("mixed", 5.0, 60.0, 4, 2048)
    # Workloads run with one seed share their arrivals.
    math_arrivals = [p.arrival_s for p in generate_plans("math", 5.0, 60.0, 3)]
    assert math_arrivals == [p.arrival_s for p in generate_plans("chatbot", 5.0, 60.0, 3)]


# The traces README's table after truncation at 2048 (means): prompt, calls, generated before a
# call, returned per call, call duration (s), final context.
TRACE_TABLE = {
    "math": (405, 2.81, 130, 21, 8.3e-05, 939),
    "qa": (934, 3.04, 189, 57, 0.71, 1847),
    "ve": (1973, 5.11, 4, 10, 0.085, 2048),
    "chatbot": (108, 3.46, 59, 40, 28.2, 753),
    "image": (108, 6.9, None, None, 19.9, 500),
    "tts": (108, 6.9, None, None, 17.2, 504),
}


@pytest.mark.parametrize("name", list(TRACE_TABLE))
def test_drawn_requests_have_the_traces_statistics_by_default(name: str) -> None:
    plans = generate_plans(name, 400.0, 5.0, 0, 2048)
    calls = [s for p in plans for s in p.segments[:-1]]
    measured = (
        np.mean([p.prompt_tokens for p in plans]),
        np.mean([p.num_calls for p in plans]),
        np.mean([s.generated_tokens for s in calls]),
        np.mean([s.returned_tokens for s in calls]),
        np.mean([s.duration_s for s in calls]),
        np.mean([p.context_tokens for p in plans]),
    )
    # Within 10%: drawn lengths have tails the trace's requests lack, which truncation trims.
    for value, expected in zip(measured, TRACE_TABLE[name], strict=True):
        if expected is not None:
            assert float(value) == pytest.approx(expected, rel=0.10), (name, measured)
    assert max(p.context_tokens for p in plans) <= 2048


def test_mixed_draws_the_trace_files_proportions_by_default() -> None:
    counts = Counter(p.workload for p in generate_plans("mixed", 400.0, 10.0, 0, 2048))
    assert counts["math"] / sum(counts.values()) == pytest.approx(98 / 397, abs=0.02)
    assert counts["qa"] / sum(counts.values()) == pytest.approx(50 / 397, abs=0.02)


def test_mixed_picks_each_augmentation_uniformly() -> None:
    plans = draws("mixed")
    counts = Counter(p.workload for p in plans)
    assert set(counts) == set(AUGMENTATIONS)
    expected = len(plans) / 6
    standard_error = math.sqrt(len(plans) * (1 / 6) * (5 / 6))
    assert all(abs(n - expected) < NUM_STANDARD_ERRORS * standard_error for n in counts.values()), counts


def test_poisson_arrivals_have_the_rate() -> None:
    rate, duration_s = 4.0, 2500.0
    arrivals = poisson_arrivals(rate, duration_s, np.random.default_rng(11))
    expected = rate * duration_s
    assert abs(len(arrivals) - expected) < NUM_STANDARD_ERRORS * math.sqrt(expected)
    assert arrivals == sorted(arrivals) and arrivals[0] >= 0 and arrivals[-1] < duration_s
    gaps = np.diff(arrivals)
    # Exponential gaps: the coefficient of variation is 1.
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 10.0, np.random.default_rng(0))


def test_assumptions_are_validated_reported_and_overridable() -> None:
    with pytest.raises(ValueError):
        Assumptions(family="uniform")
    with pytest.raises(ValueError):
        Assumptions(prompt_share=1.0)
    reported = TABLE1.as_dict()
    assert reported["family"] == "lognormal" and reported["prompt_share"] == 0.4
    assert reported["augmentations"]["qa"]["call_duration_s"] == [0.69, 0.17]
    short_prompts = generate_plans(
        "qa", 50.0, 20.0, 0, UNCLIPPED, Assumptions(statistics="table1", prompt_share=0.1)
    )
    share = sum(p.prompt_tokens for p in short_prompts) / sum(p.context_tokens for p in short_prompts)
    assert abs(share - 0.1) < 0.01
    normal = generate_plans("math", 50.0, 20.0, 0, UNCLIPPED, Assumptions(family="normal"))
    assert normal != generate_plans("math", 50.0, 20.0, 0, UNCLIPPED)
    with pytest.raises(ValueError, match="statistics"):
        Assumptions(statistics="raw")
    with pytest.raises(ValueError):
        generate_plans("poetry", 1.0, 1.0, 0)
