"""Building and running the scheduler's gRPC server (grpc.aio) with health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal

import grpc
import structlog
from grpc_health.v1 import _async as health_aio  # the asyncio servicer (health.aio)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tokenizers import Tokenizer

from infercept.v1 import generation_pb2, generation_pb2_grpc
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.executor_client import ExecutorClient
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
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

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
    bound to `listen` (port 0: any free port), not yet started."""
    executor = ExecutorClient(executor_address)
    await executor.wait_until_serving(executor_timeout_s)
    description, describe = await executor.describe()
    await executor.reset()
    tokenizer = Tokenizer.from_str(describe.tokenizer_json) if describe.tokenizer_json else None
    loop = StepLoop(Scheduler(config, description, tokenizer), executor)
    server = grpc.aio.server()
    generation_pb2_grpc.add_GenerationServicer_to_server(GenerationServicer(loop, server_info(loop)), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
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
) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully."""
    scheduler_server = await create_server(config, listen, executor_address, executor_timeout_s)
    await scheduler_server.start()
    log.info("scheduler.listening", address=f"{listen.rsplit(':', 1)[0]}:{scheduler_server.port}")
    if port_file:
        with open(port_file, "w") as f:
            f.write(f"{scheduler_server.port}\n")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("scheduler.stopping")
    await scheduler_server.stop()
