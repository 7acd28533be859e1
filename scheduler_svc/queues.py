"""The requests that want computation, kept in queue order without sorting them every iteration.

Two queues, both in queue order (arrival time, then admission order):

- **ready**: the context is computed on the device and exactly one token is pending (the last
  sampled one): the request decodes. Bounded by device memory, so it is small; it is sorted when
  an iteration asks for it.
- **waiting**: everything else that wants computation (a prompt, a context to recompute, returned
  tokens, a host segment to bring back). It can hold thousands of requests under overload, so it
  is a list kept sorted on insertion: an iteration reads it from the front and stops when the
  budget is spent, costing O(scheduled), not O(waiting).

The scheduler calls `place` whenever a request's readiness may have changed (admission, resume,
each iteration it computed in, preemption) and `remove` when it stops wanting computation (pause,
finish). A request's arrival time must not change while it is queued.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable

from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.request import Request

# Queue order: arrival time, ties broken by admission order. An attrgetter, so that sorting
# and bisecting call no Python function per request.
queue_key: Callable[[Request], tuple[float, int]] = operator.attrgetter("arrival_s", "request_id")


def is_ready(request: Request, layout: BlockLayout) -> bool:
    """Whether the request decodes next: one pending token, its context computed on the device."""
    return request.num_computed > 0 and request.num_pending == 1 and not layout.host


class ComputeQueues:
    def __init__(self) -> None:
        self._ready: dict[int, Request] = {}
        self._waiting: list[Request] = []  # sorted by queue_key
        self._waiting_ids: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._ready or self._waiting)

    def __len__(self) -> int:
        return len(self._ready) + len(self._waiting)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._ready or request_id in self._waiting_ids

    def place(self, request: Request, layout: BlockLayout) -> None:
        """Queue `request` where its state puts it (moving it if it was in the other queue)."""
        rid = request.request_id
        if is_ready(request, layout):
            self._remove_waiting(request)
            self._ready[rid] = request
        else:
            self._ready.pop(rid, None)
            if rid not in self._waiting_ids:
                bisect.insort(self._waiting, request, key=queue_key)
                self._waiting_ids.add(rid)

    def remove(self, request: Request) -> None:
        """Take `request` out of whichever queue holds it (no-op if none)."""
        self._ready.pop(request.request_id, None)
        self._remove_waiting(request)

    def ready(self) -> list[Request]:
        """The decoding requests in queue order."""
        return sorted(self._ready.values(), key=queue_key)

    def waiting(self) -> list[Request]:
        """The other requests in queue order (a copy: scheduling may re-queue preempted ones)."""
        return list(self._waiting)

    def _remove_waiting(self, request: Request) -> None:
        if request.request_id not in self._waiting_ids:
            return
        index = bisect.bisect_left(self._waiting, queue_key(request), key=queue_key)
        assert self._waiting[index] is request, f"request {request.request_id} moved while queued"
        del self._waiting[index]
        self._waiting_ids.discard(request.request_id)
