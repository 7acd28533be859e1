"""Keeping a service process alive: restart it when it dies or hangs, on the same port.

`infercept serve` runs one Supervised per service and calls poll() a few times a second. Each
is a small state machine:

    STARTING --serves--> RUNNING --exits, or misses max_missed_checks probes--> WAITING
        |  exits, or not serving within startup_timeout_s                     |
        +------------------------------> WAITING --backoff over--> STARTING <--+

A probe asks the gRPC health service with a timeout; any answer (NOT_SERVING included: a
scheduler says so while its executor is gone) counts as alive, silence does not (a hung or
SIGSTOPped process), and a silent process is killed. The first start may bind port 0; every
restart binds the port the first one got, so the other service finds it again. Backoff doubles
after each failed start, from min_backoff_s up to max_backoff_s, and is forgiven once a process
has served for stable_s.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from svc_common.healthcheck import probe
from tooling.launcher import LaunchError, Service, start_service, stop_service, wait_serving


@dataclasses.dataclass(frozen=True)
class SupervisionConfig:
    check_interval_s: float = 2.0  # between two liveness probes of a running service
    probe_timeout_s: float = 3.0  # a probe unanswered this long is missed
    max_missed_checks: int = 3  # consecutive misses that make a service hung (then killed)
    min_backoff_s: float = 1.0  # wait before the first restart
    max_backoff_s: float = 30.0  # the longest wait between restarts
    stable_s: float = 60.0  # serving this long resets the backoff
    startup_timeout_s: float = 180.0  # a start that does not serve within this is killed


DEFAULT_SUPERVISION = SupervisionConfig()


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    WAITING = "waiting"  # to restart after the backoff
    STOPPED = "stopped"


class Supervised:
    """One service kept alive. start() brings it up (LaunchError if the first start fails);
    poll() restarts it as needed and returns a line saying what it did, if anything."""

    def __init__(
        self,
        name: str,
        listen: str,
        args: Sequence[str],
        log_dir: Path,
        config: SupervisionConfig = SupervisionConfig(),
        clock: Callable[[], float] = time.monotonic,
        *,
        env: Mapping[str, str] | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        """`env` is added to the service's environment; `root_certificates` (PEM) probe its
        health over TLS."""
        self.name = name
        self.env = dict(env or {})
        self.root_certificates = root_certificates
        self.host, port = listen.rsplit(":", 1)
        self.port = int(port)
        self.args = list(args)
        self.log_dir = log_dir
        self.config = config
        self.clock = clock
        self.state = State.STOPPED
        self.num_restarts = 0
        self._service: Service | None = None
        self._backoff_s = config.min_backoff_s
        self._deadline_s = 0.0  # STARTING: give up then; WAITING: restart then; RUNNING: next probe
        self._serving_since_s = 0.0
        self._num_missed = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._service.process.pid if self._service is not None else None

    def start(self) -> str:
        """First start: wait until it serves; its address. LaunchError if it does not."""
        self._service = self._spawn()
        try:
            self.port = wait_serving(
                self._service, self.log_dir, self.config.startup_timeout_s, self.root_certificates
            )
        except LaunchError:
            stop_service(self._service)
            raise
        self._now_running()
        return self.address

    def poll(self) -> str | None:
        """Advance the state machine; a line describing a kill or a restart, else None."""
        now, service = self.clock(), self._service
        if self.state is State.WAITING and now >= self._deadline_s:
            self._service = self._spawn()
            self.state, self._deadline_s = State.STARTING, now + self.config.startup_timeout_s
            self.num_restarts += 1
            return f"{self.name}: restarting on {self.address} (restart {self.num_restarts})"
        if service is None or self.state not in (State.STARTING, State.RUNNING):
            return None
        if service.process.poll() is not None:
            return self._wait_to_restart(f"exited with {service.process.returncode}")
        if self.state is State.STARTING:
            if (self.log_dir / f"{self.name}.port").exists() and probe(
                self.address, timeout_s=1.0, root_certificates=self.root_certificates
            ).answered:
                self._now_running()
                return f"{self.name}: serving again on {self.address}"
            if now >= self._deadline_s:
                return self._kill(f"did not serve within {self.config.startup_timeout_s:g}s")
            return None
        if now < self._deadline_s:
            return None
        self._deadline_s = now + self.config.check_interval_s
        if probe(
            self.address, timeout_s=self.config.probe_timeout_s, root_certificates=self.root_certificates
        ).answered:
            self._num_missed = 0
            if now - self._serving_since_s >= self.config.stable_s:
                self._backoff_s = self.config.min_backoff_s
            return None
        self._num_missed += 1
        if self._num_missed >= self.config.max_missed_checks:
            return self._kill(f"answered none of {self._num_missed} health probes: hung")
        return None

    def _spawn(self) -> Service:
        return start_service(self.name, f"{self.name}_svc", self.address, self.args, self.log_dir, self.env)

    def stop(self) -> None:
        if self._service is not None:
            stop_service(self._service)
        self.state = State.STOPPED

    def _now_running(self) -> None:
        now = self.clock()
        self.state, self._serving_since_s, self._num_missed = State.RUNNING, now, 0
        self._deadline_s = now + self.config.check_interval_s

    def _kill(self, why: str) -> str:
        assert self._service is not None
        self._service.process.kill()
        self._service.process.wait()
        return self._wait_to_restart(f"{why}; killed")

    def _wait_to_restart(self, why: str) -> str:
        self.state, self._deadline_s = State.WAITING, self.clock() + self._backoff_s
        line = f"{self.name}: {why}; restarting in {self._backoff_s:g}s"
        self._backoff_s = min(self._backoff_s * 2, self.config.max_backoff_s)
        return line
