"""What the two services' gRPC servers share: message limits, the standard health and reflection
services, binding, the port file, and waiting for SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import grpc
from grpc_health.v1 import _async as health_aio  # the asyncio servicer (health.aio)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# Plans, results and long prompts travel as single messages; gRPC's 4 MiB default is too small.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MESSAGE_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
SERVING = health_pb2.HealthCheckResponse.SERVING


def new_server(service_name: str) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    """An asyncio server with large message limits, health and reflection for `service_name`."""
    server = grpc.aio.server(options=MESSAGE_OPTIONS)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


def bind(server: grpc.aio.Server, address: str) -> int:
    """Listen on `address` ("host:port"; port 0: any free port); the bound port, or OSError."""
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
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
