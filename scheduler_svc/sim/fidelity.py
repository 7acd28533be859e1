"""``infercept-fidelity``: the real stack and the simulator on the same workload, side by side.

    infercept-fidelity                                   # vllm, mixed workload, CPU, defaults below
    infercept-fidelity --policy preserve --rate 1.2 --out results/fidelity-preserve.json

    1. launch a fresh local stack (executor + scheduler processes, infercept.launcher)
    2. fetch its cost profile: the executor's Profile (measured on this machine) and Describe
       (the same pool sizes and maximum length)
    3. calibrate what an iteration costs beyond the executor's step, on the idle stack
       (calibration.py; --no-calibration skips it)
    4. the load generator's run on the stack: Poisson arrivals, real tool waits
    5. the simulator on the same plans (workload, seed, rate, window, warm-up, duration scale,
       maximum length) with that profile and the scheduler's configuration
    6. print both records side by side with sim/real ratios, write them and the ratios as JSON

Exit status: 0 when both headline ratios (completed requests/s, mean normalized latency) are
within --tolerance of 1, 1 when one is not, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from infercept.async_client import AsyncClient
from infercept.cli import add_stack_flags, stack_args
from infercept.errors import InferceptError
from infercept.launcher import LaunchError, launch
from infercept.loadgen import main as loadgen
from infercept.logs import configure_logging
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.sim import background_load
from scheduler_svc.sim.calibration import Calibration, CalibrationPlan, calibrate
from scheduler_svc.sim.comparison import compare, format_table, outside_tolerance
from scheduler_svc.sim.cost_model import CostProfile
from scheduler_svc.sim.driver import simulate
from scheduler_svc.sim.executor_profile import fetch_profile
from scheduler_svc.sim.main import sim_record

# A moderate load for the default model on a CPU: busy, not overloaded (see the README).
DEFAULT_RATE = 1.0
EXTRA_LABELS = {"iterations": "iterations (whole run)"}
CALIBRATION = CalibrationPlan()  # what the calibration runs (the tests run less)
BUSY_SHARE = 0.10  # of the machine's CPU used by other processes, above which a warning is printed


@dataclasses.dataclass(frozen=True)
class RealRun:
    record: dict[str, Any]  # the load generator's results record
    num_iterations: int  # iterations the scheduler ran from the load's start to its end
    calibration: Calibration | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="infercept-fidelity",
        description="Run the real stack and the simulator (with the profile the stack measures) on the "
        "same workload and seed; print both results side by side with sim/real ratios.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workload", default="mixed", help="a workload name or a trace .json file")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="arrival rate, requests/s")
    p.add_argument("--duration", type=float, default=60.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=10.0, help="arrivals before the window, s")
    p.add_argument("--seed", type=int, default=0, help="seeds arrivals and requests (>= 0)")
    p.add_argument("--duration-scale", type=float, default=0.05, help="multiply every tool-call duration")
    p.add_argument("--max-model-len", type=int, default=512, help="longest context drawn")
    p.add_argument(
        "--tolerance", type=float, default=0.15, help="largest |sim/real - 1| of the headline metrics"
    )
    p.add_argument("--out", type=Path, default=Path("results/fidelity.json"), help="the JSON written")
    p.add_argument("--no-calibration", action="store_true", help="simulate with the executor's profile alone")
    p.add_argument("--refresh-profile", action="store_true", help="have the executor measure its profile")
    add_stack_flags(p.add_argument_group("the local stack"))
    p.set_defaults(device="cpu", policy="vllm")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.seed < 0 or args.tolerance < 0:
        p.error("--rate and --duration must be > 0; --warmup, --seed and --tolerance >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    try:
        report = run(args)
    except (LaunchError, InferceptError, grpc.RpcError, OSError, ValueError) as error:
        print(f"infercept-fidelity: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{format_table(report['comparison'], EXTRA_LABELS)}\n\nresults: {args.out}")
    _warn_if_busy(report["other_cpu_share"])
    failed = report["outside_tolerance"]
    if failed:
        print(
            f"infercept-fidelity: sim and real disagree by more than {args.tolerance:.0%} on "
            f"{', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(
        f"sim and real agree within {args.tolerance:.0%} on completed requests/s and mean normalized latency"
    )
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both runs and their comparison, as the JSON report."""
    began = time.perf_counter()
    executor_args, scheduler_args = stack_args(args)
    print(
        f"infercept-fidelity: starting a local stack (policy {args.policy}, device {args.device})", flush=True
    )
    cpu_before = background_load.snapshot()
    with launch(executor_args, scheduler_args, log_dir=args.log_dir) as stack:
        profile = fetch_profile(stack.executor_address, refresh=args.refresh_profile)
        real = asyncio.run(run_real(stack.scheduler_address, args, profile))
    other_cpu_share = background_load.other_share(cpu_before, background_load.snapshot())
    if real.calibration is not None:
        profile = real.calibration.apply(profile)
    sim, num_sim_iterations = run_sim(args, profile)
    comparison = compare(real.record, sim, {"iterations": (real.num_iterations, num_sim_iterations)})
    return {
        "policy": args.policy,
        "workload": args.workload,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "seed": args.seed,
        "duration_scale": args.duration_scale,
        "max_model_len": args.max_model_len,
        "tolerance": args.tolerance,
        "outside_tolerance": outside_tolerance(comparison, args.tolerance),
        "comparison": comparison,
        "real": real.record,
        "sim": sim,
        "profile": profile.to_dict(),
        "other_cpu_share": other_cpu_share,
        "wall_s": time.perf_counter() - began,
    }


