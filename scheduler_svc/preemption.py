"""Preemption: making device room for a request by discarding newer requests' contexts.

Victim order: the newest request (queue order, `queues.queue_key`) holding device blocks that is
newer than the request in need and does not compute in this iteration; newest first, until
enough blocks are free. Paused contexts are victims only if the policy says so
(`preempts_paused_contexts`: vLLM 0.2's baselines preempt running requests only), a victim's
blocks stay in the prefix cache (where it is on) at the policy's `evict_rank`, and a victim
waits at the policy's `waiting_place_on_preempt`. A request never preempts an older one: when no victim is left, the
request waits (first come, first served), and the iteration remembers that memory ran out
(`room_failed`), which tells a policy that memory is short.

One `Preemption` lives for one iteration's planning: the candidates are sorted once, only when
memory first runs out in it.
"""

from __future__ import annotations

import structlog

from scheduler_svc.policies import Policy
from scheduler_svc.queues import queue_key
from scheduler_svc.request import Request, Status
from scheduler_svc.request_table import RequestTable
from scheduler_svc.stats import SchedulerStats

log = structlog.get_logger(__name__)


class Preemption:
    def __init__(self, table: RequestTable, stats: SchedulerStats, policy: Policy) -> None:
        self._table = table
        self._stats = stats
        self._policy = policy
        self._holders: list[Request] | None = None  # candidates in queue order, built on demand
        self.room_failed = False  # a request could not get the blocks it needed this iteration
        self.preempted_any = False  # a request lost its context for room this iteration

    def make_room(self, request: Request, num_blocks: int, scheduled: set[int]) -> bool:
        """Preempt newer requests (newest first, none in `scheduled`) until `num_blocks` device
        blocks are free. False if they cannot be freed (what was preempted stays preempted)."""
        device = self._table.blocks.device
        while not device.can_allocate(num_blocks):
            victim = self._next_victim(request, scheduled)
            if victim is None:
                self.room_failed = True
                return False
            now = self._table.paused.last_now or 0.0
            rank = self._policy.evict_rank(victim, now)
            self._table.drop_context(victim, rank, self._policy.waiting_place_on_preempt)
            self._stats.preemptions += 1
            self.preempted_any = True
            log.debug("request.preempted", request_id=victim.request_id, status=victim.status.value)
        return True

    def _next_victim(self, request: Request, scheduled: set[int]) -> Request | None:
        """The newest request holding device blocks that is newer than `request` and not
        computing this iteration, or None."""
        layouts = self._table.blocks.layouts
        if self._holders is None:
            self._holders = sorted((r for r in self._table if layouts[r.request_id].device), key=queue_key)
        key = queue_key(request)
        while self._holders and queue_key(self._holders[-1]) > key:
            candidate = self._holders.pop()
            # Computing this iteration, or already preempted/finished: never a victim now.
            if candidate.request_id not in scheduled and layouts[candidate.request_id].device:
                if candidate.status is Status.PAUSED and not self._policy.preempts_paused_contexts:
                    continue  # vLLM 0.2's baselines preempt running requests only
                return candidate
        return None
