"""``infercept-sim``: the scheduler core under a workload, on a virtual executor and clock.

    infercept-sim --workload mixed --rate 2 --duration 1800 --policy preserve
    infercept-sim --workload mixed --rates 1,2,3,4 --policies vllm,preserve --out sweep.json
    infercept-sim --save-profile gpu.json --executor 127.0.0.1:50061   # then --profile gpu.json

Plans, metrics, the results schema and the sweep table are the load generator's
(tooling.loadgen), so a simulated record compares field for field with a measured one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from infercept.auth import read_token
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.main import EXECUTOR_TOKEN_ENV
from scheduler_svc.policies import POLICIES
from scheduler_svc.policies.spec import PolicySpec, parse_policy_spec
from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.sim.driver import SimulationResult, simulate
from scheduler_svc.sim.profiles import PROFILES, load_profile
from scheduler_svc.sim.request_plan import RequestPlan
from svc_common.logs import configure_logging
from tooling.harness.executor_profile import fetch_profile
from tooling.loadgen.main import add_statistics_flag, make_plans
from tooling.loadgen.metrics import results_record, server_delta, summarize
from tooling.loadgen.report import DEFAULT_SLO_S_PER_TOKEN, plot_latency, sweep_table
from tooling.loadgen.trace_replay import TRACE_WORKLOAD
from tooling.loadgen.workloads import WORKLOADS

# What the simulator does differently from the load generator's requests.
SIM_ASSUMPTIONS = {
    "prompt_and_returned_ids": "all 1 (the virtual executor computes no values), but each prompt's "
    "first token, unique to its request (prefix caching finds only a request's own earlier turns)",
    "sampling": "token 1 every step, ignore_eos, max_tokens = the plan's generated tokens",
    "tool_duration_hint": "each scripted call carries its drawn duration as expected_duration_s",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="infercept-sim",
        description="Simulate the InferCept scheduler under an augmented-LLM workload on a virtual "
        "executor whose iteration times come from a cost profile; prints the sweep table and "
        'writes the load generator\'s results JSON with tool "sim".',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--workload",
        default=TRACE_WORKLOAD,
        help=f"{TRACE_WORKLOAD} (the authors' trace, replayed as their harness does), one of "
        f"{', '.join(WORKLOADS)} (drawn), or a trace .json file (replayed like {TRACE_WORKLOAD})",
    )
    add_statistics_flag(p)
    p.add_argument("--rate", type=float, default=1.0, help="arrival rate, requests/s (Poisson)")
    p.add_argument("--duration", type=float, default=60.0, help="measurement window, virtual s")
    p.add_argument(
        "--count-unfinished",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count requests unfinished at the window's end in the latency, with the output they "
        "had (the paper's harness does)",
    )
    p.add_argument("--warmup", type=float, default=0.0, help="arrivals before the window, s (not measured)")
    p.add_argument("--seed", type=int, default=0, help="seeds arrivals and requests (>= 0)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="where the results JSON goes")
    p.add_argument("--max-model-len", type=int, help="longest context (default: the profile's)")
    p.add_argument(
        "--duration-scale",
        type=float,
        default=1.0,
        help="multiply every drawn tool-call duration (1: the paper's Table 1)",
    )
    p.add_argument("--profile", default="a100-40gb-gptj6b", help=f"{', '.join(PROFILES)}, or a profile .json")
    p.add_argument("--num-device-blocks", type=int, help="device KV pool (default: the profile's)")
    p.add_argument(
        "--num-host-blocks", type=int, help="host swap pool (default: the profile's for the policy)"
    )
    p.add_argument(
        "--overlap-swaps",
        action="store_true",
        help="hide swap time under the iteration's forward time (default: swaps stall the batch)",
    )
    p.add_argument(
        "--policy",
        default="infercept",
        help=f"scheduling policy: {', '.join(sorted(POLICIES))}, with options as in "
        "infercept/no-swap-budget/estimator=elapsed (techniques: chunked-recompute, swap-budget, min-waste), "
        "or vllm/prefill-first (vLLM 0.2's iteration structure)",
    )
    p.add_argument(
        "--estimator", default="history", help="infercept's duration estimator (oracle, elapsed, history)"
    )
    p.add_argument(
        "--max-batched-tokens", type=int, help="token budget of an iteration (default: the profile's S)"
    )
    p.add_argument("--max-num-seqs", type=int, default=256, help="most requests in one iteration")
    p.add_argument(
        "--prefill-token-budget",
        type=int,
        help="tokens of a prefill iteration under /prefill-first (default: vLLM 0.2's "
        "max(max model length, 2048))",
    )
    p.add_argument("--max-live-requests", type=int, default=4096, help="more are refused")
    p.add_argument(
        "--max-queue-wait-s",
        type=float,
        default=0.0,
        help="admission control as in the server: refuse when the queue's expected wait exceeds this; "
        "0 (default): off, as in the paper's experiment",
    )
    sweep = p.add_argument_group("sweep: several rates and policies")
    sweep.add_argument("--rates", help="comma-separated rates, requests/s (instead of --rate)")
    sweep.add_argument("--policies", help="comma-separated policies or policy specs (instead of --policy)")
    sweep.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="runs simulated at once, one process each"
    )
    sweep.add_argument(
        "--slo", type=float, default=DEFAULT_SLO_S_PER_TOKEN, help="SLO, mean normalized s/token"
    )
    sweep.add_argument("--plot", type=Path, help="write the latency-against-rate plot (PNG) here")
    measured = p.add_argument_group("a measured profile")
    measured.add_argument(
        "--save-profile", metavar="PATH", help="fetch the cost profile of --executor, write it here, exit"
    )
    measured.add_argument("--executor", default="127.0.0.1:50061", help="the executor, HOST:PORT")
    measured.add_argument("--refresh-profile", action="store_true", help="have the executor measure again")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    if args.save_profile:
        return save_profile(args.executor, args.save_profile, args.refresh_profile)
    is_sweep = bool(args.rates or args.policies)
    records: list[dict[str, Any]] = []
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for records in iter_records(args):
            # Rewritten after every run, so that a long sweep cut short keeps what it measured.
            args.out.write_text(json.dumps(records if is_sweep else records[0], indent=2) + "\n")
    except (OSError, ValueError) as error:
        print(f"infercept-sim: {error}", file=sys.stderr)
        return 2
    print(sweep_table(records, args.slo))
    print(f"\nresults: {args.out}")
    if args.plot:
        plot_latency(records, args.plot, args.slo)
        print(f"plot: {args.plot}")
    return 0


def iter_records(args: argparse.Namespace) -> Iterator[list[dict[str, Any]]]:
    """The results records of every (rate, policy) so far, in sweep order, after each run ends;
    up to --jobs runs at once, each in its own process. Raises ValueError for a bad argument,
    OSError for an unreadable profile or trace."""
    rates = [float(x) for x in args.rates.split(",")] if args.rates else [args.rate]
    specs = [parse_policy_spec(p, args.estimator) for p in (args.policies or args.policy).split(",")]
    if any(rate <= 0 for rate in rates) or args.duration <= 0 or args.warmup < 0 or args.seed < 0:
        raise ValueError("rates and --duration must be > 0, --warmup and --seed >= 0")
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    _profile(args)  # fail early on a bad profile
    runs = [(rate, spec) for rate in rates for spec in specs]
    done: dict[int, dict[str, Any]] = {}
    if args.jobs == 1 or len(runs) == 1:
        for index, (rate, spec) in enumerate(runs):
            done[index] = run_spec(args, rate, spec)
            yield [done[i] for i in sorted(done)]
        return
    # Spawned, not forked: a clean interpreter per worker. The runs share nothing but arguments.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(args.jobs, len(runs)), mp_context=context) as pool:
        # Highest rates first: they run longest, so the pool ends with short runs, not one long one.
        order = sorted(range(len(runs)), key=lambda i: -runs[i][0])
        futures = {pool.submit(run_spec, args, *runs[i]): i for i in order}
        for future in concurrent.futures.as_completed(futures):
            done[futures[future]] = future.result()
            yield [done[i] for i in sorted(done)]


def run_spec(args: argparse.Namespace, rate: float, spec: PolicySpec) -> dict[str, Any]:
    """Simulate `spec` at `rate` (plans drawn from the seed, so every policy of a rate gets the
    same requests) and return its results record, labelled with the spec."""
    configure_logging("warning")  # in a worker process too
    profile = _profile(args, spec.policy)
    config = spec.apply(
        SchedulerConfig(
            max_batched_tokens=args.max_batched_tokens or profile.saturation_tokens,
            max_num_seqs=args.max_num_seqs,
            max_live_requests=args.max_live_requests,
            max_queue_wait_s=args.max_queue_wait_s,
            prefill_token_budget=args.prefill_token_budget or max(profile.max_model_len, 2048),
        )
    )
    plans, plan_assumptions = make_plans(_with_rate(args, rate), profile.max_model_len)
    record = run_one(args, plans, plan_assumptions, rate, profile, config)
    record["policy"] = spec.label
    return record


def run_one(
    args: argparse.Namespace,
    plans: list[RequestPlan],
    plan_assumptions: dict[str, Any],
    rate: float,
    profile: CostProfile,
    config: SchedulerConfig,
) -> dict[str, Any]:
    """Simulate one (policy, rate) and return its results record."""
    began = time.perf_counter()
    result = simulate(plans, profile, config, args.warmup, args.duration, args.overlap_swaps)
    wall_s = time.perf_counter() - began
    errors = ", ".join(f"{n} {code}" for code, n in sorted(result.errors.items())) or "none"
    print(
        f"infercept-sim: {config.policy} at {rate:g}/s: {len(plans)} requests, {result.num_iterations} "
        f"iterations, {result.end_s:.0f} virtual s in {wall_s:.1f} s; failed: {errors}",
        file=sys.stderr,
    )
    return sim_record(args, result, plan_assumptions, rate, profile, config)


def sim_record(
    args: argparse.Namespace,
    result: SimulationResult,
    plan_assumptions: dict[str, Any],
    rate: float,
    profile: CostProfile,
    config: SchedulerConfig,
) -> dict[str, Any]:
    """The results record of one simulation (args: workload, duration, seed, warmup, overlap_swaps)."""
    return results_record(
        tool="sim",
        policy=config.policy,
        workload=args.workload,
        rate=rate,
        duration_s=args.duration,
        seed=args.seed,
        summary=summarize(result.records, window_s=args.duration, count_unfinished=args.count_unfinished),
        server=server_delta(result.stats_before, result.stats_after),
        assumptions={
            **plan_assumptions,
            **SIM_ASSUMPTIONS,
            "warmup_s": args.warmup,
            "profile": profile.to_dict(),
            "scheduler": dataclasses.asdict(config),
            "overlap_swaps": args.overlap_swaps,
            "count_unfinished": args.count_unfinished,
            "recompute_time_share": "each iteration's forward time split over its tokens by count "
            "(token-share attribution); ideal's restored tokens cost none",
        },
    )


def save_profile(address: str, path: str, refresh: bool) -> int:
    try:
        # An executor started with a token (INFERCEPT_EXECUTOR_TOKEN) answers only its holder.
        profile = fetch_profile(address, refresh=refresh, token=read_token(None, EXECUTOR_TOKEN_ENV))
    except grpc.RpcError as error:
        reason = f"{error.code().name}: {error.details()}" if isinstance(error, grpc.Call) else str(error)
        print(f"infercept-sim: executor at {address}: {reason}", file=sys.stderr)
        return 3
    profile.save(path)
    print(f"saved the profile of {profile.name} to {path}")
    return 0


def _profile(args: argparse.Namespace, policy: str | None = None) -> CostProfile:
    """The profile of the flags, as the device running `policy` sees it (its host pool), with
    the flags' overrides."""
    profile = load_profile(args.profile)
    if policy is not None:
        profile = profile.for_policy(policy)
    overrides = {
        "max_model_len": args.max_model_len,
        "num_device_blocks": args.num_device_blocks,
        "num_host_blocks": args.num_host_blocks,
    }
    return dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})


def _with_rate(args: argparse.Namespace, rate: float) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "rate": rate})


if __name__ == "__main__":
    sys.exit(main())
