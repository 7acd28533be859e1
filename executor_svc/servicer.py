"""The Executor gRPC service: a thin edge over the Engine.

All engine work (steps, profiling, resets) runs on one dedicated thread, in arrival order, so the
event loop stays free to move messages while the forward pass computes.

One scheduler at a time: Reset and Run are refused (FAILED_PRECONDITION) to anyone but the
holder of the lease (lease.py). A cancelled Run stream is ordinary: nothing of its context is read
after cancellation (gRPC's context may be gone by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import structlog

from executor_svc.engine import Engine
from executor_svc.lease import CLIENT_ID_KEY, Lease, LeaseHeld
from executor_svc.metrics import ExecutorMetrics
from executor_svc.profiler import ProfilerBusy, get_profile
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc

log = structlog.get_logger(__name__)


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(
        self, engine: Engine, lease: Lease | None = None, metrics: ExecutorMetrics | None = None
    ) -> None:
        self._engine = engine
        self._metrics = metrics or ExecutorMetrics()
        self._engine_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="engine", initializer=engine.claim_thread
        )
        self._description = engine.describe()
        self._lease = lease or Lease()

    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeResponse:
        return self._description

    async def Profile(
        self, request: pb.ProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProfileResponse:
        try:
            return await self._on_engine_thread(get_profile, self._engine, request.refresh)
        except ProfilerBusy as busy:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(busy))
            raise  # abort raises; this keeps type checkers aware

    async def Reset(self, request: pb.ResetRequest, context: grpc.aio.ServicerContext) -> pb.ResetResponse:
        try:
            self._lease.acquire(client_id(context))
        except LeaseHeld as held:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(held))
            raise
        forgotten = await self._on_engine_thread(self._engine.reset)
        log.info("executor.reset", forgotten_requests=forgotten)
        return pb.ResetResponse(num_forgotten_requests=forgotten)

    async def Run(
        self, request_iterator: AsyncIterator[pb.StepPlan], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StepResult]:
        # Read once, now: after a cancellation the context must not be touched.
        client, peer = client_id(context), context.peer()
        try:
            self._lease.open_stream(client)
        except LeaseHeld as held:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(held))
            raise
        log.info("run.stream_opened", peer=peer)
        # Plans are handed to the engine thread as they arrive, so that one sent while another
        # computes (a scheduler planning ahead) starts the moment the engine is free, without a
        # turn of this loop between the two steps; results go back in order.
        steps: asyncio.Queue[asyncio.Future[pb.StepResult] | None] = asyncio.Queue()
        reader = asyncio.create_task(self._submit_steps(request_iterator, steps))
        try:
            while (step := await steps.get()) is not None:
                result = await step
                # Recorded here, not on the engine's thread: between two steps it would delay the next.
                self._metrics.observe_step(result)
                yield result
            await reader  # the stream's end, or its failure
        finally:
            reader.cancel()
            while not steps.empty():  # plans of a stream that ended: those not started do not run
                pending = steps.get_nowait()
                if pending is not None:
                    pending.cancel()
            self._lease.close_stream(client)
            log.info("run.stream_closed", peer=peer)

    async def _submit_steps(
        self, plans: AsyncIterator[pb.StepPlan], steps: asyncio.Queue[asyncio.Future[pb.StepResult] | None]
    ) -> None:
        """Each plan of the stream to the engine thread at once, its future to `steps`; None at
        the end (also if reading fails, which then raises here)."""
        try:
            async for plan in plans:
                steps.put_nowait(self._on_engine_thread(self._step, plan))
        finally:
            steps.put_nowait(None)

    def _step(self, plan: pb.StepPlan) -> pb.StepResult:
        """engine.step, except that a failure inside it is reported in-band, not by dying."""
        try:
            result = self._engine.step(plan)
        except Exception as error:  # one bad iteration must not take the executor down
            log.exception("step.failed", step_id=plan.step_id)
            result = pb.StepResult(
                step_id=plan.step_id,
                error=pb.PlanError(code="INTERNAL", message=f"{type(error).__name__}: {error}"),
            )
        return result

    def _on_engine_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        """`fn(*args)` queued on the engine thread: a future of its value."""
        return asyncio.get_running_loop().run_in_executor(self._engine_thread, fn, *args)

    def close(self) -> None:
        self._engine_thread.shutdown(wait=True)


def client_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's client id from its metadata ("" if it sent none)."""
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID_KEY:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""
