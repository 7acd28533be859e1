"""The scheduler's Prometheus metrics, all in one registry.

Three sources, none of which adds work to the step loop beyond a histogram observation:

- per request (RequestTimer, fed by the session's events at the service edge): TTFT, time per
  output token, normalized latency (paper §6: (finish - arrival - time in tool calls) /
  (generated + returned tokens)), end to end, and finished requests by reason;
- per iteration (observe_iteration, the core's on_iteration hook): step and forward time;
- at scrape time (StatsCollector): the core's counters and gauges (tokens by kind, recompute
  share, swaps each way, paused blocks, requests by state, free blocks, ...), read on the event
  loop's thread so that the scrape never sees the core half-updated;
- per RPC (RpcStatusInterceptor): finished RPCs by method and status code, refusals included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.iteration_stats import IterationStats
from svc_common.metrics_endpoint import RpcStatusInterceptor, rpc_counter

log = structlog.get_logger(__name__)

SNAPSHOT_TIMEOUT_S = 2.0  # a scrape gives up on the core's counters if the loop is this busy
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PER_TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TOKEN_KINDS = ("prompt", "decode", "returned", "recomputed")


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft_s = Histogram(
            "infercept_request_ttft_seconds",
            "Time from a request's arrival to its first generated token",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.time_per_output_token_s = Histogram(
            "infercept_request_time_per_output_token_seconds",
            "After the first token: time outside tool calls per further generated token",
            buckets=PER_TOKEN_BUCKETS_S,
            registry=r,
        )
        self.normalized_latency_s = Histogram(
            "infercept_request_normalized_latency_seconds",
            "(finish - arrival - time in tool calls) / (generated + returned tokens), s/token",
            buckets=PER_TOKEN_BUCKETS_S,
            registry=r,
        )
        self.end_to_end_s = Histogram(
            "infercept_request_end_to_end_seconds",
            "Time from a request's arrival to its Finished, tool calls included",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.finished = Counter(
            "infercept_requests_finished", "Finished requests by finish reason", ["reason"], registry=r
        )
        self.step_s = Histogram(
            "infercept_iteration_step_seconds",
            "The executor's whole step per iteration",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.forward_s = Histogram(
            "infercept_iteration_forward_seconds",
            "The executor's forward pass (with sampling) per iteration",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.rpcs = rpc_counter(r)

    def rpc_interceptor(self) -> RpcStatusInterceptor:
        return RpcStatusInterceptor(self.rpcs)

    def observe_iteration(self, iteration: IterationStats) -> None:
        self.step_s.observe(iteration.step_s)
        self.forward_s.observe(iteration.forward_s)

    def watch_core(self, stats: Callable[[], gen.Stats], loop: asyncio.AbstractEventLoop) -> None:
        """Export `stats()` (called on `loop`'s thread) at every scrape."""
        self.registry.register(StatsCollector(lambda: _on_loop(loop, stats)))

    def request_timer(self, arrival_s: float) -> RequestTimer:
        return RequestTimer(self, arrival_s)


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], gen.Stats]) -> gen.Stats | None:
    """fn() run on `loop`'s thread, waited for at most SNAPSHOT_TIMEOUT_S (None then)."""

    async def call() -> gen.Stats:
        return fn()

    try:
        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=SNAPSHOT_TIMEOUT_S)
    except (concurrent.futures.TimeoutError, RuntimeError) as error:  # busy, or the loop is closed
        log.warning("metrics.snapshot_skipped", error=repr(error))
        return None


