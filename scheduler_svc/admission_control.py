"""Admission control: refuse a new request, early and fast, when the queue ahead of it would keep
it waiting longer than a bound, so that the latency of the requests admitted stays bounded.

    expected wait (s) = calibration × max(prompt tokens waiting / prompt rate (tokens/s),
                                          how long the oldest request not yet started has waited,
                                          device tokens wanted beyond the pool / tokens freed per s)

A new request waits for its prompt to be computed, behind the prompts of the requests that came
before it and have not started (first come, first served). The prompt tokens waiting are theirs,
as of the last iteration, plus the prompts admitted since. The service rate is measured: the
prompt tokens the scheduler computed per second of the recent iterations that left prompts
waiting, over the last WINDOW_S seconds of them (only then is it the capacity, not the demand).
It needs no model of what else competes for the iterations: decodes, tool results and
recomputation of older requests, swaps, and above all memory (when the device is full, prompts
wait for older requests to finish, while iterations stay busy recomputing preempted contexts):
whatever slows the prompts lowers the rate. Before any has been measured, the cost model's time
for a full token budget gives the rate; with neither, the token term is 0.

The second term is measured, not estimated, and lags nothing: a newcomer waits at least as long
as the oldest request still waiting for its first token already has.

The third is memory. The rate of prompts is bursty when the device pool is the limit: prompts
compute quickly whenever blocks free up, then nothing moves until older requests finish. Every
live request that is not paused wants its whole context on the device (paused ones: what they
hold there); what exceeds the pool can only be served as finishing requests free their contexts,
so the excess over the context tokens freed per second (measured over WINDOW_S seconds of wall
time) is how long the newest must wait. Before any request has finished, the term is 0.

What none of the terms foresees (decodes and tool results of older requests arriving while a
newcomer waits, bursts) is corrected by feedback: the estimate is scaled by the ratio of the
waits the last CALIBRATION_SAMPLES requests had to the ones estimated when they were admitted,
between 1 and MAX_CALIBRATION (scaled up only: an underestimate is what breaks the bound).

A refused request gets RESOURCE_EXHAUSTED with a retry hint: the time the queue needs to drain
back to the bound at the measured rate. The live-request cap stays as a hard limit beside this.
"""

from __future__ import annotations

import collections
import math

from scheduler_svc.admission import RequestError

CALIBRATION_SAMPLES = 64  # the last requests started whose waits calibrate the estimate
MAX_CALIBRATION = 4.0  # the most the estimate is scaled up
WINDOW_S = 5.0  # seconds of backlogged iterations that the service rate is measured over
MIN_RETRY_AFTER_S = 0.05  # the smallest retry hint given: a client retrying at once only adds load


