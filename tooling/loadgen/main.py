"""``infercept-loadgen``: drive a live deployment with an augmented-LLM workload and write the
paper's metrics as a results JSON (metrics.results_record's schema).

    infercept-loadgen --target 127.0.0.1:50051 --workload mixed --rate 2 --duration 600 \\
        --warmup 60 --seed 0 --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infercept.async_client import AsyncClient
from infercept.auth import read_token
from infercept.errors import InferceptError
from scheduler_svc.sim.request_plan import RequestPlan
from tooling.cli import add_stack_flags
from tooling.launcher import LaunchError
from tooling.loadgen.metrics import results_record, server_delta, summarize
from tooling.loadgen.report import DEFAULT_SLO_S_PER_TOKEN, plot_latency, sweep_table
from tooling.loadgen.runner import RunResult, run_plans
from tooling.loadgen.sweep import sweep
from tooling.loadgen.trace_replay import TRACE_WORKLOAD, replay_assumptions, replay_trace
from tooling.loadgen.workloads import STATISTICS, WORKLOADS, Assumptions, generate_plans

SERVER_INFO_TIMEOUT_S = 30.0
AUTH_TOKEN_ENV = "INFERCEPT_AUTH_TOKEN"  # as the scheduler reads it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infercept-loadgen",
        description="Poisson arrivals of augmented requests (synthetic scripts with real tool waits) "
        "against an InferCept server; prints a summary and writes the results JSON.",
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="the server, HOST:PORT")
    p.add_argument("--ca", type=Path, help="PEM CA of the server's certificate: connect over TLS")
    p.add_argument(
        "--token-file", type=Path, help=f"the client token (first line; default: ${AUTH_TOKEN_ENV} if set)"
    )
    p.add_argument(
        "--workload",
        default="mixed",
        help=f"{TRACE_WORKLOAD} (the authors' trace, replayed as their harness does), one of "
        f"{', '.join(WORKLOADS)} (drawn), or a trace .json file (replayed like {TRACE_WORKLOAD})",
    )
    p.add_argument("--rate", type=float, default=1.0, help="arrival rate, requests/s")
    p.add_argument("--duration", type=float, default=60.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=0.0, help="arrivals before the window, s (not measured)")
    p.add_argument("--seed", type=int, default=0, help="seeds arrivals, requests and token ids (>= 0)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="where the results JSON goes")
    p.add_argument(
        "--max-model-len", type=int, help="longest context drawn (default: the server's maximum model length)"
    )
    p.add_argument("--policy-label", help="the results' policy (default: the server's policy)")
    p.add_argument(
        "--duration-scale",
        type=float,
        default=1.0,
        help="multiply every drawn tool-call duration (1: the paper's Table 1)",
    )
    add_statistics_flag(p)
    p.add_argument(
        "--count-unfinished",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="count requests unfinished at the window's end in the latency, with the output they had "
        "streamed (the paper's harness does; infercept-sim does by default)",
    )
    sweep = p.add_argument_group("sweep: several rates (and, with --launch, several policies)")
    sweep.add_argument("--rates", help="comma-separated rates, requests/s (instead of --rate)")
    sweep.add_argument("--policies", help="comma-separated policies; needs --launch (a fresh stack each)")
    sweep.add_argument(
        "--launch", action="store_true", help="start a local executor + scheduler instead of --target"
    )
    sweep.add_argument(
        "--slo", type=float, default=DEFAULT_SLO_S_PER_TOKEN, help="SLO, mean normalized s/token"
    )
    sweep.add_argument("--plot", type=Path, help="write the latency-against-rate plot (PNG) here")
    add_stack_flags(p.add_argument_group("--launch: the local stack"), default_model="tiny")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rates or args.policies or args.launch:
        return run_sweep(args)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.seed < 0:
        print(
            "infercept-loadgen: --rate and --duration must be > 0, --warmup and --seed >= 0", file=sys.stderr
        )
        return 2
    if args.workload not in (*WORKLOADS, TRACE_WORKLOAD) and not Path(args.workload).is_file():
        print(
            f"infercept-loadgen: {args.workload!r} is neither a workload "
            f"({', '.join((*WORKLOADS, TRACE_WORKLOAD))}) nor a trace file",
            file=sys.stderr,
        )
        return 2
    try:
        record = asyncio.run(run(args))
    except (InferceptError, ValueError, OSError) as error:
        print(f"infercept-loadgen: {error}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load described by the parsed flags; print the summary; return the results record."""
    root_certificates = args.ca.read_bytes() if args.ca else None
    token = read_token(args.token_file, AUTH_TOKEN_ENV)
    async with AsyncClient(args.target, root_certificates=root_certificates, token=token) as client:
        info = await client.server_info(timeout_s=SERVER_INFO_TIMEOUT_S)
        max_model_len = args.max_model_len or info.max_model_len
        plans, assumptions = make_plans(args, max_model_len)
        print(
            f"infercept-loadgen: {len(plans)} requests of {args.workload} at {args.rate:g}/s, "
            f"warm-up {args.warmup:g} s, window {args.duration:g} s, against {args.target} "
            f"({info.model}, policy {info.policy}, max length {max_model_len})",
            flush=True,
        )
        result = await run_plans(
            client,
            plans,
            warmup_s=args.warmup,
            duration_s=args.duration,
            vocab_size=info.vocab_size,
            seed=args.seed,
        )
    record = results_record(
        tool="loadgen",
        policy=args.policy_label or info.policy,
        workload=args.workload,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        summary=summarize(result.records, window_s=args.duration, count_unfinished=args.count_unfinished),
        server=server_delta(result.stats_before, result.stats_after),
        assumptions={
            **assumptions,
            "warmup_s": args.warmup,
            "vocab_size": info.vocab_size,
            "count_unfinished": args.count_unfinished,
        },
    )
    print(format_summary(record, result))
    return record


