"""Server-wide counters since start."""

from __future__ import annotations

import dataclasses
from collections import Counter

from scheduler_svc.iteration_stats import IterationStats
from scheduler_svc.request import TokenKind

MAX_TRACKED_TOOLS = 256  # distinct tool names counted apart; later ones share OTHER_TOOLS
OTHER_TOOLS = "(other)"


@dataclasses.dataclass
class SchedulerStats:
    tokens_by_kind: Counter[TokenKind] = dataclasses.field(default_factory=Counter)
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0
    interceptions_by_tool: Counter[str] = dataclasses.field(default_factory=Counter)
    iterations: int = 0
    finished_requests: int = 0
    aborted_requests: int = 0
    preemptions: int = 0
    paused_discards: int = 0  # paused contexts a policy discarded after the pause
    stall_s: float = 0.0  # iteration time not hidden behind the forward pass, seconds
    # Positions a request did not compute because its context's leading blocks were cached
    # (prefix caching), by what computing them would have been (prompt/recompute/returned/decode).
    prefix_hit_tokens_by_kind: Counter[TokenKind] = dataclasses.field(default_factory=Counter)
    prefix_hit_blocks: int = 0  # cached device blocks taken by requests starting to compute
    # Swapped-out blocks whose device copy was still cached at the swap-in: taken back, no copy.
    reattached_blocks: int = 0
    forward_s: float = 0.0  # forward time of every iteration, seconds
    recomputed_forward_s: float = 0.0  # ... attributed to recomputed tokens (by token share)
    last_iteration: IterationStats = dataclasses.field(default_factory=IterationStats)

    def count_interception(self, tool: str) -> None:
        """Count a call of `tool`; past MAX_TRACKED_TOOLS names, new names count as OTHER_TOOLS,
        so that clients inventing names cannot grow the statistics (and GetStats) without bound."""
        counts = self.interceptions_by_tool
        if tool not in counts and len(counts) >= MAX_TRACKED_TOOLS:
            tool = OTHER_TOOLS
        counts[tool] += 1
