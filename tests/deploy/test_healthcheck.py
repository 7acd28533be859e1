"""``python -m svc_common.healthcheck``, the containers' health probe, against a real grpc.aio server
with the standard health service: exit 0 only for SERVING."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc_common import healthcheck

SERVICE = "infercept.v1.Executor"


class HealthServer:
    def __init__(self) -> None:
        self.server = grpc.aio.server()
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    async def set(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType, service: str = ""
    ) -> None:
        await self.health.set(service, status)


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    health_server = HealthServer()
    await health_server.server.start()
    try:
        yield health_server
    finally:
        await health_server.server.stop(None)


async def probe(*args: str) -> tuple[int, str]:
    """Run the probe as a container would, in its own process, without blocking the event loop
    that serves the health service."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "svc_common.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_serving_exits_0(server: HealthServer) -> None:
    await server.set(health_pb2.HealthCheckResponse.SERVING)
    code, output = await probe(server.target)
    assert code == 0, output
    assert "SERVING" in output


async def test_not_serving_exits_1(server: HealthServer) -> None:
    await server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    code, output = await probe(server.target)
    assert code == 1, output
    assert "NOT_SERVING" in output


async def test_a_named_service_is_asked_about(server: HealthServer) -> None:
    await server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.set(health_pb2.HealthCheckResponse.SERVING, SERVICE)
    assert (await probe(server.target, "--service", SERVICE))[0] == 0
    code, output = await probe(server.target, "--service", "no.such.Service")
    assert code == 1
    assert "NOT_FOUND" in output


async def test_graceful_shutdown_reads_as_not_serving(server: HealthServer) -> None:
    await server.set(health_pb2.HealthCheckResponse.SERVING)
    await server.health.enter_graceful_shutdown()
    assert (await probe(server.target))[0] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening_exits_1() -> None:
    code, output = await probe(f"127.0.0.1:{free_port()}")
    assert code == 1
    assert "UNAVAILABLE" in output


async def test_a_silent_server_exits_1_after_the_timeout() -> None:
    """A socket that accepts connections but never speaks gRPC: the probe gives up by itself
    (a probe that hung would outlive probe()'s bound on the process and fail the test)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        code, output = await probe(f"127.0.0.1:{listener.getsockname()[1]}", "--timeout", "0.5")
    assert code == 1, output
    assert "DEADLINE_EXCEEDED" in output or "UNAVAILABLE" in output


@pytest.mark.parametrize(
    ("argv", "deadline_s"), [(["--timeout", "0.5"], 0.5), ([], healthcheck.DEFAULT_TIMEOUT_S)]
)
def test_the_timeout_is_the_health_checks_deadline(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], deadline_s: float
) -> None:
    """What bounds the probe: --timeout reaches the Check call as its gRPC deadline."""
    deadlines: list[float | None] = []

    class RecordingStub:
        def __init__(self, channel: grpc.Channel) -> None:
            pass

        def Check(self, request: health_pb2.HealthCheckRequest, timeout: float | None = None) -> object:
            deadlines.append(timeout)
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    monkeypatch.setattr(healthcheck.health_pb2_grpc, "HealthStub", RecordingStub)
    assert healthcheck.main(["127.0.0.1:1", *argv]) == 0
    assert deadlines == [deadline_s]


def test_a_bad_command_line_is_unhealthy_not_docker_reserved_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main([]) == 1
    assert healthcheck.main(["127.0.0.1:1", "--timeout", "0"]) == 1
    assert healthcheck.main(["--help"]) == 0
    assert "SERVING" in capsys.readouterr().out


async def test_check_in_process(server: HealthServer) -> None:
    await server.set(health_pb2.HealthCheckResponse.SERVING)
    serving, seen = await asyncio.to_thread(healthcheck.check, server.target, "", 2.0)
    assert (serving, seen) == (True, "SERVING")


async def test_a_server_that_is_not_serving_still_answers_which_the_supervisor_counts_as_alive(
    server: HealthServer,
) -> None:
    await server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    seen = await asyncio.to_thread(healthcheck.probe, server.target, "", 2.0)
    assert seen == healthcheck.Probe(answered=True, serving=False, seen="NOT_SERVING")


def test_nothing_listening_has_not_answered() -> None:
    with socket.socket() as placeholder:  # a port that nobody serves
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    seen = healthcheck.probe(f"127.0.0.1:{port}", timeout_s=1.0)
    assert not seen.answered and not seen.serving
    assert seen.seen.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))
