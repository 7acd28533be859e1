"""InferCept as its authors' scheduler selects (their `vllm/core/scheduler_v2.py`, policy "V"), for
reproducing their figures; `infercept.py` is our reading of the paper.

Every iteration, whether memory is short or not:

1. each paused request whose context is on the device gets W_p and W_d (the same waste model and
   duration estimator as `infercept`; their harness gives the scheduler each call's duration);
2. every one with W_d < W_p is discarded now, except the one with the largest W_d: that one stays
   on the device as the target to swap out (from the back, within the iteration's swap budget,
   while the host has room) once memory is short.

Their scheduler's other mechanics, kept here:

    swap limits   separate per iteration (`_set_max_ragged_batch`), in tokens, M the token budget:
                  in = (a·M + b) + free/2, out = ((1 + a)·M + b) − free/2, free = the free device
                  tokens as the iteration starts; (1 + 2a)·M + 2b is the reported swap budget at M
                  (a = 0.00462, b = 108.99 on GPT-J-6B: in = 110.8 + free/2, out = 494.8 − free/2),
                  here taken from the cost model's budget at M so that the two sum to it
    active discard  with nothing waiting, the oldest returned request still swapped out is
                  recomputed instead (`_active_discard`), one per iteration

`infercept` instead revisits only when memory is short, and gives the swap budget to the most
wasteful contexts in rank order. Both chunk recomputation into the token budget and pipeline
budgeted swaps.
"""

from __future__ import annotations

from typing import ClassVar

from scheduler_svc.policies.base import IterationView, PauseAction, PausedContext, PausedDecision
from scheduler_svc.policies.infercept import InferceptPolicy


class InferceptAuthorsPolicy(InferceptPolicy):
    name = "infercept-authors"
    description = (
        "InferCept as the authors' scheduler selects: every iteration, discard every paused context "
        "with W_d < W_p but the largest W_d, which is swapped out when memory is short"
    )
    revisits_paused_always: ClassVar[bool] = True
    discards_swapped_when_idle: ClassVar[bool] = True

    def swap_limits_blocks(self, num_free_device_tokens: int, block_size: int) -> tuple[int, int] | None:
        if not self.options.swap_budget:
            return None
        cost = self._cost()
        budget_tokens = cost.saturation_tokens  # M: their per-iteration token budget
        s_per_block = max(cost.swap_out_s_per_block, cost.swap_in_s_per_block)
        hidden_s = cost.forward_s(budget_tokens) - 2 * cost.swap_fixed_s
        if s_per_block == 0 or hidden_s <= 0:
            return None
        total_tokens = hidden_s / s_per_block * block_size  # (1 + 2a)·M + 2b
        in_tokens = (total_tokens - budget_tokens + num_free_device_tokens) / 2
        out_tokens = (total_tokens + budget_tokens - num_free_device_tokens) / 2
        return max(int(in_tokens // block_size), 0), max(int(out_tokens // block_size), 0)

    def manage_paused(self, paused: list[PausedContext], view: IterationView) -> list[PausedDecision]:
        estimates = [self._estimate(context, view) for context in paused if context.num_device_blocks]
        candidates = [e for e in estimates if e.discard_waste < e.preserve_waste]
        if not candidates:
            return []
        largest = max(e.discard_waste for e in candidates)
        decisions = [
            PausedDecision(e.context.request.request_id, PauseAction.DISCARD)
            for e in candidates
            if e.discard_waste < largest
        ]
        if view.memory_is_short:
            for target in (e for e in candidates if e.discard_waste == largest):
                count = min(
                    target.context.num_device_blocks, view.swap_out_budget_blocks, view.host_free_blocks
                )
                if count > 0:
                    decisions.append(
                        PausedDecision(target.context.request.request_id, PauseAction.SWAP, count)
                    )
                break
        return decisions
