"""The discrete-event loop: the real scheduler core driven on a virtual clock.

Events are request arrivals (at plan.arrival_s) and tool returns (a call lasts its segment's
duration_s from the iteration that intercepted the request). While there is work, iterations run
back to back, each advancing the clock by the virtual executor's iteration time (its step plus
the iteration's overhead); events that happen during an iteration reach the scheduler at their
own times, before that iteration's update, as they would on the real server. When nothing can
run, the clock jumps to the next event.

    schedule(t) ──▶ executor.run(plan) ──▶ arrivals and tool returns in (t, t + iteration_s],
                                           each at its own time ──▶ update(t + iteration_s)

A request is what the load generator sends for its plan: the prompt and returned tokens as ids,
the calls as a synthetic script whose duration hints are the drawn durations (also sent as
ToolStarted when the call starts).

Measurement window [warmup_s, warmup_s + duration_s): requests arriving before it are not
measured, requests unfinished at its end are not completed (their records carry the output they
had at its end, cut_s, for runs that count them as the paper's harness does), and the simulation
stops at the first iteration boundary at or past its end. Server stats are taken at the first
iteration boundary at or past its start and at the stop.

With `harness_timing`, a request's times are taken as the paper's harness takes them (its
benchmark loop reads the clock once per iteration, before the step): a call lasts from the start
of the iteration that intercepted the request to the end of the iteration during which the tool
returned (the loop polls for results after each step), a call still running at the window's end
is not subtracted (only returned calls are), a finished request ends at the start of its
last iteration, and a request arriving at t = 0 (the harness adds the first int(rate) + 1 before
its loop) is timed from the start of the iteration that gave its first token, which it does not
count. Otherwise a call lasts its drawn duration, the part inside the window for one cut
at the end, and a request ends when its last iteration does.

Forward time is kept beside the scheduler's stats ("forward_s", "recomputed_forward_s"): each
iteration's forward time is split over its tokens in proportion to their number (token-share
attribution), so recomputed tokens get forward_s · recomputed / computed of it. A policy that
restores for free (`ideal`) has its recomputed tokens cost no time at all.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from infercept.server_info import message_to_dict
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError
from scheduler_svc.config import ExecutorDescription, SchedulerConfig
from scheduler_svc.events import Event, Finished, Intercepted, TokenDeltas, Usage
from scheduler_svc.request import TokenKind
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.sim.request_plan import RequestPlan, RequestRecord
from scheduler_svc.sim.virtual_executor import SAMPLED_TOKEN_ID, VOCAB_SIZE, VirtualExecutor
from scheduler_svc.stats_render import stats_proto


@dataclasses.dataclass
class _Progress:
    """One planned request as the simulation goes."""

    plan: RequestPlan
    request_id: int = 0  # the scheduler's id, once admitted
    num_calls: int = 0  # interceptions so far (index of the next segment's call)
    first_token_s: float | None = None
    first_step_s: float | None = None  # when the iteration that gave its first token began
    finish_s: float | None = None
    tool_time_s: float = 0.0  # of the calls started so far, in full
    call_return_s: float = 0.0  # when the last call started returns
    pause_step_s: float = 0.0  # harness timing: when the iteration that intercepted it began
    returned_call_s: float = 0.0  # harness timing: the calls returned so far, as the harness times them
    num_generated: int = 0  # tokens streamed so far
    num_returned: int = 0  # tokens returned by the calls so far
    usage: Usage | None = None  # the server's counts, once finished
    error: str = ""  # gRPC status code name if the server refused it


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    records: list[RequestRecord]  # requests arriving inside the window, in plan order
    stats_before: dict[str, Any]  # scheduler stats at the window's start (client server_stats keys)
    stats_after: dict[str, Any]  # ... and at the stop
    window_start_s: float
    window_end_s: float
    end_s: float  # virtual time at the stop
    num_iterations: int
    errors: dict[str, int]  # refused or failed requests (all, not only measured) by status code


def executor_description(profile: CostProfile) -> ExecutorDescription:
    """What the scheduler is told of the virtual executor."""
    return ExecutorDescription(
        block_size=profile.block_size_tokens,
        num_device_blocks=profile.num_device_blocks,
        num_host_blocks=profile.num_host_blocks,
        vocab_size=VOCAB_SIZE,
        max_model_len=profile.max_model_len,
        eos_token_ids=(),
        model=profile.name,
        device="virtual",
    )


def generate_request(plan: RequestPlan) -> gen.GenerateRequest:
    """The request a load generator sends for `plan`: token-id prompt, a synthetic script."""
    script = [
        gen.ScriptedCall(after_tokens=s.generated_tokens, tool=s.tool or "", expected_duration_s=s.duration_s)
        for s in plan.segments[:-1]
    ]
    # The first token tells requests apart (distinct users): with prefix caching a request finds
    # cached only what it computed itself, in earlier turns.
    prompt_ids = [SAMPLED_TOKEN_ID] * plan.prompt_tokens
    if prompt_ids:
        prompt_ids[0] = 2 + plan.index % (VOCAB_SIZE - 2)
    return gen.GenerateRequest(
        prompt_token_ids=prompt_ids,
        sampling=gen.SamplingParams(max_tokens=plan.max_tokens, ignore_eos=True),
        script=script,
    )


class Simulation:
    """One run of `plans` against a fresh scheduler on a virtual executor."""

    def __init__(
        self,
        plans: Iterable[RequestPlan],
        profile: CostProfile,
        config: SchedulerConfig,
        overlap_swaps: bool = False,
        harness_timing: bool = False,
    ) -> None:
        self.harness_timing = harness_timing
        # The policy sees what a real scheduler would: the profile's costs, refined as it runs.
        self.scheduler = Scheduler(config, executor_description(profile), None, profile.policy_cost_model())
        # A policy that budgets its swaps has them pipelined with compute (the executor's side stream).
        self.executor = VirtualExecutor(profile, overlap_swaps or self.scheduler.policy.pipelines_swaps)
        self.now = 0.0
        self.num_iterations = 0
        self._progress = [_Progress(plan) for plan in sorted(plans, key=lambda p: (p.arrival_s, p.index))]
        self._next_arrival = 0  # index into _progress
        self._tool_returns: list[tuple[float, int, int]] = []  # heap of (time, tie-break, request id)
        self._num_tool_calls = 0
        self._live: dict[int, _Progress] = {}  # by request id
        self._step_start_s = 0.0  # when the iteration under way began
        self._forward_s = 0.0  # forward time of every iteration so far
        self._recomputed_forward_s = 0.0  # ... attributed to recomputed tokens

    def run(self, warmup_s: float, duration_s: float) -> SimulationResult:
        window_start, window_end = warmup_s, warmup_s + duration_s
        stats_before: dict[str, Any] | None = None
        while self.now < window_end:
            if stats_before is None and self.now >= window_start:
                stats_before = self._stats()
            if self.scheduler.has_work() and self._step():
                continue
            # Nothing can run until something happens.
            next_s = self._next_event_s()
            if next_s >= window_end:
                break
            if stats_before is None and next_s >= window_start:
                stats_before = self._stats()  # nothing changes while the clock jumps
            self.now = next_s
            self._deliver(next_s)
        stats_after = self._stats()
        return SimulationResult(
            records=[
                self._record(p, window_end, self.harness_timing)
                for p in self._progress
                if window_start <= p.plan.arrival_s < window_end
            ],
            stats_before=stats_before or stats_after,
            stats_after=stats_after,
            window_start_s=window_start,
            window_end_s=window_end,
            end_s=self.now,
            num_iterations=self.num_iterations,
            errors=dict(Counter(p.error for p in self._progress if p.error)),
        )

    # ----- the iteration -----

    def _step(self) -> bool:
        """One iteration; False if the plan did nothing (no work fits), so time must pass."""
        kinds = self.scheduler.stats.tokens_by_kind
        recomputed_before, returned_before = kinds[TokenKind.RECOMPUTE], kinds[TokenKind.RETURNED]
        self._step_start_s = self.now
        plan = self.scheduler.schedule(self.now)
        num_recomputed = kinds[TokenKind.RECOMPUTE] - recomputed_before
        num_returned = kinds[TokenKind.RETURNED] - returned_before
        is_free = self.scheduler.policy.restores_for_free
        result = self.executor.run(plan, num_free_tokens=num_recomputed if is_free else 0)
        self._forward_s += result.forward_s
        if num_recomputed and not is_free and result.num_batched_tokens:
            self._recomputed_forward_s += result.forward_s * num_recomputed / result.num_batched_tokens
        iteration_s = self.executor.iteration_s(plan, result, num_returned)
        end_s = self.now + iteration_s
        self._deliver(end_s)
        events = self.scheduler.update(plan, result, end_s)
        self.num_iterations += 1
        self.now = end_s
        self._handle(events, end_s)
        return iteration_s > 0 or bool(plan.work.request_ids)  # work restored for free took no time, yet ran

    # ----- events -----

    def _next_event_s(self) -> float:
        arrival_s = (
            self._progress[self._next_arrival].plan.arrival_s
            if self._next_arrival < len(self._progress)
            else math.inf
        )
        return min(arrival_s, self._tool_returns[0][0] if self._tool_returns else math.inf)

    def _deliver(self, until_s: float) -> None:
        """Arrivals and tool returns up to `until_s` (the end of the iteration under way, or the
        time the clock jumps to), in time order, each at its own time."""
        while (event_s := self._next_event_s()) <= until_s:
            if self._tool_returns and self._tool_returns[0][0] == event_s:
                _, _, request_id = heapq.heappop(self._tool_returns)
                progress = self._live[request_id]
                progress.returned_call_s += until_s - progress.pause_step_s  # the harness's poll
                self._tool_returned(progress, event_s)
            else:
                self._arrive(self._progress[self._next_arrival], event_s)
                self._next_arrival += 1

    def _arrive(self, progress: _Progress, now: float) -> None:
        try:
            request, events = self.scheduler.add(generate_request(progress.plan), now)
        except RequestError as error:
            progress.error = error.code
            return
        progress.request_id = request.request_id
        self._live[request.request_id] = progress
        self._handle(events, now)

    def _tool_returned(self, progress: _Progress, now: float) -> None:
        returned = progress.plan.segments[progress.num_calls - 1].returned_tokens
        progress.num_returned += returned
        try:
            events = self.scheduler.resume(progress.request_id, [SAMPLED_TOKEN_ID] * returned, now)
        except RequestError as error:  # e.g. the result does not fit in the maximum length
            progress.error = error.code
            events = self.scheduler.abort(progress.request_id)
        self._handle(events, now)

    def _handle(self, events: list[Event], now: float) -> None:
        for event in events:
            if isinstance(event, TokenDeltas):  # one token per request
                for request_id in event.request_ids:
                    progress = self._live[request_id]
                    progress.num_generated += 1
                    if progress.first_token_s is None:
                        progress.first_token_s = now
                        progress.first_step_s = self._step_start_s
                continue
            request_id = event.request_id
            progress = self._live[request_id]
            if isinstance(event, Intercepted):
                duration_s = progress.plan.segments[progress.num_calls].duration_s
                progress.num_calls += 1
                progress.tool_time_s += duration_s
                progress.call_return_s = now + duration_s
                progress.pause_step_s = self._step_start_s
                self.scheduler.tool_started(request_id, duration_s)  # as the client library does
                self._num_tool_calls += 1
                heapq.heappush(self._tool_returns, (now + duration_s, self._num_tool_calls, request_id))
            elif isinstance(event, Finished):
                progress.finish_s = self._step_start_s if self.harness_timing else now
                progress.usage = event.usage
                del self._live[request_id]

    # ----- results -----

    def _stats(self) -> dict[str, Any]:
        stats = message_to_dict(stats_proto(self.scheduler))
        return {**stats, "forward_s": self._forward_s, "recomputed_forward_s": self._recomputed_forward_s}

    @staticmethod
    def _record(progress: _Progress, window_end_s: float, harness_timing: bool = False) -> RequestRecord:
        finish_s, usage = progress.finish_s, progress.usage
        # The harness adds the requests arriving at t = 0 before its loop, and times them from
        # the start of the iteration that gave their first token, counting the tokens after it.
        timed_late = harness_timing and progress.plan.arrival_s <= 0.0 and progress.first_step_s is not None
        timed_from_s, untimed_tokens = (progress.first_step_s, 1) if timed_late else (None, 0)
        if (finish_s is None or finish_s > window_end_s) and not progress.error:
            # Unfinished at the window's end: what it had then (a call still running counts up
            # to the end only, or, as the harness counts, not at all).
            if harness_timing:
                tool_time_s = progress.returned_call_s
            else:
                tool_time_s = progress.tool_time_s - max(progress.call_return_s - window_end_s, 0.0)
            return RequestRecord(
                index=progress.plan.index,
                arrival_s=progress.plan.arrival_s,
                completed=False,
                first_token_s=progress.first_token_s,
                tool_time_s=tool_time_s,
                generated_tokens=progress.num_generated,
                returned_tokens=progress.num_returned,
                cut_s=window_end_s,
                timed_from_s=timed_from_s,
                untimed_tokens=untimed_tokens,
            )
        return RequestRecord(
            index=progress.plan.index,
            arrival_s=progress.plan.arrival_s,
            completed=finish_s is not None and finish_s <= window_end_s and not progress.error,
            first_token_s=progress.first_token_s,
            finish_s=finish_s,
            tool_time_s=progress.returned_call_s if harness_timing else progress.tool_time_s,
            generated_tokens=usage.generated_tokens if usage else 0,
            returned_tokens=usage.returned_tokens if usage else 0,
            timed_from_s=timed_from_s,
            untimed_tokens=untimed_tokens,
        )


def simulate(
    plans: Iterable[RequestPlan],
    profile: CostProfile,
    config: SchedulerConfig,
    warmup_s: float,
    duration_s: float,
    overlap_swaps: bool = False,
    harness_timing: bool = False,
) -> SimulationResult:
    """Run `plans` on a virtual executor with `profile`; see the module docstring."""
    return Simulation(plans, profile, config, overlap_swaps, harness_timing).run(warmup_s, duration_s)
