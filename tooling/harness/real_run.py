"""The real side of the fidelity check: a fresh local stack, its profile, its calibration, the load.

    launch executor + scheduler (the scheduler logs every iteration: --iteration-log)
    fetch the profile (Profile + Describe)
    calibrate on the idle stack ──▶ the load generator's run ──▶ calibrate again
    stop the stack; read the iteration log: the executor's step time of every iteration, for the
    calibration's periods and for the load's own iterations

The two calibrations, on both sides of the load, split a drift of the machine's speed evenly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from infercept.async_client import AsyncClient
from scheduler_svc.sim.cost_profile import CostProfile
from tooling.harness import background_load
from tooling.harness.calibration import Calibration, CalibrationPlan, Measurement, measure
from tooling.harness.executor_profile import fetch_profile
from tooling.harness.step_fit import StepSample
from tooling.launcher import launch
from tooling.loadgen.load_run import SERVER_INFO_TIMEOUT_S, Target, run_load
from tooling.loadgen.workload_spec import WorkloadSpec
from tooling.run_record import RunRecord
from tooling.stack_spec import StackSpec

ITERATION_LOG = "iterations.jsonl"


@dataclasses.dataclass(frozen=True)
class RealRun:
    record: RunRecord  # the load generator's
    profile: CostProfile  # the stack's profile, with the calibration applied unless skipped
    calibration: Calibration | None
    steps: list[StepSample]  # the executor's step of every iteration of the load that computed
    num_iterations: int  # iterations the scheduler ran from the load's start to its end
    other_cpu_share: float | None  # of the machine, used by other processes meanwhile
    log_dir: Path  # the services' logs and the iteration log


@dataclasses.dataclass(frozen=True)
class _Load:
    record: RunRecord
    measurements: list[Measurement]
    step_ids: tuple[int, int]  # the load's iterations: after the first, up to the second
    num_iterations: int


def run_real(
    stack: StackSpec, workload: WorkloadSpec, calibration_plan: CalibrationPlan | None, refresh_profile: bool
) -> RealRun:
    """`workload` on a fresh `stack` (no calibration if `calibration_plan` is None; the executor
    measures its profile again if `refresh_profile`). Raises LaunchError, InferceptError,
    grpc.RpcError, OSError, ValueError."""
    log_dir = Path(stack.log_dir or tempfile.mkdtemp(prefix="infercept-fidelity-"))
    scheduler_args = [*stack.scheduler_argv(), "--iteration-log", str(log_dir / ITERATION_LOG)]
    cpu_before = background_load.snapshot()
    with launch(stack.executor_argv(), scheduler_args, log_dir=log_dir) as running:
        profile = fetch_profile(
            running.executor_address, refresh=refresh_profile, token=running.executor_token
        )
        load = asyncio.run(_run_load(running.scheduler_address, workload, calibration_plan))
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


async def _run_load(address: str, workload: WorkloadSpec, plan: CalibrationPlan | None) -> _Load:
    async with AsyncClient(address) as client:
        info = await client.server_info(timeout_s=SERVER_INFO_TIMEOUT_S)
        measurements = await _calibrate(address, info.vocab_size, plan, "before the load")
        before = await client.server_stats()
        record = await run_load(Target(address), workload)
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


def read_iteration_log(path: Path) -> list[dict[str, Any]]:
    """The scheduler's per-iteration records (IterationStats as JSON lines)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
