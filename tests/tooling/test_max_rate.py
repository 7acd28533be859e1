"""The max-rate search on fabricated latency curves: which rates it runs, what it reads, the
ratios to the reference and to ideal; and one tiny search through infercept-sim."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler_svc.policies.spec import PolicySpec, parse_policy_spec
from tests.sim.helpers import tiny_profile
from tooling.max_rate import (
    RateSearch,
    SearchSpec,
    format_table,
    max_sustainable_rate,
    search_max_rates,
    summarize,
)
from tooling.run_record import Distribution, RunRecord, ServerDelta, Summary
from tooling.simulate import main as sim_main

Curve = Callable[[float], float | None]


def knee_at(rate: float) -> Curve:
    """Flat at 20 ms/token, then steeply up from `rate`: it crosses 0.2 s/token at rate + 0.1."""
    return lambda r: 0.02 + 1.8 * max(r - rate, 0.0)


def run_search(spec: SearchSpec, curve: Curve) -> tuple[list[float], RateSearch]:
    """The rates the search runs on `curve`, in order, and the search."""
    search, order = RateSearch(spec), []
    while (rate := search.next_rate()) is not None:
        order.append(rate)
        search.observe(rate, curve(rate))
    return order, search


def record(policy: str, rate: float, latency_s: float | None, num_with_output: int = 10) -> RunRecord:
    """A run of 10 submitted requests, `num_with_output` of them counted (completed)."""
    summary = Summary(10, num_with_output, 1.0, 0, Distribution(mean=latency_s), Distribution(), 1.0)
    server = ServerDelta(100, 70, 0.7, 0.5, 0, 0, 0.0)
    return RunRecord("sim", policy, "trace", rate, 60.0, 0, summary, server, {})


def test_the_max_rate_is_interpolated_where_the_curve_crosses_the_slo() -> None:
    assert max_sustainable_rate([(1.0, 0.1), (2.0, 0.3)], 0.2) == (pytest.approx(1.5), False)
    assert max_sustainable_rate([(1.0, 0.1), (2.0, 0.15)], 0.2) == (2.0, True)  # a lower bound
    assert max_sustainable_rate([(1.0, 0.3), (2.0, 0.5)], 0.2) == (None, False)
    # The first crossing counts, even if a later rate dips below again.
    assert max_sustainable_rate([(1.0, 0.1), (2.0, 0.3), (3.0, 0.1)], 0.2)[0] == pytest.approx(1.5)


def test_the_grid_is_climbed_to_the_first_rate_above_then_the_bracket_is_bisected() -> None:
    order, search = run_search(SearchSpec(grid=(5.0, 1.0, 2.0, 3.0, 4.0), bisections=3), knee_at(2.6))
    # 1, 2, 3 on the grid (3 is above: 4 and 5 are not run), then 2.5, 2.75, 2.625.
    assert order == [1.0, 2.0, 3.0, 2.5, 2.75, 2.625]
    rate, is_lower_bound = search.result()
    assert not is_lower_bound and rate == pytest.approx(2.7, abs=0.05)


def test_bisection_stops_at_the_tolerance_and_at_the_most_bisections() -> None:
    order, _ = run_search(SearchSpec(grid=(1.0, 2.0, 3.0), bisections=10, tolerance=0.3), knee_at(2.6))
    assert order == [1.0, 2.0, 3.0, 2.5, 2.75]  # the bracket 2.5-2.75 is within 0.3
    order, _ = run_search(SearchSpec(grid=(1.0, 2.0, 3.0), bisections=0), knee_at(2.6))
    assert order == [1.0, 2.0, 3.0]


def test_a_policy_above_at_the_lowest_rate_is_searched_below_it_and_one_never_above_is_a_lower_bound() -> (
    None
):
    order, search = run_search(SearchSpec(grid=(2.0, 3.0), bisections=2), knee_at(0.6))
    assert order == [2.0, 1.0, 0.5]  # halving below the grid
    # Read on the line between 0.5 (0.02) and 1.0 (0.74 s/token): a bracket this wide reads low.
    assert search.result()[0] == pytest.approx(0.625)
    order, search = run_search(SearchSpec(grid=(1.0, 2.0), bisections=2), knee_at(10.0))
    assert order == [1.0, 2.0] and search.result() == (2.0, True)


def test_a_run_that_measured_nothing_counts_as_above_the_slo() -> None:
    order, search = run_search(SearchSpec(grid=(1.0, 2.0), bisections=1), lambda r: 0.05 if r < 2 else None)
    assert order == [1.0, 2.0, 1.5]
    assert search.points == [(1.0, 0.05), (1.5, 0.05), (2.0, float("inf"))]
    assert search.result() == (1.5, False)  # between 1.5 (within) and 2 (nothing): no line to draw


def test_the_search_runs_every_policy_and_compares_it_with_the_reference_and_ideal() -> None:
    knees = {"lazy-swap": 4.0, "vllm/prefill-first": 2.0, "ideal": 4.4, "preserve": 10.0}
    specs = [parse_policy_spec(label) for label in knees]
    runs: list[tuple[str, float]] = []

    def run(rate: float, spec: PolicySpec) -> RunRecord:
        runs.append((spec.label, rate))
        # Past 2 req/s lazy-swap leaves some requests without output (the measure skips them).
        num_with_output = 10 - int(rate > 2 and spec.label == "lazy-swap") * 3
        return record(spec.label, rate, knee_at(knees[spec.label])(rate), num_with_output)

    search = SearchSpec(grid=(1.0, 3.0, 5.0), bisections=3, tolerance=0.1, reference="lazy-swap")
    seen: list[int] = []
    records = search_max_rates(specs, search, run, jobs=1, on_record=lambda so_far: seen.append(len(so_far)))
    assert seen == list(range(1, len(runs) + 1))  # told after every run
    assert [(r.policy, r.rate) for r in records] == sorted(
        runs, key=lambda pr: (list(knees).index(pr[0]), pr[1])
    )
    summary = summarize(records, specs, search)
    policies = summary["policies"]
    assert policies["lazy-swap"]["max_rate"] == pytest.approx(4.1, abs=0.1)
    assert policies["vllm/prefill-first"]["max_rate"] == pytest.approx(2.1, abs=0.1)
    assert policies["preserve"]["max_rate_is_lower_bound"] and policies["preserve"]["max_rate"] == 5.0
    ratio = policies["vllm/prefill-first"]["reference_over_it"]
    assert ratio["kind"] == "exact" and ratio["value"] == pytest.approx(4.1 / 2.1, rel=0.05)
    assert policies["lazy-swap"]["of_ideal"]["value"] == pytest.approx(4.1 / 4.5, rel=0.05)
    assert policies["preserve"]["reference_over_it"]["kind"] == "at most"  # preserve's is only a lower bound
    assert policies["preserve"]["of_ideal"]["kind"] == "at least"
    assert policies["lazy-swap"]["reference_over_it"] == {"value": 1.0, "kind": "exact"}
    # At the highest rate within the SLO below its max (about 4), 3 of 10 had no output.
    assert policies["lazy-swap"]["left_out_share_below_max"] == pytest.approx(0.3)
    assert policies["ideal"]["left_out_share_below_max"] == 0.0
    table = format_table(summary)
    assert "| preserve | >= 5.00 | <= 0.82 | >= 1.11 | 0% |" in table
    assert "| lazy-swap | 4.10 | 1.00 | 0.91 | 30% |" in table
    assert table.splitlines()[1].startswith(
        "| policy | max rate (req/s) | lazy-swap / it | it / ideal | left out"
    )


def test_a_reference_not_among_the_policies_is_refused() -> None:
    with pytest.raises(ValueError, match="--reference 'nope'"):
        summarize([], [parse_policy_spec("vllm")], SearchSpec(grid=(1.0,), reference="nope"))
    with pytest.raises(ValueError, match="grid"):
        SearchSpec(grid=())


def test_infercept_sim_searches_the_max_rate_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "tiny.json"
    tiny_profile(num_device_blocks=512, block_size_tokens=16, max_model_len=2048).save(profile)
    out = tmp_path / "max_rate.json"
    argv = ["--max-rate", "--profile", str(profile), "--workload", "math", "--duration", "10"]
    argv += [
        "--rates",
        "1,200",
        "--slo",
        "0.02",
        "--bisections",
        "1",
        "--policies",
        "preserve,ideal",
        "--jobs",
        "1",
    ]
    assert sim_main([*argv, "--reference", "ideal", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    summary = results["summary"]
    assert summary["reference"] == "ideal" and summary["setup"]["sim"]["profile"] == str(profile)
    # Each policy: 1 req/s within 20 ms/token, 200 req/s far above, one bisection between.
    assert [len(p["points"]) for p in summary["policies"].values()] == [3, 3]
    assert len(results["records"]) == 6
    assert "| preserve |" in capsys.readouterr().out
    assert sim_main([*argv, "--reference", "nope", "--out", str(out)]) == 2
