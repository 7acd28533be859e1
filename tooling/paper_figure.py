"""``make paper-figure``: the paper's GPT-J-6B figure, ours beside theirs.

    python -m tooling.paper_figure --jobs 2          # the defaults below
    python -m tooling.paper_figure --policies vllm/prefill-first,infercept --rates 1,2

Runs the simulator on the authors' trace (replayed as their harness does, 1800 s windows, no
warm-up, unfinished requests counted) with the `a100-40gb-gptj6b` profile for every policy at
the paper's rates and a few above; then, per policy, the max sustainable rate at 200 ms/token
(linear interpolation between the rates around the crossing, as the paper reads it) against the
paper's, each as a fraction of `ideal`'s; vLLM's recompute share of forward time beside the
paper's 37-40%; and the mean normalized latency at 1.0 req/s against the paper's 17-25 ms/token.
Writes the records and that summary as JSON, and the plot: our curves as lines, the paper's
points as markers of the same colour (one colour per policy, fixed by name).

Each policy climbs the rates in order and stops after the first rate whose mean normalized
latency is off the chart (above OFF_CHART_S_PER_TOKEN, 500 ms/token as the paper's axis): a
policy that has broken down at one rate is broken down at every higher one (the queue only grows),
and overloaded runs are the slow ones. The rates it skipped are listed in the JSON.

The paper's four baselines run on vLLM 0.2's iteration structure (`/prefill-first`, labelled
"(0.2)"); InferCept runs as its authors' scheduler selects (`infercept-authors`, its chunked fill,
with the call durations their scheduler reads from the trace: `estimator=oracle`, their waste
model takes each call's `api_time`), and beside it our reading of the paper (`infercept`);
vllm-apc and continuum join when the policy registry has them. As on the authors' engine, every policy's swaps
overlap the forward pass layer by layer (`--overlap-swaps`), and times are taken as their harness
takes them (`--harness-timing`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scheduler_svc.policies import POLICIES
from scheduler_svc.policies.spec import PolicySpec, parse_policy_spec
from svc_common.logs import configure_logging
from tooling import simulate as sim_main
from tooling.loadgen.trace_replay import TRACE_WORKLOAD
from tooling.loadgen.workload_spec import WorkloadSpec
from tooling.max_rate import max_sustainable_rate
from tooling.run_record import RunRecord
from tooling.simulate import SimSpec

SLO_S_PER_TOKEN = 0.2
OFF_CHART_S_PER_TOKEN = 0.5  # the paper's axis ends at 500 ms/token
PAPER_RATES = (1.0, 1.2, 1.4, 1.5, 1.8, 2.0, 2.5)
# Five rates keep the default sweep (every policy, climbing until off the chart) near 10 minutes
# on 2 cores; pass --rates for finer steps around a knee.
DEFAULT_RATES = (1.0, 1.5, 2.0, 2.5, 3.0)
# The paper's figure, read point by point (WORKLOADS.md): rate -> mean normalized latency, ms/token.
PAPER_LATENCY_MS: dict[str, dict[float, float]] = {
    "infercept": {1.0: 18, 1.2: 19, 1.5: 29, 1.8: 48, 2.0: 111, 2.5: 422},
    "vllm": {1.0: 24, 1.2: 35, 1.4: 90, 1.5: 119, 1.8: 464},
    "improved-discard": {1.0: 24, 1.2: 35, 1.5: 127, 1.8: 357, 2.0: 481},
    "preserve": {1.0: 17, 1.2: 19, 1.5: 27, 1.8: 211, 2.0: 352},
    "swap": {1.0: 25, 1.2: 36, 1.5: 145, 1.8: 348, 2.0: 475},
}
PAPER_MAX_RATE = {"vllm": 1.57, "improved-discard": 1.60, "swap": 1.58, "preserve": 1.78, "infercept": 2.14}
PAPER_RECOMPUTE_TIME_SHARE = (0.37, 0.40)  # vLLM's recomputation, share of forward time
# Done-when tolerances of issue 12.
MAX_RATE_TOLERANCE, LATENCY_AT_1_TOLERANCE = 0.15, 0.25

# One colour per policy, fixed by name (matplotlib's tab10), and one spare for a future policy.
POLICY_COLOURS = {
    "vllm": "#1f77b4",
    "improved-discard": "#ff7f0e",
    "swap": "#2ca02c",
    "preserve": "#d62728",
    "infercept": "#9467bd",
    "infercept-authors": "#17becf",
    "vllm-apc": "#8c564b",
    "continuum": "#e377c2",
    "ideal": "#7f7f7f",
    "lazy-swap": "#bcbd22",
}
SPARE_COLOUR = "#000000"
PAPER_BASELINES = ("vllm", "improved-discard", "preserve", "swap")  # vLLM 0.2 iterations
# InferCept as the authors ran it: their selection, knowing each call's duration (the trace's
# api_time in its sampling params); it stands for the paper's InferCept in the checks.
INFERCEPT_AS_RUN = "infercept-authors/estimator=oracle"
# Our policies that stand for one of the paper's, by registered name.
PAPER_NAMES = {"infercept-authors": "infercept"}
# Today's baselines, added when registered (engineer "prefix" builds them).
MODERN_POLICIES = ("vllm-apc", "continuum", "lazy-swap")  # lazy-swap: ours (engineer "policy")


@dataclasses.dataclass(frozen=True)
class FigureArgs:
    policies: tuple[str, ...]
    rates: tuple[float, ...]
    duration_s: float
    seed: int
    jobs: int
    profile: str
    out: Path
    plot: Path


def default_policies() -> tuple[str, ...]:
    """The paper's baselines on vLLM 0.2's iterations, infercept, today's baselines if the
    registry has them (checked at run time), and ideal."""
    specs = [f"{name}/prefill-first" for name in PAPER_BASELINES]
    specs += [INFERCEPT_AS_RUN, "infercept", *(name for name in MODERN_POLICIES if name in POLICIES), "ideal"]
    return tuple(specs)


def parse_args(argv: Sequence[str] | None = None) -> FigureArgs:
    p = argparse.ArgumentParser(
        prog="paper-figure",
        description="The paper's GPT-J-6B figure on the simulator, beside the paper's points.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--policies", default=",".join(default_policies()), help="policy specs, comma-separated")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in DEFAULT_RATES), help="requests/s")
    p.add_argument("--duration", type=float, default=1800.0, help="window, virtual s (the paper's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="simulations at once")
    p.add_argument("--profile", default="a100-40gb-gptj6b")
    p.add_argument("--out", type=Path, default=Path("results/paper_figure.json"))
    p.add_argument("--plot", type=Path, default=Path("results/paper_figure.png"))
    a = p.parse_args(argv)
    return FigureArgs(
        policies=tuple(s.strip() for s in a.policies.split(",") if s.strip()),
        rates=tuple(float(r) for r in a.rates.split(",")),
        duration_s=a.duration,
        seed=a.seed,
        jobs=a.jobs,
        profile=a.profile,
        out=a.out,
        plot=a.plot,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    workload = dataclasses.replace(
        sim_main.DEFAULT_WORKLOAD, workload=TRACE_WORKLOAD, duration_s=args.duration_s, seed=args.seed
    )
    # As on the authors' engine and harness: swaps overlap the forward pass, their timing.
    sim = sim_main.SimSpec(profile=args.profile, overlap_swaps=True, harness_timing=True)
    began = time.perf_counter()
    try:
        specs = [parse_policy_spec(text) for text in args.policies]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        records, skipped = climb_rates(workload, sim, specs, sorted(args.rates), args.jobs, args.out)
    except (OSError, ValueError) as error:
        print(f"paper-figure: {error}", file=sys.stderr)
        return 2
    summary = summarize_figure(records)
    summary["skipped_rates_off_chart"] = skipped
    summary["wall_s"] = round(time.perf_counter() - began, 1)
    written = [record.to_json() for record in records]
    args.out.write_text(json.dumps({"summary": summary, "records": written}, indent=2) + "\n")
    plot_figure(records, args.plot)
    print(format_summary(summary))
    print(f"\nresults: {args.out}\nplot: {args.plot}")
    return 0


def climb_rates(
    workload: WorkloadSpec, sim: SimSpec, specs: list[PolicySpec], rates: list[float], jobs: int, out: Path
) -> tuple[list[RunRecord], dict[str, list[float]]]:
    """Every policy at every rate in ascending order until one is off the chart; up to `jobs`
    simulations at once, each in its own (spawned) process. Returns the records (by policy, then
    rate) and the rates skipped per policy. The records so far are written to `out` as they come."""
    done: dict[tuple[int, int], RunRecord] = {}
    skipped: dict[str, list[float]] = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max(jobs, 1), mp_context=context) as pool:
        running = {
            pool.submit(sim_main.run_spec, workload.at_rate(rates[0]), sim, spec): (i, 0)
            for i, spec in enumerate(specs)
        }
        while running:
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                policy_index, rate_index = running.pop(future)
                record = done[(policy_index, rate_index)] = future.result()
                mean = record.mean_latency_s_per_token
                off_chart = mean is None or mean > OFF_CHART_S_PER_TOKEN
                if rate_index + 1 < len(rates) and not off_chart:
                    spec = specs[policy_index]
                    next_workload = workload.at_rate(rates[rate_index + 1])
                    running[pool.submit(sim_main.run_spec, next_workload, sim, spec)] = (
                        policy_index,
                        rate_index + 1,
                    )
                elif off_chart:
                    skipped[specs[policy_index].label] = rates[rate_index + 1 :]
            records = [done[key].to_json() for key in sorted(done)]
            out.write_text(json.dumps({"records": records}, indent=2) + "\n")
    return [done[key] for key in sorted(done)], skipped


# ----- reading the sweep -----


def base_policy(label: str) -> str:
    """The registered policy of a spec label ("vllm/prefill-first" -> "vllm")."""
    return label.split("/", 1)[0]


def paper_name(label: str) -> str:
    """The paper's policy a spec label stands for ("infercept-authors/..." -> "infercept")."""
    return PAPER_NAMES.get(base_policy(label), base_policy(label))


