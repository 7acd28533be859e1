"""Building and running the executor's gRPC server (grpc.aio), with health and reflection."""

from __future__ import annotations

import dataclasses

import grpc
import structlog
from grpc_health.v1 import _async as health_aio

from executor_svc.engine import Engine
from executor_svc.lease import DEFAULT_TIMEOUT_S, Lease
from executor_svc.metrics import ExecutorMetrics
from executor_svc.servicer import ExecutorServicer
from infercept.v1 import executor_pb2, executor_pb2_grpc
from svc_common import serving
from svc_common.metrics_endpoint import MetricsEndpoint

log = structlog.get_logger(__name__)

SERVICE_NAME = executor_pb2.DESCRIPTOR.services_by_name["Executor"].full_name
GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExecutorServer:
    server: grpc.aio.Server
    port: int
    servicer: ExecutorServicer
    health: health_aio.HealthServicer
    metrics: ExecutorMetrics = dataclasses.field(default_factory=ExecutorMetrics)

    async def start(self) -> None:
        await self.server.start()
        await serving.set_serving(self.health, SERVICE_NAME)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.servicer.close()


def create_server(
    engine: Engine,
    address: str,
    security: serving.ServerSecurity | None = None,
    lease_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ExecutorServer:
    """A server for `engine` bound to `address` ("host:port"; port 0 picks a free one), not yet
    started, with `security`'s TLS and tokens (default: neither). `lease_timeout_s`: how long a
    scheduler with no Run stream open keeps the executor after its last Reset (lease.py). Raises
    OSError if the address cannot be bound, TlsConfigError if a TLS file cannot be read."""
    security = security or serving.ServerSecurity()
    metrics = ExecutorMetrics()
    interceptors = [metrics.rpc_interceptor(), *security.interceptors()]  # refusals are counted too
    server, health_servicer = serving.new_server(
        SERVICE_NAME, interceptors, serving.EXECUTOR_MAX_MESSAGE_BYTES
    )
    servicer = ExecutorServicer(engine, Lease(lease_timeout_s), metrics)
    executor_pb2_grpc.add_ExecutorServicer_to_server(servicer, server)
    port = serving.bind(server, address, security.credentials())
    return ExecutorServer(server, port, servicer, health_servicer, metrics)


async def serve(
    engine: Engine,
    address: str,
    port_file: str | None = None,
    security: serving.ServerSecurity | None = None,
    metrics_endpoint: MetricsEndpoint | None = None,
    lease_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully. Writes the bound port to port_file;
    serves metrics on `metrics_endpoint` (default: off)."""
    executor_server = create_server(engine, address, security, lease_timeout_s)
    stop_metrics = (metrics_endpoint or MetricsEndpoint()).start(executor_server.metrics.registry)
    await executor_server.start()
    log.info(
        "executor.listening",
        address=serving.announce(address, executor_server.port, port_file),
        metrics_port=metrics_endpoint.port if metrics_endpoint else 0,
    )
    await serving.wait_for_stop_signal()
    log.info("executor.stopping")
    await executor_server.stop()
    if stop_metrics is not None:
        stop_metrics()
