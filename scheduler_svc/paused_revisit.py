"""Revisiting the paused (and swapped-out) contexts each iteration: the policy's decisions, applied.

Policies that manage paused contexts (`Policy.manages_paused`: infercept, lazy-swap) see every
paused request that still holds KV blocks, with the iteration's budgets, and answer with swap-outs
(copied by this plan before anything computes) and discards (freed at once). It runs before
anything is scheduled, so that what it frees serves this very iteration; the swap-ins of returned
requests keep the first claim on a shared swap budget (a policy may limit the two apart).

A policy with `discards_swapped_when_idle` also has, whenever nothing waits, the oldest returned
request still swapping in dropped to a recomputation (`discard_oldest_swapped`).
"""

from __future__ import annotations

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.iteration_plan import Budget
from scheduler_svc.plan_builder import PlanBuilder
from scheduler_svc.policies import IterationView, PauseAction, PausedContext, Policy
from scheduler_svc.queues import queue_key
from scheduler_svc.request import Request
from scheduler_svc.request_table import RequestTable
from scheduler_svc.stats import SchedulerStats

# Below this share of free device blocks, memory is short even if nothing had to wait for it.
LOW_MEMORY_SHARE = 0.02


def memory_is_short(blocks: BlockManager, room_failed: bool) -> bool:
    """Whether device memory is contended: the last iteration could not give a request the
    blocks it needed (`room_failed`), or almost nothing is free."""
    device = blocks.device
    return room_failed or device.num_free < LOW_MEMORY_SHARE * device.num_total


def paused_context(
    request: Request, blocks: BlockManager, with_host_only: bool = True
) -> PausedContext | None:
    """The paused request as the policy sees it, or None if it holds no blocks (no device
    blocks, unless `with_host_only`)."""
    layout = blocks.layouts[request.request_id]
    if not (layout.device or (with_host_only and layout.host)):
        return None
    return PausedContext(
        request=request,
        num_device_blocks=len(layout.device),
        num_host_blocks=len(layout.host),
        device_tokens=min(len(layout.device) * blocks.block_size, request.num_computed),
        computed_tokens=request.num_computed,
    )


def revisit_paused(
    table: RequestTable,
    policy: Policy,
    stats: SchedulerStats,
    builder: PlanBuilder,
    budget: Budget,
    decodes: list[Request],
    token_budget: int,
    room_failed: bool,
    now: float,
) -> None:
    """Let `policy` revisit the paused contexts and apply its decisions to `builder` (swap-outs,
    spending `budget.swap_blocks`) and to the table (discards). `decodes`: the iteration's ready
    requests; `room_failed`: whether the last iteration ran out of device blocks."""
    blocks = table.blocks
    with_host_only = policy.revisits_host_contexts
    contexts = [c for c in (paused_context(r, blocks, with_host_only) for r in table.paused) if c is not None]
    if not contexts:
        return
    swap_in_demand = sum(len(blocks.layouts[rid].host) for rid in table.swapping_in)
    view = IterationView(
        now_s=now,
        decode_tokens=len(decodes),
        batch_context_tokens=sum(r.num_computed for r in decodes),
        others_waiting=table.queues.num_waiting > 0,
        token_budget=token_budget,
        swap_out_budget_blocks=(
            max(budget.swap_blocks - swap_in_demand, 0)
            if budget.swap_out_blocks is None
            else budget.swap_out_blocks
        ),
        host_free_blocks=blocks.host.num_free,
        block_size_tokens=blocks.block_size,
        memory_is_short=memory_is_short(blocks, room_failed),
    )
    for decision in policy.manage_paused(contexts, view):
        request = table.paused[decision.request_id]
        rank = policy.evict_rank(request, now)
        if decision.action is PauseAction.SWAP:
            builder.swap_out(table.swap_out_paused(request, decision.num_blocks, rank))
            stats.swap_out_blocks += decision.num_blocks
            if budget.swap_out_blocks is None:
                budget.swap_blocks -= decision.num_blocks
            else:
                budget.swap_out_blocks -= decision.num_blocks
        else:
            table.drop_context(request, rank)
            stats.paused_discards += 1


def discard_oldest_swapped(table: RequestTable, policy: Policy, stats: SchedulerStats) -> bool:
    """If no request waits to compute (other than those swapping in), drop the context of the
    oldest returned request whose host segment is still out, to be recomputed at the policy's
    preemption place (InferCept's authors' `_active_discard`: with no prompt to run, the spare
    budget recomputes rather than waits for swap-ins). True if one was dropped."""
    if not table.swapping_in:
        return False
    # Their returned swapped requests sit in `swapped`, not `waiting`: only others count.
    if any(r.request_id not in table.swapping_in for r in table.queues.waiting()):
        return False
    oldest = min((table.requests[rid] for rid in table.swapping_in), key=queue_key)
    table.drop_context(oldest, waiting_place=policy.waiting_place_on_preempt)
    stats.preemptions += 1
    return True