def display_label(label: str) -> str:
    """How a spec reads in the figure and the table: vLLM 0.2's iterations as "(0.2)"."""
    name, *options = label.split("/")
    rest = [o for o in options if o != "prefill-first"]
    return "/".join([name, *rest]) + (" (0.2)" if "prefill-first" in options else "")


def colour(label: str) -> str:
    return POLICY_COLOURS.get(base_policy(label), SPARE_COLOUR)


def latency_curve(records: Sequence[RunRecord], label: str) -> list[tuple[float, float]]:
    """(rate, mean normalized latency s/token) of one policy, by rate; rates without a value
    (nothing measured) are left out."""
    points = []
    for record in records:
        mean = record.mean_latency_s_per_token
        if record.policy == label and mean is not None:
            points.append((record.rate, mean))
    return sorted(points)


def summarize_figure(records: Sequence[RunRecord]) -> dict[str, Any]:
    """Per policy: our max sustainable rate (and whether it is a lower bound), the paper's, both
    as fractions of ideal's, our latency at 1.0 req/s against the paper's; vLLM's recompute
    shares; and issue 12's done-when checks."""
    labels = list(dict.fromkeys(r.policy for r in records))
    rates = {label: max_sustainable_rate(latency_curve(records, label), SLO_S_PER_TOKEN) for label in labels}
    ideal_rate = next((rates[label][0] for label in labels if base_policy(label) == "ideal"), None)
    policies: dict[str, Any] = {}
    for label in labels:
        rate, is_lower_bound = rates[label]
        paper = PAPER_MAX_RATE.get(paper_name(label))
        at_1 = dict(latency_curve(records, label)).get(1.0)
        policies[label] = {
            "display": display_label(label),
            "max_rate": rate,
            "max_rate_is_lower_bound": is_lower_bound,
            "paper_max_rate": paper,
            "ratio_to_paper": rate / paper if rate and paper else None,
            "fraction_of_ideal": rate / ideal_rate if rate and ideal_rate else None,
            "latency_at_1_ms": None if at_1 is None else at_1 * 1e3,
            "paper_latency_at_1_ms": PAPER_LATENCY_MS.get(paper_name(label), {}).get(1.0),
        }
    return {
        "slo_s_per_token": SLO_S_PER_TOKEN,
        "policies": policies,
        "vllm_recompute": _vllm_recompute(records, labels),
        "checks": _checks(policies),
    }


