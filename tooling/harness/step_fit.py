"""Fitting what a live stack's iterations cost next to its profile (tooling/harness).

    fit_iteration_terms   iterations measured through a live stack (calibration.py): the
                          executor's own step times as a fixed part plus a scale of the profile's
                          forward times; the overhead = the decode periods the client saw minus
                          those step times, as a fixed cost per iteration plus one per sequence
    fit_served_step       the executor's step times during a load against the simulated
                          iterations of the same shape: the fixed part and the scale at which
                          the device really served

Non-negative least squares (scheduler_svc/sim/fit.py), so that a noisy measurement never gives a
negative cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from scheduler_svc.sim.fit import nonnegative_least_squares
from tooling.loadgen.metrics import FORWARD_TOKEN_KINDS


@dataclasses.dataclass(frozen=True)
class IterationPeriod:
    """Iterations timed through a live stack: the mean time between two tokens of a request
    while the iterations compute `num_tokens` tokens of `num_sequences` sequences, which attend
    `num_context_tokens` cached tokens in all (means over the timed iterations), and the
    executor's own step time of those iterations."""

    num_tokens: int
    num_sequences: int
    num_context_tokens: float
    period_s: float
    step_s: float


@dataclasses.dataclass(frozen=True)
class IterationTerms:
    """The fitted terms, named as the CostProfile fields they set."""

    forward_time_scale: float
    forward_fixed_s: float
    iteration_overhead_s: float
    iteration_overhead_s_per_sequence: float


@dataclasses.dataclass(frozen=True)
class StepSample:
    """One iteration's shape and the executor's step time (from IterationStats)."""

    num_tokens: int
    num_sequences: int
    step_s: float
    forward_s: float  # the forward pass alone (the step without swaps that stall it)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> StepSample:
        """From IterationStats as a dict (the scheduler's --iteration-log lines)."""
        num_tokens = sum(int(stats.get(kind, 0)) for kind in FORWARD_TOKEN_KINDS)
        step_s, forward_s = float(stats.get("step_s", 0.0)), float(stats.get("forward_s", 0.0))
        return cls(num_tokens, int(stats.get("num_requests", 0)), step_s, forward_s)

    @property
    def shape(self) -> tuple[int, int]:
        """Sequences (16 or more as one) and tokens to the power of two."""
        return min(self.num_sequences, 16), self.num_tokens.bit_length()


MIN_SHAPE_SAMPLES = 3  # simulated iterations of a shape for its mean to count
MIN_SPEED_COVERAGE = 0.5  # of the real iterations, in shapes both sides ran


def fit_iteration_terms(
    periods: Sequence[IterationPeriod], forward_s: Callable[[int, float], float]
) -> IterationTerms:
    """Fit step_s = fixed_step + scale * forward_s(tokens, context) (the profile's forward
    time) over the measured periods, and period_s - step_s = fixed + per_sequence * sequences
    over those of decode iterations (all, if none is), every coefficient >= 0. ValueError with
    fewer than 2 periods."""
    if len(periods) < 2:
        raise ValueError(f"fitting the iteration terms needs at least 2 measured periods, got {len(periods)}")
    profiled = np.array([[forward_s(p.num_tokens, p.num_context_tokens), 1.0] for p in periods])
    scale, fixed_step = nonnegative_least_squares(profiled, np.array([p.step_s for p in periods])).tolist()
    # The overhead from decode iterations, most of any load's: a prefill's period also holds the
    # admission of its new request, and its token gap is the noisier measurement.
    decodes = [p for p in periods if p.num_tokens == p.num_sequences] or list(periods)
    columns = np.array([[1.0, p.num_sequences] for p in decodes], dtype=float)
    outside = np.array([p.period_s - p.step_s for p in decodes])
    fixed, per_sequence = nonnegative_least_squares(columns, outside).tolist()
    return IterationTerms(scale, fixed_step, fixed, per_sequence)


def fit_served_step(
    real: Sequence[StepSample], simulated: Sequence[StepSample], profiled_s: Callable[[StepSample], float]
) -> tuple[float, float] | None:
    """(scale, fixed seconds) such that fixed + scale * profiled matches the real executor's step
    times shape by shape: for every shape both sides ran, the mean real step time against the
    mean profiled forward time of the simulated iterations of that shape (`profiled_s` of a
    simulated sample; the simulation knows each iteration's cached context, the log does not),
    weighted by the real iterations of the shape. None when those shapes cover too few of the
    real iterations, or when the steps do not grow with the forward time at all."""
    by_shape: dict[tuple[int, int], list[float]] = {}
    for sample in simulated:
        by_shape.setdefault(sample.shape, []).append(profiled_s(sample))
    profiled = {shape: float(np.mean(v)) for shape, v in by_shape.items() if len(v) >= MIN_SHAPE_SAMPLES}
    real_by_shape: dict[tuple[int, int], list[float]] = {}
    for sample in real:
        if sample.shape in profiled:
            real_by_shape.setdefault(sample.shape, []).append(sample.step_s)
    num_covered = sum(len(steps) for steps in real_by_shape.values())
    if not real or num_covered < MIN_SPEED_COVERAGE * len(real):
        return None
    weights = np.sqrt([len(steps) for steps in real_by_shape.values()])
    columns = np.array([[profiled[shape], 1.0] for shape in real_by_shape]) * weights[:, None]
    means = np.array([np.mean(steps) for steps in real_by_shape.values()]) * weights
    scale, fixed = nonnegative_least_squares(columns, means).tolist()
    return (scale, fixed) if scale > 0 else None
