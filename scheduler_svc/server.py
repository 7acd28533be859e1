"""Building and running the scheduler's gRPC server (grpc.aio) with health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import grpc
import structlog
from grpc_health.v1 import _async as health_aio
from tokenizers import Tokenizer

from infercept import serving
from infercept.v1 import generation_pb2, generation_pb2_grpc
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.cost_model import CostModel
from scheduler_svc.executor_client import ExecutorClient
from scheduler_svc.iteration_log import IterationLog
from scheduler_svc.policies import POLICIES
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.servicer import GenerationServicer, server_info
from scheduler_svc.step_loop import StepLoop

log = structlog.get_logger(__name__)

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["Generation"].full_name
GRACE_S = 5.0


@dataclasses.dataclass
class SchedulerServer:
    server: grpc.aio.Server
    port: int
    loop: StepLoop
    health: health_aio.HealthServicer
    _loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self._loop_task = asyncio.create_task(self.loop.run_forever(), name="step-loop")
        self._loop_task.add_done_callback(_crash_if_failed)
        await serving.set_serving(self.health, SERVICE_NAME)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.loop.executor.close()


def _crash_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("step_loop.crashed", error=repr(task.exception()))


async def create_server(
    config: SchedulerConfig, listen: str, executor_address: str, executor_timeout_s: float = 60.0
) -> SchedulerServer:
    """Connect to the executor (waiting up to executor_timeout_s), reset it, and build a server
    bound to `listen` (port 0: any free port), not yet started. ValueError for a policy only the
    simulator can run."""
    if POLICIES[config.policy].simulator_only:
        raise ValueError(f"policy {config.policy!r} runs in the simulator only (infercept-sim)")
    executor = ExecutorClient(executor_address)
    await executor.wait_until_serving(executor_timeout_s)
    description, describe = await executor.describe()
    await executor.reset()
    tokenizer = Tokenizer.from_str(describe.tokenizer_json) if describe.tokenizer_json else None
    cost_model = None
    if POLICIES[config.policy].manages_paused:  # the others need no costs: skip the measuring
        cost_model = CostModel.from_profile(await executor.profile())
        log.info("scheduler.cost_model", **dataclasses.asdict(cost_model))
    loop = StepLoop(Scheduler(config, description, tokenizer, cost_model), executor)
    server, health_servicer = serving.new_server(SERVICE_NAME)
    generation_pb2_grpc.add_GenerationServicer_to_server(GenerationServicer(loop, server_info(loop)), server)
    port = serving.bind(server, listen)
    log.info(
        "scheduler.ready",
        executor=executor_address,
        model=description.model,
        policy=config.policy,
        device_blocks=description.num_device_blocks,
        host_blocks=description.num_host_blocks,
    )
    return SchedulerServer(server, port, loop, health_servicer)


async def serve(
    config: SchedulerConfig,
    listen: str,
    executor_address: str,
    executor_timeout_s: float,
    port_file: str | None,
    iteration_log_path: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully."""
    scheduler_server = await create_server(config, listen, executor_address, executor_timeout_s)
    iteration_log = IterationLog(iteration_log_path) if iteration_log_path else None
    scheduler_server.loop.core.on_iteration = iteration_log
    await scheduler_server.start()
    log.info("scheduler.listening", address=serving.announce(listen, scheduler_server.port, port_file))
    await serving.wait_for_stop_signal()
    log.info("scheduler.stopping")
    await scheduler_server.stop()
    if iteration_log is not None:
        iteration_log.close()
