"""One iteration's statistics: what its plan computed and moved, completed by its result's times.

Built by the core when the plan is made (`planned`), completed when the result is in
(`complete`), then handed to the `on_iteration` hook (the iteration log, the metrics). The
service edge renders it as the public API's IterationStats (`stats_render.py`); the field names
are the same.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from scheduler_svc.request import TokenKind


@dataclasses.dataclass
class IterationStats:
    step_id: int = 0
    prompt_tokens: int = 0
    decode_tokens: int = 0
    returned_tokens: int = 0
    recomputed_tokens: int = 0
    num_requests: int = 0  # requests computing in the plan
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0
    paused_device_blocks: int = 0  # device blocks held by paused requests after planning
    paused_discards: int = 0  # paused contexts a policy discarded in this iteration
    forward_s: float = 0.0  # the executor's forward pass, seconds
    step_s: float = 0.0  # the executor's whole step, seconds
    stall_s: float = 0.0  # step time not hidden behind the forward pass, seconds
    prefix_hit_tokens: int = 0  # positions not computed thanks to cached blocks
    executor_idle_s: float = 0.0  # the executor's idle time before the step, seconds

    @property
    def num_tokens(self) -> int:
        """Tokens the iteration computed."""
        return self.prompt_tokens + self.decode_tokens + self.returned_tokens + self.recomputed_tokens

    def complete(self, forward_s: float, step_s: float, executor_idle_s: float = 0.0) -> None:
        """The executor's measured times for this iteration."""
        self.forward_s, self.step_s, self.executor_idle_s = forward_s, step_s, executor_idle_s
        self.stall_s = max(step_s - forward_s, 0.0)


def tokens_since(after: Counter[TokenKind], before: Counter[TokenKind]) -> dict[TokenKind, int]:
    """Tokens counted by kind between two snapshots of a counter (every kind present)."""
    return {kind: after[kind] - before[kind] for kind in TokenKind}
