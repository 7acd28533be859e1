"""The paper's metrics over RequestRecords and the server-side counters of a window: the parts of
the RunRecord (tooling/run_record.py) that the load generator and the simulator both write.

Definitions (DESIGN.md §6), over the requests that completed inside the window:
    normalized latency  (finish − arrival − time inside tool calls) / (generated + returned
                        tokens), s/token; from timed_from_s over the tokens after untimed_tokens
                        for a record that says so (the paper's harness, its first requests)
    TTFT                first generated token − arrival, s
    completed_per_s     completed requests / window length
    output_tokens_per_s tokens the model generated for completed requests / window length (tool-
                        returned tokens are not model output, so they are not counted)
A distribution with no values (nothing completed) reports None for each statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scheduler_svc.sim.request_plan import RequestRecord
from tooling.loadgen.workload_spec import WorkloadSpec
from tooling.run_record import Assumptions, Distribution, RunRecord, ServerDelta, Summary

# Server counters (GetStats) that count tokens computed by the model, by kind.
FORWARD_TOKEN_KINDS = ("prompt_tokens", "decode_tokens", "returned_tokens", "recomputed_tokens")


def normalized_latency_s(record: RequestRecord) -> float:
    """The paper's per-request metric, s/token; for a request cut at the window's end, up to then
    with the output it had. Raises ValueError for a record with neither finish_s nor cut_s."""
    end_s = record.finish_s if record.finish_s is not None else record.cut_s
    if end_s is None:
        raise ValueError(f"request {record.index} has no finish time")
    start_s = record.arrival_s if record.timed_from_s is None else record.timed_from_s
    num_tokens = max(record.generated_tokens + record.returned_tokens - record.untimed_tokens, 1)
    return (end_s - start_s - record.tool_time_s) / num_tokens


def distribution(values: Sequence[float]) -> Distribution:
    """Mean and the 50th, 90th, 99th percentiles (linear interpolation); None when empty."""
    if not values:
        return Distribution()
    array = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99]).tolist()
    return Distribution(float(array.mean()), p50, p90, p99)


def summarize(
    records: Sequence[RequestRecord], *, window_s: float, count_unfinished: bool = False
) -> Summary:
    """Client-side metrics of the requests that arrived in a window of window_s seconds:
    submitted and completed counts, completed_per_s, normalized_latency_s_per_token, ttft_s,
    output_tokens_per_s (see the module docstring). With count_unfinished, the normalized latency
    also counts the requests cut at the window's end (cut_s) with the output they had, as the
    paper's harness does (those without any output are left out); unfinished_counted says how
    many. Raises ValueError if window_s <= 0."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    completed = [r for r in records if r.completed]
    # A request cut before its first token has no output to count: it is left out.
    measured = [
        *completed,
        *(r for r in records if count_unfinished and r.cut_s is not None and r.generated_tokens),
    ]
    ttfts = [r.first_token_s - r.arrival_s for r in completed if r.first_token_s is not None]
    return Summary(
        submitted=len(records),
        completed=len(completed),
        completed_per_s=len(completed) / window_s,
        unfinished_counted=len(measured) - len(completed),
        normalized_latency_s_per_token=distribution([normalized_latency_s(r) for r in measured]),
        ttft_s=distribution(ttfts),
        output_tokens_per_s=sum(r.generated_tokens for r in completed) / window_s,
    )


def server_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerDelta:
    """The server's work between two GetStats snapshots (client.server_stats() dicts):
    forward_tokens (prompt + decode + returned + recomputed), recomputed_tokens, recompute_share
    (recomputed / forward tokens, 0 when nothing ran), recompute_time_share (of forward time;
    None when the server does not count it), swapped blocks each way, and the device
    block-seconds held by paused requests."""

    def delta(key: str) -> Any:
        return after[key] - before[key]

    forward_tokens = int(sum(delta(kind) for kind in FORWARD_TOKEN_KINDS))
    recomputed_tokens = int(delta("recomputed_tokens"))
    return ServerDelta(
        forward_tokens=forward_tokens,
        recomputed_tokens=recomputed_tokens,
        recompute_share=recomputed_tokens / forward_tokens if forward_tokens else 0.0,
        recompute_time_share=recompute_time_share(before, after),
        swap_out_blocks=int(delta("swap_out_blocks")),
        swap_in_blocks=int(delta("swap_in_blocks")),
        paused_device_block_seconds=float(delta("paused_device_block_seconds")),
    )


# Counters of forward time (seconds) in all and of the part attributed to recomputed tokens (the
# scheduler's Stats; the simulator's, with ideal's free restores). Stats without them (an older
# server) give no time share.
FORWARD_TIME_KEYS = ("forward_s", "recomputed_forward_s")


def recompute_time_share(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    """Share of the window's forward time spent on recomputed tokens, or None when the stats do
    not carry the forward-time counters (FORWARD_TIME_KEYS)."""
    if not all(key in before and key in after for key in FORWARD_TIME_KEYS):
        return None
    forward_s = after["forward_s"] - before["forward_s"]
    recomputed_s = after["recomputed_forward_s"] - before["recomputed_forward_s"]
    return recomputed_s / forward_s if forward_s > 0 else 0.0


def run_record(
    tool: str,
    policy: str,
    workload: WorkloadSpec,
    records: Sequence[RequestRecord],
    stats: tuple[Mapping[str, Any], Mapping[str, Any]],
    assumptions: Assumptions,
) -> RunRecord:
    """The RunRecord of a run of `workload`: its requests' records summarized over its window,
    the server's work between the `stats` snapshots at the window's edges, and the assumptions
    (to which the warm-up and whether unfinished requests count are added)."""
    return RunRecord(
        tool=tool,
        policy=policy,
        workload=workload.workload,
        rate=workload.rate,
        duration_s=workload.duration_s,
        seed=workload.seed,
        summary=summarize(records, window_s=workload.duration_s, count_unfinished=workload.count_unfinished),
        server=server_delta(*stats),
        assumptions={
            **assumptions,
            "warmup_s": workload.warmup_s,
            "count_unfinished": workload.count_unfinished,
        },
    )
