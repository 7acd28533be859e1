"""The executor's Prometheus metrics, all in one registry: every step's times (whole step, idle
before it, forward pass, swap copies each way), tokens computed, refused plans by code, and
finished RPCs by method and status code.

    infercept-executor --metrics-port 9091 ...   # http://127.0.0.1:9091/metrics
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from infercept.v1 import executor_pb2 as pb
from svc_common.metrics_endpoint import RpcStatusInterceptor, rpc_counter

STEP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Idle time between two steps: tenths of a millisecond while the scheduler plans ahead.
IDLE_BUCKETS_S = (0.0001, 0.00025, *STEP_BUCKETS_S)


class ExecutorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.step_s = Histogram(
            "infercept_executor_step_seconds",
            "Whole step inside the executor",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.idle_s = Histogram(
            "infercept_executor_idle_seconds",
            "Idle before each step, since the previous one ended: what the scheduler held it back",
            buckets=IDLE_BUCKETS_S,
            registry=r,
        )
        self.forward_s = Histogram(
            "infercept_executor_forward_seconds",
            "Forward pass with sampling, per step that computed",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.swap_s = Histogram(
            "infercept_executor_swap_seconds",
            "KV copies per step that swapped, by direction",
            ["direction"],
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter("infercept_executor_tokens", "Tokens computed (batched)", registry=r)
        self.refused_plans = Counter(
            "infercept_executor_refused_plans", "Plans refused or failed, by error code", ["code"], registry=r
        )
        self.rpcs = rpc_counter(r)

    def rpc_interceptor(self) -> RpcStatusInterceptor:
        return RpcStatusInterceptor(self.rpcs)

    def observe_step(self, result: pb.StepResult) -> None:
        """Record one step's result (called on the event loop, as each result goes back)."""
        if result.HasField("error"):
            self.refused_plans.labels(result.error.code or "UNKNOWN").inc()
            return
        self.step_s.observe(result.step_s)
        self.idle_s.observe(result.idle_s)
        if result.num_batched_tokens:
            self.forward_s.observe(result.forward_s)
            self.tokens.inc(result.num_batched_tokens)
        if result.swap_out_s:
            self.swap_s.labels("out").observe(result.swap_out_s)
        if result.swap_in_s:
            self.swap_s.labels("in").observe(result.swap_in_s)