class QueueWaitControl:
    """Estimates a new request's queue wait and refuses it past `max_queue_wait_s` (0: never).

    Driven by the scheduler core with its clock: `scheduled` after each schedule, `completed`
    after each update, `admitted`, `started` (first token) and `finished` for each request, and
    `check` before admitting one. Deterministic given those calls.
    """

    def __init__(self, max_queue_wait_s: float, fallback_tokens_per_s: float | None = None) -> None:
        """`fallback_tokens_per_s`: the service rate assumed until one is measured (None: refuse
        nothing until then)."""
        if not (math.isfinite(max_queue_wait_s) and max_queue_wait_s >= 0):
            raise ValueError(f"max_queue_wait_s must be finite and >= 0, got {max_queue_wait_s}")
        self.max_queue_wait_s = max_queue_wait_s
        self._fallback_tokens_per_s = fallback_tokens_per_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()  # (seconds, tokens)
        self._window_s = 0.0
        self._window_tokens = 0
        self.num_tokens_waiting = 0  # as of the last schedule, plus the prompts admitted since
        self._has_backlog = False  # the last schedule left waiting tokens
        self._oldest_unstarted_s: float | None = None  # arrival of the oldest request with no token yet
        self.num_excess_tokens = 0  # device tokens wanted beyond the pool, as of the last schedule
        self._finished: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens)
        self._finished_tokens = 0  # in the window
        self._first_finish_s: float | None = None
        self._estimated_s: dict[int, float] = {}  # request admitted, not started -> its estimate
        self._calibration: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=CALIBRATION_SAMPLES
        )  # (actual, estimated) waits of the last requests started
        self._schedule_s: float | None = None
        self._last_update_s: float | None = None

    @property
    def is_enabled(self) -> bool:
        return self.max_queue_wait_s > 0

    # ----- measurements -----

    def scheduled(
        self,
        now_s: float,
        num_tokens_left: int,
        oldest_unstarted_s: float | None = None,
        num_excess_tokens: int = 0,
    ) -> None:
        """An iteration was planned at `now_s`, leaving `num_tokens_left` prompt tokens in the
        queue; `oldest_unstarted_s`: the arrival time of the oldest request that has no token
        yet; `num_excess_tokens`: the device tokens wanted beyond the pool."""
        self._schedule_s = now_s
        self._has_backlog = num_tokens_left > 0
        self.num_tokens_waiting = num_tokens_left
        self._oldest_unstarted_s = oldest_unstarted_s
        self.num_excess_tokens = num_excess_tokens

    def admitted(self, request_id: int, num_tokens: int, now_s: float) -> None:
        """A new request with `num_tokens` prompt tokens was admitted at `now_s`."""
        self._estimated_s[request_id] = self._uncalibrated_wait_s(now_s)
        self.added(num_tokens, arrival_s=now_s)

    def started(self, request_id: int, wait_s: float) -> None:
        """The request got its first token `wait_s` seconds after its admission."""
        estimated_s = self._estimated_s.pop(request_id, None)
        if estimated_s is not None and math.isfinite(estimated_s):
            self._calibration.append((wait_s, estimated_s))

    @property
    def calibration(self) -> float:
        """The factor the estimate is scaled by: actual over estimated waits, in [1, MAX_CALIBRATION]."""
        actual_s = sum(a for a, _ in self._calibration)
        estimated_s = sum(e for _, e in self._calibration)
        if actual_s <= estimated_s:
            return 1.0
        return min(actual_s / estimated_s, MAX_CALIBRATION) if estimated_s > 0 else MAX_CALIBRATION

    def finished(self, request_id: int, now_s: float | None, num_context_tokens: int) -> None:
        """A request holding a context of `num_context_tokens` tokens ended at `now_s` (None:
        before any iteration; nothing was freed that the queue waited for)."""
        self._estimated_s.pop(request_id, None)
        if now_s is None:
            return
        if self._first_finish_s is None:
            self._first_finish_s = now_s
        self._finished.append((now_s, num_context_tokens))
        self._finished_tokens += num_context_tokens

    def freed_tokens_per_s(self, now_s: float) -> float | None:
        """Context tokens freed per second by finishing requests over the last WINDOW_S seconds
        (or since the first finish, if sooner); None before any request has finished."""
        while self._finished and self._finished[0][0] < now_s - WINDOW_S:
            self._finished_tokens -= self._finished.popleft()[1]
        if self._first_finish_s is None:
            return None
        return self._finished_tokens / max(min(now_s - self._first_finish_s, WINDOW_S), 1e-3)

    def completed(self, now_s: float, num_queue_tokens: int) -> None:
        """The iteration's result arrived at `now_s`; it computed `num_queue_tokens` tokens of
        waiting requests. Counted only if it left a backlog; its duration runs from the previous
        result when the loop was busy throughout, else from its own planning."""
        start_s = self._schedule_s if self._schedule_s is not None else now_s
        if self._has_backlog and self._last_update_s is not None:
            start_s = min(start_s, self._last_update_s)
        if self._has_backlog and now_s > start_s:
            self._add_sample(now_s - start_s, num_queue_tokens)
        self._last_update_s = now_s if self._has_backlog else None

    def added(self, num_tokens: int, arrival_s: float | None = None) -> None:
        """A request with `num_tokens` tokens to compute joined the queue (a new one: arriving
        at `arrival_s`; None for returned tokens)."""
        self.num_tokens_waiting += num_tokens
        if arrival_s is not None and self._oldest_unstarted_s is None:
            self._oldest_unstarted_s = arrival_s

    def _add_sample(self, duration_s: float, num_tokens: int) -> None:
        self._samples.append((duration_s, num_tokens))
        self._window_s += duration_s
        self._window_tokens += num_tokens
        while len(self._samples) > 1 and self._window_s - self._samples[0][0] >= WINDOW_S:
            old_s, old_tokens = self._samples.popleft()
            self._window_s -= old_s
            self._window_tokens -= old_tokens

    # ----- the decision -----

    @property
    def tokens_per_s(self) -> float | None:
        """The measured service rate of the queue, else the fallback (None: unknown)."""
        if self._window_s > 0:
            return self._window_tokens / self._window_s
        return self._fallback_tokens_per_s

    def expected_wait_s(self, now_s: float) -> float:
        """Seconds a request arriving at `now_s` is expected to wait (the formulas above); 0 with
        nothing waiting; the token term is 0 while no rate is known and inf if the queue has not
        moved during the window."""
        return self.calibration * self._uncalibrated_wait_s(now_s)

    def _uncalibrated_wait_s(self, now_s: float) -> float:
        rate = self.tokens_per_s
        if self.num_tokens_waiting <= 0 or rate is None:
            tokens_s = 0.0
        else:
            tokens_s = self.num_tokens_waiting / rate if rate > 0 else math.inf
        oldest_s = self._oldest_unstarted_s
        return max(tokens_s, 0.0 if oldest_s is None else now_s - oldest_s, self._memory_wait_s(now_s))

    def _memory_wait_s(self, now_s: float) -> float:
        freed_per_s = self.freed_tokens_per_s(now_s)
        if self.num_excess_tokens <= 0 or freed_per_s is None:
            return 0.0
        return self.num_excess_tokens / freed_per_s if freed_per_s > 0 else math.inf

    def check(self, now_s: float) -> None:
        """RequestError RESOURCE_EXHAUSTED, with a retry hint, if a request arriving at `now_s`
        would wait too long."""
        if not self.is_enabled:
            return
        wait_s = self.expected_wait_s(now_s)
        if wait_s <= self.max_queue_wait_s:
            return
        rate = self.tokens_per_s or 0.0
        retry_after_s = (
            max(wait_s - self.max_queue_wait_s, MIN_RETRY_AFTER_S) if math.isfinite(wait_s) else WINDOW_S
        )
        raise RequestError(
            "RESOURCE_EXHAUSTED",
            f"overloaded: a new request would wait about {wait_s:.1f} s (the bound is "
            f"{self.max_queue_wait_s:g} s; {self.num_tokens_waiting} prompt tokens queued at {rate:.0f} tokens/s, "
            f"{self.num_excess_tokens} tokens of context beyond the device pool); retry in {retry_after_s:.2f} s",
            retry_after_s=retry_after_s,
        )
