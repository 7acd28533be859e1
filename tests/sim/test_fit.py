from __future__ import annotations

import numpy as np
import pytest

from scheduler_svc.sim.fit import (
    ForwardSample,
    context_s_per_token,
    forward_curve,
    nonnegative_least_squares,
)


def flat_forward_s(num_tokens: int) -> float:
    return 0.004 + 1e-5 * num_tokens


def test_the_curve_is_the_prefill_samples_ascending_fastest_of_repeats() -> None:
    samples = [
        ForwardSample(64, 0, 1, 0.006),
        ForwardSample(1, 0, 1, 0.003),
        ForwardSample(64, 0, 1, 0.005),  # a repeat: the faster one is kept
        ForwardSample(8, 512, 8, 0.009),  # a decode sample: not part of the curve
    ]
    assert forward_curve(samples) == ((1, 0.003), (64, 0.005))
    assert forward_curve([]) == ()


def test_the_context_cost_is_the_decode_samples_excess_per_cached_token() -> None:
    per_context_token_s = 8e-7
    samples = [ForwardSample(1, 0, 1, 0.003)] + [
        ForwardSample(batch, 512, batch, flat_forward_s(batch) + per_context_token_s * batch * 512)
        for batch in (1, 8, 32, 64)
    ]
    assert context_s_per_token(samples, flat_forward_s) == pytest.approx(per_context_token_s)


def test_no_decode_samples_or_decodes_faster_than_the_curve_cost_nothing_per_context_token() -> None:
    assert context_s_per_token([ForwardSample(8, 0, 1, 0.004)], flat_forward_s) == 0.0
    faster = [ForwardSample(8, 512, 8, flat_forward_s(8) - 0.001)]
    assert context_s_per_token(faster, flat_forward_s) == 0.0


def test_nonnegative_least_squares_keeps_the_best_nonnegative_subset() -> None:
    columns = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nonnegative_least_squares(columns, np.array([2.0, 3.0, 5.0])) == pytest.approx([2.0, 3.0])
    # The unconstrained answer is (2, -1): the second is dropped and the first refitted alone.
    assert nonnegative_least_squares(columns, np.array([2.0, -1.0, 1.0])) == pytest.approx([1.5, 0.0])
    assert nonnegative_least_squares(columns, -np.ones(3)) == pytest.approx([0.0, 0.0])