async def run_real(address: str, args: argparse.Namespace, profile: CostProfile) -> RealRun:
    """Calibrate on the idle stack at `address`, then run the load generator on it."""
    async with AsyncClient(address) as client:
        info = await client.server_info(timeout_s=loadgen.SERVER_INFO_TIMEOUT_S)
        calibration = None
        if not args.no_calibration:
            print("calibrating: decode batches and prefill steps through the stack", flush=True)
            calibration = await calibrate(address, profile, vocab_size=info.vocab_size, plan=CALIBRATION)
            print(_describe(calibration), flush=True)
        before = await client.server_stats()
        record = await loadgen.run(loadgen_args(args, address))
        after = await client.server_stats()
    return RealRun(record, after["iterations"] - before["iterations"], calibration)


def run_sim(args: argparse.Namespace, profile: CostProfile) -> tuple[dict[str, Any], int]:
    """The simulator's record of the same load, and its number of iterations."""
    plan_args = loadgen_args(args, address="")
    plans, plan_assumptions = loadgen.make_plans(plan_args, args.max_model_len)
    config = SchedulerConfig(policy=args.policy, max_batched_tokens=args.max_batched_tokens)
    # The CPU executor copies swapped blocks in line with the forward pass; CUDA overlaps them.
    overlap_swaps = not str(profile.assumptions.get("device", "cpu")).startswith("cpu")
    result = simulate(plans, profile, config, args.warmup, args.duration, overlap_swaps)
    sim_args = argparse.Namespace(**vars(args), overlap_swaps=overlap_swaps)
    return sim_record(sim_args, result, plan_assumptions, args.rate, profile, config), result.num_iterations


def loadgen_args(args: argparse.Namespace, address: str) -> argparse.Namespace:
    """The load generator's flags for this run (its own parser, so every default is its own)."""
    argv = [
        *("--target", address, "--workload", args.workload, "--rate", str(args.rate)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup), "--seed", str(args.seed)),
        *("--duration-scale", str(args.duration_scale), "--max-model-len", str(args.max_model_len)),
    ]
    return loadgen.build_parser().parse_args(argv)


def _warn_if_busy(other_cpu_share: float | None) -> None:
    if other_cpu_share is None:
        return
    print(f"other processes used {other_cpu_share:.0%} of the machine's CPU during the real run")
    if other_cpu_share > BUSY_SHARE:
        print(
            "infercept-fidelity: warning: the machine was busy; the real run was slowed by its neighbours "
            "and the calibration may not hold for all of it (run again on a quiet machine)",
            file=sys.stderr,
        )


def _describe(calibration: Calibration) -> str:
    terms = calibration.terms
    return (
        f"calibrated in {calibration.wall_s:.1f} s: forward x {terms.forward_time_scale:.2f} "
        f"+ {terms.forward_s_per_context_token * 1e6:.3f} us per context token; overhead "
        f"{terms.iteration_overhead_s * 1e3:.2f} ms per iteration "
        f"+ {terms.iteration_overhead_s_per_sequence * 1e3:.3f} ms per sequence"
    )


if __name__ == "__main__":
    sys.exit(main())
