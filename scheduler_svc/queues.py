"""The requests that want computation, kept in queue order without sorting them every iteration.

Two queues:

- **ready**: the request decodes next (`is_ready`): in queue order (arrival time, then admission
  order), which is also the FCFS priority that preemption reads backwards. Every iteration reads
  all of it, so it is kept sorted on insertion (a request enters it when it turns ready, not each
  iteration it decodes): reading it costs a copy, not a sort.
- **waiting**: everything else that wants computation (a prompt, a context to recompute, returned
  tokens, a host segment to bring back). It can hold thousands of requests under overload, so it
  too is kept sorted on insertion: an iteration reads it from the front and stops when the
  budget is spent, costing O(scheduled), not O(waiting).

A request enters the waiting queue at a `WaitingPlace` its policy chooses:

    ARRIVAL   by arrival time (FCFS), the default
    FRONT     ahead of every waiting request, the latest placed first: vLLM 0.2's
              `waiting.insert(0, ...)` (its preempted requests; improved-discard's returning ones)
    BACK      behind every waiting request, and before those arriving later: vLLM 0.2's
              `waiting.append(...)` (vanilla vLLM's returning requests)

    waiting:  [FRONT (last placed first)] [ARRIVAL and BACK, by time: arrival or placement]

The place holds while the request waits; it keeps its arrival time (its FCFS priority once it
runs, as vLLM 0.2's `arrival_time` never changes).

With `ready_includes_resumed` (vLLM 0.2's iterations, `prefill-first`), a request whose context is
computed, on the device or on the host, is ready however many tokens it has pending: a resumed
preserved or swapped request rejoins vLLM 0.2's running batch (its returned tokens, and its
swap-in, ride in a decode iteration); only prompts and discarded contexts wait. Those with blocks
on the host come after all the others, as vLLM 0.2 serves its `swapped` queue after `running`.

The scheduler calls `place` whenever a request's readiness may have changed (admission, resume,
each iteration it computed in, preemption) and `remove` when it stops wanting computation (pause,
finish). A request's arrival time must not change while it is queued.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import operator
from collections.abc import Callable
from typing import Generic, TypeVar

from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.request import Request

# A waiting request's sort key: (tier, time or placement order, request id); FRONT is tier 0.
_WaitingKey = tuple[int, float, int]
_Key = TypeVar("_Key", bound=tuple[float, ...])


class WaitingPlace(enum.Enum):
    ARRIVAL = "arrival"
    FRONT = "front"
    BACK = "back"


# Queue order: arrival time, ties broken by admission order. An attrgetter, so that sorting
# and bisecting call no Python function per request.
queue_key: Callable[[Request], tuple[float, int]] = operator.attrgetter("arrival_s", "request_id")


class SortedRequests(Generic[_Key]):
    """Requests kept sorted by a key each gets on insertion (unique, fixed while it is held):
    the requests and their keys index for index, so that bisecting the plain key list calls no
    Python function per request."""

    def __init__(self) -> None:
        self._requests: list[Request] = []
        self._sorted_keys: list[_Key] = []
        self._keys: dict[int, _Key] = {}  # request id -> its key, while held

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._keys

    def insert(self, request: Request, key: _Key) -> None:
        """Hold `request` at `key` (it must not be held already)."""
        self._keys[request.request_id] = key
        index = bisect.bisect_left(self._sorted_keys, key)
        self._sorted_keys.insert(index, key)
        self._requests.insert(index, request)

    def remove(self, request: Request) -> None:
        """Stop holding `request` (no-op if it is not held)."""
        key = self._keys.pop(request.request_id, None)
        if key is None:
            return
        index = bisect.bisect_left(self._sorted_keys, key)
        assert self._requests[index] is request, f"request {request.request_id} moved while queued"
        del self._requests[index]
        del self._sorted_keys[index]

    def in_order(self) -> list[Request]:
        """The requests in key order (a copy: scheduling may re-queue some while reading it)."""
        return self._requests.copy()


def is_ready(request: Request, layout: BlockLayout, includes_resumed: bool = False) -> bool:
    """Whether the request decodes next: one pending token, its context computed on the device;
    with `includes_resumed`, any request whose context is computed (device or host)."""
    if includes_resumed:
        return request.num_computed > 0
    return request.num_computed > 0 and request.num_pending == 1 and not layout.host


class ComputeQueues:
    def __init__(self, ready_includes_resumed: bool = False) -> None:
        self.ready_includes_resumed = ready_includes_resumed
        self._ready: SortedRequests[tuple[float, int]] = SortedRequests()  # by queue_key
        self._ready_layouts: dict[int, BlockLayout] = {}  # with ready_includes_resumed: their blocks
        self._waiting: SortedRequests[_WaitingKey] = SortedRequests()
        self._num_front = itertools.count()  # FRONT placements so far: the latest sorts first

    def __bool__(self) -> bool:
        return bool(self._ready or self._waiting)

    def __len__(self) -> int:
        return len(self._ready) + len(self._waiting)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._ready or request_id in self._waiting

    def place(
        self,
        request: Request,
        layout: BlockLayout,
        waiting_place: WaitingPlace = WaitingPlace.ARRIVAL,
        now_s: float = 0.0,
    ) -> None:
        """Queue `request` where its state puts it (moving it if it was in the other queue). If it
        waits, it takes `waiting_place` (BACK: as if it arrived at `now_s`); one already waiting
        moves there unless the place is ARRIVAL (it keeps the place it has)."""
        rid = request.request_id
        if is_ready(request, layout, self.ready_includes_resumed):
            self._waiting.remove(request)
            if rid not in self._ready:
                self._ready.insert(request, queue_key(request))
            if self.ready_includes_resumed:
                self._ready_layouts[rid] = layout
            return
        self._ready.remove(request)
        self._ready_layouts.pop(rid, None)
        if rid in self._waiting:
            if waiting_place is WaitingPlace.ARRIVAL:
                return
            self._waiting.remove(request)
        self._waiting.insert(request, self._waiting_key(request, waiting_place, now_s))

    def remove(self, request: Request) -> None:
        """Take `request` out of whichever queue holds it (no-op if none)."""
        self._ready.remove(request)
        self._ready_layouts.pop(request.request_id, None)
        self._waiting.remove(request)

    def ready(self) -> list[Request]:
        """The decoding requests in queue order (with ready_includes_resumed, those with blocks
        on the host last)."""
        if not self.ready_includes_resumed:
            return self._ready.in_order()
        layouts = self._ready_layouts
        # A stable sort by the one flag that can change while a request is ready keeps queue order.
        return sorted(self._ready.in_order(), key=lambda r: bool(layouts[r.request_id].host))

    def waiting(self) -> list[Request]:
        """The other requests in queue order (a copy: scheduling may re-queue preempted ones)."""
        return self._waiting.in_order()

    def _waiting_key(self, request: Request, waiting_place: WaitingPlace, now_s: float) -> _WaitingKey:
        if waiting_place is WaitingPlace.FRONT:
            return 0, -float(next(self._num_front)), request.request_id
        time_s = now_s if waiting_place is WaitingPlace.BACK else request.arrival_s
        return 1, time_s, request.request_id
