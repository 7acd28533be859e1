"""The real side of the fidelity check: a fresh local stack, its profile, its calibration, the load.

    launch executor + scheduler (the scheduler logs every iteration: --iteration-log)
    fetch the profile (Profile + Describe)
    calibrate on the idle stack ──▶ the load generator's run ──▶ calibrate again
    stop the stack; read the iteration log: the executor's step time of every iteration, for the
    calibration's periods and for the load's own iterations

The two calibrations, on both sides of the load, split a drift of the machine's speed evenly.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from infercept.async_client import AsyncClient
from scheduler_svc.sim.cost_profile import CostProfile
from tooling.cli import stack_args
from tooling.harness import background_load
from tooling.harness.calibration import Calibration, CalibrationPlan, Measurement, measure
from tooling.harness.executor_profile import fetch_profile
from tooling.harness.step_fit import StepSample
from tooling.launcher import launch
from tooling.loadgen import main as loadgen

ITERATION_LOG = "iterations.jsonl"


@dataclasses.dataclass(frozen=True)
class RealRun:
    record: dict[str, Any]  # the load generator's results record
    profile: CostProfile  # the stack's profile, with the calibration applied unless skipped
    calibration: Calibration | None
    steps: list[StepSample]  # the executor's step of every iteration of the load that computed
    num_iterations: int  # iterations the scheduler ran from the load's start to its end
    other_cpu_share: float | None  # of the machine, used by other processes meanwhile
    log_dir: Path  # the services' logs and the iteration log


@dataclasses.dataclass(frozen=True)
class _Load:
    record: dict[str, Any]
    measurements: list[Measurement]
    step_ids: tuple[int, int]  # the load's iterations: after the first, up to the second
    num_iterations: int


def run_real(args: argparse.Namespace, calibration_plan: CalibrationPlan | None) -> RealRun:
    """The real run the fidelity check's flags describe (no calibration if `calibration_plan` is
    None). Raises LaunchError, InferceptError, grpc.RpcError, OSError, ValueError."""
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="infercept-fidelity-"))
    executor_args, scheduler_args = stack_args(args)
    scheduler_args += ["--iteration-log", str(log_dir / ITERATION_LOG)]
    cpu_before = background_load.snapshot()
    with launch(executor_args, scheduler_args, log_dir=log_dir) as stack:
        profile = fetch_profile(
            stack.executor_address, refresh=args.refresh_profile, token=stack.executor_token
        )
        load = asyncio.run(_run_load(stack.scheduler_address, args, calibration_plan))
    other_cpu_share = background_load.other_share(cpu_before, background_load.snapshot())
    iterations = read_iteration_log(log_dir / ITERATION_LOG)  # complete once the scheduler stopped
    calibration = Calibration.fit(load.measurements, iterations, profile) if load.measurements else None
    first, last = load.step_ids
    steps = [StepSample.from_stats(record) for record in iterations if first < int(record["step_id"]) <= last]
    return RealRun(
        record=load.record,
        profile=calibration.apply(profile) if calibration else profile,
        calibration=calibration,
        steps=[step for step in steps if step.num_tokens > 0],
        num_iterations=load.num_iterations,
        other_cpu_share=other_cpu_share,
        log_dir=log_dir,
    )


async def _run_load(address: str, args: argparse.Namespace, plan: CalibrationPlan | None) -> _Load:
    async with AsyncClient(address) as client:
        info = await client.server_info(timeout_s=loadgen.SERVER_INFO_TIMEOUT_S)
        measurements = await _calibrate(address, info.vocab_size, plan, "before the load")
        before = await client.server_stats()
        record = await loadgen.run(loadgen_args(args, address))
        after = await client.server_stats()
        measurements += await _calibrate(address, info.vocab_size, plan, "after the load")
    step_ids = (int(before["last_iteration"]["step_id"]), int(after["last_iteration"]["step_id"]))
    return _Load(record, measurements, step_ids, after["iterations"] - before["iterations"])


async def _calibrate(
    address: str, vocab_size: int, plan: CalibrationPlan | None, when: str
) -> list[Measurement]:
    if plan is None:
        return []
    print(f"calibrating {when}: decode batches and prefill steps through the stack", flush=True)
    began = time.perf_counter()
    measurements = await measure(address, vocab_size=vocab_size, plan=plan)
    print(f"calibrated in {time.perf_counter() - began:.1f} s", flush=True)
    return measurements


def loadgen_args(args: argparse.Namespace, address: str) -> argparse.Namespace:
    """The load generator's flags for this run (its own parser, so every default is its own)."""
    argv = [
        *("--target", address, "--workload", args.workload, "--rate", str(args.rate)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup), "--seed", str(args.seed)),
        *("--duration-scale", str(args.duration_scale), "--max-model-len", str(args.max_model_len)),
        # The check was calibrated and its agreement measured on Table 1 draws at a short length;
        # the trace's shapes truncated at 512 tokens would be mostly prompts.
        *("--statistics", "table1"),
    ]
    return loadgen.build_parser().parse_args(argv)


def read_iteration_log(path: Path) -> list[dict[str, Any]]:
    """The scheduler's per-iteration records (IterationStats as JSON lines)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
