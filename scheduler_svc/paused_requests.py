"""The paused requests: who is inside a tool call, in pause order, and the device blocks they hold.

Kept incrementally so that an iteration costs O(active), not O(live): the device blocks held by
paused requests are counted as they pause, swap out and resume, never summed over them. The
paused-device-block-seconds statistic (memory a preserved context wastes while its tool runs)
integrates that count over the clock the core is given.

Only the request table (`request_table.py`) changes membership; readers iterate in pause order
(oldest first), which makes pause expiry a prefix scan (`pause_expiry.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

from scheduler_svc.pause_expiry import expired_ids, next_expiry_s
from scheduler_svc.request import Request


class PausedRequests:
    def __init__(self) -> None:
        self._requests: dict[int, Request] = {}  # in pause order (insertion order of a dict)
        self._held: dict[int, int] = {}  # paused request id -> device blocks it holds (> 0)
        self.num_held_blocks = 0  # sum of _held
        self.held_block_s = 0.0  # integral of num_held_blocks over time, block-seconds
        self._last_now: float | None = None

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._requests

    def __iter__(self) -> Iterator[Request]:
        """The paused requests, oldest pause first."""
        return iter(self._requests.values())

    def __getitem__(self, request_id: int) -> Request:
        return self._requests[request_id]

    def add(self, request: Request, num_device_blocks: int) -> None:
        """`request` paused now, holding `num_device_blocks` device blocks."""
        self._requests[request.request_id] = request
        self.hold(request.request_id, num_device_blocks)

    def remove(self, request_id: int) -> None:
        """The request is no longer paused (resumed or ended); no-op if it was not."""
        self._requests.pop(request_id, None)
        self.release(request_id)

    def hold(self, request_id: int, num_device_blocks: int) -> None:
        """The paused request now holds `num_device_blocks` device blocks (replacing its count)."""
        self.release(request_id)
        if num_device_blocks:
            self._held[request_id] = num_device_blocks
            self.num_held_blocks += num_device_blocks

    def release(self, request_id: int) -> None:
        """The request holds no device blocks as a paused request any more."""
        self.num_held_blocks -= self._held.pop(request_id, 0)

    def release_all(self) -> None:
        """Every paused context is gone (the executor lost its memory); they stay paused."""
        self._held.clear()
        self.num_held_blocks = 0

    def advance_clock(self, now: float) -> None:
        """Account the held blocks' time up to `now` (a clock that never goes back is assumed;
        an earlier `now` counts nothing)."""
        if self._last_now is not None and now > self._last_now:
            self.held_block_s += self.num_held_blocks * (now - self._last_now)
        self._last_now = now

    @property
    def last_now(self) -> float | None:
        """The latest clock reading seen, or None before the first."""
        return self._last_now

    def expired_ids(self, now: float, timeout_s: float) -> list[int]:
        """The ids paused for at least `timeout_s` at `now`, oldest first (none for timeout 0)."""
        return expired_ids(self._requests, now, timeout_s)

    def next_expiry_s(self, timeout_s: float) -> float | None:
        """When the oldest pause expires, or None."""
        return next_expiry_s(self._requests, timeout_s)
