"""A scheduler and an executor as separate real processes that tests kill, stop and restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from infercept.v1 import generation_pb2 as gen
from infercept.v1 import generation_pb2_grpc
from svc_common.healthcheck import check
from tests.e2e.conftest import stack_args
from tooling.launcher import Service, start_service, stop_service, wait_serving

WAIT_S = 60.0  # the longest any condition is waited for
# Short bounds, so that faults are detected and reported quickly on a test machine.
LINK_FLAGS = ["--probe-interval", "0.2", "--reset-timeout", "2", "--step-timeout", "10"]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class ChaosStack:
    """An executor and a scheduler under a test's control; the executor keeps its port."""

    def __init__(self, log_dir: Path, policy: str = "swap", scheduler_flags: list[str] | None = None):
        self.log_dir = log_dir
        self.executor_args, scheduler_args = stack_args(policy)
        self.scheduler_args = [*scheduler_args, *LINK_FLAGS, *(scheduler_flags or [])]
        self.executor_address = "127.0.0.1:0"
        self.executor: Service | None = None
        self.scheduler: Service | None = None
        self.scheduler_address = ""

    def start_executor(self) -> None:
        self.executor = start_service(
            "executor", "executor_svc", self.executor_address, self.executor_args, self.log_dir
        )
        port = wait_serving(self.executor, self.log_dir, WAIT_S * 3)
        self.executor_address = f"127.0.0.1:{port}"

    def start_scheduler(self) -> None:
        listen = self.scheduler_address or "127.0.0.1:0"
        args = ["--executor", self.executor_address, *self.scheduler_args]
        self.scheduler = start_service("scheduler", "scheduler_svc", listen, args, self.log_dir)
        self.scheduler_address = f"127.0.0.1:{wait_serving(self.scheduler, self.log_dir, WAIT_S * 3)}"

    def kill(self, service: Service | None) -> None:
        assert service is not None
        service.process.kill()
        service.process.wait(timeout=WAIT_S)

    def signal_executor(self, signum: signal.Signals) -> None:
        assert self.executor is not None
        os.kill(self.executor.process.pid, signum)

    def scheduler_health(self) -> str:
        return check(self.scheduler_address, timeout_s=5.0)[1]

    def stats(self) -> gen.Stats:
        with grpc.insecure_channel(self.scheduler_address) as channel:
            stats: gen.Stats = generation_pb2_grpc.GenerationStub(channel).GetStats(
                gen.StatsRequest(), timeout=10
            )
            return stats

    def num_live(self, state: str | None = None) -> int:
        by_state = self.stats().requests_by_state
        return by_state[state] if state else sum(by_state[s] for s in ("waiting", "running", "paused"))

    def assert_all_blocks_free(self) -> None:
        wait_for(lambda: self.num_live() == 0, "no live request")
        stats = self.stats()
        assert (stats.device_blocks_free, stats.host_blocks_free) == (
            stats.device_blocks_total,
            stats.host_blocks_total,
        )

    def stop(self) -> None:
        for service in (self.scheduler, self.executor):
            if service is not None:
                if service is self.executor and service.process.poll() is None:
                    service.process.send_signal(signal.SIGCONT)  # a stopped one cannot stop
                stop_service(service)


@contextlib.contextmanager
def chaos_stack(
    log_dir: Path, policy: str = "swap", scheduler_flags: list[str] | None = None
) -> Iterator[ChaosStack]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = ChaosStack(log_dir, policy, scheduler_flags)
    try:
        stack.start_executor()
        stack.start_scheduler()
        yield stack
    finally:
        stack.stop()
