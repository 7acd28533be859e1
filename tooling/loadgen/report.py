"""Sweep results for people: a table, each policy's max sustainable rate, and the paper's plot.

Records are RunRecords (tooling/run_record.py), from the load generator or the simulator alike.
Where a (policy, rate) ran more than once (repeats), the rates, the ratios and the plot take the
mean of its runs, and the table ends with their spread (repeats.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tooling.loadgen.repeats import RepeatedRuns, is_repeated, repeated_runs, repeats_table
from tooling.run_record import RunRecord

# Mean normalized latency a rate must stay within to be "sustainable". About 5-7x the unloaded
# value of GPT-J-6B on an A100 (the paper's setup); set it for your model and hardware.
DEFAULT_SLO_S_PER_TOKEN = 0.2


def max_sustainable_rates(records: Sequence[RunRecord], slo_s_per_token: float) -> dict[str, float | None]:
    """Per policy, the highest rate whose mean normalized latency (the mean of its runs) is
    within the SLO, provided every lower measured rate is within it too (None if even the lowest
    is not; a rate where a run completed nothing is not)."""
    best: dict[str, float | None] = {}
    rows = repeated_runs(records)
    for policy in _policies(records):
        best[policy] = None
        for row in (r for r in rows if r.policy == policy):
            latency = _mean_latency(row)
            if latency is None or latency > slo_s_per_token:
                break
            best[policy] = row.rate
    return best


def sweep_table(records: Sequence[RunRecord], slo_s_per_token: float) -> str:
    """Policy x rate: mean and p90 normalized latency, completed/s, recompute share (of forward
    tokens, then of forward time where the server counts it); each policy
    against vllm at the same rate; then each policy's max sustainable rate and its ratio to vllm's."""
    width = max([18, *(len(p) for p in _policies(records))])
    lines = [
        f"{'policy':<{width}} {'rate/s':>7} {'norm lat mean':>14} {'p90':>8} {'done/s':>8} {'recompute':>10} "
        f"{'of time':>8} {'swap out':>9} {'completed':>10}"
    ]
    for policy in _policies(records):
        for r in sorted(_of(records, policy), key=lambda r: r.rate):
            lat, summary = r.summary.normalized_latency_s_per_token, r.summary
            lines.append(
                f"{policy:<{width}} {r.rate:>7.2f} {_fmt(lat.mean):>14} {_fmt(lat.p90):>8} "
                f"{summary.completed_per_s:>8.3f} {r.server.recompute_share:>10.1%} "
                f"{_share(r.server.recompute_time_share):>8} "
                f"{r.server.swap_out_blocks:>9} {summary.completed:>4}/{summary.submitted:<5}"
            )
    lines += _against_vllm(repeated_runs(records), width)
    rates = max_sustainable_rates(records, slo_s_per_token)
    baseline = rates.get("vllm")
    lines.append(f"\nmax sustainable rate (mean normalized latency <= {slo_s_per_token:g} s/token):")
    for policy, rate in rates.items():
        ratio = f"  ({rate / baseline:.2f}x vllm)" if rate and baseline else ""
        lines.append(f"  {policy:<{width}} {'none' if rate is None else f'{rate:g}/s'}{ratio}")
    if is_repeated(records):
        lines.append("\n" + repeats_table(records))
    return "\n".join(lines)


def _against_vllm(rows: Sequence[RepeatedRuns], width: int) -> list[str]:
    """Completed/s and mean normalized latency of each policy as multiples of vllm's at the same
    rate, means of the runs (nothing if vllm was not run)."""
    vllm = {r.rate: r for r in rows if r.policy == "vllm"}
    others = [r for r in rows if r.policy != "vllm" and r.rate in vllm]
    if not others:
        return []
    lines = [
        f"\nagainst vllm at the same rate:\n{'policy':<{width}} {'rate/s':>7} {'done/s':>8} {'norm lat':>9}"
    ]
    order = list(dict.fromkeys(r.policy for r in rows))
    for r in sorted(others, key=lambda r: (r.rate, order.index(r.policy))):
        base = vllm[r.rate]
        done = _ratio(r.completed_per_s.mean, base.completed_per_s.mean)
        latency = _ratio(_mean_latency(r), _mean_latency(base))
        lines.append(f"{r.policy:<{width}} {r.rate:>7.2f} {done:>8} {latency:>9}")
    return lines


def _mean_latency(row: RepeatedRuns) -> float | None:
    """The mean of the runs' mean normalized latencies; None if a run had none."""
    if row.latency_s_per_token is None or row.num_runs_without_latency:
        return None
    return row.latency_s_per_token.mean


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_sweep(records: Sequence[RunRecord], out: Path, slo_s_per_token: float, plot: Path | None) -> None:
    """The sweep's table, where its results JSON is (`out`), and its plot when asked (`plot`)."""
    print("\n" + sweep_table(records, slo_s_per_token))
    print(f"\nresults: {out}")
    if plot:
        plot_latency(records, plot, slo_s_per_token)
        print(f"plot: {plot}")


def plot_latency(records: Sequence[RunRecord], path: Path, slo_s_per_token: float) -> None:
    """Mean normalized latency against request rate, one line per policy (the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    rows = repeated_runs(records)
    for policy in _policies(records):
        points = [(r.rate, latency) for r in rows if r.policy == policy and (latency := _mean_latency(r))]
        axes.plot([rate for rate, _ in points], [latency for _, latency in points], marker="o", label=policy)
    axes.axhline(
        slo_s_per_token, color="grey", linestyle="--", linewidth=1, label=f"SLO {slo_s_per_token:g} s/token"
    )
    first = records[0]
    axes.set_title(f"{first.workload} workload ({first.tool})")
    axes.set_xlabel("request rate (requests/s)")
    axes.set_ylabel("mean normalized latency (s/token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _policies(records: Sequence[RunRecord]) -> list[str]:
    return list(dict.fromkeys(r.policy for r in records))


def _of(records: Sequence[RunRecord], policy: str) -> list[RunRecord]:
    return [r for r in records if r.policy == policy]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
