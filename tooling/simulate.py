"""``infercept-sim``: the scheduler core under a workload, on a virtual executor and clock.

    infercept-sim --workload mixed --rate 2 --duration 1800 --policy preserve
    infercept-sim --workload mixed --rates 1,2,3,4 --policies vllm,preserve --out sweep.json
    infercept-sim --save-profile gpu.json --executor 127.0.0.1:50061   # then --profile gpu.json
    infercept-sim --max-rate --rates 2,3,4 --policies vllm,lazy-swap,ideal --reference lazy-swap

Plans, metrics, the results schema and the sweep table are the load generator's
(tooling.loadgen), so a simulated record compares field for field with a measured one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc

from infercept.auth import read_token
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.main import EXECUTOR_TOKEN_ENV
from scheduler_svc.policies import POLICIES
from scheduler_svc.policies.spec import PolicySpec, parse_policy_spec
from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.sim.driver import SimulationResult, simulate
from scheduler_svc.sim.profiles import PROFILES, load_profile
from svc_common.logs import configure_logging
from tooling.harness.executor_profile import fetch_profile
from tooling.loadgen.metrics import run_record
from tooling.loadgen.report import DEFAULT_SLO_S_PER_TOKEN, plot_latency, print_sweep
from tooling.loadgen.trace_replay import TRACE_WORKLOAD
from tooling.loadgen.workload_spec import (
    WorkloadSpec,
    add_workload_flags,
    parse_rates,
    plans_for,
    workload_from_flags,
)
from tooling.max_rate import SearchSpec, format_table, search_max_rates, summarize
from tooling.run_record import RunRecord

# What the simulator does differently from the load generator's requests.
SIM_ASSUMPTIONS = {
    "prompt_and_returned_ids": "all 1 (the virtual executor computes no values), but each prompt's "
    "first token, unique to its request (prefix caching finds only a request's own earlier turns)",
    "sampling": "token 1 every step, ignore_eos, max_tokens = the plan's generated tokens",
    "tool_duration_hint": "each scripted call carries its drawn duration as expected_duration_s",
}


# The paper's harness counts requests unfinished at the window's end; the authors' trace replayed.
DEFAULT_WORKLOAD = WorkloadSpec(workload=TRACE_WORKLOAD, count_unfinished=True)


@dataclasses.dataclass(frozen=True)
class SimSpec:
    """The simulated device and the scheduler's settings (the policy comes with each run)."""

    profile: str = "a100-40gb-gptj6b"  # a named profile (PROFILES) or a profile .json
    num_device_blocks: int | None = None  # None: the profile's
    num_host_blocks: int | None = None  # None: the profile's for the policy
    overlap_swaps: bool = False  # hide swap time under the iteration's forward time
    harness_timing: bool = False  # time calls and finishes as the paper's harness does (driver.py)
    estimator: str = "history"  # infercept's duration estimator, unless a policy spec says
    max_batched_tokens: int | None = None  # None: the profile's saturation point S
    max_num_seqs: int = 256
    prefill_token_budget: int | None = None  # None: vLLM 0.2's max(max model length, 2048)
    max_live_requests: int = 4096
    max_queue_wait_s: float = 0.0  # 0: admission control off, as in the paper's experiment

    def scheduler_config(self, profile: CostProfile) -> SchedulerConfig:
        """The scheduler's configuration on `profile` (before a policy spec applies)."""
        return SchedulerConfig(
            max_batched_tokens=self.max_batched_tokens or profile.saturation_tokens,
            max_num_seqs=self.max_num_seqs,
            max_live_requests=self.max_live_requests,
            max_queue_wait_s=self.max_queue_wait_s,
            prefill_token_budget=self.prefill_token_budget or max(profile.max_model_len, 2048),
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infercept-sim",
        description="Simulate the InferCept scheduler under an augmented-LLM workload on a virtual "
        "executor whose iteration times come from a cost profile; prints the sweep table and "
        'writes the load generator\'s results JSON with tool "sim".',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_workload_flags(p, DEFAULT_WORKLOAD)
    p.add_argument("--out", type=Path, default=Path("results.json"), help="where the results JSON goes")
    defaults = SimSpec()
    p.add_argument("--profile", default=defaults.profile, help=f"{', '.join(PROFILES)}, or a profile .json")
    p.add_argument("--num-device-blocks", type=int, help="device KV pool (default: the profile's)")
    p.add_argument(
        "--num-host-blocks", type=int, help="host swap pool (default: the profile's for the policy)"
    )
    p.add_argument(
        "--overlap-swaps",
        action="store_true",
        help="hide swap time under the iteration's forward time (default: swaps stall the batch); "
        "the authors' engine copies each layer's blocks just before that layer computes",
    )
    p.add_argument(
        "--harness-timing",
        action="store_true",
        help="time calls and finishes as the paper's harness does: a call from the start of the "
        "iteration that intercepted the request to the end of the one its result came in, a call "
        "still running at the window's end not subtracted, a finish at its last iteration's start",
    )
    p.add_argument(
        "--policy",
        default="infercept",
        help=f"scheduling policy: {', '.join(sorted(POLICIES))}, with options as in "
        "infercept/no-swap-budget/estimator=elapsed (techniques: chunked-recompute, swap-budget, min-waste), "
        "or vllm/prefill-first (vLLM 0.2's iteration structure)",
    )
    p.add_argument(
        "--estimator",
        default=defaults.estimator,
        help="infercept's duration estimator (oracle, elapsed, history)",
    )
    p.add_argument(
        "--max-batched-tokens", type=int, help="token budget of an iteration (default: the profile's S)"
    )
    p.add_argument(
        "--max-num-seqs", type=int, default=defaults.max_num_seqs, help="most requests in one iteration"
    )
    p.add_argument(
        "--prefill-token-budget",
        type=int,
        help="tokens of a prefill iteration under /prefill-first (default: vLLM 0.2's "
        "max(max model length, 2048))",
    )
    p.add_argument(
        "--max-live-requests", type=int, default=defaults.max_live_requests, help="more are refused"
    )
    p.add_argument(
        "--max-queue-wait-s",
        type=float,
        default=defaults.max_queue_wait_s,
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
    search = p.add_argument_group("max-rate search: each policy's max sustainable rate (tooling/max_rate.py)")
    search.add_argument(
        "--max-rate",
        action="store_true",
        help="search each policy's max sustainable rate at --slo: --rates as a coarse grid, climbed to "
        "the first rate above it, then bisection, then linear interpolation",
    )
    search.add_argument(
        "--bisections", type=int, default=2, help="rates run between the grid's points, at most, per policy"
    )
    search.add_argument(
        "--rate-tolerance", type=float, default=0.05, help="requests/s: a narrower bracket is not bisected"
    )
    search.add_argument(
        "--reference", help="the policy the others are compared with (default: the first of --policies)"
    )
    measured = p.add_argument_group("a measured profile")
    measured.add_argument(
        "--save-profile", metavar="PATH", help="fetch the cost profile of --executor, write it here, exit"
    )
    measured.add_argument("--executor", default="127.0.0.1:50061", help="the executor, HOST:PORT")
    measured.add_argument("--refresh-profile", action="store_true", help="have the executor measure again")
    return p


def sim_from_flags(args: argparse.Namespace) -> SimSpec:
    return SimSpec(
        profile=args.profile,
        num_device_blocks=args.num_device_blocks,
        num_host_blocks=args.num_host_blocks,
        overlap_swaps=args.overlap_swaps,
        harness_timing=args.harness_timing,
        estimator=args.estimator,
        max_batched_tokens=args.max_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        prefill_token_budget=args.prefill_token_budget,
        max_live_requests=args.max_live_requests,
        max_queue_wait_s=args.max_queue_wait_s,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("warning")
    if args.save_profile:
        return save_profile(args.executor, args.save_profile, args.refresh_profile)
    workload, sim = workload_from_flags(args), sim_from_flags(args)
    if args.max_rate:
        return search_main(workload, sim, args)
    is_sweep = bool(args.rates or args.policies)
    records: list[RunRecord] = []
    try:
        rates = parse_rates(args.rates, workload.rate)
        specs = [parse_policy_spec(p, sim.estimator) for p in (args.policies or args.policy).split(",")]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for records in iter_records(workload, sim, rates, specs, args.jobs):
            # Rewritten after every run, so that a long sweep cut short keeps what it measured.
            written = [r.to_json() for r in records]
            args.out.write_text(json.dumps(written if is_sweep else written[0], indent=2) + "\n")
    except (OSError, ValueError) as error:
        print(f"infercept-sim: {error}", file=sys.stderr)
        return 2
    print_sweep(records, args.out, args.slo, args.plot)
    return 0


def search_main(workload: WorkloadSpec, sim: SimSpec, args: argparse.Namespace) -> int:
    """--max-rate: each policy's max sustainable rate; the table printed, the JSON written (after
    every run, so that a search cut short keeps what it measured)."""
    try:
        search = SearchSpec(
            grid=tuple(parse_rates(args.rates, workload.rate)),
            slo_s_per_token=args.slo,
            bisections=args.bisections,
            tolerance=args.rate_tolerance,
            reference=args.reference,
        )
        specs = [parse_policy_spec(p, sim.estimator) for p in (args.policies or args.policy).split(",")]
        summarize([], specs, search)  # refuses a --reference not among the policies, before any run
        for rate in search.grid:
            workload.at_rate(rate).validate()
        load_sim_profile(sim, workload.max_model_len)  # fail early on a bad profile
        args.out.parent.mkdir(parents=True, exist_ok=True)
        setup = {"workload": dataclasses.asdict(workload), "sim": dataclasses.asdict(sim)}

        def write(records: list[RunRecord]) -> None:
            summary = {**summarize(records, specs, search), "setup": setup}
            args.out.write_text(
                json.dumps({"summary": summary, "records": [r.to_json() for r in records]}, indent=2) + "\n"
            )

        run = functools.partial(run_at_rate, workload, sim)
        records = search_max_rates(specs, search, run, args.jobs, write)
    except (OSError, ValueError) as error:
        print(f"infercept-sim: {error}", file=sys.stderr)
        return 2
    print(format_table(summarize(records, specs, search)))
    print(f"\nresults: {args.out}")
    if args.plot:
        plot_latency(records, args.plot, args.slo)
    return 0


def run_at_rate(workload: WorkloadSpec, sim: SimSpec, rate: float, spec: PolicySpec) -> RunRecord:
    """run_spec at `rate`: the max-rate search's runner (a partial of it is picklable)."""
    return run_spec(workload.at_rate(rate), sim, spec)


def iter_records(
    workload: WorkloadSpec, sim: SimSpec, rates: Sequence[float], specs: Sequence[PolicySpec], jobs: int
) -> Iterator[list[RunRecord]]:
    """The records of every (rate, policy) so far, in sweep order, after each run ends; up to
    `jobs` runs at once, each in its own process. Raises ValueError for a bad argument, OSError
    for an unreadable profile or trace."""
    for rate in rates:
        workload.at_rate(rate).validate()
    if jobs < 1:
        raise ValueError("--jobs must be >= 1")
    load_sim_profile(sim, workload.max_model_len)  # fail early on a bad profile
    runs = [(rate, spec) for rate in rates for spec in specs]
    done: dict[int, RunRecord] = {}
    if jobs == 1 or len(runs) == 1:
        for index, (rate, spec) in enumerate(runs):
            done[index] = run_spec(workload.at_rate(rate), sim, spec)
            yield [done[i] for i in sorted(done)]
        return
    # Spawned, not forked: a clean interpreter per worker. The runs share nothing but arguments.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context) as pool:
        # Highest rates first: they run longest, so the pool ends with short runs, not one long one.
        order = sorted(range(len(runs)), key=lambda i: -runs[i][0])
        futures = {pool.submit(run_spec, workload.at_rate(runs[i][0]), sim, runs[i][1]): i for i in order}
        for future in concurrent.futures.as_completed(futures):
            done[futures[future]] = future.result()
            yield [done[i] for i in sorted(done)]


def run_spec(workload: WorkloadSpec, sim: SimSpec, spec: PolicySpec) -> RunRecord:
    """Simulate `spec` under `workload` (plans drawn from the seed, so every policy of a rate gets
    the same requests) and return its record, labelled with the spec."""
    configure_logging("warning")  # in a worker process too
    profile = load_sim_profile(sim, workload.max_model_len, spec.policy)
    config = spec.apply(sim.scheduler_config(profile))
    plans, plan_assumptions = plans_for(workload, profile.max_model_len)
    began = time.perf_counter()
    result = simulate(
        plans,
        profile,
        config,
        workload.warmup_s,
        workload.duration_s,
        sim.overlap_swaps,
        sim.harness_timing,
    )
    wall_s = time.perf_counter() - began
    errors = ", ".join(f"{n} {code}" for code, n in sorted(result.errors.items())) or "none"
    print(
        f"infercept-sim: {config.policy} at {workload.rate:g}/s: {len(plans)} requests, {result.num_iterations} "
        f"iterations, {result.end_s:.0f} virtual s in {wall_s:.1f} s; failed: {errors}",
        file=sys.stderr,
    )
    record = sim_record(
        workload, result, plan_assumptions, profile, config, sim.overlap_swaps, sim.harness_timing
    )
    return record.labelled(spec.label)


def sim_record(
    workload: WorkloadSpec,
    result: SimulationResult,
    plan_assumptions: Mapping[str, object],
    profile: CostProfile,
    config: SchedulerConfig,
    overlap_swaps: bool,
    harness_timing: bool = False,
) -> RunRecord:
    """The record of one simulation of `workload` (`overlap_swaps`, `harness_timing`: as run)."""
    assumptions = {
        **plan_assumptions,
        **SIM_ASSUMPTIONS,
        "profile": profile.to_dict(),
        "scheduler": dataclasses.asdict(config),
        "overlap_swaps": overlap_swaps,
        "harness_timing": harness_timing,
        "recompute_time_share": "each iteration's forward time split over its tokens by count "
        "(token-share attribution); ideal's restored tokens cost none",
    }
    stats = (result.stats_before, result.stats_after)
    return run_record("sim", config.policy, workload, result.records, stats, assumptions)


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


def load_sim_profile(sim: SimSpec, max_model_len: int | None, policy: str | None = None) -> CostProfile:
    """The profile of `sim`, as the device running `policy` sees it (its host pool), with the
    spec's and the workload's overrides."""
    profile = load_profile(sim.profile)
    if policy is not None:
        profile = profile.for_policy(policy)
    return dataclasses.replace(
        profile,
        max_model_len=profile.max_model_len if max_model_len is None else max_model_len,
        num_device_blocks=profile.num_device_blocks
        if sim.num_device_blocks is None
        else sim.num_device_blocks,
        num_host_blocks=profile.num_host_blocks if sim.num_host_blocks is None else sim.num_host_blocks,
    )


if __name__ == "__main__":
    sys.exit(main())
