"""Building and running the executor's gRPC server (grpc.aio), with health and reflection."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import grpc
import structlog
from grpc_health.v1 import _async as health_aio  # the asyncio servicer (health.aio)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from executor_svc.engine import Engine
from executor_svc.servicer import ExecutorServicer
from infercept.v1 import executor_pb2, executor_pb2_grpc

log = structlog.get_logger(__name__)

SERVICE_NAME = executor_pb2.DESCRIPTOR.services_by_name["Executor"].full_name
# Plans and results carry packed arrays and optional logits rows: allow large messages.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExecutorServer:
    server: grpc.aio.Server
    port: int
    servicer: ExecutorServicer
    health: health_aio.HealthServicer

    async def start(self) -> None:
        await self.server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.servicer.close()


def create_server(engine: Engine, address: str) -> ExecutorServer:
    """A server for `engine` bound to `address` ("host:port"; port 0 picks a free one), not yet
    started. Raises OSError if the address cannot be bound."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    servicer = ExecutorServicer(engine)
    executor_pb2_grpc.add_ExecutorServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return ExecutorServer(server, port, servicer, health_servicer)


async def serve(engine: Engine, address: str, port_file: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully. Writes the bound port to port_file."""
    executor_server = create_server(engine, address)
    await executor_server.start()
    log.info("executor.listening", address=f"{address.rsplit(':', 1)[0]}:{executor_server.port}")
    if port_file:
        with open(port_file, "w") as f:
            f.write(f"{executor_server.port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("executor.stopping")
    await executor_server.stop()
