"""Each policy's max sustainable rate: the highest request rate whose mean normalized latency
stays within the SLO (the paper's measure: 200 ms/token), searched on the simulator.

    infercept-sim --max-rate --policies lazy-swap,infercept,ideal --rates 3,4,5 \\
        --overlap-swaps --harness-timing --duration 600 --reference lazy-swap --jobs 2

Per policy, one simulation at a time (`RateSearch`); policies run side by side, up to `--jobs`
simulations at once (`search_max_rates`):

  1. the coarse grid (`--rates`), climbing, up to the first rate above the SLO: the queue only
     grows with the rate, so every higher one is above it too, and overloaded runs are the slow
     ones;
  2. bisection of the bracket [the highest rate within, the lowest above] while it is wider than
     `--rate-tolerance`, at most `--bisections` times (below the grid's lowest rate: halving it);
  3. the max rate read as the paper reads its figure (and paper_figure.py): linear interpolation
     between the two measured rates around the first crossing (`max_sustainable_rate`); a
     policy never above the SLO on the grid has its highest rate as a lower bound (">=").

The table gives each policy's rate, the reference policy's rate over it (`--reference`: how many
times that policy's rate the reference sustains), its fraction of `ideal`'s, when `ideal` is
among the policies, and the share of requests the measure left out at the highest rate run within
the SLO (no output by the window's end: the paper's harness skips them; past saturation a policy
that admits fewer can keep the mean of the others low). The JSON holds the same, with every run's
record.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from typing import Any

from scheduler_svc.policies.spec import PolicySpec
from tooling.run_record import RunRecord

# One simulation: the policy spec at a rate. Picklable (a module-level function, or a partial of
# one) where it runs in a worker process.
Runner = Callable[[float, PolicySpec], RunRecord]
IDEAL = "ideal"


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """How the rates are searched (the workload and the device come with the runner)."""

    grid: tuple[float, ...]  # the coarse grid, requests/s
    slo_s_per_token: float = 0.2  # mean normalized latency a sustainable rate stays within
    bisections: int = 2  # rates run between the grid's points, at most, per policy
    tolerance: float = 0.05  # requests/s: a bracket this narrow is not bisected further
    reference: str | None = None  # the policy label the others are compared with

    def __post_init__(self) -> None:
        if not self.grid or any(not rate > 0 for rate in self.grid):
            raise ValueError("the grid (--rates) needs rates > 0")
        if self.bisections < 0 or not self.tolerance > 0 or not self.slo_s_per_token > 0:
            raise ValueError("--bisections must be >= 0, --rate-tolerance and --slo > 0")


def max_sustainable_rate(points: Sequence[tuple[float, float]], slo: float) -> tuple[float | None, bool]:
    """The rate at which the latency curve `points` (rate, s/token, ascending) crosses `slo`, by
    linear interpolation between the two measured rates around the first crossing; (rate, True)
    if it never crosses (the highest measured rate, a lower bound); (None, False) if even the
    lowest rate is above it."""
    previous: tuple[float, float] | None = None
    for rate, latency in points:
        if latency > slo:
            if previous is None:
                return None, False
            (r0, l0), (r1, l1) = previous, (rate, latency)
            return r0 + (slo - l0) * (r1 - r0) / (l1 - l0), False
        previous = (rate, latency)
    return (previous[0], True) if previous else (None, False)


class RateSearch:
    """The search of one policy: which rate to run next, given the latencies seen so far."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.grid = tuple(sorted(set(spec.grid)))
        self.latencies: dict[float, float] = {}  # rate -> mean normalized latency (inf: none measured)

    def observe(self, rate: float, latency_s_per_token: float | None) -> None:
        """The run at `rate` gave `latency_s_per_token` (None: nothing measured, as if above)."""
        self.latencies[rate] = math.inf if latency_s_per_token is None else latency_s_per_token

    def next_rate(self) -> float | None:
        """The next rate to run, or None when the search is done."""
        above = [rate for rate, latency in self.latencies.items() if latency > self.spec.slo_s_per_token]
        if not above:
            return next((rate for rate in self.grid if rate not in self.latencies), None)
        high = min(above)
        low = max((r for r, lat in self.latencies.items() if r < high and r not in above), default=None)
        if self.num_bisections >= self.spec.bisections:
            return None
        if low is not None and high - low <= self.spec.tolerance:
            return None
        return round((low + high) / 2 if low is not None else high / 2, 4)

    @property
    def num_bisections(self) -> int:
        return sum(1 for rate in self.latencies if rate not in self.grid)

    @property
    def points(self) -> list[tuple[float, float]]:
        """(rate, s/token) measured, ascending."""
        return sorted(self.latencies.items())

    def result(self) -> tuple[float | None, bool]:
        """The max sustainable rate and whether it is only a lower bound (max_sustainable_rate)."""
        return max_sustainable_rate(self.points, self.spec.slo_s_per_token)


