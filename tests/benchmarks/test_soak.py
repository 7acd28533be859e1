"""The soak benchmark's parsing and report line (the run itself is `make soak`, not a test)."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks.soak import Outcome, _phases, main, report_line
from scheduler_svc.sim.request_plan import RequestRecord


def test_phases_are_multiples_of_saturation_with_durations() -> None:
    assert _phases("1.2:300,2:300") == ((1.2, 300.0), (2.0, 300.0))


@pytest.mark.parametrize("text", ["", "2", "2:0", "-1:10", "1:2:3"])
def test_malformed_phases_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _phases(text)


def test_a_report_line_counts_completions_refusals_and_errors_apart() -> None:
    record = RequestRecord(
        index=0, arrival_s=0.0, completed=True, first_token_s=0.5, finish_s=2.0, generated_tokens=10
    )
    outcomes = [
        Outcome(0.0, 2.0, "", record),
        Outcome(1.0, 1.004, "RESOURCE_EXHAUSTED"),
        Outcome(1.0, 1.5, "UNAVAILABLE"),
    ]
    line = report_line("t", outcomes, {"scheduler": os.getpid()}, interval_s=10.0)
    assert "done 1 (0.10/s)" in line and "ttft s 0.5/0.5/0.5" in line
    assert "refused 1 in ms 4/4/4" in line and "errors 1" in line
    assert "scheduler" in line and "MiB" in line


def test_a_workload_the_length_does_not_fit_is_refused_before_the_stack_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--workload", "math", "--max-model-len", "256"]) == 2
    assert "end after one token without a tool call" in capsys.readouterr().out
