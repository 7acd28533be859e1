from __future__ import annotations

import dataclasses

import pytest

from tooling.harness.step_fit import IterationPeriod, StepSample, fit_iteration_terms, fit_served_step


def flat_forward_s(num_tokens: int) -> float:
    return 0.004 + 1e-5 * num_tokens


def periods_from(
    scale: float, fixed_step_s: float, fixed_s: float, per_sequence_s: float
) -> list[IterationPeriod]:
    """Decode batches and prefill steps whose executor steps and periods follow the model."""
    shapes = [(batch, batch, batch * (prompt + 47.0)) for prompt in (16, 320) for batch in (1, 4, 12)]
    shapes += [(prefill + 1, 2, 30.0) for prefill in (128, 256, 480)]
    periods = []
    for tokens, sequences, context in shapes:
        step_s = fixed_step_s + scale * profiled_s(tokens, context)
        period_s = step_s + fixed_s + per_sequence_s * sequences
        periods.append(IterationPeriod(tokens, sequences, context, period_s, step_s))
    return periods


def profiled_s(num_tokens: int, num_context_tokens: float) -> float:
    return flat_forward_s(num_tokens) + 8e-7 * num_context_tokens


def test_the_iteration_terms_are_recovered_from_exact_periods() -> None:
    terms = fit_iteration_terms(periods_from(1.5, 0.003, 0.004, 5e-4), profiled_s)
    assert terms.forward_time_scale == pytest.approx(1.5)
    assert terms.forward_fixed_s == pytest.approx(0.003)
    assert terms.iteration_overhead_s == pytest.approx(0.004)
    assert terms.iteration_overhead_s_per_sequence == pytest.approx(5e-4)


def test_the_overhead_comes_from_the_decode_periods() -> None:
    periods = periods_from(1.0, 0.0, 0.004, 0.0)
    # A prefill's period also holds its request's admission: not an iteration's overhead.
    slow_prefills = [
        dataclasses.replace(p, period_s=p.period_s + 0.01) if p.num_tokens > 100 else p for p in periods
    ]
    assert fit_iteration_terms(slow_prefills, profiled_s).iteration_overhead_s == pytest.approx(0.004)


def test_a_term_the_periods_say_is_negative_is_zero_and_the_others_refitted() -> None:
    # Overheads that fall with the batch: the best non-negative fit has no per-sequence term.
    terms = fit_iteration_terms(periods_from(1.0, 0.002, 0.006, -1e-4), profiled_s)
    assert terms.iteration_overhead_s_per_sequence == 0.0
    assert 0.004 < terms.iteration_overhead_s < 0.006
    assert terms.forward_time_scale == pytest.approx(1.0) and terms.forward_fixed_s == pytest.approx(0.002)


def test_fitting_needs_two_periods() -> None:
    with pytest.raises(ValueError, match="at least 2 measured periods"):
        fit_iteration_terms(periods_from(1.0, 0.0, 0.004, 0.0)[:1], profiled_s)


def step(num_tokens: int, num_sequences: int, step_s: float, forward_s: float | None = None) -> StepSample:
    return StepSample(num_tokens, num_sequences, step_s, step_s if forward_s is None else forward_s)


def test_a_step_sample_reads_an_iteration_log_record() -> None:
    record = {"step_id": "7", "prompt_tokens": 100, "decode_tokens": 3, "recomputed_tokens": 20}
    sample = StepSample.from_stats({**record, "num_requests": 4, "step_s": 0.03, "forward_s": 0.025})
    assert sample == StepSample(123, 4, 0.03, 0.025)
    assert sample.shape == (4, 7)  # 123 tokens: 2**6 <= 123 < 2**7
    assert step(5, 40, 0.01).shape == (16, 3)


def test_the_served_step_is_fitted_shape_by_shape() -> None:
    # The real executor served each shape at 2 ms + 1.5 x the simulated forward time.
    simulated = [step(n, b, 0.001 * n) for n, b in ((1, 1), (4, 4), (300, 3)) for _ in range(5)]
    real = [step(s.num_tokens, s.num_sequences, 0.002 + 1.5 * s.forward_s) for s in simulated]
    real += [step(2000, 1, 1.0)]  # a shape the simulation never ran: not counted
    scale, fixed_s = fit_served_step(real, simulated, lambda sample: sample.forward_s) or (0.0, 0.0)
    assert (scale, fixed_s) == (pytest.approx(1.5), pytest.approx(0.002))


def test_no_served_step_without_enough_shapes_in_common() -> None:
    simulated = [step(1, 1, 0.001)] * 5
    assert (
        fit_served_step([step(300, 3, 0.05)] * 3 + [step(1, 1, 0.002)], simulated, lambda s: s.forward_s)
        is None
    )
    assert fit_served_step([], simulated, lambda s: s.forward_s) is None
