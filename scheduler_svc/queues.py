"""The requests that want computation, kept in queue order without sorting them every iteration.

Two queues:

- **ready**: the request decodes next (`is_ready`): in queue order (arrival time, then admission
  order), which is also the FCFS priority that preemption reads backwards. Bounded by device
  memory, so it is small; it is sorted when an iteration asks for it.
- **waiting**: everything else that wants computation (a prompt, a context to recompute, returned
  tokens, a host segment to bring back). It can hold thousands of requests under overload, so it
  is a list kept sorted on insertion: an iteration reads it from the front and stops when the
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

from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.request import Request

# A waiting request's sort key: (tier, time or placement order, request id); FRONT is tier 0.
_WaitingKey = tuple[int, float, int]


class WaitingPlace(enum.Enum):
    ARRIVAL = "arrival"
    FRONT = "front"
    BACK = "back"


# Queue order: arrival time, ties broken by admission order. An attrgetter, so that sorting
# and bisecting call no Python function per request.
queue_key: Callable[[Request], tuple[float, int]] = operator.attrgetter("arrival_s", "request_id")


def is_ready(request: Request, layout: BlockLayout, includes_resumed: bool = False) -> bool:
    """Whether the request decodes next: one pending token, its context computed on the device;
    with `includes_resumed`, any request whose context is computed (device or host)."""
    if includes_resumed:
        return request.num_computed > 0
    return request.num_computed > 0 and request.num_pending == 1 and not layout.host


class ComputeQueues:
    def __init__(self, ready_includes_resumed: bool = False) -> None:
        self.ready_includes_resumed = ready_includes_resumed
        self._ready: dict[int, Request] = {}
        self._ready_layouts: dict[int, BlockLayout] = {}  # with ready_includes_resumed: their blocks
        # The waiting requests and their keys, index for index, sorted by key: bisecting the
        # plain key list calls no Python function per request.
        self._waiting: list[Request] = []
        self._waiting_keys: list[_WaitingKey] = []
        self._keys: dict[int, _WaitingKey] = {}  # request id -> its key, while it waits
        self._num_front = itertools.count()  # FRONT placements so far: the latest sorts first

    def __bool__(self) -> bool:
        return bool(self._ready or self._waiting)

    def __len__(self) -> int:
        return len(self._ready) + len(self._waiting)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self._ready or request_id in self._keys

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
            self._remove_waiting(request)
            self._ready[rid] = request
            if self.ready_includes_resumed:
                self._ready_layouts[rid] = layout
            return
        self._ready.pop(rid, None)
        self._ready_layouts.pop(rid, None)
        if rid in self._keys:
            if waiting_place is WaitingPlace.ARRIVAL:
                return
            self._remove_waiting(request)
        key = self._waiting_key(request, waiting_place, now_s)
        self._keys[rid] = key
        index = bisect.bisect_left(self._waiting_keys, key)
        self._waiting_keys.insert(index, key)
        self._waiting.insert(index, request)

    def remove(self, request: Request) -> None:
        """Take `request` out of whichever queue holds it (no-op if none)."""
        self._ready.pop(request.request_id, None)
        self._ready_layouts.pop(request.request_id, None)
        self._remove_waiting(request)

    def ready(self) -> list[Request]:
        """The decoding requests in queue order (with ready_includes_resumed, those with blocks
        on the host last)."""
        if not self.ready_includes_resumed:
            return sorted(self._ready.values(), key=queue_key)
        layouts = self._ready_layouts
        return sorted(self._ready.values(), key=lambda r: (bool(layouts[r.request_id].host), *queue_key(r)))

    def waiting(self) -> list[Request]:
        """The other requests in queue order (a copy: scheduling may re-queue preempted ones)."""
        return list(self._waiting)

    def _waiting_key(self, request: Request, waiting_place: WaitingPlace, now_s: float) -> _WaitingKey:
        if waiting_place is WaitingPlace.FRONT:
            return 0, -float(next(self._num_front)), request.request_id
        time_s = now_s if waiting_place is WaitingPlace.BACK else request.arrival_s
        return 1, time_s, request.request_id

    def _remove_waiting(self, request: Request) -> None:
        key = self._keys.pop(request.request_id, None)
        if key is None:
            return
        index = bisect.bisect_left(self._waiting_keys, key)
        assert self._waiting[index] is request, f"request {request.request_id} moved while queued"
        del self._waiting[index]
        del self._waiting_keys[index]