def _vllm_recompute(records: Sequence[RunRecord], labels: list[str]) -> dict[str, Any]:
    """vLLM's recompute shares (of forward tokens and of forward time) at every rate."""
    label = next((label for label in labels if base_policy(label) == "vllm"), None)
    by_rate = {
        f"{r.rate:g}": {
            "of_tokens": r.server.recompute_share,
            "of_forward_time": r.server.recompute_time_share,
        }
        for r in records
        if r.policy == label
    }
    return {"policy": label, "paper_of_forward_time": list(PAPER_RECOMPUTE_TIME_SHARE), "by_rate": by_rate}


def _checks(policies: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's done-when: each of the paper's five within 15% of its max rate, the same
    order, the latency at 1.0 req/s within 25% of the paper's (17-25 ms/token: each policy
    against its own point)."""
    paper_five: dict[str, Any] = {}
    for label, v in policies.items():  # the first label standing for each of the paper's
        if v["paper_max_rate"] is not None:
            paper_five.setdefault(paper_name(label), v)
    within = {
        name: v["ratio_to_paper"] is not None and abs(v["ratio_to_paper"] - 1) <= MAX_RATE_TOLERANCE
        for name, v in paper_five.items()
    }
    ours = sorted(paper_five, key=lambda n: paper_five[n]["max_rate"] or 0.0)
    theirs = sorted(paper_five, key=lambda n: PAPER_MAX_RATE[n])
    # Each policy against its own point at 1.0 req/s (the paper's 17-25 ms/token spans them).
    at_1 = {
        name: v["latency_at_1_ms"] is not None
        and v["paper_latency_at_1_ms"] is not None
        and abs(v["latency_at_1_ms"] / v["paper_latency_at_1_ms"] - 1) <= LATENCY_AT_1_TOLERANCE
        for name, v in paper_five.items()
    }
    return {
        "max_rate_within_15pct": within,
        "order_ours": ours,
        "order_paper": theirs,
        "order_matches": ours == theirs,
        "latency_at_1_within_25pct": at_1,
    }


# ----- people -----


def format_summary(summary: dict[str, Any]) -> str:
    """The table of the README: paper against ours, per policy; then vLLM's recompute shares and
    the done-when checks."""
    lines = [
        f"max sustainable rate at {summary['slo_s_per_token'] * 1e3:g} ms/token (linear interpolation):",
        "| policy | ours (req/s) | paper (req/s) | ours / paper | ours / ideal | paper / ideal (ours) "
        "| ms/token at 1.0: ours | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    policies = summary["policies"]
    ideal = next((v["max_rate"] for k, v in policies.items() if base_policy(k) == "ideal"), None)
    for v in policies.values():
        rate = (
            "-"
            if v["max_rate"] is None
            else f"{'>=' if v['max_rate_is_lower_bound'] else ''}{v['max_rate']:.2f}"
        )
        paper = "-" if v["paper_max_rate"] is None else f"{v['paper_max_rate']:.2f}"
        paper_of_ideal = f"{v['paper_max_rate'] / ideal:.2f}" if v["paper_max_rate"] and ideal else "-"
        lines.append(
            f"| {v['display']} | {rate} | {paper} | {_fmt(v['ratio_to_paper'])} | "
            f"{_fmt(v['fraction_of_ideal'])} | {paper_of_ideal} | {_fmt(v['latency_at_1_ms'], '.1f')} | "
            f"{_fmt(v['paper_latency_at_1_ms'], 'g')} |"
        )
    recompute = summary["vllm_recompute"]
    lines.append(
        f"\n{recompute['policy']}: recompute share by rate (of forward tokens / of forward time; the paper: "
        f"{recompute['paper_of_forward_time'][0]:.0%}-{recompute['paper_of_forward_time'][1]:.0%} of time)"
    )
    for rate, shares in recompute["by_rate"].items():
        time_share = shares["of_forward_time"]
        lines.append(
            f"  {rate:>5} req/s: {shares['of_tokens']:.1%} / {'-' if time_share is None else f'{time_share:.1%}'}"
        )
    checks = summary["checks"]
    lines.append("\nissue 12 done-when:")
    lines.append(f"  max rate within 15% of the paper's: {checks['max_rate_within_15pct']}")
    lines.append(
        f"  order matches: {checks['order_matches']} (ours {checks['order_ours']}, paper {checks['order_paper']})"
    )
    lines.append(
        f"  latency at 1.0 req/s within 25% of 17-25 ms/token: {checks['latency_at_1_within_25pct']}"
    )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def plot_figure(records: Sequence[RunRecord], path: Path) -> None:
    """Mean normalized latency (ms/token) against rate: ours as lines, the paper's as markers of
    the same colour; the axis stops at 500 ms/token like the paper's ("off the chart" above)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    labels = list(dict.fromkeys(r.policy for r in records))
    for label in labels:
        points = latency_curve(records, label)
        axes.plot(
            [r for r, _ in points],
            [lat * 1e3 for _, lat in points],
            color=colour(label),
            label=display_label(label),
        )
        paper = PAPER_LATENCY_MS.get(paper_name(label))
        if paper and paper_name(label) not in {paper_name(other) for other in labels[: labels.index(label)]}:
            axes.plot(
                list(paper), list(paper.values()), linestyle="none", marker="o", color=colour(label),
                markerfacecolor="none", label=f"{paper_name(label)} (paper)",
            )  # fmt: skip
    axes.axhline(SLO_S_PER_TOKEN * 1e3, color="black", linestyle=":", linewidth=1, label="200 ms/token")
    axes.set_ylim(0, 500)
    axes.set_xlabel("request rate (req/s)")
    axes.set_ylabel("mean normalized latency (ms/token)")
    axes.set_title("GPT-J-6B on an A100 40 GB, the authors' trace: simulator (lines), paper (circles)")
    axes.title.set_fontsize(9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
