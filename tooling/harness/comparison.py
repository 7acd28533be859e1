"""Two results records of the same run side by side: the real stack's and the simulator's.

Each metric is read from both RunRecords (tooling/run_record.py) and
given the ratio sim / real. The headline metrics are the ones a fidelity check must hold within a
tolerance: completed requests per second and the mean normalized latency.

    metric                            real         sim   sim/real
    completed requests/s            0.4333      0.4667      1.077   *
    ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from tooling.run_record import RunRecord

# {metric key: {"real": value, "sim": value, "ratio": sim / real}}, as the report's JSON holds it.
Comparison = dict[str, dict[str, float | None]]


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # the name in the comparison JSON
    label: str  # the row's name in the table, with its unit
    read: Callable[[RunRecord], float | None]
    is_headline: bool = False


def _latency(statistic: str) -> Callable[[RunRecord], float | None]:
    return lambda record: getattr(record.summary.normalized_latency_s_per_token, statistic)


METRICS = (
    Metric("completed_per_s", "completed requests/s", lambda r: r.summary.completed_per_s, is_headline=True),
    Metric("normalized_latency_mean", "normalized latency mean, s/token", _latency("mean"), is_headline=True),
    Metric("normalized_latency_p50", "normalized latency p50, s/token", _latency("p50")),
    Metric("normalized_latency_p90", "normalized latency p90, s/token", _latency("p90")),
    Metric("ttft_mean", "TTFT mean, s", lambda r: r.summary.ttft_s.mean),
    Metric("output_tokens_per_s", "output tokens/s", lambda r: r.summary.output_tokens_per_s),
    Metric("recompute_share", "recompute share of forward tokens", lambda r: r.server.recompute_share),
    Metric("swap_out_blocks", "swapped-out blocks", lambda r: r.server.swap_out_blocks),
    Metric("swap_in_blocks", "swapped-in blocks", lambda r: r.server.swap_in_blocks),
)
HEADLINE_KEYS = tuple(metric.key for metric in METRICS if metric.is_headline)


def ratio(real: float | None, sim: float | None) -> float | None:
    """sim / real; None when either is missing or real is 0 (but 1.0 when both are 0)."""
    if real is None or sim is None:
        return None
    if real == 0:
        return 1.0 if sim == 0 else None
    return sim / real


def compare(
    real: RunRecord, sim: RunRecord, extra: Mapping[str, tuple[float, float]] | None = None
) -> Comparison:
    """{metric key: {"real", "sim", "ratio"}} for every metric of METRICS, then for the `extra`
    (real, sim) pairs that the records do not carry (say, iteration counts)."""
    pairs = {metric.key: (metric.read(real), metric.read(sim)) for metric in METRICS}
    pairs.update(extra or {})
    return {key: {"real": a, "sim": b, "ratio": ratio(a, b)} for key, (a, b) in pairs.items()}


def outside_tolerance(comparison: Mapping[str, Mapping[str, float | None]], tolerance: float) -> list[str]:
    """The headline metrics whose ratio is missing or further than `tolerance` from 1."""
    return [
        key for key in HEADLINE_KEYS if (r := comparison[key]["ratio"]) is None or abs(r - 1.0) > tolerance
    ]


def format_table(comparison: Mapping[str, Mapping[str, float | None]], labels: Mapping[str, str]) -> str:
    """The comparison as a text table, headline rows marked with '*'."""
    names = {metric.key: metric.label for metric in METRICS} | dict(labels)
    lines = [f"{'metric':<36}{'real':>12}{'sim':>12}{'sim/real':>10}"]
    for key, row in comparison.items():
        mark = "  *" if key in HEADLINE_KEYS else ""
        lines.append(
            f"{names.get(key, key):<36}{_number(row['real']):>12}{_number(row['sim']):>12}"
            f"{_number(row['ratio'], '.3f'):>10}{mark}"
        )
    return "\n".join(lines)


def _number(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)
