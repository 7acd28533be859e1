"""The `ideal` policy (simulator only): a pause costs nothing. It is the limit no policy can pass.

At the pause the context is dropped, so a paused request holds no memory; at the resume the
whole context is restored in one step (past the token budget, like a recomputation that is not
chunked) and the virtual executor charges no time for the restored tokens (`restores_for_free`;
they are counted as recomputed tokens, but take no forward time). The returned tokens and
everything after are computed and charged as usual, and the request keeps its queue place.

A real executor cannot restore a context for free, so the real server refuses this policy
(`simulator_only`).
"""

from __future__ import annotations

from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.policies.base import PauseAction, Policy
from scheduler_svc.request import Request


class IdealPolicy(Policy):
    name = "ideal"
    description = "simulator only: a paused context takes no memory and is restored for free (the limit)"
    simulator_only: ClassVar[bool] = True
    restores_for_free: ClassVar[bool] = True
    chunks_recompute = False  # restored at once: the returning request waits for no chunks

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD
