"""The paper's six augmentations (WORKLOADS.md) as RequestPlan generators, and trace reading.

Two sets of statistics (Assumptions.statistics):

"trace" (the default): the authors' trace per augmentation (trace_shapes.py): prompt, number of
calls, tokens generated before each call and returned by it, call durations and the tokens
generated after the last call, each from `family` with the trace's mean and spread; image and tts
alternate a media call and a human turn; `mixed` draws augmentations in the file's proportions.
Requests are then truncated at max_model_len as the authors' harness does (trace_replay.truncate),
so the drawn workload has the statistics of the traces README's table.

"table1" (the documented alternative): the paper's Table 1, below; `mixed` picks one sixth each.
Table 1 mixes the raw data sets' statistics with the replay's (ve's 28 calls are the raw data
set's), so it is not what the authors ran.

A request of augmentation A is drawn from A's row of the paper's Table 1 (mean ± spread):

    calls       1 + X, X from `family` with mean (table mean − 1) and the table's spread, rounded
                stochastically (floor(X + U), U ~ Uniform[0, 1)), which keeps the mean exact
    durations   each call independently from `family` with the table's mean and spread
    context     the final context length from `family` with the table's mean and spread, rounded,
                and at least what the minimums below need for the drawn number of calls

`family` is an Assumptions field:
    "lognormal" (default)  a log-normal with exactly the table's mean and spread (moment matched:
                           σ² = ln(1 + spread²/mean²), μ = ln(mean) − σ²/2). Always positive and
                           right-skewed, like the profiled figures whose spread nears their mean.
    "normal"               a normal clipped at 0 (contexts at the minimum). Clipping raises the
                           mean where the spread is large against the mean (chatbot contexts).

The final context of C tokens with n calls splits as (all Assumptions fields):

    | prompt | gen 1 | ret 1 | gen 2 | ret 2 | ... | gen n | ret n | gen n+1 |
      prompt_share·C, at least min_prompt_tokens
               the rest split evenly over the n + 1 segments (earlier ones take the remainder);
               a call's segment: returned_share of it is what the call returns, the remainder
               (at least min_generated_tokens) is generated before the call; the last segment is
               all generated.

Contexts longer than max_model_len shrink to exactly max_model_len (fit_to_length): every part
scales by the same factor, rounding down, keeping the minimums; the number of calls and their
durations stay. Context statistics are therefore biased at the paper's 2048 (most `ve` requests
are clipped). Arrivals are a Poisson process at `rate` requests/s; the arrival times depend on
the seed, rate and span only, so workloads run with one seed share them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tooling.loadgen.trace_shapes import TRACE_SHAPES, TraceShape
from tooling.loadgen.truncation import truncate

FAMILIES = ("lognormal", "normal")
STATISTICS = ("trace", "table1")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One row of the paper's Table 1: (mean, spread) pairs; spread is a standard deviation."""

    name: str
    call_duration_s: tuple[float, float]
    num_calls: tuple[float, float]
    context_tokens: tuple[float, float]


