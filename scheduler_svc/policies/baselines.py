"""The baseline policies InferCept is measured against: each applies one strategy to every pause."""

from __future__ import annotations

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.policies.base import PauseAction, Policy
from scheduler_svc.request import Request


class VllmPolicy(Policy):
    name = "vllm"
    description = "discard at the pause; the returning request joins the back of the queue as a new one"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD

    def arrival_on_resume(self, request: Request, now: float) -> float:
        return now


class ImprovedDiscardPolicy(Policy):
    name = "improved-discard"
    description = "discard at the pause; the returning request keeps its original place in the queue"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD


class PreservePolicy(Policy):
    name = "preserve"
    description = "keep the paused context on the device through the call"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.PRESERVE


class SwapPolicy(Policy):
    name = "swap"
    description = "swap the whole context to host memory at the pause and back at the resume (discard if the host is full)"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        num_blocks = len(blocks.layout(request.request_id).device)
        return PauseAction.SWAP if blocks.can_swap_out(num_blocks) else PauseAction.DISCARD
