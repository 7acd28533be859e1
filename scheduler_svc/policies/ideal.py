"""The `ideal` policy (simulator only): a pause costs nothing. It is the limit no policy can pass.

At the pause the context is dropped, so a paused request holds no memory. A returning request
resumes in place: in the first iteration after its return its context gets its device blocks
back before anyone else computes (before the running batch opens blocks, before any newer
prompt; `IterationPlan.reserve_restores`), and it is restored whole, outside the token budget,
with its returned tokens computed beside it within the budget. The virtual executor charges no
compute for the restored tokens (`restores_for_free`; they are counted as recomputed tokens, and
read as the cached context they stand for, as a held context would be). Everything after is
computed and charged as usual, and the request keeps its queue place (its first arrival). A
request preempted for memory is restored the same way.

It bounds what pauses cost, not the order of service: where the pool is overloaded, a policy
that serves in another order (newest first, or holding contexts to admit fewer at once) can
have a lower mean latency on a small run (tests/sim/test_ideal_bound.py shows where it holds).

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
