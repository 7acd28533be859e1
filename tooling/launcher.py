"""Starting an executor and a scheduler as two processes, waiting until both serve, stopping both.

Each service is started with exec (never by forking a process that already runs gRPC), in its own
session, so that the launcher decides the shutdown order: scheduler first, then executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from svc_common.healthcheck import check

STOP_TIMEOUT_S = 20.0
EXECUTOR_TOKEN_ENV = "INFERCEPT_EXECUTOR_TOKEN"  # read by both services (their --help says so)


class LaunchError(RuntimeError):
    """A service did not come up; the message carries the end of its log."""


@dataclasses.dataclass(frozen=True)
class Stack:
    """A running scheduler + executor pair."""

    scheduler_address: str
    executor_address: str
    log_dir: Path
    executor_token: str | None = None  # what the executor requires (its API is internal)


@dataclasses.dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, num_lines: int = 30) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-num_lines:])


@contextlib.contextmanager
def launch(
    executor_args: Sequence[str] = (),
    scheduler_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    scheduler_port: int = 0,
    executor_port: int = 0,
    log_dir: Path | None = None,
    startup_timeout_s: float = 180.0,
    scheduler_root_certificates: bytes | None = None,
    executor_root_certificates: bytes | None = None,
) -> Iterator[Stack]:
    """Run the two services for the duration of the `with` block (ports 0: any free ports).

    The two share a fresh random internal token (INFERCEPT_EXECUTOR_TOKEN in their environment,
    unless the caller's environment sets one), so nobody else can drive the executor. The
    *_root_certificates (PEM CAs) are for the start-up health probes of services serving TLS."""
    logs = Path(log_dir or tempfile.mkdtemp(prefix="infercept-"))
    env = {EXECUTOR_TOKEN_ENV: os.environ.get(EXECUTOR_TOKEN_ENV) or secrets.token_urlsafe(32)}
    with (
        run_service(
            "executor",
            f"{host}:{executor_port}",
            executor_args,
            logs,
            startup_timeout_s,
            env=env,
            root_certificates=executor_root_certificates,
        ) as executor,
        run_service(
            "scheduler",
            f"{host}:{scheduler_port}",
            ["--executor", executor, *scheduler_args],
            logs,
            startup_timeout_s,
            env=env,
            root_certificates=scheduler_root_certificates,
        ) as scheduler,
    ):
        yield Stack(scheduler, executor, logs, env[EXECUTOR_TOKEN_ENV])


@contextlib.contextmanager
def run_service(
    name: str,
    listen: str,
    args: Sequence[str],
    log_dir: Path,
    startup_timeout_s: float = 180.0,
    *,
    env: Mapping[str, str] | None = None,
    root_certificates: bytes | None = None,
) -> Iterator[str]:
    """Run one service ("executor" or "scheduler") until the block ends; yields its address.
    `env` is added to its environment; `root_certificates` (PEM) probe its health over TLS.
    Raises LaunchError (with the end of its log) if it does not come up."""
    log_dir.mkdir(parents=True, exist_ok=True)
    service = start_service(name, f"{name}_svc", listen, list(args), log_dir, env)
    try:
        port = wait_serving(service, log_dir, startup_timeout_s, root_certificates)
        yield f"{listen.rsplit(':', 1)[0]}:{port}"
    finally:
        stop_service(service)


def start_service(
    name: str, module: str, listen: str, args: list[str], logs: Path, env: Mapping[str, str] | None = None
) -> Service:
    """Spawn `python -m module --listen LISTEN ...` in its own session, logging to logs/NAME.log,
    with `env` added to its environment; its port goes to logs/NAME.port once it serves, its
    process id to logs/NAME.pid."""
    port_file = logs / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = logs / f"{name}.log"
    command = [sys.executable, "-m", module, "--listen", listen, "--port-file", str(port_file), *args]
    with open(log_path, "ab") as log:  # appended: a restarted service keeps its history
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    (logs / f"{name}.pid").write_text(f"{process.pid}\n")
    return Service(name, process, log_path)


def wait_serving(
    service: Service, logs: Path, timeout_s: float, root_certificates: bytes | None = None
) -> int:
    """The service's port, once its health service answers SERVING."""
    port_file = logs / f"{service.name}.port"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise LaunchError(
                f"the {service.name} exited with {service.process.returncode}:\n{service.log_tail()}"
            )
        port = port_file.read_text().strip() if port_file.exists() else ""
        if port and is_serving(f"127.0.0.1:{port}", root_certificates):
            return int(port)
        time.sleep(0.1)
    raise LaunchError(f"the {service.name} did not serve within {timeout_s:.0f}s:\n{service.log_tail()}")


def is_serving(address: str, root_certificates: bytes | None = None) -> bool:
    """Whether the service at `address` answers SERVING within a second (over TLS when given the
    PEM CA of its certificate)."""
    return check(address, timeout_s=1.0, root_certificates=root_certificates)[0]


def stop_service(service: Service) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
    if service.process.poll() is not None:
        return
    service.process.send_signal(signal.SIGTERM)
    try:
        service.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
