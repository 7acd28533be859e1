"""Repeated sweeps: rounds with the policies' order rotated, records labelled by their spec, and
each (policy, rate) reported as the mean and spread of its runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tooling.launcher import Stack
from tooling.loadgen import sweep as sweep_module
from tooling.loadgen.load_run import Target
from tooling.loadgen.repeats import Spread, is_repeated, repeated_runs, repeats_table, round_orders
from tooling.loadgen.report import max_sustainable_rates, sweep_table
from tooling.loadgen.workload_spec import WorkloadSpec
from tooling.run_record import Distribution, RunRecord, ServerDelta, Summary
from tooling.stack_spec import StackSpec


def record(policy: str, rate: float, done_per_s: float, latency: float | None) -> RunRecord:
    summary = Summary(
        10, 9, done_per_s, 0, Distribution(latency, latency, latency, latency), Distribution(), 1.0
    )
    server = ServerDelta(100, 0, 0.0, None, 0, 0, 0.0)
    return RunRecord("loadgen", policy, "mixed", rate, 30.0, 0, summary, server, {})


def test_each_round_starts_one_policy_further_on() -> None:
    assert round_orders(["a", "b", "c"], 4) == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert round_orders(["a"], 2) == [["a"], ["a"]]
    with pytest.raises(ValueError, match="at least 1"):
        round_orders(["a"], 0)


def test_a_spread_is_the_mean_the_sample_sd_and_the_range() -> None:
    spread = Spread.of([1.0, 2.0, 6.0])
    assert (spread.mean, spread.low, spread.high) == (3.0, 1.0, 6.0)
    assert spread.sd == pytest.approx(2.6458, abs=1e-4)
    assert Spread.of([0.5]).sd == 0.0
    assert spread.format(1) == "3.0 ± 2.6 [1.0-6.0]"


RUNS = [
    record("preserve", 2.0, 1.6, 0.0030),
    record("lazy-swap", 2.0, 1.7, 0.0032),
    record("lazy-swap", 2.0, 1.5, 0.0036),
    record("preserve", 2.0, 1.6, 0.0040),
    record("swap", 2.0, 1.0, None),
    record("swap", 2.0, 1.2, 0.0100),
]


def test_runs_of_one_policy_and_rate_are_grouped_in_first_appearance_order() -> None:
    rows = repeated_runs(RUNS)
    assert [(r.policy, r.rate, r.num_runs) for r in rows] == [
        ("preserve", 2.0, 2),
        ("lazy-swap", 2.0, 2),
        ("swap", 2.0, 2),
    ]
    preserve, lazy, swap = rows
    assert preserve.latency_s_per_token is not None
    assert preserve.latency_s_per_token.mean == pytest.approx(0.0035)
    assert lazy.completed_per_s.mean == pytest.approx(1.6) and lazy.completed_per_s.sd == pytest.approx(
        0.1414, abs=1e-4
    )
    assert swap.num_runs_without_latency == 1
    assert swap.latency_s_per_token is not None and swap.latency_s_per_token.mean == 0.0100
    assert is_repeated(RUNS) and not is_repeated(RUNS[:2])


def test_the_table_gives_each_figure_against_the_best_other_in_sds_of_the_difference() -> None:
    table = repeats_table(RUNS)
    lazy = next(line for line in table.splitlines() if line.startswith("lazy-swap"))
    # done/s: 1.6 ± 0.141 against preserve's 1.6 ± 0: no difference. Latency: 0.0034 ± 0.00028
    # against preserve's 0.0035 ± 0.00071 (the best other): -0.0001 / 0.00076 = -0.1 sd.
    assert "1.600 ± 0.141 [1.500-1.700]" in lazy and "+0.0" in lazy
    assert "0.0034 ± 0.0003 [0.0032-0.0036]" in lazy and "-0.1" in lazy
    swap = next(line for line in table.splitlines() if line.startswith("swap"))
    # (1.1 - 1.6) / hypot(0.141, 0): preserve's 1.6 is the best other; its latency (one run, sd 0)
    # against lazy-swap's: (0.0100 - 0.0034) / 0.00028.
    assert "-3.5" in swap and "+23.3" in swap
    assert sweep_table(RUNS, 0.2).endswith(table)


def test_runs_that_each_completed_the_same_count_differ_by_at_least_one_completion() -> None:
    # 30 s windows: one completion is 0.033/s. 1.5 against 1.6 twice each is 3 completions apart.
    runs = [
        record(p, 2.0, done, 0.004) for p in ("a", "b") for done in ((1.5, 1.5) if p == "a" else (1.6, 1.6))
    ]
    line = next(line for line in repeats_table(runs).splitlines() if line.startswith("a "))
    assert "-3.0" in line and "inf" not in line
    assert "over repeated runs" not in sweep_table(RUNS[:2], 0.2)


def test_rates_and_ratios_take_the_mean_of_the_runs() -> None:
    runs = [
        record("vllm", 1.0, 0.9, 0.1),
        record("vllm", 1.0, 0.9, 0.3),  # mean 0.2: within the SLO
        record("vllm", 2.0, 1.8, 0.1),
        record("vllm", 2.0, 1.8, None),  # a run that completed nothing: not sustained
        record("ours", 1.0, 0.8, 0.05),
        record("ours", 1.0, 1.0, 0.15),
    ]
    assert max_sustainable_rates(runs, 0.2) == {"vllm": 1.0, "ours": 1.0}
    assert "ours                  1.00    1.00x     0.50x" in sweep_table(runs, 0.2)


class FakeLaunches:
    """Stands in for launch() and run_load(): records the order of stacks and runs."""

    def __init__(self) -> None:
        self.stacks: list[str] = []

    @contextlib.contextmanager
    def launch(
        self, executor_argv: Sequence[str], scheduler_argv: Sequence[str], log_dir: Path | None
    ) -> Iterator[Stack]:
        self.stacks.append(" ".join(scheduler_argv[:2]))
        yield Stack("127.0.0.1:1", "127.0.0.1:2", Path("."))

    async def run_load(
        self, target: Target, workload: WorkloadSpec, policy_label: str | None = None
    ) -> RunRecord:
        assert policy_label is not None
        return record(policy_label, workload.rate, 1.0, 0.01)


def test_a_repeated_sweep_rotates_the_policies_and_labels_each_run_by_its_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeLaunches()
    monkeypatch.setattr(sweep_module, "launch", fake.launch)
    monkeypatch.setattr(sweep_module, "run_load", fake.run_load)
    policies = ["preserve", "lazy-swap/no-opportunistic-swap"]
    records = sweep_module.sweep(
        WorkloadSpec(workload="mixed"),
        [1.0, 2.0],
        Target("unused"),
        stack=StackSpec(model="tiny"),
        policies=policies,
        repeats=2,
    )
    assert fake.stacks == [
        "--policy preserve",
        "--policy lazy-swap",
        "--policy lazy-swap",
        "--policy preserve",
    ]
    assert [(r.policy, r.rate) for r in records] == [
        ("preserve", 1.0),
        ("preserve", 2.0),
        ("lazy-swap/no-opportunistic-swap", 1.0),
        ("lazy-swap/no-opportunistic-swap", 2.0),
        ("lazy-swap/no-opportunistic-swap", 1.0),
        ("lazy-swap/no-opportunistic-swap", 2.0),
        ("preserve", 1.0),
        ("preserve", 2.0),
    ]
    with pytest.raises(ValueError, match="at least 1"):
        sweep_module.sweep(WorkloadSpec(workload="mixed"), [1.0], Target("unused"), repeats=0)
