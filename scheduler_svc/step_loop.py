"""The iteration loop: schedule -> run on the executor -> update, and the sessions it feeds.

Everything here runs on the event loop's thread, so the scheduler core needs no locks: sessions
call submit/tool_started/resume/abort between iterations, and the loop calls schedule/update.
Events go to each session's own queue, so one slow client never stalls the loop or the others.

If the executor goes away, the loop reconnects, resets it, and rebuilds every live request by
recomputation: the scheduler holds every token, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError
from scheduler_svc.executor_client import ExecutorClient, ExecutorUnavailable
from scheduler_svc.scheduler import Event, Scheduler

log = structlog.get_logger(__name__)

SessionItem = gen.ServerEvent | RequestError
RECONNECT_BACKOFF_S = 0.5


def is_empty(plan: pb.StepPlan) -> bool:
    return not (
        plan.work or plan.forget_request_ids or plan.swap_out.src_block_ids or plan.swap_in.src_block_ids
    )


class StepLoop:
    def __init__(
        self, core: Scheduler, executor: ExecutorClient, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.core = core
        self.executor = executor
        self.clock = clock
        self._sessions: dict[int, asyncio.Queue[SessionItem]] = {}
        self._wake = asyncio.Event()

    # ----- called by sessions -----

    def submit(self, request: gen.GenerateRequest) -> tuple[int, asyncio.Queue[SessionItem]]:
        """Admit a request (RequestError if refused); returns its id and its event queue."""
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
        while True:
            self._expire_pauses()
            if not self.core.has_work():
                await self._sleep_until_woken()
                continue
            plan = self.core.schedule(self.clock())
            if is_empty(plan):  # everyone is blocked on memory or tools: wait for news
                await self._sleep_until_woken()
                continue
            try:
                result = await self.executor.run(plan)
            except ExecutorUnavailable as error:
                log.error("executor.unavailable", error=str(error))
                await self._recover()
                continue
            if result.HasField("error"):
                # A refused plan is a scheduler bug; rebuilding from the tokens is always safe.
                log.error(
                    "plan.refused", step_id=plan.step_id, code=result.error.code, reason=result.error.message
                )
                await self._recover()
                continue
            self._dispatch(self.core.update(plan, result, self.clock()))

    async def _recover(self) -> None:
        """Reconnect, reset the executor and recompute every live request."""
        while True:
            try:
                await self.executor.reset()
                break
            except ExecutorUnavailable as error:
                log.warning("executor.reconnecting", error=str(error))
                await asyncio.sleep(RECONNECT_BACKOFF_S)
        self.core.reset_executor_state()
        log.info("executor.recovered", live_requests=len(self.core.requests))

    async def _sleep_until_woken(self) -> None:
        """Until woken, or until the next paused request expires."""
        expiry_s = self.core.next_pause_expiry_s()
        timeout_s = None if expiry_s is None else max(expiry_s - self.clock(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

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
        for request_id, event in events:
            queue = self._sessions.get(request_id)
            if queue is not None:
                queue.put_nowait(event)
            if event.HasField("finished"):
                self._sessions.pop(request_id, None)
