"""Building and running the scheduler's gRPC server (grpc.aio) with health and reflection.

Health tells the truth: NOT_SERVING while no executor answers, SERVING again once one does. If
the step loop ever dies (a bug: it survives every executor failure), health turns NOT_SERVING
and `serve` returns LOOP_DIED_EXIT_CODE, so that a supervisor restarts the process rather than
leave it accepting requests it will never compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable

import grpc
import structlog
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2
from tokenizers import Tokenizer

from infercept.v1 import generation_pb2, generation_pb2_grpc
from scheduler_svc import stats_log
from scheduler_svc.config import DEFAULT_LINK, LinkConfig, SchedulerConfig
from scheduler_svc.cost_model import CostModel
from scheduler_svc.executor_link import ExecutorLink
from scheduler_svc.iteration_log import IterationLog
from scheduler_svc.iteration_stats import IterationStats
from scheduler_svc.metrics import SchedulerMetrics
from scheduler_svc.policies import POLICIES
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.servicer import GenerationServicer, server_info
from scheduler_svc.stats_render import stats_proto
from scheduler_svc.step_loop import StepLoop
from svc_common import serving
from svc_common.metrics_endpoint import MetricsEndpoint

log = structlog.get_logger(__name__)

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["Generation"].full_name
GRACE_S = 5.0
LOOP_DIED_EXIT_CODE = 4


@dataclasses.dataclass
class SchedulerServer:
    server: grpc.aio.Server
    port: int
    loop: StepLoop
    health: health_aio.HealthServicer
    metrics: SchedulerMetrics = dataclasses.field(default_factory=SchedulerMetrics)
    _loop_task: asyncio.Task[None] | None = None
    _health_updates: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    async def start(self) -> None:
        await self.server.start()
        self.loop.on_availability = self.set_serving
        self._loop_task = asyncio.create_task(self.loop.run_forever(), name="step-loop")
        self._loop_task.add_done_callback(self._on_loop_done)
        await serving.set_serving(self.health, SERVICE_NAME)

    def set_serving(self, is_serving: bool) -> None:
        """Set the health status of the server and of the Generation service (from any task)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if is_serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        log.info("scheduler.health", status=health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        for service in ("", SERVICE_NAME):
            update = asyncio.ensure_future(self.health.set(service, status))
            self._health_updates.add(update)  # held until done, or the task could be collected
            update.add_done_callback(self._health_updates.discard)

    async def wait_until_loop_dies(self) -> BaseException | None:
        """Return the step loop's exception once it has died (it runs forever otherwise)."""
        assert self._loop_task is not None, "start() first"
        with contextlib.suppress(Exception):
            await asyncio.shield(self._loop_task)
        return None if self._loop_task.cancelled() else self._loop_task.exception()

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("step_loop.died", error=repr(task.exception()), exc_info=task.exception())
            self.set_serving(False)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        await self.loop.executor.close()


async def create_server(
    config: SchedulerConfig,
    listen: str,
    executor_address: str,
    executor_timeout_s: float = 60.0,
    link: LinkConfig = DEFAULT_LINK,
    security: serving.ServerSecurity | None = None,
    executor_link: ExecutorLink | None = None,
) -> SchedulerServer:
    """Connect to the executor (waiting up to executor_timeout_s), reset it, and build a server
    bound to `listen` (port 0: any free port), not yet started. `link`: deadlines towards the
    executor; `security`: the public port's TLS and tokens; `executor_link`: TLS and token towards
    the executor (default: neither). ExecutorUnavailable if the executor does not answer or
    serves another scheduler; ValueError for a policy only the simulator can run."""
    if POLICIES[config.policy].simulator_only:
        raise ValueError(f"policy {config.policy!r} runs in the simulator only (infercept-sim)")
    security = security or serving.ServerSecurity()
    executor = (executor_link or ExecutorLink()).client(executor_address, link)
    await executor.wait_until_serving(executor_timeout_s)
    description, describe = await executor.describe()
    await executor.reset()
    tokenizer = Tokenizer.from_str(describe.tokenizer_json) if describe.tokenizer_json else None
    cost_model = None
    if POLICIES[config.policy].manages_paused:  # the others need no costs: skip the measuring
        cost_model = CostModel.from_profile(await executor.profile())
        log.info("scheduler.cost_model", **dataclasses.asdict(cost_model))
    loop = StepLoop(Scheduler(config, description, tokenizer, cost_model), executor, link=link)
    metrics = SchedulerMetrics()
    interceptors = [metrics.rpc_interceptor(), *security.interceptors()]  # refusals are counted too
    server, health_servicer = serving.new_server(SERVICE_NAME, interceptors)
    info = server_info(loop)
    # The gateway renders and tokenizes conversations itself, with the model's own files.
    info.tokenizer_json, info.chat_template = describe.tokenizer_json, describe.chat_template
    servicer = GenerationServicer(loop, info, security.authenticator, metrics)
    generation_pb2_grpc.add_GenerationServicer_to_server(servicer, server)
    port = serving.bind(server, listen, security.credentials())
    log.info(
        "scheduler.ready",
        executor=executor_address,
        model=description.model,
        policy=config.policy,
        device_blocks=description.num_device_blocks,
        host_blocks=description.num_host_blocks,
    )
    return SchedulerServer(server, port, loop, health_servicer, metrics)


async def serve(
    config: SchedulerConfig,
    listen: str,
    executor_address: str,
    executor_timeout_s: float,
    port_file: str | None,
    iteration_log_path: str | None = None,
    link: LinkConfig = DEFAULT_LINK,
    security: serving.ServerSecurity | None = None,
    executor_link: ExecutorLink | None = None,
    metrics_endpoint: MetricsEndpoint | None = None,
    stats_interval_s: float = stats_log.DEFAULT_INTERVAL_S,
) -> int:
    """Serve until SIGINT or SIGTERM, then stop gracefully and return 0; or until the step loop
    dies, then stop and return LOOP_DIED_EXIT_CODE. Metrics on `metrics_endpoint` (off by
    default), a stats line every stats_interval_s seconds (0: none)."""
    scheduler_server = await create_server(
        config, listen, executor_address, executor_timeout_s, link, security, executor_link
    )
    iteration_log = IterationLog(iteration_log_path) if iteration_log_path else None
    core, metrics = scheduler_server.loop.core, scheduler_server.metrics
    core.on_iteration = _each_iteration(iteration_log, metrics.observe_iteration)
    metrics.watch_core(functools.partial(stats_proto, core), asyncio.get_running_loop())
    stop_metrics = (metrics_endpoint or MetricsEndpoint()).start(metrics.registry)
    stats_task = None
    if stats_interval_s > 0:
        stats_task = asyncio.create_task(
            stats_log.log_stats_forever(
                functools.partial(stats_proto, core), stats_interval_s, time.monotonic
            ),
            name="stats-log",
        )
    await scheduler_server.start()
    log.info(
        "scheduler.listening",
        address=serving.announce(listen, scheduler_server.port, port_file),
        metrics_port=metrics_endpoint.port if metrics_endpoint else 0,
    )
    stop_signal = asyncio.ensure_future(serving.wait_for_stop_signal())
    loop_died = asyncio.ensure_future(scheduler_server.wait_until_loop_dies())
    await asyncio.wait({stop_signal, loop_died}, return_when=asyncio.FIRST_COMPLETED)
    code = LOOP_DIED_EXIT_CODE if loop_died.done() else 0
    for waiter in (stop_signal, loop_died):
        waiter.cancel()
    log.info("scheduler.stopping", exit_code=code)
    await scheduler_server.stop(grace_s=0.0 if code else GRACE_S)
    if stats_task is not None:
        stats_task.cancel()
    if stop_metrics is not None:
        stop_metrics()
    if iteration_log is not None:
        iteration_log.close()
    return code


def _each_iteration(
    *observers: Callable[[IterationStats], None] | None,
) -> Callable[[IterationStats], None]:
    """One on_iteration hook calling every observer that is not None, in order."""
    present = [observer for observer in observers if observer is not None]

    def observe(iteration: IterationStats) -> None:
        for observer in present:
            observer(iteration)

    return observe
