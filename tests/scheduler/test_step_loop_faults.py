"""The step loop against an executor link that fails in every way: it recovers, tells its health,
bounds the wait of computing requests, and a loop that dies takes the server's health with it."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from grpc_health.v1 import health_pb2

from infercept.v1 import executor_pb2 as pb
from scheduler_svc import server as server_module
from scheduler_svc.admission import RequestError
from scheduler_svc.config import LinkConfig, SchedulerConfig
from scheduler_svc.events import Finished, TokenDelta
from scheduler_svc.executor_client import ExecutorClient, ExecutorUnavailable
from scheduler_svc.server import SERVICE_NAME, SchedulerServer
from scheduler_svc.step_loop import SessionItem, StepLoop
from svc_common import serving
from tests.scheduler.harness import FakeExecutor, Harness, generate_request

FAST = LinkConfig(outage_timeout_s=0.3, probe_interval_s=0.05, reconnect_backoff_s=0.02)


class FlakyExecutor:
    """An ExecutorClient stand-in: runs plans on a FakeExecutor; `failure` raised while set."""

    def __init__(self, fake: FakeExecutor) -> None:
        self.fake = fake
        self.failure: BaseException | None = None
        self.num_resets = 0
        self.num_sent_ahead = 0  # plans sent while another was still out
        self._results: deque[pb.StepResult] = deque()

    async def send(self, plan: pb.StepPlan) -> None:
        if self.failure is not None:
            raise ExecutorUnavailable(f"Run stream failed: {self.failure!r}")
        self.num_sent_ahead += bool(self._results)
        self._results.append(self.fake.run(plan))

    async def receive(self, plan: pb.StepPlan) -> pb.StepResult:
        if self.failure is not None:
            self._results.clear()  # the stream is gone with what it carried
            raise ExecutorUnavailable(f"Run stream failed: {self.failure!r}")
        result = self._results.popleft()
        assert result.step_id == plan.step_id
        return result

    async def reset(self) -> None:
        if self.failure is not None:
            raise ExecutorUnavailable("Reset failed")
        self.num_resets += 1
        self._results.clear()
        self.fake.tables.clear()
        self.fake.last_sampled.clear()

    async def is_serving(self) -> bool:
        return self.failure is None

    async def close(self) -> None:
        pass


def make_loop() -> tuple[StepLoop, FlakyExecutor, list[bool]]:
    h = Harness()
    executor = FlakyExecutor(h.executor)
    seen: list[bool] = []
    loop = StepLoop(h.scheduler, executor, link=FAST, on_availability=seen.append)  # type: ignore[arg-type]
    return loop, executor, seen


async def drain(queue: asyncio.Queue[SessionItem]) -> list[SessionItem]:
    """Every item of a session until its end (Finished or an error), waiting at most 10 s."""
    items: list[SessionItem] = []
    while True:
        item = await asyncio.wait_for(queue.get(), timeout=10)
        items.append(item)
        if isinstance(item, RequestError | Finished):
            return items


async def test_an_idle_loop_finds_the_executor_gone_refuses_new_requests_and_recovers() -> None:
    loop, executor, seen = make_loop()
    task = asyncio.create_task(loop.run_forever())
    executor.failure = asyncio.InvalidStateError("write to an ended stream")
    while loop.is_available:
        await asyncio.sleep(0.01)
    with pytest.raises(RequestError) as refused:
        loop.submit(generate_request())
    assert refused.value.code == "UNAVAILABLE"
    executor.failure = None
    while not loop.is_available:
        await asyncio.sleep(0.01)
    _, queue = loop.submit(generate_request(max_tokens=4))
    last = (await drain(queue))[-1]
    assert isinstance(last, Finished) and last.reason == "length"
    assert seen == [False, True] and executor.num_resets == 1
    task.cancel()


async def test_computing_requests_end_with_unavailable_after_the_outage_bound_and_free_everything() -> None:
    loop, executor, _ = make_loop()
    task = asyncio.create_task(loop.run_forever())
    executor.failure = RuntimeError("any exception on the link")
    _, queue = loop.submit(generate_request(max_tokens=4))
    items = await drain(queue)
    assert isinstance(items[-1], RequestError) and items[-1].code == "UNAVAILABLE"
    assert not loop.core.requests
    assert loop.core.blocks.device.num_free == loop.core.blocks.device.num_total
    task.cancel()


async def test_the_loop_sends_decodes_ahead_while_a_plan_computes_and_every_token_arrives() -> None:
    reference = Harness()
    rid = reference.add(generate_request([1, 2, 3], max_tokens=12))
    reference.run()
    loop, executor, _ = make_loop()
    task = asyncio.create_task(loop.run_forever())
    _, queue = loop.submit(generate_request([1, 2, 3], max_tokens=12))
    items = await drain(queue)
    task.cancel()
    tokens = [t for item in items if isinstance(item, TokenDelta) for t in item.token_ids]
    assert tokens == reference.tokens(rid) and len(tokens) == 12
    assert executor.num_sent_ahead > 0 and executor.fake.num_last_sampled_used > 0
    assert isinstance(items[-1], Finished) and not loop.core.requests


async def test_a_loop_that_dies_turns_health_not_serving() -> None:
    loop, _, _ = make_loop()

    def broken(now: float) -> pb.StepPlan:
        raise AssertionError("a scheduler bug")

    loop.core.schedule = broken  # type: ignore[method-assign]
    server, health = serving.new_server(SERVICE_NAME)
    scheduler_server = SchedulerServer(server, serving.bind(server, "127.0.0.1:0"), loop, health)
    await scheduler_server.start()
    try:
        loop.submit(generate_request())
        error = await asyncio.wait_for(scheduler_server.wait_until_loop_dies(), timeout=10)
        assert isinstance(error, AssertionError)
        await asyncio.sleep(0.05)  # the health update is a task of its own
        for service in ("", SERVICE_NAME):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service), None)
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await scheduler_server.stop(grace_s=0)


async def test_serve_returns_a_failure_code_when_the_loop_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, _, _ = make_loop()
    loop.core.has_work = lambda: 1 / 0  # type: ignore[assignment, method-assign, return-value]
    server, health = serving.new_server(SERVICE_NAME)
    scheduler_server = SchedulerServer(server, serving.bind(server, "127.0.0.1:0"), loop, health)

    async def prepared(*args: object) -> SchedulerServer:
        return scheduler_server

    monkeypatch.setattr(server_module, "create_server", prepared)
    code = await asyncio.wait_for(
        server_module.serve(SchedulerConfig(), "127.0.0.1:0", "unused", 1.0, None), timeout=30
    )
    assert code == server_module.LOOP_DIED_EXIT_CODE != 0


class EndedCall:
    """A Run call whose stream has ended: writing raises as grpc.aio does."""

    def __init__(self, write_error: BaseException | None = None) -> None:
        self.write_error = write_error
        self.cancelled = False

    async def write(self, plan: pb.StepPlan) -> None:
        if self.write_error is not None:
            raise self.write_error
        await asyncio.sleep(3600)  # a hung executor never answers

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def done(self) -> bool:
        return self.write_error is not None


@pytest.mark.parametrize(
    "call",
    [EndedCall(asyncio.InvalidStateError("RPC already finished")), EndedCall(RuntimeError("x")), EndedCall()],
    ids=["write-after-end", "any-exception", "hung"],
)
async def test_every_failure_of_the_run_stream_is_executor_unavailable(call: EndedCall) -> None:
    client = ExecutorClient("127.0.0.1:1", step_timeout_s=0.2)
    client._call = call  # type: ignore[assignment]
    with pytest.raises(ExecutorUnavailable):
        await client.run(pb.StepPlan(step_id=1))
    assert call.cancelled and client._call is None  # the next attempt opens a new stream
    assert not await client.is_serving()  # nothing listens there
    await client.close()
