"""The iteration loop: schedule -> run on the executor -> update, and the sessions it feeds.

Everything here runs on the event loop's thread, so the scheduler core needs no locks: sessions
call submit/tool_started/resume/abort between iterations, and the loop calls schedule/update.
Events go to each session's own queue, so one slow client never stalls the loop or the others.

If the executor goes away (any failure of the link, a step past its deadline, a failed health
probe while idle), the loop reports itself unavailable, reconnects, resets the executor and
rebuilds every live request by recomputation: the scheduler holds every token, so nothing is
lost. Paused requests stay paused and are rebuilt when they resume. While no executor answers,
new requests are refused with UNAVAILABLE at once, and computing requests wait at most
`outage_timeout_s`, then end with UNAVAILABLE and free everything.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError
from scheduler_svc.config import DEFAULT_LINK, LinkConfig
from scheduler_svc.events import Event, Finished, SessionEvent, session_events
from scheduler_svc.executor_client import ExecutorClient, ExecutorUnavailable
from scheduler_svc.plan_builder import is_empty
from scheduler_svc.request import Status
from scheduler_svc.scheduler import Scheduler

log = structlog.get_logger(__name__)

SessionItem = SessionEvent | RequestError


class PlanRefused(RuntimeError):
    """The executor refused a plan: a scheduler bug, recovered from by recomputing."""


class StepLoop:
    def __init__(
        self,
        core: Scheduler,
        executor: ExecutorClient,
        clock: Callable[[], float] = time.monotonic,
        link: LinkConfig = DEFAULT_LINK,
        on_availability: Callable[[bool], None] | None = None,
    ) -> None:
        """`on_availability(is_available)` is called whenever the executor is lost or regained
        (the server's health status follows it)."""
        self.core = core
        self.executor = executor
        self.clock = clock
        self.link = link
        self.on_availability = on_availability
        self.is_available = True
        self._sessions: dict[int, asyncio.Queue[SessionItem]] = {}
        self._wake = asyncio.Event()

    # ----- called by sessions -----

    def submit(self, request: gen.GenerateRequest) -> tuple[int, asyncio.Queue[SessionItem]]:
        """Admit a request (RequestError if refused, UNAVAILABLE while no executor answers);
        returns its id and its event queue."""
        if not self.is_available:
            raise RequestError("UNAVAILABLE", "no executor is reachable now; retry later")
        admitted, events = self.core.add(request, self.clock())
        queue: asyncio.Queue[SessionItem] = asyncio.Queue()
        self._sessions[admitted.request_id] = queue
        self._dispatch(events)
        self._wake.set()
        return admitted.request_id, queue

    def check_capacity(self) -> None:
        """RequestError RESOURCE_EXHAUSTED if a request submitted now would be refused for load."""
        self.core.check_capacity(self.clock())

    def tool_started(self, request_id: int, expected_duration_s: float) -> None:
        self.core.tool_started(request_id, expected_duration_s)

    def resume(self, request_id: int, returned_ids: list[int]) -> None:
        self._dispatch(self.core.resume(request_id, returned_ids, self.clock()))
        self._wake.set()

    def abort(self, request_id: int) -> None:
        """Abort a live request (RequestError NOT_FOUND if none); its session gets Finished(abort)."""
        self._dispatch(self.core.abort(request_id, self.clock()))
        self._wake.set()

    def close_session(self, request_id: int) -> None:
        """The session is gone: abort its request if it is still live, and drop its queue."""
        self._sessions.pop(request_id, None)
        if request_id in self.core.requests:
            self.core.abort(request_id, self.clock())
            self._wake.set()
            log.info("request.aborted", request_id=request_id, reason="session closed")

    def is_paused(self, request_id: int) -> bool:
        request = self.core.requests.get(request_id)
        return request is not None and request.pending_call is not None

    # ----- the loop -----

    async def run_forever(self) -> None:
        """Schedule -> run -> update, forever. Survives every failure of the executor link; any
        other exception is a bug and ends the loop (the server then exits)."""
        while True:
            self._expire_pauses()
            plan = self._next_plan()
            if plan is None:  # nothing to compute, or all blocked on memory or tools
                await self._wait_for_news()
                continue
            try:
                await self._run(plan)
            except ExecutorUnavailable as error:
                log.error("executor.unavailable", error=str(error))
                await self._recover()
            except PlanRefused:
                await self._recover()  # a scheduler bug; rebuilding from the tokens is always safe

    async def _run(self, plan: pb.StepPlan) -> None:
        """Run `plan` and update with its result; while a plan computes, the next one is planned
        ahead and sent where that is safe (Scheduler.schedule_ahead), so that the executor finds
        it waiting, and runs in turn; once none is, the loop schedules afresh."""
        await self.executor.send(plan)
        running: pb.StepPlan | None = plan
        while running is not None:
            ahead = self.core.schedule_ahead(self.clock())
            if ahead is not None:
                await self.executor.send(ahead)
            result = await self.executor.receive(running)
            if result.HasField("error"):
                log.error(
                    "plan.refused",
                    step_id=running.step_id,
                    code=result.error.code,
                    reason=result.error.message,
                )
                raise PlanRefused(result.error.message)
            self._dispatch(self.core.update(running, result, self.clock()))
            running = ahead
            self._expire_pauses()

    def _next_plan(self) -> pb.StepPlan | None:
        if not self.core.has_work():
            return None
        plan = self.core.schedule(self.clock())
        if is_empty(plan):
            self.core.withdraw(plan)
            return None
        return plan

    async def _wait_for_news(self) -> None:
        """Sleep until woken, until the next paused request expires, or for probe_interval_s; an
        executor found gone is recovered now, so that health tells the truth and paused requests
        are rebuilt, even with nothing to do."""
        expiry_s = self.core.next_pause_expiry_s()
        until_expiry_s = math.inf if expiry_s is None else max(expiry_s - self.clock(), 0.0)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=min(self.link.probe_interval_s, until_expiry_s))
            self._wake.clear()
        except TimeoutError:
            if until_expiry_s <= self.link.probe_interval_s:
                return  # a pause expires now: the loop ends it first
            if not await self.executor.is_serving():
                log.error("executor.unavailable", error="the executor does not answer its health check")
                await self._recover()

    async def _recover(self) -> None:
        """Reconnect, reset the executor and recompute every live request. While it is gone,
        computing requests wait up to outage_timeout_s, then end with UNAVAILABLE."""
        self._set_available(False)
        started_s = self.clock()
        while True:
            try:
                await self.executor.reset()
                break
            except ExecutorUnavailable as error:
                log.warning("executor.reconnecting", error=str(error))
            if self.clock() - started_s >= self.link.outage_timeout_s:
                self._fail_computing(self.clock() - started_s)
            await asyncio.sleep(self.link.reconnect_backoff_s)
        self.core.reset_executor_state()
        self._set_available(True)
        log.info("executor.recovered", live_requests=len(self.core.requests))

    def _fail_computing(self, outage_s: float) -> None:
        """End every request that wants computation with UNAVAILABLE and free its blocks;
        paused requests stay (they need no executor until their tool returns)."""
        computing = [r.request_id for r in self.core.requests.values() if r.status is Status.ACTIVE]
        for request_id in computing:
            self.core.abort(request_id, self.clock())  # its Finished(abort) is not sent: the error is
            queue = self._sessions.pop(request_id, None)
            if queue is not None:
                queue.put_nowait(
                    RequestError("UNAVAILABLE", f"no executor has been reachable for {outage_s:.1f}s")
                )
        if computing:
            log.error("requests.unavailable", num_requests=len(computing), outage_s=round(outage_s, 1))

    def _set_available(self, is_available: bool) -> None:
        if is_available != self.is_available:
            self.is_available = is_available
            if self.on_availability is not None:
                self.on_availability(is_available)

    def _expire_pauses(self) -> None:
        """End the requests whose tool result is overdue: their sessions get DEADLINE_EXCEEDED."""
        timeout_s = self.core.config.pause_timeout_s
        for request_id in self.core.expire_pauses(self.clock()):
            log.info("request.pause_expired", request_id=request_id, pause_timeout_s=timeout_s)
            queue = self._sessions.pop(request_id, None)
            if queue is not None:
                queue.put_nowait(
                    RequestError(
                        "DEADLINE_EXCEEDED", f"no tool result within {timeout_s:g} s of the interception"
                    )
                )

    def _dispatch(self, events: list[Event]) -> None:
        for event in session_events(events):
            queue = self._sessions.get(event.request_id)
            if queue is not None:
                queue.put_nowait(event)
            if isinstance(event, Finished):
                self._sessions.pop(event.request_id, None)
