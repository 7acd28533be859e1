"""``infercept-fidelity``: the real stack and the simulator on the same workload, side by side.

    infercept-fidelity                                   # vllm, mixed workload, CPU, defaults below
    infercept-fidelity --policy preserve --rate 0.5 --out results/fidelity-preserve.json

    1. launch a fresh local stack (executor + scheduler processes, tooling.launcher)
    2. fetch its cost profile: the executor's Profile (measured on this machine) and Describe
       (the same pool sizes and maximum length)
    3. calibrate what a served iteration costs next to the profile, on the idle stack
       (calibration.py), before the load and again after it
    4. the load generator's run on the stack: Poisson arrivals, real tool waits
    5. the simulator on the same plans (workload, seed, rate, window, warm-up, duration scale,
       maximum length) with that profile and the scheduler's configuration; then again at the
       speed the executor really served the load with (its logged step times against the
       simulator's, iteration shape by shape: step_fit.fit_served_step), until the two speeds agree
    6. print both records side by side with sim/real ratios, write them and the ratios as JSON

--no-calibration skips 3 and the speed passes of 5: the simulator runs on the profile alone.

Exit status: 0 when both headline ratios (completed requests/s, mean normalized latency) are
within --tolerance of 1, 1 when one is not, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from infercept.errors import InferceptError
from infercept.server_info import message_to_dict
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.iteration_stats import IterationStats
from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.sim.driver import Simulation
from scheduler_svc.stats_render import iteration_proto
from svc_common.logs import configure_logging
from tooling.harness.calibration import CalibrationPlan
from tooling.harness.comparison import HEADLINE_KEYS, Comparison, compare, format_table, outside_tolerance
from tooling.harness.real_run import RealRun, run_real
from tooling.harness.step_fit import StepSample, fit_served_step
from tooling.launcher import LaunchError
from tooling.loadgen.workload_spec import WorkloadSpec, add_workload_flags, plans_for, workload_from_flags
from tooling.run_record import RunRecord
from tooling.simulate import sim_record
from tooling.stack_spec import StackSpec, add_stack_flags, stack_from_flags

# A moderate load for the tiny model on a CPU: busy, not overloaded (about twice vllm's unloaded
# latency); the window is long enough that ~75 requests complete (see the README). Table 1 draws:
# the check was calibrated and its agreement measured on them at a short length; the trace's shapes
# truncated at 512 tokens would be mostly prompts.
DEFAULT_WORKLOAD = WorkloadSpec(
    workload="mixed",
    rate=0.75,
    duration_s=120.0,
    warmup_s=10.0,
    duration_scale=0.05,
    max_model_len=512,
    statistics="table1",
)
DEFAULT_STACK = StackSpec(model="tiny", device="cpu", policy="vllm")
EXTRA_LABELS = {"iterations": "iterations (whole run)"}
CALIBRATION = CalibrationPlan()  # what the calibration runs (the tests run less)
BUSY_SHARE = 0.10  # of the machine's CPU used by other processes, above which a warning is printed
MAX_SPEED_PASSES = 4  # simulations at a corrected speed, at most
SPEED_TOLERANCE = 0.02  # relative change of the fitted step terms at which they have settled
FIXED_S_RESOLUTION = 1e-3  # a fixed step part below this counts as this, for SPEED_TOLERANCE


@dataclasses.dataclass(frozen=True)
class FidelitySpec:
    """What the check runs: the workload on a fresh stack, and the simulator on the same plans."""

    stack: StackSpec
    workload: WorkloadSpec  # its max_model_len is set: the plans of both sides are the same
    tolerance: float = 0.15  # largest |sim/real - 1| of the headline metrics
    calibrate: bool = True  # calibrate the profile through the stack, and simulate at the served speed
    refresh_profile: bool = False  # have the executor measure its profile again


@dataclasses.dataclass(frozen=True)
class SimRun:
    record: RunRecord  # the simulator's
    num_iterations: int
    steps: list[StepSample]  # the virtual executor's step of every iteration that computed


@dataclasses.dataclass(frozen=True)
class FidelityReport:
    """Both runs, their comparison, and what the comparison rests on (the JSON written)."""

    spec: FidelitySpec
    comparison: Comparison
    real: RealRun
    sim: SimRun  # at the speed the executor served the load
    first: SimRun  # at the calibrated speed
    calibrated_only: Comparison  # real against `first`
    profile: CostProfile  # the profile of `sim`
    wall_s: float

    @property
    def outside_tolerance(self) -> list[str]:
        return outside_tolerance(self.comparison, self.spec.tolerance)

    def to_json(self) -> dict[str, object]:
        workload = self.spec.workload
        return {
            "policy": self.spec.stack.policy,
            "workload": workload.workload,
            "rate": workload.rate,
            "duration_s": workload.duration_s,
            "warmup_s": workload.warmup_s,
            "seed": workload.seed,
            "duration_scale": workload.duration_scale,
            "max_model_len": workload.max_model_len,
            "tolerance": self.spec.tolerance,
            "outside_tolerance": self.outside_tolerance,
            "comparison": self.comparison,
            "real": self.real.record.to_json(),
            "sim": self.sim.record.to_json(),
            "profile": self.profile.to_dict(),
            "at_calibrated_speed": {"sim": self.first.record.to_json(), "comparison": self.calibrated_only},
            "other_cpu_share": self.real.other_cpu_share,
            "log_dir": str(self.real.log_dir),
            "wall_s": self.wall_s,
        }


def parse_args(argv: list[str] | None = None) -> tuple[FidelitySpec, Path]:
    """The check's spec and where its JSON goes."""
    p = argparse.ArgumentParser(
        prog="infercept-fidelity",
        description="Run the real stack and the simulator (with the profile the stack measures) on the "
        "same workload and seed; print both results side by side with sim/real ratios.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_workload_flags(p, DEFAULT_WORKLOAD)
    p.add_argument(
        "--tolerance", type=float, default=0.15, help="largest |sim/real - 1| of the headline metrics"
    )
    p.add_argument("--out", type=Path, default=Path("results/fidelity.json"), help="the JSON written")
    p.add_argument("--no-calibration", action="store_true", help="simulate on the executor's profile alone")
    p.add_argument("--refresh-profile", action="store_true", help="have the executor measure its profile")
    add_stack_flags(p.add_argument_group("the local stack"), DEFAULT_STACK)
    args = p.parse_args(argv)
    workload = workload_from_flags(args)
    try:
        workload.validate()
    except ValueError as error:
        p.error(str(error))
    if args.tolerance < 0 or workload.max_model_len is None:
        p.error("--tolerance must be >= 0, and --max-model-len given")
    spec = FidelitySpec(
        stack=stack_from_flags(args),
        workload=workload,
        tolerance=args.tolerance,
        calibrate=not args.no_calibration,
        refresh_profile=args.refresh_profile,
    )
    return spec, args.out


def main(argv: list[str] | None = None) -> int:
    spec, out = parse_args(argv)
    configure_logging("warning")
    try:
        report = run(spec)
    except (LaunchError, InferceptError, grpc.RpcError, OSError, ValueError) as error:
        print(f"infercept-fidelity: {error}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(f"\n{format_table(report.comparison, EXTRA_LABELS)}\n\nresults: {out}, logs: {report.real.log_dir}")
    _warn_if_busy(report.real.other_cpu_share)
    failed = report.outside_tolerance
    if failed:
        print(
            f"infercept-fidelity: sim and real disagree by more than {spec.tolerance:.0%} on "
            f"{', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(
        f"sim and real agree within {spec.tolerance:.0%} on completed requests/s and mean normalized latency"
    )
    return 0


def run(spec: FidelitySpec) -> FidelityReport:
    """Both runs and their comparison."""
    began = time.perf_counter()
    print(
        f"infercept-fidelity: starting a local stack (policy {spec.stack.policy}, device {spec.stack.device})",
        flush=True,
    )
    real = run_real(spec.stack, spec.workload, CALIBRATION if spec.calibrate else None, spec.refresh_profile)
    if real.calibration is not None:
        print(_describe(real), flush=True)
    first, sim, profile = simulate_at_served_speed(spec, real)
    comparison = compare(real.record, sim.record, {"iterations": (real.num_iterations, sim.num_iterations)})
    calibrated_only = compare(real.record, first.record)
    if sim is not first:
        print(
            f"the executor served the load at {_step_terms(profile)}; at the calibrated speed the sim/real "
            "ratios would be "
            + ", ".join(f"{_ratio_text(calibrated_only[key]['ratio'])} ({key})" for key in HEADLINE_KEYS),
            flush=True,
        )
    return FidelityReport(
        spec, comparison, real, sim, first, calibrated_only, profile, wall_s=time.perf_counter() - began
    )


def simulate_at_served_speed(spec: FidelitySpec, real: RealRun) -> tuple[SimRun, SimRun, CostProfile]:
    """The simulation on the calibrated profile; then the one whose executor steps take as long
    as the real executor's did for iterations of the same shape (step_fit.fit_served_step, refitted
    on each new simulation until it settles), with its profile. Without a calibration, the
    first is the last."""
    profile = real.profile
    first = sim = run_sim(spec, profile)
    for _ in range(MAX_SPEED_PASSES if real.calibration else 0):
        fitted = fit_served_step(real.steps, sim.steps, _profiled_s(profile))
        if fitted is None or _is_close(fitted, (profile.forward_time_scale, profile.forward_fixed_s)):
            break
        scale, fixed_s = fitted
        profile = dataclasses.replace(profile, forward_time_scale=scale, forward_fixed_s=fixed_s)
        sim = run_sim(spec, profile)
    return first, sim, profile


def _profiled_s(profile: CostProfile) -> Callable[[StepSample], float]:
    """A simulated iteration's forward time as profiled (before the served fixed part and scale)."""
    return lambda step: (step.forward_s - profile.forward_fixed_s) / profile.forward_time_scale


def _is_close(fitted: tuple[float, float], current: tuple[float, float]) -> bool:
    (scale, fixed_s), (old_scale, old_fixed_s) = fitted, current
    return abs(scale - old_scale) <= SPEED_TOLERANCE * old_scale and abs(fixed_s - old_fixed_s) <= (
        SPEED_TOLERANCE * max(old_fixed_s, FIXED_S_RESOLUTION)
    )


def run_sim(spec: FidelitySpec, profile: CostProfile) -> SimRun:
    """The simulator on the real run's plans and scheduler configuration."""
    workload = spec.workload
    assert workload.max_model_len is not None, "the fidelity check's plans have a set length"
    plans, plan_assumptions = plans_for(workload, workload.max_model_len)
    config = SchedulerConfig(policy=spec.stack.policy, max_batched_tokens=spec.stack.max_batched_tokens)
    # The CPU executor copies swapped blocks in line with the forward pass; CUDA overlaps them.
    overlap_swaps = not str(profile.assumptions.get("device", "cpu")).startswith("cpu")
    simulation = Simulation(plans, profile, config, overlap_swaps)
    steps: list[StepSample] = []

    def on_iteration(stats: IterationStats) -> None:
        step = StepSample.from_stats(message_to_dict(iteration_proto(stats)))
        if step.num_tokens > 0:
            steps.append(step)

    simulation.scheduler.on_iteration = on_iteration
    result = simulation.run(workload.warmup_s, workload.duration_s)
    record = sim_record(workload, result, plan_assumptions, profile, config, overlap_swaps)
    return SimRun(record, result.num_iterations, steps)


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}"  # None: nothing completed on one side


def _warn_if_busy(other_cpu_share: float | None) -> None:
    if other_cpu_share is None:
        return
    print(f"other processes used {other_cpu_share:.0%} of the machine's CPU during the real run")
    if other_cpu_share > BUSY_SHARE:
        print(
            "infercept-fidelity: warning: the machine was busy; the real run was slowed by its neighbours "
            "(run again on a quiet machine)",
            file=sys.stderr,
        )


def _describe(real: RealRun) -> str:
    profile = real.profile
    return (
        f"calibration: executor steps {_step_terms(profile)}; overhead "
        f"{profile.iteration_overhead_s * 1e3:.2f} ms per iteration "
        f"+ {profile.iteration_overhead_s_per_sequence * 1e3:.3f} ms per sequence"
    )


def _step_terms(profile: CostProfile) -> str:
    return f"{profile.forward_fixed_s * 1e3:.2f} ms + {profile.forward_time_scale:.2f} x the profiled forward time"


if __name__ == "__main__":
    sys.exit(main())
