"""Building and running the executor's gRPC server (grpc.aio), with health and reflection."""

from __future__ import annotations

import dataclasses

import grpc
import structlog
from grpc_health.v1 import _async as health_aio

from executor_svc.engine import Engine
from executor_svc.servicer import ExecutorServicer
from infercept import serving
from infercept.v1 import executor_pb2, executor_pb2_grpc

log = structlog.get_logger(__name__)

SERVICE_NAME = executor_pb2.DESCRIPTOR.services_by_name["Executor"].full_name
GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExecutorServer:
    server: grpc.aio.Server
    port: int
    servicer: ExecutorServicer
    health: health_aio.HealthServicer

    async def start(self) -> None:
        await self.server.start()
        await serving.set_serving(self.health, SERVICE_NAME)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.servicer.close()


def create_server(engine: Engine, address: str) -> ExecutorServer:
    """A server for `engine` bound to `address` ("host:port"; port 0 picks a free one), not yet
    started. Raises OSError if the address cannot be bound."""
    server, health_servicer = serving.new_server(SERVICE_NAME, serving.EXECUTOR_MAX_MESSAGE_BYTES)
    servicer = ExecutorServicer(engine)
    executor_pb2_grpc.add_ExecutorServicer_to_server(servicer, server)
    return ExecutorServer(server, serving.bind(server, address), servicer, health_servicer)


async def serve(engine: Engine, address: str, port_file: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully. Writes the bound port to port_file."""
    executor_server = create_server(engine, address)
    await executor_server.start()
    log.info("executor.listening", address=serving.announce(address, executor_server.port, port_file))
    await serving.wait_for_stop_signal()
    log.info("executor.stopping")
    await executor_server.stop()
