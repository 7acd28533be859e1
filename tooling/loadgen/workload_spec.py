"""A load run's workload (WorkloadSpec): which requests arrive, how fast, for how long, and how
they are measured. Its flags are defined here once for every tool that takes them (the load
generator, the simulator's command, the fidelity check), each tool giving its own defaults as a
WorkloadSpec; the flags are parsed once into the spec, which is what the tools pass on.

    plans_for(spec, max_model_len)   the RequestPlans of warm-up and window, and the assumptions
                                     that shaped them (for the RunRecord)

A workload whose prompts mostly do not fit the model length is refused (ValueError): truncated as
the authors' harness does, each such request would end after one token without a call, so the run
would measure one-token requests under the workload's name (math at a length of 256: its prompts
average 405 tokens in the trace). Fewer such requests are counted in the assumptions.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from scheduler_svc.sim.request_plan import RequestPlan
from tooling.loadgen.trace_replay import TRACE_WORKLOAD, replay_assumptions, replay_trace
from tooling.loadgen.trace_shapes import TRACE_SHAPES
from tooling.loadgen.truncation import count_prompt_only
from tooling.loadgen.workloads import STATISTICS, WORKLOADS, Assumptions, generate_plans

PLAN_ASSUMPTIONS = {
    "prompt_and_returned_ids": "uniform in [0, vocab_size), seeded by (seed, request index)",
    "sampling": "greedy, ignore_eos, max_tokens = the plan's generated tokens",
}
# Above this share of prompt-only requests (truncation left them their prompt and one token), a
# workload is refused: most of what it would measure is not the workload. At the paper's 2048 no
# workload comes near it (a few chatbot prompts); `mixed` at 512 has 29%, a single workload whose
# prompts do not fit has all.
MAX_PROMPT_ONLY_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    # TRACE_WORKLOAD (the authors' trace, replayed), one of WORKLOADS (drawn), or a trace file.
    workload: str = "mixed"
    rate: float = 1.0  # arrivals, requests/s (Poisson)
    duration_s: float = 60.0  # the measurement window
    warmup_s: float = 0.0  # arrivals before the window, not measured
    seed: int = 0  # seeds arrivals, requests and token ids
    duration_scale: float = 1.0  # multiplies every drawn tool-call duration (1: the paper's)
    max_model_len: int | None = None  # longest context drawn; None: the target's maximum
    statistics: str = "trace"  # what a drawn workload follows: STATISTICS
    # Count requests unfinished at the window's end in the latency, with the output they had (the
    # paper's harness does).
    count_unfinished: bool = False
    # A replayed trace's augmentations to draw from (e.g. ("math",)); empty: all of them.
    augmentations: tuple[str, ...] = ()

    @property
    def span_s(self) -> float:
        """Arrivals happen in [0, span_s): warm-up and window."""
        return self.warmup_s + self.duration_s

    def at_rate(self, rate: float) -> WorkloadSpec:
        return dataclasses.replace(self, rate=rate)

    def validate(self) -> None:
        """Raises ValueError for a value no run can take."""
        if not (self.rate > 0 and self.duration_s > 0 and self.warmup_s >= 0 and self.seed >= 0):
            raise ValueError("the rate and --duration must be > 0, --warmup and --seed >= 0")
        if self.duration_scale < 0 or (self.max_model_len is not None and self.max_model_len < 1):
            raise ValueError("--duration-scale must be >= 0 and --max-model-len >= 1")
        if self.statistics not in STATISTICS:
            raise ValueError(f"--statistics must be one of {STATISTICS}, got {self.statistics!r}")
        if self.augmentations and self.workload in WORKLOADS:
            raise ValueError("--augmentations filters a replayed trace, not a drawn workload")
        if self.workload not in (*WORKLOADS, TRACE_WORKLOAD) and not Path(self.workload).is_file():
            raise ValueError(
                f"{self.workload!r} is neither a workload ({', '.join((*WORKLOADS, TRACE_WORKLOAD))}) "
                "nor a trace file"
            )
        if self.max_model_len is not None:
            plans_for(self, self.max_model_len)  # refuses a length the workload does not fit, now


def add_workload_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: WorkloadSpec
) -> None:
    """--workload, --augmentations, --rate, --duration, --warmup, --seed, --duration-scale,
    --max-model-len, --statistics, --count-unfinished, defaulting to `defaults`."""
    parser.add_argument(
        "--workload",
        default=defaults.workload,
        help=f"{TRACE_WORKLOAD} (the authors' trace, replayed as their harness does), one of "
        f"{', '.join(WORKLOADS)} (drawn), or a trace .json file (replayed like {TRACE_WORKLOAD})",
    )
    parser.add_argument(
        "--augmentations",
        default=",".join(defaults.augmentations),
        help="a replayed trace's augmentations to draw from, comma-separated (e.g. math or "
        "chatbot,image); default: all",
    )
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="arrival rate, requests/s (Poisson)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration_s,
        help="measurement window, s (virtual s in the simulator)",
    )
    parser.add_argument(
        "--warmup", type=float, default=defaults.warmup_s, help="arrivals before the window, s (not measured)"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seeds arrivals, requests and token ids (>= 0)"
    )
    parser.add_argument(
        "--duration-scale",
        type=float,
        default=defaults.duration_scale,
        help="multiply every drawn tool-call duration (1: the paper's Table 1)",
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=defaults.max_model_len,
        help="longest context drawn (default: the server's, or the simulated profile's, maximum model length)",
    )
    parser.add_argument(
        "--statistics",
        choices=STATISTICS,
        default=defaults.statistics,
        help="statistics of a drawn workload: trace (the authors' trace per augmentation, truncated "
        "as their harness does) or table1 (the paper's Table 1: raw data sets, not what they ran)",
    )
    parser.add_argument(
        "--count-unfinished",
        action=argparse.BooleanOptionalAction,
        default=defaults.count_unfinished,
        help="count requests unfinished at the window's end in the latency, with the output they had "
        "(the paper's harness does)",
    )


def workload_from_flags(args: argparse.Namespace) -> WorkloadSpec:
    """The spec of add_workload_flags' parsed flags (not validated: WorkloadSpec.validate)."""
    return WorkloadSpec(
        workload=args.workload,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        seed=args.seed,
        duration_scale=args.duration_scale,
        max_model_len=args.max_model_len,
        statistics=args.statistics,
        count_unfinished=args.count_unfinished,
        augmentations=tuple(a.strip() for a in args.augmentations.split(",") if a.strip()),
    )


