from __future__ import annotations

import pytest

from tests.sim.helpers import tiny_profile
from tooling.harness.calibration import Calibration, Measurement


def log_record(step_id: int, decode_tokens: int, step_s: float, prompt_tokens: int = 0) -> dict[str, object]:
    """An iteration log line as the scheduler writes it (uint64 step ids as strings)."""
    num_requests = decode_tokens + (1 if prompt_tokens else 0)
    return {
        "step_id": str(step_id),
        "prompt_tokens": prompt_tokens,
        "decode_tokens": decode_tokens,
        "num_requests": num_requests,
        "step_s": step_s,
        "forward_s": step_s,
    }


LOG = [
    log_record(1, 0, 0.050, prompt_tokens=40),  # the decoders' prefill: another shape
    *(log_record(step_id, 4, 0.010 + 0.001 * step_id) for step_id in range(2, 7)),
    log_record(7, 4, 0.5),  # outside the measurement's steps
    log_record(8, 1, 0.030, prompt_tokens=128),
]
DECODE = Measurement(4, 4, 400.0, 0.016, step_ids=(0, 6))
PREFILL = Measurement(129, 2, 30.0, 0.040, step_ids=(7, 8))


def test_a_measurement_takes_the_median_step_of_its_iterations() -> None:
    period = DECODE.period(LOG)
    assert (period.num_tokens, period.num_sequences, period.period_s) == (4, 4, 0.016)
    assert period.step_s == pytest.approx(0.014)  # steps 2..6: 12..16 ms
    assert PREFILL.period(LOG).step_s == 0.030
    with pytest.raises(ValueError, match="no logged iteration"):
        Measurement(12, 12, 0.0, 0.02, step_ids=(0, 8)).period(LOG)


def test_the_fitted_terms_go_into_the_profile_with_their_periods() -> None:
    profile = tiny_profile()
    calibration = Calibration.fit([DECODE, PREFILL], LOG, profile)
    calibrated = calibration.apply(profile)
    assert calibrated.forward_time_scale == calibration.terms.forward_time_scale > 0
    # One decode period: its whole overhead (period - step) is the fixed part.
    assert (
        calibrated.iteration_overhead_s + 4 * calibrated.iteration_overhead_s_per_sequence
        == pytest.approx(0.016 - 0.014)
    )
    periods = calibrated.assumptions["calibration"]["periods"]
    assert [p["num_tokens"] for p in periods] == [4, 129]
    assert calibrated.assumptions["source"] == "tests"  # what the profile said stays
