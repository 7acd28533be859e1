"""What a benchmark run is made of: planned requests in, per-request records out.

The workload generator draws RequestPlans; a runner (the load generator against a live
deployment, or the simulator on a virtual clock) turns each into a request with a synthetic
script and produces a RequestRecord; the metrics module summarizes the records.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Segment:
    """Generate `generated_tokens`; then, unless this is the last segment, call `tool` for
    `duration_s` seconds, which returns `returned_tokens` tokens."""

    generated_tokens: int
    tool: str | None = None  # None for the last segment
    duration_s: float = 0.0
    returned_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class RequestPlan:
    index: int  # position in the run, 0-based
    arrival_s: float  # offset from the start of the run, seconds
    workload: str  # the augmentation it was drawn from ("math", "qa", ...)
    prompt_tokens: int
    segments: tuple[Segment, ...]  # the last one has no tool

    @property
    def max_tokens(self) -> int:
        """Generated tokens in all (what SamplingParams.max_tokens must be)."""
        return sum(segment.generated_tokens for segment in self.segments)

    @property
    def num_calls(self) -> int:
        return len(self.segments) - 1

    @property
    def returned_tokens(self) -> int:
        return sum(segment.returned_tokens for segment in self.segments)

    @property
    def context_tokens(self) -> int:
        """Length of the final context: prompt + generated + returned."""
        return self.prompt_tokens + self.max_tokens + self.returned_tokens


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """What happened to one request, in seconds on the runner's clock."""

    index: int
    arrival_s: float
    completed: bool  # finished inside the measurement window
    first_token_s: float | None = None
    finish_s: float | None = None
    tool_time_s: float = 0.0  # time spent inside tool calls
    generated_tokens: int = 0  # for an unfinished request: those it had at cut_s
    returned_tokens: int = 0
    # Unfinished at the window's end, when the runner counts such a request with the output it
    # had then (the paper's harness does): the window's end; None otherwise.
    cut_s: float | None = None
    # Where the runner's clock for the request starts if not at its arrival, and the output
    # tokens before it, which the request's latency does not count: the paper's harness times the
    # requests it adds before its loop (the first int(rate) + 1) from the start of the iteration
    # that gave their first token, and counts tokens after that one only.
    timed_from_s: float | None = None
    untimed_tokens: int = 0