AUGMENTATIONS: dict[str, Augmentation] = {
    a.name: a
    for a in (
        Augmentation("math", (9e-5, 6e-5), (3.75, 1.3), (1422, 738)),
        Augmentation("qa", (0.69, 0.17), (2.52, 1.73), (1846, 428)),
        Augmentation("ve", (0.09, 0.014), (28.18, 15.2), (2185, 115)),
        Augmentation("chatbot", (28.6, 15.6), (4.45, 1.96), (753, 703)),
        Augmentation("image", (20.03, 7.8), (6.91, 3.93), (1247, 792)),
        Augmentation("tts", (17.24, 7.6), (6.91, 3.93), (1251, 792)),
    )
}
# `mixed`: each request picks one of the six uniformly at random (the paper's main workload).
WORKLOADS = (*AUGMENTATIONS, "mixed")
PAPER_MAX_MODEL_LEN = 2048


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """What Table 1 does not say and a generator must assume; reported in every results file."""

    # Which statistics the requests follow: "trace" (the authors' trace, per augmentation) or
    # "table1" (the paper's Table 1; the split below applies to it only).
    statistics: str = "trace"
    # Distribution of counts, durations and context lengths: "lognormal" or "normal" (clipped).
    family: str = "lognormal"
    # Share of the final context that is the prompt.
    prompt_share: float = 0.4
    # Share of a call's segment (the tokens between two calls) that the call returns.
    returned_share: float = 0.5
    # Floors: a prompt has at least this many tokens, every segment generates at least this many.
    min_prompt_tokens: int = 8
    min_generated_tokens: int = 2
    # Every drawn call duration is multiplied by this. 1 is the paper's Table 1; a short run on a
    # small machine may compress the 20-30 s human and media calls so that requests complete
    # within its window (the comparison is then of a scaled workload, and says so).
    duration_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {self.statistics!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not 0.0 <= self.prompt_share < 1.0:
            raise ValueError(f"prompt_share must be in [0, 1), got {self.prompt_share}")
        if not 0.0 <= self.returned_share < 1.0:
            raise ValueError(f"returned_share must be in [0, 1), got {self.returned_share}")
        if self.min_prompt_tokens < 1 or self.min_generated_tokens < 1:
            raise ValueError("min_prompt_tokens and min_generated_tokens must be >= 1")
        if self.duration_scale <= 0:
            raise ValueError(f"duration_scale must be > 0, got {self.duration_scale}")

    def min_context_tokens(self, num_calls: int) -> int:
        """The shortest context that holds a prompt and num_calls + 1 segments."""
        return self.min_prompt_tokens + (num_calls + 1) * self.min_generated_tokens

    def as_dict(self) -> dict[str, Any]:
        """Every choice that shapes the drawn plans, for the results' "assumptions" field."""
        if self.statistics == "trace":
            return {
                "statistics": "trace",
                "family": self.family,
                "duration_scale": self.duration_scale,
                "arrivals": "poisson",
                "mix": "the trace file's proportions",
                "truncation": "as the authors' harness: generation stops at max_model_len",
                "shapes": {name: dataclasses.asdict(shape) for name, shape in TRACE_SHAPES.items()},
            }
        return {
            **dataclasses.asdict(self),
            "arrivals": "poisson",
            "num_calls": "1 + stochastically rounded draw with mean (table mean - 1)",
            "segment_split": "even over the segments; remainder to the earliest",
            "clipping": "scale every part to max_model_len; floors kept",
            "augmentations": {
                a.name: {
                    "call_duration_s": list(a.call_duration_s),
                    "num_calls": list(a.num_calls),
                    "context_tokens": list(a.context_tokens),
                }
                for a in AUGMENTATIONS.values()
            },
        }


def generate_plans(
    workload: str,
    rate: float,
    duration_s: float,
    seed: int,
    max_model_len: int = PAPER_MAX_MODEL_LEN,
    assumptions: Assumptions | None = None,
) -> list[RequestPlan]:
    """Requests of `workload` (an augmentation name or "mixed") arriving as a Poisson process of
    `rate` requests/s over [0, duration_s), in arrival order; each context <= max_model_len.
    The same arguments give the same plans. Arrival times depend on (seed, rate, duration_s)
    only, so that workloads run with one seed share their arrivals. Raises ValueError."""
    a = assumptions or Assumptions()
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    if max_model_len < a.min_context_tokens(0):
        raise ValueError(f"max_model_len {max_model_len} cannot hold a minimal request")
    arrivals = poisson_arrivals(rate, duration_s, np.random.default_rng([seed, 0]))
    rng = np.random.default_rng([seed, 1])
    names = list(AUGMENTATIONS)
    weights = np.array([TRACE_SHAPES[name].num_in_trace for name in names], dtype=np.float64)
    plans = []
    for index, arrival_s in enumerate(arrivals):
        if a.statistics == "trace":
            name = str(rng.choice(names, p=weights / weights.sum())) if workload == "mixed" else workload
            plans.append(draw_trace_plan(TRACE_SHAPES[name], index, arrival_s, rng, max_model_len, a))
            continue
        name = names[int(rng.integers(len(names)))] if workload == "mixed" else workload
        plans.append(draw_plan(AUGMENTATIONS[name], index, arrival_s, rng, max_model_len, a))
    return plans


def draw_trace_plan(
    shape: TraceShape,
    index: int,
    arrival_s: float,
    rng: np.random.Generator,
    max_model_len: int,
    a: Assumptions,
) -> RequestPlan:
    """One request shaped like `shape`'s augmentation of the trace, truncated at max_model_len."""
    prompt = max(1, round(_draw(rng, a.family, *shape.prompt_tokens, 1)[0]))
    mean_calls, spread_calls = shape.num_calls
    extra_calls = _draw(rng, a.family, mean_calls - shape.min_calls, spread_calls, 1)[0]
    num_calls = shape.min_calls + math.floor(extra_calls + rng.random())
    segments = []
    for i in range(num_calls):
        kind = shape.call_kinds[i % len(shape.call_kinds)]
        generated = max(1, round(_draw(rng, a.family, *kind.generated_tokens, 1)[0]))
        returned = max(0, round(_draw(rng, a.family, *kind.returned_tokens, 1)[0]))
        duration_s = float(_draw(rng, a.family, *kind.duration_s, 1)[0]) * a.duration_scale
        segments.append(Segment(generated, shape.name, duration_s, returned))
    segments.append(Segment(max(1, round(_draw(rng, a.family, *shape.last_generated_tokens, 1)[0]))))
    prompt, segments = truncate(prompt, segments, max_model_len)
    return RequestPlan(index, arrival_s, shape.name, prompt, tuple(segments))


def poisson_arrivals(rate: float, duration_s: float, rng: np.random.Generator) -> list[float]:
    """Arrival offsets (s) of a Poisson process of `rate` per second within [0, duration_s)."""
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    arrivals: list[float] = []
    t = float(rng.exponential(1.0 / rate))
    while t < duration_s:
        arrivals.append(t)
        t += float(rng.exponential(1.0 / rate))
    return arrivals


def draw_plan(
    augmentation: Augmentation,
    index: int,
    arrival_s: float,
    rng: np.random.Generator,
    max_model_len: int,
    a: Assumptions,
) -> RequestPlan:
    """One request of `augmentation` (see the module docstring for the distributions)."""
    mean_calls, spread_calls = augmentation.num_calls
    extra_calls = _draw(rng, a.family, mean_calls - 1.0, spread_calls, 1)[0]
    num_calls = 1 + math.floor(extra_calls + rng.random())
    durations_s = (_draw(rng, a.family, *augmentation.call_duration_s, num_calls) * a.duration_scale).tolist()
    context_tokens = round(_draw(rng, a.family, *augmentation.context_tokens, 1)[0])
    context_tokens = max(context_tokens, a.min_context_tokens(num_calls))
    prompt, segments = split_context(context_tokens, durations_s, augmentation.name, a)
    prompt, segments = fit_to_length(
        prompt, segments, max_model_len, a.min_prompt_tokens, a.min_generated_tokens
    )
    return RequestPlan(index, arrival_s, augmentation.name, prompt, tuple(segments))


def split_context(
    context_tokens: int, durations_s: Sequence[float], tool: str, a: Assumptions
) -> tuple[int, list[Segment]]:
    """Prompt tokens and segments (one per call, then the last) summing to context_tokens,
    which must be at least a.min_context_tokens(len(durations_s))."""
    num_segments = len(durations_s) + 1
    min_rest = num_segments * a.min_generated_tokens
    assert context_tokens >= a.min_prompt_tokens + min_rest, "the context is below its minimum"
    prompt = min(max(round(context_tokens * a.prompt_share), a.min_prompt_tokens), context_tokens - min_rest)
    base, remainder = divmod(context_tokens - prompt, num_segments)
    budgets = [base + (i < remainder) for i in range(num_segments)]
    segments = []
    for budget, duration_s in zip(budgets, durations_s, strict=False):
        returned = min(round(budget * a.returned_share), budget - a.min_generated_tokens)
        segments.append(Segment(budget - returned, tool, float(duration_s), returned))
    segments.append(Segment(budgets[-1]))
    return prompt, segments


def fit_to_length(
    prompt: int, segments: Sequence[Segment], max_len: int, min_prompt: int, min_generated: int
) -> tuple[int, list[Segment]]:
    """Shrink a request whose context exceeds max_len to exactly max_len: every part scales by
    max_len / context, rounding down and keeping the floors; what the floors put over comes off
    the prompt, then the returned tokens, then the generated tokens, and what rounding down left
    under goes to the last segment. Drops the last calls only when even the floors of all
    segments cannot fit. Raises ValueError if a prompt and one segment cannot fit."""
    segments = list(segments)
    if min_prompt + min_generated > max_len:
        raise ValueError(f"max_model_len {max_len} cannot hold a minimal request")
    while min_prompt + len(segments) * min_generated > max_len:
        # The second-to-last segment becomes the last: its call and the final segment go.
        segments = [*segments[:-2], Segment(segments[-2].generated_tokens)]
    total = prompt + sum(s.generated_tokens + s.returned_tokens for s in segments)
    if total <= max_len:
        return prompt, segments
    scale = max_len / total
    # values: the prompt, every returned count, every generated count; the order of trimming.
    values = [max(min_prompt, math.floor(prompt * scale))]
    values += [math.floor(s.returned_tokens * scale) for s in segments]
    values += [max(min_generated, math.floor(s.generated_tokens * scale)) for s in segments]
    floors = [min_prompt] + [0] * len(segments) + [min_generated] * len(segments)
    excess = sum(values) - max_len
    for i, floor in enumerate(floors):
        cut = max(0, min(excess, values[i] - floor))
        values[i] -= cut
        excess -= cut
    assert excess <= 0, "the floors fit, so trimming reaches max_len"
    values[-1] -= excess  # what rounding down left over: the last segment generates it
    n = len(segments)
    fitted = [
        dataclasses.replace(s, returned_tokens=values[1 + i], generated_tokens=values[1 + n + i])
        for i, s in enumerate(segments)
    ]
    return values[0], fitted


def load_trace(
    path: str | Path,
    rate: float,
    seed: int,
    *,
    duration_s: float | None = None,
    max_model_len: int | None = None,
    tool: str = "trace",
) -> list[RequestPlan]:
    """Plans from a trace in the paper's format: a JSON object mapping request id -> list of
    segments {"prompt_tokens", "completion_tokens", "api_time", "api_token_length"}, the last
    segment without a call, arriving as a Poisson process of `rate` requests/s.

    How a segment is read: the first segment's prompt_tokens is the prompt; completion_tokens
    are the tokens generated in the segment (read as 1 when 0: the server intercepts only after
    a generated token); a segment that is not the last then calls `tool` for api_time seconds,
    which returns api_token_length tokens. Later segments' prompt_tokens are ignored: in the
    paper's harness they are the context so far, which the earlier segments already determine.

    Requests are taken in the file's order. With duration_s, arrivals fill [0, duration_s) and
    the trace is cycled as often as needed; without it, each request arrives once. With
    max_model_len, longer requests shrink as fit_to_length says. Raises ValueError (a bad trace
    or argument) or OSError."""
    requests = read_trace(path)
    rng = np.random.default_rng([seed, 0])
    if duration_s is not None:
        arrivals = poisson_arrivals(rate, duration_s, rng)
    elif rate > 0 and math.isfinite(rate):
        arrivals = np.cumsum(rng.exponential(1.0 / rate, len(requests))).tolist()
    else:
        raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
    plans = []
    for index, arrival_s in enumerate(arrivals):
        prompt, segments = requests[index % len(requests)]
        segments = [dataclasses.replace(s, tool=tool) if s.tool is not None else s for s in segments]
        if max_model_len is not None:
            prompt, segments = fit_to_length(prompt, segments, max_model_len, 1, 1)
        plans.append(RequestPlan(index, arrival_s, "trace", prompt, tuple(segments)))
    return plans


def read_trace(path: str | Path) -> list[tuple[int, list[Segment]]]:
    """(prompt tokens, segments) of every request of a trace file, in the file's order; the
    segments' tool is "trace". Raises ValueError for anything that is not a valid trace."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: a trace is a non-empty JSON object mapping request id -> segments")
    return [
        parse_trace_request(request_id, raw, f"{path}: request {request_id!r}")
        for request_id, raw in data.items()
    ]


def parse_trace_request(
    request_id: str, raw_segments: object, where: str, tool: str = "trace"
) -> tuple[int, list[Segment]]:
    """(prompt tokens, segments) of one trace entry, its calls to `tool` (see load_trace for how a
    segment is read). Raises ValueError naming `where` for an invalid entry."""
    if not isinstance(raw_segments, list) or not raw_segments:
        raise ValueError(f"{where}: expected a non-empty list of segments")
    prompt = _trace_number(raw_segments[0], "prompt_tokens", where, int)
    if prompt < 1:
        raise ValueError(f"{where}: the prompt needs at least one token")
    segments = []
    for i, raw in enumerate(raw_segments):
        generated = max(1, _trace_number(raw, "completion_tokens", f"{where} segment {i}", int))
        if i == len(raw_segments) - 1:
            segments.append(Segment(generated))
        else:
            duration_s = _trace_number(raw, "api_time", f"{where} segment {i}", float)
            returned = _trace_number(raw, "api_token_length", f"{where} segment {i}", int)
            segments.append(Segment(generated, tool, duration_s, returned))
    return prompt, segments


def _trace_number(raw: object, key: str, where: str, kind: type[int] | type[float]) -> Any:
    value = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {key!r} must be a non-negative number, got {value!r}")
    return kind(value)


def _draw(rng: np.random.Generator, family: str, mean: float, spread: float, size: int) -> np.ndarray:
    """`size` draws with the given mean and spread, never negative."""
    if mean <= 0:
        return np.zeros(size)
    if family == "normal":
        return np.maximum(rng.normal(mean, spread, size), 0.0)
    sigma2 = math.log1p((spread / mean) ** 2)
    return rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), size)
