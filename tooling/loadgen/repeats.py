"""Repeated runs of a sweep: the order they run in, and their figures as mean and spread.

On a shared machine one run of a real stack is noisy (a 30 s window of the CPU demo's load
varies by 0.002 s/token between runs of one policy). A sweep with repeats runs every policy once
per round, the policies' order rotated from round to round (so none always runs first, or just
after the same neighbour), and reports each (policy, rate) as the mean, the sample standard
deviation and the range of its runs: whether one policy matches another is judged against that.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence

from tooling.run_record import RunRecord


def round_orders(policies: Sequence[str], repeats: int) -> list[list[str]]:
    """The policies' order in each of `repeats` rounds: round k starts at the k-th policy."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n = len(policies)
    return [[*policies[k % n :], *policies[: k % n]] for k in range(repeats)] if n else []


@dataclasses.dataclass(frozen=True)
class Spread:
    """One figure over repeated runs."""

    mean: float
    sd: float  # sample standard deviation; 0 for a single run
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        assert values, "a spread of no values"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), sd, min(values), max(values))

    def format(self, digits: int) -> str:
        """`mean ± sd [low-high]`, each with `digits` decimals."""
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


@dataclasses.dataclass(frozen=True)
class RepeatedRuns:
    """The runs of one policy at one rate."""

    policy: str
    rate: float
    num_runs: int
    completed_per_s: Spread
    # Mean normalized latency (s/token) over the runs that completed requests; None if none did.
    latency_s_per_token: Spread | None
    num_runs_without_latency: int  # runs that completed nothing (no latency to average)


def repeated_runs(records: Sequence[RunRecord]) -> list[RepeatedRuns]:
    """Every (policy, rate) of `records`, policies in their first appearance's order, rates
    ascending, each with the spread of its runs."""
    groups: dict[tuple[str, float], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.policy, record.rate), []).append(record)
    order = list(dict.fromkeys(r.policy for r in records))
    result = []
    for (policy, rate), runs in sorted(
        groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1])
    ):
        latencies = [lat for r in runs if (lat := r.mean_latency_s_per_token) is not None]
        result.append(
            RepeatedRuns(
                policy,
                rate,
                len(runs),
                Spread.of([r.summary.completed_per_s for r in runs]),
                Spread.of(latencies) if latencies else None,
                len(runs) - len(latencies),
            )
        )
    return result


def is_repeated(records: Sequence[RunRecord]) -> bool:
    """Whether some (policy, rate) ran more than once."""
    keys = [(r.policy, r.rate) for r in records]
    return len(set(keys)) < len(keys)


def repeats_table(records: Sequence[RunRecord]) -> str:
    """Per (policy, rate): runs, completed/s and mean normalized latency as mean ± sd [range],
    and each figure's distance from the best other policy's mean at that rate in units of the
    two spreads together (sqrt(sd1² + sd2²)): within ±1, the two are not told apart by these runs.
    Completions are counted whole: the unit for completed/s is at least one completion in the
    window (runs that each completed the same count have no spread, yet differ by one request)."""
    rows = repeated_runs(records)
    one_completion_per_s = 1 / max(r.duration_s for r in records) if records else 0.0
    width = max([18, *(len(r.policy) for r in rows)])
    lines = [
        f"over repeated runs (mean ± sd [range]; vs best other: distance from the best other policy's "
        f"mean, in sds of the difference):\n"
        f"{'policy':<{width}} {'rate/s':>7} {'runs':>4}  {'done/s':<30} {'vs best':>8}  "
        f"{'norm lat mean s/token':<36} {'vs best':>8}"
    ]
    for row in rows:
        peers = [r for r in rows if r.rate == row.rate and r.policy != row.policy]
        done_gap = _gap(row.completed_per_s, [p.completed_per_s for p in peers], max, one_completion_per_s)
        latency = row.latency_s_per_token
        latency_gap = (
            _gap(latency, [p.latency_s_per_token for p in peers if p.latency_s_per_token], min)
            if latency
            else "-"
        )
        lines.append(
            f"{row.policy:<{width}} {row.rate:>7.2f} {row.num_runs:>4}  "
            f"{row.completed_per_s.format(3):<30} {done_gap:>8}  "
            f"{latency.format(4) if latency else '-':<36} {latency_gap:>8}"
        )
    return "\n".join(lines)


def _gap(
    own: Spread, others: Sequence[Spread], best: Callable[[Sequence[float]], float], least_unit: float = 0.0
) -> str:
    """(own mean - the best other mean) / max(sqrt(own sd² + that other's sd²), `least_unit`),
    signed; '-' with no other, 'inf' where there is no unit (no spread, no least unit)."""
    if not others:
        return "-"
    leader = next(o for o in others if o.mean == best([o.mean for o in others]))
    difference = own.mean - leader.mean
    scale = max(math.hypot(own.sd, leader.sd), least_unit)
    if scale == 0:
        return "0.0" if difference == 0 else ("+inf" if difference > 0 else "-inf")
    return f"{difference / scale:+.1f}"
