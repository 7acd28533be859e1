"""What the two services' gRPC servers share: message limits, the standard health and reflection
services, binding (exclusively, with TLS when configured), the port file, and waiting for
SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import _async as health_aio  # the asyncio servicer (health.aio)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from infercept.channel import MAX_MESSAGE_BYTES
from svc_common.auth import Authenticator, AuthInterceptor
from svc_common.tls import ServerTls

# The internal scheduler-executor link only: Describe carries the tokenizer's JSON (Llama 3's is
# ~9 MB) and a full batch's plan lists every request's block table, so its messages may be far
# larger than the public API's. Only the scheduler talks on it.
EXECUTOR_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# gRPC sets SO_REUSEPORT by default, so a second server could bind a port already served and the
# kernel would split connections between the two. A port belongs to one server: a second bind fails.
EXCLUSIVE_PORT_OPTIONS = (("grpc.so_reuseport", 0),)
SERVING = health_pb2.HealthCheckResponse.SERVING


def message_options(max_message_bytes: int) -> tuple[tuple[str, int], ...]:
    """gRPC channel/server options limiting messages to `max_message_bytes` both ways."""
    return (
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    )


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """How a server protects its port: TLS (None: plaintext) and bearer tokens (token ->
    identity; empty: no authentication). The default is neither, for loopback use."""

    tls: ServerTls | None = None
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def authenticator(self) -> Authenticator:
        return Authenticator(self.tokens)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [AuthInterceptor(self.authenticator)] if self.tokens else []

    def credentials(self) -> grpc.ServerCredentials | None:
        return self.tls.credentials() if self.tls is not None else None


def new_server(
    service_name: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    """An asyncio server with exclusive ports, health and reflection for `service_name`, running
    `interceptors` (e.g. authentication) before every handler; messages over `max_message_bytes`
    get RESOURCE_EXHAUSTED from gRPC before any handler runs."""
    server = grpc.aio.server(
        options=message_options(max_message_bytes) + EXCLUSIVE_PORT_OPTIONS, interceptors=interceptors
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Listen on `address` ("host:port"; port 0: any free port), with TLS when `credentials` are
    given; the bound port. OSError if the address cannot be bound (e.g. another server has it)."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as error:  # what grpc raises for a port it cannot bind
        raise OSError(f"could not bind {address} (is another server on it?): {error}") from error
    if port == 0:
        raise OSError(f"could not bind {address} (is another server on it?)")
    return port


async def set_serving(health_servicer: health_aio.HealthServicer, service_name: str) -> None:
    for service in ("", service_name):
        await health_servicer.set(service, SERVING)


def announce(address: str, port: int, port_file: str | None) -> str:
    """The bound "host:port"; written (the port) to port_file for whoever started us."""
    if port_file:
        with open(port_file, "w") as f:
            f.write(f"{port}\n")
    return f"{address.rsplit(':', 1)[0]}:{port}"


async def wait_for_stop_signal() -> None:
    """Return once SIGINT or SIGTERM arrives."""
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
