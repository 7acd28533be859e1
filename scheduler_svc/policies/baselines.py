"""The baseline policies InferCept is measured against: each applies one strategy to every pause.

They are the paper's baselines as its authors ran them, on their modified vLLM 0.2
(`vllm/core/scheduler.py`, switched per baseline by `exps/6B_bench.sh`), whose queue mechanics
they keep on any iteration structure (the iterations themselves are `prefill-first`'s):

    returning request       vllm: `waiting.append` (BACK); the others: `waiting.insert(0)` (FRONT;
                            the authors' script leaves that line in place after improved discard,
                            so swap's and preserve's discarded contexts return there too)
    preempted for memory    `waiting.insert(0)` (FRONT), by recomputation
    FCFS priority           the original arrival time, never moved (running order, victim choice)
    victims                 running requests only: a preserved paused context is never taken
"""

from __future__ import annotations

from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.policies.base import PauseAction, Policy
from scheduler_svc.queues import WaitingPlace
from scheduler_svc.request import Request


class Vllm02Policy(Policy):
    """vLLM 0.2's queue mechanics, shared by the four baselines (module docstring)."""

    waiting_place_on_resume: ClassVar[WaitingPlace] = WaitingPlace.FRONT
    waiting_place_on_preempt: ClassVar[WaitingPlace] = WaitingPlace.FRONT
    preempts_paused_contexts: ClassVar[bool] = False


class VllmPolicy(Vllm02Policy):
    name = "vllm"
    description = "discard at the pause; the returning request joins the back of the waiting queue"
    waiting_place_on_resume = WaitingPlace.BACK

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD


class ImprovedDiscardPolicy(Vllm02Policy):
    name = "improved-discard"
    description = "discard at the pause; the returning request goes to the front of the waiting queue"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.DISCARD


class PreservePolicy(Vllm02Policy):
    name = "preserve"
    description = "keep the paused context on the device through the call"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.PRESERVE


class SwapPolicy(Vllm02Policy):
    name = "swap"
    description = "swap the whole context to host memory at the pause and back at the resume (discard if the host is full)"

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        num_blocks = len(blocks.layout(request.request_id).device)
        return PauseAction.SWAP if blocks.can_swap_out(num_blocks) else PauseAction.DISCARD