def plans_for(spec: WorkloadSpec, max_model_len: int) -> tuple[list[RequestPlan], dict[str, object]]:
    """The plans of warm-up and window at most `max_model_len` tokens long, and the assumptions
    that shaped them (with the number of prompt-only requests). Raises ValueError when more than
    MAX_PROMPT_ONLY_SHARE of the plans are prompt-only (see the module docstring)."""
    plans, assumptions = _plans(spec, max_model_len)
    num_prompt_only = count_prompt_only(plans, max_model_len)
    if num_prompt_only > MAX_PROMPT_ONLY_SHARE * len(plans):
        raise ValueError(_too_short(spec, max_model_len, num_prompt_only, len(plans)))
    return plans, {**assumptions, "prompt_only_requests": num_prompt_only}


def _too_short(spec: WorkloadSpec, max_model_len: int, num_prompt_only: int, num_plans: int) -> str:
    """Why a workload is refused at `max_model_len`, and what to do instead."""
    what = f"{num_prompt_only / num_plans:.0%} of the requests of {spec.workload}"
    if spec.workload in TRACE_SHAPES and spec.statistics == "trace":
        what += (
            f" (whose prompts average {TRACE_SHAPES[spec.workload].prompt_tokens[0]:.0f} tokens in the trace)"
        )
    advice = "raise --max-model-len"
    if spec.workload in WORKLOADS:
        advice += ", or draw them with --statistics table1 (each request scaled to fit, its calls kept)"
    return (
        f"{what} do not fit the model length {max_model_len} with their prompt: truncated as the "
        f"authors' harness does, each would end after one token without a tool call; {advice}"
    )


def _plans(spec: WorkloadSpec, max_model_len: int) -> tuple[list[RequestPlan], dict[str, object]]:
    run_assumptions = {"max_model_len": max_model_len, **PLAN_ASSUMPTIONS}
    if spec.workload in WORKLOADS:
        defaults = Assumptions(statistics=spec.statistics, duration_scale=spec.duration_scale)
        plans = generate_plans(spec.workload, spec.rate, spec.span_s, spec.seed, max_model_len, defaults)
        return plans, {**defaults.as_dict(), **run_assumptions}
    path = None if spec.workload == TRACE_WORKLOAD else spec.workload
    plans = replay_trace(
        spec.rate, spec.span_s, spec.seed, max_model_len, path, spec.duration_scale, spec.augmentations
    )
    return plans, {**replay_assumptions(path, spec.duration_scale, spec.augmentations), **run_assumptions}


def parse_rates(text: str | None, default: float) -> list[float]:
    """The comma-separated rates of a sweep's --rates, or [default] without it."""
    return [float(item) for item in text.split(",") if item.strip()] if text else [default]
