from __future__ import annotations

import numpy as np
import pytest

from scheduler_svc.sim.fit import (
    ForwardSample,
    IterationPeriod,
    context_s_per_token,
    fit_iteration_terms,
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


def periods_from(
    scale: float, per_context_token_s: float, fixed_s: float, per_sequence_s: float
) -> list[IterationPeriod]:
    """Decode batches and prefill steps whose periods follow the fitted model exactly."""
    shapes = [(batch, batch, batch * (prompt + 47.0)) for prompt in (16, 320) for batch in (1, 4, 12)]
    shapes += [(prefill + 1, 2, 30.0) for prefill in (128, 256, 480)]
    return [
        IterationPeriod(
            tokens,
            sequences,
            context,
            scale * flat_forward_s(tokens)
            + per_context_token_s * context
            + fixed_s
            + per_sequence_s * sequences,
        )
        for tokens, sequences, context in shapes
    ]


def test_the_iteration_terms_are_recovered_from_exact_periods() -> None:
    terms = fit_iteration_terms(periods_from(1.5, 7e-7, 0.004, 5e-4), flat_forward_s)
    assert terms.forward_time_scale == pytest.approx(1.5)
    assert terms.forward_s_per_context_token == pytest.approx(7e-7)
    assert terms.iteration_overhead_s == pytest.approx(0.004)
    assert terms.iteration_overhead_s_per_sequence == pytest.approx(5e-4)


def test_a_term_the_periods_say_is_negative_is_zero_and_the_others_refitted() -> None:
    # Periods that fall with the context: the best non-negative fit has no context term.
    terms = fit_iteration_terms(periods_from(1.0, -1e-7, 0.004, 5e-4), flat_forward_s)
    assert terms.forward_s_per_context_token == 0.0
    assert terms.forward_time_scale > 0 and terms.iteration_overhead_s > 0


def test_fitting_needs_as_many_periods_as_terms() -> None:
    with pytest.raises(ValueError, match="at least 4 measured periods"):
        fit_iteration_terms(periods_from(1.0, 0.0, 0.004, 0.0)[:3], flat_forward_s)


def test_nonnegative_least_squares_keeps_the_best_nonnegative_subset() -> None:
    columns = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nonnegative_least_squares(columns, np.array([2.0, 3.0, 5.0])) == pytest.approx([2.0, 3.0])
    # The unconstrained answer is (2, -1): the second is dropped and the first refitted alone.
    assert nonnegative_least_squares(columns, np.array([2.0, -1.0, 1.0])) == pytest.approx([1.5, 0.0])
    assert nonnegative_least_squares(columns, -np.ones(3)) == pytest.approx([0.0, 0.0])
