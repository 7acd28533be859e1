"""An executor that obeys a StepPlan on a virtual clock: tokens by rule, time by the cost model.

It holds no KV and checks nothing the real executor would check (the scheduler's own tests do
that); it answers what the scheduler needs to go on, one sampled token per sampling work item,
and how long the iteration would have taken:

    x       = tokens computed in the plan (all work items), less those restored for free
    c       = cached context tokens the work items attend (the sum of their start positions),
              plus those restored for free (`ideal`: read as the context they stand for)
    T_fwd   = profile.forward_s(x, c)
    T_swap  = profile.swap_out_s(blocks out) + profile.swap_in_s(blocks in)
    step_s  = T_fwd + max(T_swap - hidden_s, 0)
    hidden_s = 0       when swaps are serialized with compute (the default): a whole context
                       swapped at once by the `swap` policy stalls the batch for its full copy time
             = T_fwd   when swaps are pipelined under compute (overlap_swaps): copies within the
                       iteration's swap budget (profile.swap_budget_tokens) cost nothing, the
                       excess stalls; this is how InferCept's budgeted swap is to be modelled

An empty plan (no work, no swaps) takes no time. Device-to-device block copies (copy-on-write
of shared prefix blocks) cost nothing: a block is a few hundred KiB moved at HBM bandwidth, about
a microsecond, against forwards of milliseconds. Positions a request found in the prefix cache are
not in its work, so they cost no compute; they are in its start position, so they are read.

step_s is the executor's own step, as the real executor reports it. The scheduler's loop sees
more: iteration_s adds what a real iteration spends outside the executor (the scheduler's CPU,
the plan/result round trip, streaming tokens to clients), profile.overhead_s of the plan's
sequences, the context they attend and the tool-returned tokens it computes, to every plan the
real loop would send.
"""

from __future__ import annotations

import itertools

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.sim.cost_profile import CostProfile
from scheduler_svc.step_loop import is_empty

SAMPLED_TOKEN_ID = 1  # every sampled token; below VOCAB_SIZE and not an end-of-sequence id
# Lengths matter, not content, except that prefix caching compares contents: a request's first
# prompt token is unique to it (driver.generate_request), so requests share no prefix by accident.
VOCAB_SIZE = 1 << 31
_U32_BYTES = 4


class VirtualExecutor:
    def __init__(self, profile: CostProfile, overlap_swaps: bool = False) -> None:
        self.profile = profile
        self.overlap_swaps = overlap_swaps

    def run(self, plan: pb.StepPlan, num_free_tokens: int = 0) -> pb.StepResult:
        """The result of `plan`: a token for each sampling work item and the virtual times
        (forward_s, swap_out_s, swap_in_s, step_s) of the iteration. `num_free_tokens` of the
        plan's tokens cost nothing to compute (contexts the `ideal` policy restores for free);
        they are read as cached context."""
        result = pb.StepResult(step_id=plan.step_id)
        work = plan.work
        num_tokens = len(work.token_ids) // _U32_BYTES + sum(work.use_last_sampled)
        num_context_tokens = sum(work.start_positions)
        sampled_ids = list(itertools.compress(work.request_ids, work.sample))
        result.sampled.request_ids.extend(sampled_ids)
        result.sampled.token_ids.extend([SAMPLED_TOKEN_ID] * len(sampled_ids))
        result.sampled.logprobs.extend([0.0] * len(sampled_ids))
        # Restored tokens are read as the cached context they stand for, as a held one would be.
        forward_s = self.profile.forward_s(num_tokens - num_free_tokens, num_context_tokens + num_free_tokens)
        swap_out_s = self.profile.swap_out_s(len(plan.swap_out.src_block_ids) // _U32_BYTES)
        swap_in_s = self.profile.swap_in_s(len(plan.swap_in.src_block_ids) // _U32_BYTES)
        hidden_s = forward_s if self.overlap_swaps else 0.0
        result.num_batched_tokens = num_tokens
        result.forward_s, result.swap_out_s, result.swap_in_s = forward_s, swap_out_s, swap_in_s
        result.step_s = forward_s + max(swap_out_s + swap_in_s - hidden_s, 0.0)
        return result

    def iteration_s(self, plan: pb.StepPlan, result: pb.StepResult, num_returned_tokens: int = 0) -> float:
        """Seconds the scheduler's loop spends on `plan`, whose result is `result` and which
        computes `num_returned_tokens` tool-returned tokens: the executor's step plus the
        iteration's overhead; 0 for a plan the real loop would not send."""
        if is_empty(plan):
            return 0.0
        profile = self.profile
        num_context_tokens = (
            sum(plan.work.start_positions) if profile.iteration_overhead_s_per_context_token else 0
        )
        return result.step_s + profile.overhead_s(
            len(plan.work.request_ids), num_context_tokens, num_returned_tokens
        )
