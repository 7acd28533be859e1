"""infercept-fidelity end to end on a tiny configuration: a real stack, the simulator, the table.

Whether the two agree is what the command measures; on a short, noisy run it is not asserted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tooling.harness import fidelity
from tooling.harness.calibration import CalibrationPlan
from tooling.harness.comparison import METRICS

TINY_CALIBRATION = CalibrationPlan(
    batch_sizes=(1, 3), prompt_tokens=(8, 64), num_tokens=8, prefill_tokens=(64,), prefill_repeats=2
)


@pytest.fixture(autouse=True)
def quiet_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "GRPC_VERBOSITY", "ERROR")
    monkeypatch.setattr(fidelity, "CALIBRATION", TINY_CALIBRATION)


def test_a_tiny_run_prints_both_results_side_by_side_and_writes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fidelity.json"
    argv = ["--workload", "math", "--rate", "2", "--duration", "8", "--warmup", "0", "--seed", "1"]
    argv += ["--max-model-len", "128", "--num-device-blocks", "256", "--out", str(out)]
    argv += ["--log-dir", str(tmp_path / "logs")]
    code = fidelity.main(argv)
    assert code in (0, 1)  # agreement is what the command reports, not what this test checks

    report = json.loads(out.read_text())
    real, sim, comparison = report["real"], report["sim"], report["comparison"]
    assert (real["tool"], sim["tool"]) == ("loadgen", "sim")
    for record in (real, sim):
        assert (record["policy"], record["workload"], record["seed"]) == ("vllm", "math", 1)
        assert (record["rate"], record["duration_s"], record["assumptions"]["max_model_len"]) == (
            2.0,
            8.0,
            128,
        )
    assert real["submitted"] == sim["submitted"] > 0  # the same plans on both sides
    assert real["completed"] > 0 and sim["completed"] > 0
    assert list(comparison) == [metric.key for metric in METRICS] + ["iterations"]
    assert comparison["completed_per_s"]["real"] == real["completed_per_s"]
    assert comparison["completed_per_s"]["ratio"] == pytest.approx(
        sim["completed_per_s"] / real["completed_per_s"]
    )
    real_latency = real["normalized_latency_s_per_token"]["mean"]
    sim_latency = sim["normalized_latency_s_per_token"]["mean"]
    assert comparison["normalized_latency_mean"]["ratio"] == pytest.approx(sim_latency / real_latency)
    assert comparison["iterations"]["real"] > 0 and comparison["iterations"]["sim"] > 0
    # How close the ratios are depends on the machine's load; that they are finite does not.
    assert all(
        math.isfinite(comparison[key]["ratio"]) for key in ("completed_per_s", "normalized_latency_mean")
    )
    headline = ("completed_per_s", "normalized_latency_mean")
    failed = [key for key in headline if abs(comparison[key]["ratio"] - 1) > 0.15]
    assert report["outside_tolerance"] == failed and (code == 1) == bool(failed)

    # The simulator ran on the stack's own profile, calibrated on the stack, then at the speed
    # the executor logged for the load's iterations.
    profile = report["profile"]
    assert profile["num_device_blocks"] == 256 and profile["forward_curve"]
    assert profile["forward_time_scale"] > 0 and profile["iteration_overhead_s"] >= 0
    periods = profile["assumptions"]["calibration"]["periods"]
    assert len(periods) == 2 * 5  # before and after the load
    # Both are measured (the step by the executor, the period by the scheduler, in two processes on
    # a shared machine), so how they compare depends on the load; that both were measured does not.
    assert all(period["step_s"] > 0 and period["period_s"] > 0 for period in periods)
    assert sim["assumptions"]["profile"] == profile
    calibrated = report["at_calibrated_speed"]
    assert calibrated["sim"]["submitted"] == real["submitted"]
    assert calibrated["comparison"]["completed_per_s"]["real"] == real["completed_per_s"]
    assert (tmp_path / "logs" / "iterations.jsonl").stat().st_size > 0

    printed = capsys.readouterr().out
    assert "calibrating after the load" in printed and f"results: {out}, logs: {tmp_path / 'logs'}" in printed
    table = printed[printed.index("metric ") :].splitlines()
    assert table[0].split() == ["metric", "real", "sim", "sim/real"]
    assert table[1].startswith("completed requests/s") and table[1].rstrip().endswith("*")
    assert f"{comparison['completed_per_s']['ratio']:.3f}" in table[1]


def test_a_stack_that_does_not_start_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fidelity.json"
    assert fidelity.main(["--model", str(tmp_path / "no-model"), "--out", str(out)]) == 2
    assert "infercept-fidelity: the executor exited" in capsys.readouterr().err
    assert not out.exists()
