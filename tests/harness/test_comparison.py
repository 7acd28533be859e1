from __future__ import annotations

import pytest

from tooling.harness.comparison import (
    HEADLINE_KEYS,
    METRICS,
    compare,
    format_table,
    outside_tolerance,
    ratio,
)
from tooling.run_record import Distribution, RunRecord, ServerDelta, Summary


def record(completed_per_s: float, latency_mean: float | None, swap_out: int = 0) -> RunRecord:
    """A record whose metrics the comparison reads."""
    latency = Distribution(latency_mean, latency_mean, latency_mean, latency_mean)
    summary = Summary(10, 8, completed_per_s, 0, latency, Distribution(0.05, 0.05, 0.05, 0.05), 100.0)
    server = ServerDelta(100, 50, 0.5, None, swap_out, 0, 0.0)
    return RunRecord("sim", "vllm", "mixed", 1.0, 10.0, 0, summary, server, {})


def test_a_ratio_is_sim_over_real_and_missing_when_it_cannot_be_taken() -> None:
    assert ratio(2.0, 3.0) == 1.5
    assert ratio(0.0, 0.0) == 1.0  # both did nothing: they agree
    assert ratio(0.0, 1.0) is None
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None


def test_every_metric_is_read_from_both_records_with_its_ratio() -> None:
    comparison = compare(
        record(0.8, 0.02, swap_out=10), record(0.9, 0.015, swap_out=12), {"iterations": (100, 90)}
    )
    assert list(comparison) == [metric.key for metric in METRICS] + ["iterations"]
    assert comparison["completed_per_s"] == {"real": 0.8, "sim": 0.9, "ratio": pytest.approx(1.125)}
    assert comparison["normalized_latency_mean"]["ratio"] == pytest.approx(0.75)
    assert comparison["swap_out_blocks"]["ratio"] == pytest.approx(1.2)
    assert comparison["iterations"] == {"real": 100, "sim": 90, "ratio": 0.9}


def test_only_the_headline_metrics_decide_the_tolerance() -> None:
    assert HEADLINE_KEYS == ("completed_per_s", "normalized_latency_mean")
    close = compare(record(1.0, 0.02, swap_out=1), record(1.1, 0.0195, swap_out=5))
    assert outside_tolerance(close, 0.15) == []
    assert outside_tolerance(close, 0.05) == ["completed_per_s"]
    nothing_completed = compare(record(1.0, 0.02), record(0.0, None))
    assert outside_tolerance(nothing_completed, 0.15) == ["completed_per_s", "normalized_latency_mean"]


def test_the_table_has_a_row_per_metric_and_marks_the_headline() -> None:
    comparison = compare(record(0.8, 0.02), record(0.9, None), {"iterations": (100, 90)})
    lines = format_table(comparison, {"iterations": "iterations (whole run)"}).splitlines()
    assert lines[0].split() == ["metric", "real", "sim", "sim/real"]
    assert len(lines) == 1 + len(comparison)
    assert lines[1].startswith("completed requests/s") and lines[1].split()[-2:] == ["1.125", "*"]
    assert lines[2].split()[-4:] == ["0.02", "-", "-", "*"]  # no sim value, no ratio
    assert lines[-1].startswith("iterations (whole run)") and lines[-1].split()[-1] == "0.900"
