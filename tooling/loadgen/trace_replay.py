"""The authors' trace, replayed the way their benchmark harness replays it (traces/README.md).

    requests   drawn uniformly with replacement from the file's keys (the file's mix), seeded
    arrivals   the first int(rate) + 1 at t = 0, then a Poisson process at `rate` requests/s
               whose first arrival is int(rate) + 2 gaps in (the harness pops the first times)
    truncation generation stops when the context reaches max_model_len; later calls never happen

Truncation walks the request segment by segment with the context c (the prompt first):

    generate g   if c + g >= L: generate L - c and stop (no call after it)
    call, get r  if c + r >= L: get L - 1 - c, generate 1 more token and stop

so the final context is at most L. (The harness, on vLLM 0.2, stops a sequence once it is longer
than L, so its contexts reach L + 1 where ours reach L; a token in 2048.) A prompt of L tokens
or more is cut to L - 1, generating one token. A call whose returned tokens end the context
within the length is kept, even at the very end (the trace's last segment generates after it).

The windows (no warm-up, 1800 s) and the counting of unfinished requests are the runners'
(`infercept-sim`, `infercept-loadgen`); this module makes the plans.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np

from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tooling.loadgen.truncation import truncate
from tooling.loadgen.workloads import parse_trace_request, poisson_arrivals

__all__ = ["truncate"]  # the harness's truncation, re-exported: part of the replay

# The workload name that replays the packaged trace.
TRACE_WORKLOAD = "trace"
PACKAGED_TRACE = "infercept_trace.json"
PACKAGED_TRUNCATED_TRACE = "infercept_trace.2048.json"  # the authors' stop at 2048, for reference


def packaged_trace_path(name: str = PACKAGED_TRACE) -> Path:
    """Path of a trace file shipped with the package (traces/)."""
    return Path(str(resources.files("tooling.loadgen") / "traces" / name))


def augmentation_of(key: str) -> str:
    """The augmentation of a trace key ("math/0a84..." -> "math"); "trace" without a prefix."""
    return key.split("/", 1)[0] if "/" in key else "trace"


def read_keyed_trace(path: str | Path) -> dict[str, tuple[int, list[Segment]]]:
    """Every request of a trace file by key: (prompt tokens, segments), the segments' tool being
    the key's augmentation. Raises ValueError for anything that is not a valid trace, OSError."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: a trace is a non-empty JSON object mapping request id -> segments")
    return {
        key: parse_trace_request(key, raw, f"{path}: request {key!r}", augmentation_of(key))
        for key, raw in data.items()
    }


def trace_keys(requests: dict[str, tuple[int, list[Segment]]], augmentations: tuple[str, ...]) -> list[str]:
    """The trace's keys in file order, only those of `augmentations` if any are given; ValueError
    naming an augmentation the trace does not have."""
    if not augmentations:
        return list(requests)
    present = {augmentation_of(key) for key in requests}
    missing = sorted(set(augmentations) - present)
    if missing:
        raise ValueError(f"the trace has no requests of {missing}; it has {sorted(present)}")
    return [key for key in requests if augmentation_of(key) in augmentations]


def harness_arrivals(rate: float, duration_s: float, rng: np.random.Generator) -> list[float]:
    """Arrival offsets (s) within [0, duration_s): int(rate) + 1 at t = 0, then Poisson at `rate`,
    whose first arrival comes after int(rate) + 2 gaps, not one: the harness draws an arrival
    time for every request (a running sum of exponential gaps), adds the first int(rate) + 1
    requests at t = 0 popping their times unused, and the next one arrives at the next time."""
    if duration_s <= 0:
        poisson_arrivals(rate, 0.0, rng)  # the rate is checked all the same
        return []
    num_at_zero = int(rate) + 1
    popped_s = float(rng.exponential(1.0 / rate, size=num_at_zero).sum())  # the times popped unused
    later = poisson_arrivals(rate, max(duration_s - popped_s, 0.0), rng)
    return [0.0] * num_at_zero + [popped_s + t for t in later]


def replay_trace(
    rate: float,
    duration_s: float,
    seed: int,
    max_model_len: int,
    path: str | Path | None = None,
    duration_scale: float = 1.0,
    augmentations: tuple[str, ...] = (),
) -> list[RequestPlan]:
    """Plans of the harness's replay of the trace at `path` (the packaged one by default) over
    [0, duration_s), in arrival order; each plan's workload is its augmentation, each call's
    duration is multiplied by `duration_scale` (1: the trace's). With `augmentations`, only the
    requests of those are drawn (in their proportions in the file). The same arguments give the
    same plans. Raises ValueError (bad trace or argument, an augmentation the trace lacks) or
    OSError."""
    if not duration_scale > 0:
        raise ValueError(f"duration_scale must be > 0, got {duration_scale}")
    requests = read_keyed_trace(path or packaged_trace_path())
    keys = trace_keys(requests, augmentations)
    arrivals = harness_arrivals(rate, duration_s, np.random.default_rng([seed, 0]))
    picks = np.random.default_rng([seed, 1]).integers(len(keys), size=len(arrivals))
    plans = []
    for index, (arrival_s, pick) in enumerate(zip(arrivals, picks.tolist(), strict=True)):
        key = keys[pick]
        prompt, segments = truncate(*requests[key], max_model_len)
        if duration_scale != 1.0:
            segments = [dataclasses.replace(s, duration_s=s.duration_s * duration_scale) for s in segments]
        plans.append(RequestPlan(index, arrival_s, augmentation_of(key), prompt, tuple(segments)))
    return plans


def replay_assumptions(
    path: str | Path | None, duration_scale: float = 1.0, augmentations: tuple[str, ...] = ()
) -> dict[str, object]:
    """How the plans were made, for the results' "assumptions" field."""
    return {
        "duration_scale": duration_scale,
        "augmentations": list(augmentations) or "all",
        "trace": str(path) if path else f"packaged {PACKAGED_TRACE} (the InferCept authors' trace)",
        "trace_order": "keys drawn uniformly with replacement (the file's mix), seeded",
        "arrivals": "int(rate) + 1 at t = 0, then Poisson at the rate, its first arrival after "
        "int(rate) + 2 exponential gaps (the harness pops the first int(rate) + 1 arrival times unused)",
        "truncation": "generation stops when the context reaches max_model_len; later calls never happen",
    }
