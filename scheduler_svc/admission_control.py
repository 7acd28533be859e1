"""Admission control: refuse a new request, early and fast, when the queue ahead of it would keep
it waiting longer than a bound, so that the latency of the requests admitted stays bounded.

    expected wait (s) = max(tokens waiting to be computed / queue service rate (tokens/s),
                            how long the oldest request not yet started has waited)

The tokens waiting are every queued request's pending tokens (prompts, recomputation, returned
tokens) as of the last iteration, plus the prompts admitted since; the scheduler also counts the
discarded context of paused requests, which are ahead in queue order once their tools return. The service rate is measured:
the tokens the scheduler computed for waiting requests (everything but decodes) per second of the
recent iterations that left a backlog, over the last WINDOW_S seconds of them. It is measured only
while a backlog exists because only then is it the capacity and not the demand; it needs no model
of why the queue drains slowly (a full token budget, memory held by decodes, swaps): whatever slows
it lowers the rate and so raises the expected wait. Before any backlog has been measured, the cost
model's time for a full token budget gives the rate; with neither, no request is refused on wait.

The second term is what the tokens cannot see: when device memory is full, the queue waits for
running requests to finish and free blocks while the iterations keep recomputing preempted
contexts (a high token rate, little progress). Requests are served first come, first served, so a
newcomer waits at least as long as the oldest request still waiting for its first token has; that
age is measured now, not estimated, and it lags nothing.

A refused request gets RESOURCE_EXHAUSTED with a retry hint: the time the queue needs to drain
back to the bound at the measured rate. The live-request cap stays as a hard limit beside this.
"""

from __future__ import annotations

import collections
import math

from scheduler_svc.admission import RequestError

WINDOW_S = 10.0  # seconds of backlogged iterations that the service rate is measured over
MIN_RETRY_AFTER_S = 0.05  # the smallest retry hint given: a client retrying at once only adds load


class QueueWaitControl:
    """Estimates a new request's queue wait and refuses it past `max_queue_wait_s` (0: never).

    Driven by the scheduler core with its clock: `scheduled` after each schedule, `completed`
    after each update, `added` for each admitted request. Deterministic given those calls.
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
        self._schedule_s: float | None = None
        self._last_update_s: float | None = None

    @property
    def is_enabled(self) -> bool:
        return self.max_queue_wait_s > 0

    # ----- measurements -----

    def scheduled(self, now_s: float, num_tokens_left: int, oldest_unstarted_s: float | None = None) -> None:
        """An iteration was planned at `now_s`, leaving `num_tokens_left` tokens in the queue;
        `oldest_unstarted_s`: the arrival time of the oldest request that has no token yet."""
        self._schedule_s = now_s
        self._has_backlog = num_tokens_left > 0
        self.num_tokens_waiting = num_tokens_left
        self._oldest_unstarted_s = oldest_unstarted_s

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
        """Seconds a request arriving at `now_s` is expected to wait (the formula above); 0 with
        nothing waiting; the token term is 0 while no rate is known and inf if the queue has not
        moved during the window."""
        rate = self.tokens_per_s
        if self.num_tokens_waiting <= 0 or rate is None:
            tokens_s = 0.0
        else:
            tokens_s = self.num_tokens_waiting / rate if rate > 0 else math.inf
        oldest_s = self._oldest_unstarted_s
        return max(tokens_s, 0.0 if oldest_s is None else now_s - oldest_s)

    def check(self, now_s: float) -> None:
        """RequestError RESOURCE_EXHAUSTED, with a retry hint, if a request arriving at `now_s`
        would wait too long."""
        if not self.is_enabled:
            return
        wait_s = self.expected_wait_s(now_s)
        if wait_s <= self.max_queue_wait_s:
            return
        rate = self.tokens_per_s or 0.0
        retry_after_s = max(wait_s - self.max_queue_wait_s, MIN_RETRY_AFTER_S) if rate > 0 else WINDOW_S
        raise RequestError(
            "RESOURCE_EXHAUSTED",
            f"overloaded: a new request would wait about {wait_s:.1f} s (the queue holds "
            f"{self.num_tokens_waiting} tokens at {rate:.0f} tokens/s; the bound is {self.max_queue_wait_s:g} s); "
            f"retry in {retry_after_s:.2f} s",
            retry_after_s=retry_after_s,
        )
