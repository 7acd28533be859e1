"""The service edge's rendering of the core's statistics as public-API messages (GetStats, the
iteration log, the metrics scrape): the core keeps plain counters and dataclasses."""

from __future__ import annotations

import dataclasses

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.iteration_stats import IterationStats
from scheduler_svc.request import Status, TokenKind
from scheduler_svc.scheduler import Scheduler


def iteration_proto(iteration: IterationStats) -> gen.IterationStats:
    """One iteration's statistics as the API's IterationStats (the same field names)."""
    return gen.IterationStats(**dataclasses.asdict(iteration))


def stats_proto(core: Scheduler) -> gen.Stats:
    """The server's statistics since start, and its state now, as the API's Stats."""
    by_state = {"waiting": 0, "running": 0, "paused": 0}
    for r in core.requests.values():
        if r.status is Status.PAUSED:
            by_state["paused"] += 1
        else:
            by_state["running" if r.num_computed and r.num_pending == 1 else "waiting"] += 1
    stats, blocks = core.stats, core.blocks
    by_state["finished"] = stats.finished_requests
    kinds = stats.tokens_by_kind
    return gen.Stats(
        prompt_tokens=kinds[TokenKind.PROMPT],
        decode_tokens=kinds[TokenKind.DECODE],
        returned_tokens=kinds[TokenKind.RETURNED],
        recomputed_tokens=kinds[TokenKind.RECOMPUTE],
        swap_out_blocks=stats.swap_out_blocks,
        swap_in_blocks=stats.swap_in_blocks,
        device_blocks_free=blocks.device.num_free,
        device_blocks_total=blocks.device.num_total,
        host_blocks_free=blocks.host.num_free,
        host_blocks_total=blocks.host.num_total,
        requests_by_state=by_state,
        interceptions_by_tool=dict(stats.interceptions_by_tool),
        paused_device_block_seconds=core.table.paused.held_block_s,
        iterations=stats.iterations,
        aborted_requests=stats.aborted_requests,
        preemptions=stats.preemptions,
        paused_discards=stats.paused_discards,
        stall_s=stats.stall_s,
        last_iteration=iteration_proto(stats.last_iteration),
        prefix_hit_tokens=sum(stats.prefix_hit_tokens_by_kind.values()),
        prefix_hit_blocks=stats.prefix_hit_blocks,
        device_blocks_cached=blocks.device.num_cached,
        prefix_caching=core.prefix_caching,
        forward_s=stats.forward_s,
        recomputed_forward_s=stats.recomputed_forward_s,
    )