def add_statistics_flag(parser: argparse.ArgumentParser) -> None:
    """--statistics: what a drawn workload follows (the simulator shares it)."""
    parser.add_argument(
        "--statistics",
        choices=STATISTICS,
        default="trace",
        help="statistics of a drawn workload: trace (the authors' trace per augmentation, truncated "
        "as their harness does) or table1 (the paper's Table 1: raw data sets, not what they ran)",
    )


def make_plans(args: argparse.Namespace, max_model_len: int) -> tuple[list[RequestPlan], dict[str, Any]]:
    """The plans of warm-up and window, and the assumptions that shaped them."""
    span_s = args.warmup + args.duration
    defaults = Assumptions(statistics=args.statistics, duration_scale=args.duration_scale)
    run_assumptions = {
        "max_model_len": max_model_len,
        "prompt_and_returned_ids": "uniform in [0, vocab_size), seeded by (seed, request index)",
        "sampling": "greedy, ignore_eos, max_tokens = the plan's generated tokens",
    }
    if args.workload in WORKLOADS:
        plans = generate_plans(args.workload, args.rate, span_s, args.seed, max_model_len, defaults)
        return plans, {**defaults.as_dict(), **run_assumptions}
    path = None if args.workload == TRACE_WORKLOAD else args.workload
    plans = replay_trace(args.rate, span_s, args.seed, max_model_len, path, args.duration_scale)
    return plans, {**replay_assumptions(path, args.duration_scale), **run_assumptions}


def format_summary(record: dict[str, Any], result: RunResult) -> str:
    """One screen: what ran, what completed, latency, throughput, the server's work."""

    def stats(d: dict[str, float | None], unit: str) -> str:
        parts = [f"{key} {value:.4g}" if value is not None else f"{key} -" for key, value in d.items()]
        return "  ".join(parts) + f"  ({unit})"

    server = record["server"]
    errors = ", ".join(f"{count} {code}" for code, count in sorted(result.errors.items())) or "none"
    lines = [
        f"workload {record['workload']}  rate {record['rate']:g}/s  window {record['duration_s']:g} s  "
        f"policy {record['policy']}  seed {record['seed']}",
        f"requests   {record['submitted']} submitted, {record['completed']} completed "
        f"({record['completed_per_s']:.3g}/s), {result.num_unfinished} still running at the end "
        f"(cancelled), failed: {errors}; {result.num_warmup_requests} warm-up requests not measured",
        f"latency    {stats(record['normalized_latency_s_per_token'], 's/token, normalized')}",
        f"TTFT       {stats(record['ttft_s'], 's')}",
        f"throughput {record['output_tokens_per_s']:.1f} generated tokens/s",
        f"server     {server['forward_tokens']} forward tokens, {server['recomputed_tokens']} recomputed "
        f"({server['recompute_share']:.1%} of forward tokens; of forward time: "
        f"{_time_share(server.get('recompute_time_share'))}), swapped blocks {server['swap_out_blocks']} out / "
        f"{server['swap_in_blocks']} in, {server['paused_device_block_seconds']:.1f} paused "
        "device block-s",
    ]
    return "\n".join(lines)


def _time_share(value: float | None) -> str:
    return "not counted by this server" if value is None else f"{value:.1%}"


def run_sweep(args: argparse.Namespace) -> int:
    """Every policy x rate; one table, a JSON list, and the plot."""
    try:
        records = sweep(args, run)
    except (InferceptError, ValueError, OSError, LaunchError) as error:
        print(f"infercept-loadgen: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=2) + "\n")
    print("\n" + sweep_table(records, args.slo))
    print(f"\nresults: {args.out}")
    if args.plot:
        plot_latency(records, args.plot, args.slo)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