class RequestTimer:
    """One request's timeline as its session sees it (seconds on one clock); observes the
    request histograms when Finished arrives."""

    def __init__(self, metrics: SchedulerMetrics, arrival_s: float) -> None:
        self._metrics = metrics
        self._arrival_s = arrival_s
        self._first_token_s: float | None = None
        self._paused_since_s: float | None = None
        self._in_tools_s = 0.0  # time inside tool calls so far
        self._in_tools_at_first_token_s = 0.0

    def on_event(self, event: gen.ServerEvent, now_s: float) -> None:
        kind = event.WhichOneof("event")
        if kind == "tokens" and self._first_token_s is None and event.tokens.token_ids:
            self._first_token_s = now_s
            self._in_tools_at_first_token_s = self._in_tools_s
            self._metrics.ttft_s.observe(now_s - self._arrival_s)
        elif kind == "intercepted":
            self._paused_since_s = now_s
        elif kind == "resumed" and self._paused_since_s is not None:
            self._in_tools_s += now_s - self._paused_since_s
            self._paused_since_s = None
        elif kind == "finished":
            self._finish(event.finished, now_s)

    def _finish(self, finished: gen.Finished, now_s: float) -> None:
        m = self._metrics
        m.finished.labels(finished.finish_reason or "unknown").inc()
        m.end_to_end_s.observe(now_s - self._arrival_s)
        usage = finished.usage
        num_tokens = usage.generated_tokens + usage.returned_tokens
        if num_tokens > 0:
            m.normalized_latency_s.observe((now_s - self._arrival_s - self._in_tools_s) / num_tokens)
        if self._first_token_s is not None and usage.generated_tokens > 1:
            in_tools_after_s = self._in_tools_s - self._in_tools_at_first_token_s
            decode_s = now_s - self._first_token_s - in_tools_after_s
            m.time_per_output_token_s.observe(decode_s / (usage.generated_tokens - 1))


class StatsCollector(Collector):
    """The core's Stats, as Prometheus metrics, read at scrape time."""

    def __init__(self, snapshot: Callable[[], gen.Stats | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        if stats is None:
            return
        tokens = CounterMetricFamily(
            "infercept_tokens", "Tokens computed, by kind (recomputed: computed again)", labels=["kind"]
        )
        counts = (stats.prompt_tokens, stats.decode_tokens, stats.returned_tokens, stats.recomputed_tokens)
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            tokens.add_metric([kind], count)
        yield tokens
        total = sum(counts)
        yield GaugeMetricFamily(
            "infercept_recompute_share",
            "Recomputed tokens / all tokens computed since start",
            value=stats.recomputed_tokens / total if total else 0.0,
        )
        swaps = CounterMetricFamily(
            "infercept_swapped_blocks", "KV blocks copied, by direction", labels=["direction"]
        )
        swaps.add_metric(["out"], stats.swap_out_blocks)
        swaps.add_metric(["in"], stats.swap_in_blocks)
        yield swaps
        yield GaugeMetricFamily(
            "infercept_paused_device_blocks",
            "Device blocks held by paused requests (last iteration)",
            value=stats.last_iteration.paused_device_blocks,
        )
        requests = GaugeMetricFamily(
            "infercept_requests", "Live requests by state (queue depths)", labels=["state"]
        )
        for state, count in stats.requests_by_state.items():
            if state != "finished":
                requests.add_metric([state], count)
        yield requests
        yield from _block_gauges(stats)
        yield from _counters(stats)


def _block_gauges(stats: gen.Stats) -> Iterator[Metric]:
    for pool, free, total in (
        ("device", stats.device_blocks_free, stats.device_blocks_total),
        ("host", stats.host_blocks_free, stats.host_blocks_total),
    ):
        yield GaugeMetricFamily(f"infercept_{pool}_blocks_free", f"Free {pool} KV blocks", value=free)
        yield GaugeMetricFamily(f"infercept_{pool}_blocks_total", f"{pool} KV blocks", value=total)


def _counters(stats: gen.Stats) -> Iterator[Metric]:
    for name, documentation, value in (
        ("iterations", "Iterations (plans) run", stats.iterations),
        ("interceptions", "Interceptions (tool calls)", sum(stats.interceptions_by_tool.values())),
        ("aborted_requests", "Requests aborted (client gone, Abort, or error)", stats.aborted_requests),
        ("preemptions", "Computing requests preempted for an older one", stats.preemptions),
        ("paused_discards", "Paused contexts a policy discarded after the pause", stats.paused_discards),
        (
            "paused_device_block_seconds",
            "Device blocks held by paused requests x time",
            stats.paused_device_block_seconds,
        ),
        ("stall_seconds", "Iteration time not hidden behind the forward pass", stats.stall_s),
    ):
        yield CounterMetricFamily(f"infercept_{name}", documentation, value=value)
