"""The periodic one-line stats log: every `interval_s`, one structlog event "stats" with what the
scheduler did since the previous line and where it stands now.

    infercept-scheduler --stats-interval-s 10 ...    # 0: off

Fields: interval_s; iterations, tokens_per_s (all kinds), prompt / decode / returned / recomputed
tokens, swap_out / swap_in blocks, finished and aborted requests (all since the previous line);
waiting / running / paused requests, device_blocks_free, host_blocks_free (now).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from infercept.v1 import generation_pb2 as gen

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 10.0
_DELTA_FIELDS = (
    "iterations",
    "prompt_tokens",
    "decode_tokens",
    "returned_tokens",
    "recomputed_tokens",
    "swap_out_blocks",
    "swap_in_blocks",
    "aborted_requests",
)


def stats_line(before: gen.Stats, now: gen.Stats, interval_s: float) -> dict[str, float | int]:
    """The fields of one line: counters as differences from `before`, gauges as `now`."""
    line: dict[str, float | int] = {"interval_s": round(interval_s, 3)}
    for field in _DELTA_FIELDS:
        line[field] = getattr(now, field) - getattr(before, field)
    num_tokens = sum(
        line[f] for f in ("prompt_tokens", "decode_tokens", "returned_tokens", "recomputed_tokens")
    )
    line["tokens_per_s"] = round(num_tokens / interval_s, 1) if interval_s > 0 else 0.0
    line["finished_requests"] = now.requests_by_state.get("finished", 0) - before.requests_by_state.get(
        "finished", 0
    )
    for state in ("waiting", "running", "paused"):
        line[state] = now.requests_by_state.get(state, 0)
    line["device_blocks_free"] = now.device_blocks_free
    line["host_blocks_free"] = now.host_blocks_free
    return line


async def log_stats_forever(
    stats: Callable[[], gen.Stats], interval_s: float, clock: Callable[[], float]
) -> None:
    """Log one stats line every interval_s seconds (> 0) until cancelled."""
    before, since_s = stats(), clock()
    while True:
        await asyncio.sleep(interval_s)
        now, now_s = stats(), clock()
        log.info("stats", **stats_line(before, now, now_s - since_s))
        before, since_s = now, now_s