def search_max_rates(
    specs: Sequence[PolicySpec],
    search: SearchSpec,
    run: Runner,
    jobs: int,
    on_record: Callable[[list[RunRecord]], None] | None = None,
) -> list[RunRecord]:
    """Search every policy's max rate, up to `jobs` simulations at once (each in its own spawned
    process; in this one if `jobs` is 1). Returns every run's record, by policy then rate;
    `on_record` gets them so far after each run (to write them as they come)."""
    if jobs < 1:
        raise ValueError("--jobs must be >= 1")
    searches = [RateSearch(search) for _ in specs]
    done: list[RunRecord] = []

    def finished(index: int, rate: float, record: RunRecord) -> float | None:
        searches[index].observe(rate, record.mean_latency_s_per_token)
        done.append(record)
        next_rate = searches[index].next_rate()
        _progress(specs[index].label, rate, record.mean_latency_s_per_token, search, next_rate)
        if on_record is not None:
            on_record(_in_order(done, specs))
        return next_rate

    if jobs == 1:
        for index, spec in enumerate(specs):
            rate = searches[index].next_rate()
            while rate is not None:
                rate = finished(index, rate, run(rate, spec))
        return _in_order(done, specs)
    # Spawned, not forked: a clean interpreter per worker. The runs share nothing but arguments.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(specs)), mp_context=context) as pool:
        running: dict[concurrent.futures.Future[RunRecord], tuple[int, float]] = {}
        for index, spec in enumerate(specs):
            first = searches[index].next_rate()
            if first is not None:
                running[pool.submit(run, first, spec)] = (index, first)
        while running:
            ended, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in ended:
                index, rate = running.pop(future)
                next_rate = finished(index, rate, future.result())
                if next_rate is not None:
                    running[pool.submit(run, next_rate, specs[index])] = (index, next_rate)
    return _in_order(done, specs)


def _in_order(records: list[RunRecord], specs: Sequence[PolicySpec]) -> list[RunRecord]:
    labels = [spec.label for spec in specs]
    return sorted(records, key=lambda r: (labels.index(r.policy), r.rate))


def _progress(
    label: str, rate: float, latency: float | None, search: SearchSpec, next_rate: float | None
) -> None:
    verdict = "none measured" if latency is None else f"{latency:.4f} s/token"
    within = latency is not None and latency <= search.slo_s_per_token
    then = "done" if next_rate is None else f"next {next_rate:g}/s"
    print(
        f"max-rate: {label} at {rate:g}/s: {verdict} ({'within' if within else 'above'} the SLO); {then}",
        file=sys.stderr,
        flush=True,
    )


