"""vLLM v1 with automatic prefix caching: today's default serving engine, as an agent meets it.

Chunked prefill mixed with decode (the scheduler's default iteration structure). At a pause the
request ends as far as the engine knows: its blocks are released, but into the prefix cache, not
wiped. The returning request is a new request at the back of the queue whose prompt is its whole
context; it computes only what is no longer cached (its full blocks that nobody evicted meanwhile).
"""

from __future__ import annotations

from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.policies.base import PauseAction, Policy
from scheduler_svc.request import Request


class VllmApcPolicy(Policy):
    name = "vllm-apc"
    description = (
        "vLLM v1: discard at the pause into the prefix cache; the returning request joins the back of "
        "the queue and reuses whatever of its context is still cached"
    )
    prefix_caching: ClassVar[bool] = True

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD

    def arrival_on_resume(self, request: Request, now: float) -> float:
        return now
