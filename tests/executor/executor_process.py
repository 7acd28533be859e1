"""Starting a real executor process on a free port for tests, and a blocking Run-stream client."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc

START_TIMEOUT_S = 90.0


@contextlib.contextmanager
def running_executor(args: list[str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Spawn `python -m executor_svc --listen 127.0.0.1:0 ARGS`; yield (address, process).
    On exit the process is sent SIGTERM and must stop by itself."""
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    log_file = tmp_path / f"executor-{time.monotonic_ns()}.log"
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "INFERCEPT_CACHE_DIR": str(tmp_path / "cache")}
    command = [
        sys.executable,
        "-m",
        "executor_svc",
        "--listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        *args,
    ]
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"executor did not start:\n{log_file.read_text()}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port_file.read_text().strip()}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


class RunStream:
    """One Run stream used as a blocking call: step(plan) sends a plan and waits for its result."""

    def __init__(self, stub: executor_pb2_grpc.ExecutorStub) -> None:
        self._plans: queue.Queue[pb.StepPlan | None] = queue.Queue()
        self._results = iter(stub.Run(iter(self._plans.get, None)))

    def step(self, plan: pb.StepPlan) -> pb.StepResult:
        self.send(plan)
        return self.receive()

    def send(self, plan: pb.StepPlan) -> None:
        """Write `plan` without waiting for any result (as a scheduler planning ahead does)."""
        self._plans.put(plan)

    def receive(self) -> pb.StepResult:
        """The next result, in the order the plans were sent."""
        return next(self._results)

    def close(self) -> None:
        self._plans.put(None)
        for _ in self._results:  # drain to the end of the stream
            pass