def summarize(
    records: Sequence[RunRecord], specs: Sequence[PolicySpec], search: SearchSpec
) -> dict[str, Any]:
    """Per policy: the rates run with their latencies, the max rate (and whether it is a lower
    bound), the reference's rate over it and its fraction of ideal's."""
    policies: dict[str, Any] = {}
    for spec in specs:
        rate_search = RateSearch(search)
        left_out: dict[float, float] = {}
        for record in records:
            if record.policy == spec.label:
                rate_search.observe(record.rate, record.mean_latency_s_per_token)
                left_out[record.rate] = left_out_share(record)
        rate, is_lower_bound = rate_search.result()
        within = [
            r
            for r, lat in rate_search.points
            if lat <= search.slo_s_per_token and (rate is None or r <= rate)
        ]
        policies[spec.label] = {
            "max_rate": rate,
            "max_rate_is_lower_bound": is_lower_bound,
            "points": [[r, None if math.isinf(lat) else lat] for r, lat in rate_search.points],
            "left_out_shares": [[r, left_out[r]] for r, _ in rate_search.points],
            # At the highest rate run within the SLO below the max: how much the measure skipped.
            "left_out_share_below_max": left_out[max(within)] if within else None,
        }
    reference = search.reference or specs[0].label
    if reference not in policies:
        raise ValueError(f"--reference {reference!r} is not among the policies")
    ideal = next((spec.label for spec in specs if spec.policy == IDEAL), None)
    for entry in policies.values():
        entry["reference_over_it"] = _ratio_of(policies[reference], entry)
        entry["of_ideal"] = _ratio_of(entry, policies[ideal]) if ideal else None
    return {
        "slo_s_per_token": search.slo_s_per_token,
        "grid": list(search.grid),
        "bisections": search.bisections,
        "tolerance": search.tolerance,
        "reference": reference,
        "ideal": ideal,
        "policies": policies,
    }


def left_out_share(record: RunRecord) -> float:
    """The share of a run's submitted requests its mean latency leaves out: those with no output
    by the window's end (the paper's harness skips them), and unfinished ones where those are not
    counted. Past saturation it grows with the rate while the mean of the others may not: a
    policy that admits fewer may then look sustainable."""
    summary = record.summary
    counted = summary.completed + summary.unfinished_counted
    return (summary.submitted - counted) / summary.submitted if summary.submitted else 0.0


def _ratio_of(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any] | None:
    """numerator's max rate over denominator's, and what it is where either is a lower bound:
    "exact", "at least" (only the numerator's is), "at most" (only the denominator's is) or
    "unknown" (both are); None without both rates."""
    top, bottom = numerator["max_rate"], denominator["max_rate"]
    if not (top and bottom):
        return None
    if numerator is denominator:
        return {"value": 1.0, "kind": "exact"}
    bounds = (numerator["max_rate_is_lower_bound"], denominator["max_rate_is_lower_bound"])
    kind = {(False, False): "exact", (True, False): "at least", (False, True): "at most"}.get(
        bounds, "unknown"
    )
    return {"value": top / bottom, "kind": kind}


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a table for people (markdown)."""
    reference = summary["reference"]
    grid = ",".join(f"{r:g}" for r in summary["grid"])
    lines = [
        f"max sustainable rate at {summary['slo_s_per_token'] * 1e3:g} ms/token (grid {grid}, up to "
        f"{summary['bisections']} bisections, linear interpolation; >=: never above on the grid):",
        f"| policy | max rate (req/s) | {reference} / it | it / ideal | left out below it "
        "| s/token at the rates run |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in summary["policies"].items():
        rate = entry["max_rate"]
        shown = "-" if rate is None else f"{'>= ' if entry['max_rate_is_lower_bound'] else ''}{rate:.2f}"
        if rate is None and entry["points"]:
            shown = f"< {entry['points'][0][0]:g}"
        points = ", ".join(f"{r:g}: {'-' if lat is None else f'{lat:.4f}'}" for r, lat in entry["points"])
        left_out = entry["left_out_share_below_max"]
        lines.append(
            f"| {label} | {shown} | {_ratio(entry['reference_over_it'])} | {_ratio(entry['of_ideal'])} | "
            f"{'-' if left_out is None else f'{left_out:.0%}'} | {points} |"
        )
    return "\n".join(lines)


def _ratio(ratio: dict[str, Any] | None) -> str:
    if ratio is None:
        return "-"
    prefix = {"exact": "", "at least": ">= ", "at most": "<= ", "unknown": "? "}[ratio["kind"]]
    return f"{prefix}{ratio['value']:.2f}"
