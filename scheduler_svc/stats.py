"""Server-wide counters since start."""

from __future__ import annotations

import dataclasses
from collections import Counter

from infercept.v1 import generation_pb2 as gen


@dataclasses.dataclass
class SchedulerStats:
    tokens_by_kind: Counter[str] = dataclasses.field(
        default_factory=Counter
    )  # prompt/decode/returned/recompute
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0
    interceptions_by_tool: Counter[str] = dataclasses.field(default_factory=Counter)
    paused_device_block_seconds: float = 0.0
    iterations: int = 0
    finished_requests: int = 0
    aborted_requests: int = 0
    preemptions: int = 0
    paused_discards: int = 0  # paused contexts a policy discarded after the pause
    stall_s: float = 0.0  # iteration time not hidden behind the forward pass, seconds
    forward_s: float = 0.0  # forward time of every iteration, seconds
    recomputed_forward_s: float = 0.0  # ... attributed to recomputed tokens (by token share)
    last_iteration: gen.IterationStats = dataclasses.field(default_factory=gen.IterationStats)
