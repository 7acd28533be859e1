"""One iteration's planning: its budget, what it schedules, and committing positions to the plan.

Decode tokens of requests whose context is computed go first, then chunks of everyone else
(prompts, recomputation of discarded context, tool-returned tokens), both in queue order, within
the token and sequence budgets. A request whose host segment is out is swapped back in (within
the swap budget) before it computes. When device blocks run out, newer requests are preempted
(`preemption.py`); when none can be, scheduling stops there (first come, first served).

Every scheduled range goes through `commit`, the one place that turns "positions [start, end)
of a request compute in this plan" into a work item, named blocks, token-kind counts and the
request's progress; a plain decode takes its fast branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from scheduler_svc.block_manager import BlockLayout, BlockManager
from scheduler_svc.cost_model import UNLIMITED_BLOCKS
from scheduler_svc.plan_builder import PlanBuilder
from scheduler_svc.policies import Policy
from scheduler_svc.preemption import Preemption
from scheduler_svc.request import Request, TokenKind
from scheduler_svc.request_table import RequestTable
from scheduler_svc.stats import SchedulerStats


@dataclasses.dataclass
class Budget:
    """What an iteration may still spend."""

    tokens: int  # tokens to compute
    seqs: int  # requests that compute
    swap_blocks: int  # blocks still to be copied, in and out together (in only, if swap_out_blocks)
    # Blocks still to be copied out when the policy limits the two directions apart
    # (Policy.swap_limits_blocks); None: swap-outs share swap_blocks.
    swap_out_blocks: int | None = None

    @property
    def exhausted(self) -> bool:
        return self.tokens <= 0 or self.seqs <= 0

    @staticmethod
    def for_iteration(
        max_batched_tokens: int,
        max_num_seqs: int,
        policy: Policy,
        num_decodes: int,
        others_wait: bool,
        num_free_device_tokens: int = 0,
        block_size: int = 1,
    ) -> Budget:
        """An iteration's budgets: tokens and sequences from the config, swap blocks from the
        policy for the iteration's expected size (its decodes, plus a full chunk budget if other
        requests wait), or its separate limits for the free device memory it starts with."""
        limits = policy.swap_limits_blocks(num_free_device_tokens, block_size)
        if limits is not None:
            return Budget(max_batched_tokens, max_num_seqs, limits[0], limits[1])
        expected_tokens = max(num_decodes, max_batched_tokens) if others_wait else num_decodes
        swap_blocks = policy.swap_budget_blocks(expected_tokens)
        return Budget(
            max_batched_tokens, max_num_seqs, UNLIMITED_BLOCKS if swap_blocks is None else swap_blocks
        )


class IterationPlan:
    """The planning of one iteration; `builder` holds the plan, `scheduled` who computes in it
    (or swaps in), `chunked` who computes more than a decode (their queue place may change)."""

    def __init__(
        self,
        table: RequestTable,
        stats: SchedulerStats,
        policy: Policy,
        builder: PlanBuilder,
        budget: Budget,
    ) -> None:
        self._table = table
        self._blocks: BlockManager = table.blocks
        self._stats = stats
        self._policy = policy
        self.builder = builder
        self.budget = budget
        self.preemption = Preemption(table, stats, policy)
        self.scheduled: set[int] = set()
        self.chunked: list[Request] = []
        self.num_decode_tokens = 0  # plain decode tokens committed on the fast branch
        # Decodes planned ahead that complete a block whose last token the plan computing now
        # samples: the block is named when that result comes (prefix caching).
        self.filled_ahead: list[Request] = []
        self._caching = table.blocks.enable_prefix_caching
        self._block_size = table.blocks.block_size

    # ----- the two iteration structures -----

    def decode_first(self, decodes: list[Request]) -> None:
        """Ready requests' decodes, then the waiting requests' chunks, in queue order (under a
        policy that restores for free, the contexts to restore get their blocks first)."""
        if self._policy.restores_for_free and self._table.queues.num_waiting:
            self.reserve_restores()
        self.schedule_decodes(decodes)
        if not self._table.queues.num_waiting:
            return
        decode_ids = {r.request_id for r in decodes}  # preempted ones move to waiting: seen already
        now = self._table.paused.last_now or 0.0
        reserve_blocks = self._policy.admission_reserve_blocks(self._blocks.device.num_total, now)
        for request in self._table.queues.waiting():
            if request.request_id in decode_ids:
                continue
            if reserve_blocks and self.scheduled and not self._admits(request, reserve_blocks):
                break
            if self.budget.exhausted or not self.schedule_one(request, self.budget):
                break

    def reserve_restores(self) -> None:
        """`ideal`'s resume in place: every waiting request whose context is gone (returned from
        a call, or preempted) gets its context's device blocks back from the free ones before
        anyone computes (before the decodes open blocks), oldest first until one does not fit
        (first come, first served: no newer prompt takes the memory before it). It computes at
        its place in the waiting walk: the context restored for free and outside the token
        budget (schedule_one), the tokens after it within the budget; until then it is no victim
        (`scheduled`). One that did not fit makes room there as any waiting request does."""
        for request in self._table.queues.waiting():
            if request.num_computed or not request.max_computed:
                continue  # a prompt, or a context already restored
            rid = request.request_id
            if not self._blocks.can_grow(rid, request.max_computed):
                break
            self._blocks.grow(rid, request.max_computed)
            self.scheduled.add(rid)

    def _admits(self, request: Request, reserve_blocks: int) -> bool:
        """Whether `request` may start while others compute: one that has computed before may;
        a new one only if its whole context leaves `reserve_blocks` free (or evictable) for the
        running batch to grow. One held back waits (first come, first served) without counting
        as memory running out: paused contexts are not released for it."""
        if request.max_computed:
            return True
        num_needed = self._blocks.blocks_for(len(request.token_ids))
        return self._blocks.device.num_free - num_needed >= reserve_blocks

    def prefill_first(self, decodes: list[Request], prefill_token_budget: int) -> None:
        """vLLM 0.2's iteration (iteration_structure "prefill-first"): if prompts or discarded
        contexts wait, an iteration of them alone, in queue order, each whole, within
        `prefill_token_budget`, stopping at the first that does not fit (one longer than the
        whole budget is chunked, rather than wait forever); if none could be scheduled, an
        iteration of the running batch: decodes, and resumed contexts' returned tokens and
        swap-ins (the queues hold those as ready)."""
        # vLLM 0.2 runs no prompt while a swapped request waits to come back (prompts go first
        # only when `swapped` is empty), and a prompt that does not fit in the free blocks waits,
        # preempting no one.
        if self._table.queues.num_waiting and not self._table.swapping_in:
            budget = self.budget
            prefill = Budget(prefill_token_budget, budget.seqs, budget.swap_blocks)
            for request in self._table.queues.waiting():
                if prefill.exhausted or (request.num_pending > prefill.tokens and self.scheduled):
                    break
                whole = self._blocks.num_blocks_to_grow(request.request_id, len(request.token_ids))
                if not self._blocks.device.can_allocate(whole):
                    break
                if not self.schedule_one(request, prefill):
                    break
            if self.scheduled:
                return
        # Its decode iterations have the same token budget (max_num_batched_tokens).
        self.budget.tokens = prefill_token_budget
        self.schedule_decodes(decodes)

    # ----- scheduling requests -----

    def schedule_decodes(self, decodes: list[Request]) -> None:
        """Schedule the ready requests in order until the budget is spent or one cannot run.
        The hot loop: a decode within its last block commits at once; anything else (it opens a
        block, was preempted earlier in this iteration, or is no plain decode) goes through
        _schedule_ready."""
        layouts, block_size, budget = self._blocks.layouts, self._blocks.block_size, self.budget
        for request in decodes:
            if budget.tokens <= 0 or budget.seqs <= 0:
                break
            position = request.num_computed
            layout = layouts[request.request_id]
            if (
                position == len(layout.device) * block_size  # opens a block (or a preempted context)
                or request.kind_at(position) is not TokenKind.DECODE  # recompute, last prompt/returned
                or len(request.token_ids) != position + 1  # resumed (prefill-first): returned tokens
                or layout.host  # resumed (prefill-first): swapped out
            ):
                if not self._schedule_ready(request, layout):
                    break
                continue
            self.commit(request, position, position + 1, layout, budget, TokenKind.DECODE)

    def _schedule_ready(self, request: Request, layout: BlockLayout) -> bool:
        """schedule_one for a ready request, kept cheap: one pending token, context on the device."""
        rid, position = request.request_id, request.num_computed
        if position == 0:  # preempted earlier in this iteration: its context must be recomputed
            # vLLM 0.2 (prefill-first) recomputes it in a later prompt iteration, not in this one.
            return self._table.queues.ready_includes_resumed or self.schedule_one(request, self.budget)
        if request.num_pending > 1 or layout.host:  # resumed, under prefill-first
            return self.schedule_one(request, self.budget)
        if self._blocks.enable_prefix_caching and self._blocks.num_blocks_to_copy(rid, position):
            return self.schedule_one(request, self.budget)  # writes a shared block
        if position == len(layout.device) * self._blocks.block_size:  # the token opens a new block
            if not self.preemption.make_room(request, 1, self.scheduled):
                return False
            layout.device += self._blocks.device.allocate(1)
        self.commit(request, position, position + 1, layout, self.budget)
        return True

    def schedule_one(self, request: Request, budget: Budget) -> bool:
        """Schedule a chunk of any request wanting computation (swapping its host segment in
        first); False if it cannot run now (no room), which ends the iteration's queue walk."""
        rid = request.request_id
        layout = self._blocks.layout(rid)
        if layout.host and not self._swap_in(request, layout, budget):
            return False
        if layout.host:  # it computes once all its blocks are back; the others go on
            self.scheduled.add(rid)
            return True
        self._table.swapped_in(request)
        if self._blocks.enable_prefix_caching and not (request.num_computed or layout.device):
            self._share_cached_prefix(request)
        start = request.num_computed
        end = start + min(request.num_pending, budget.tokens)
        is_restore = self._policy.restores_for_free and start < request.max_computed
        if is_restore:  # the context at once, past the budget; the tokens after it within it
            end = request.max_computed + min(len(request.token_ids) - request.max_computed, budget.tokens)
        elif not self._policy.chunks_recompute and start < request.max_computed:
            end = len(request.token_ids)  # the whole context at once, past the budget
        num_copies = self._blocks.num_blocks_to_copy(rid, start)
        num_needed = self._blocks.num_blocks_to_grow(rid, end) + num_copies
        if not self.preemption.make_room(request, num_needed, self.scheduled):
            # Chunked prefill: compute what fits in the blocks it has and the free ones.
            num_usable = len(layout.device) + self._blocks.device.num_free - num_copies
            end = min(end, num_usable * self._blocks.block_size)
            if end <= start:
                return False
        self.builder.device_copy(self._blocks.prepare_write(rid, start))
        self._blocks.grow(rid, end)
        # The restored tokens (`ideal`'s, computed for free) take no budget.
        num_restored = min(end, request.max_computed) - start if is_restore else 0
        self.commit(request, start, end, layout, budget)
        budget.tokens += num_restored
        self.chunked.append(request)
        return True

    def _swap_in(self, request: Request, layout: BlockLayout, budget: Budget) -> bool:
        """Bring back what the swap budget allows of the request's host segment (blocks whose
        device copy is still cached rejoin without a copy). False if no room could be made; on
        vLLM 0.2's iterations (prefill-first) it comes back only into free blocks, whole context,
        preempting no one, and only in an iteration that preempted no one."""
        rid = request.request_id
        if self._blocks.enable_prefix_caching and rid not in self._table.pending_swap_out:
            self._stats.reattached_blocks += self._blocks.reattach_cached(rid)
        count = min(len(layout.host), budget.swap_blocks)
        if self._table.queues.ready_includes_resumed:
            # vLLM 0.2 swaps in only in an iteration that preempted no one.
            if self.preemption.preempted_any or not self._blocks.can_grow(rid, len(request.token_ids)):
                return False
        elif count and not self.preemption.make_room(request, count, self.scheduled):
            return False
        if not count:
            return True
        self.builder.swap_in(self._blocks.swap_in(rid, count))
        self._stats.swap_in_blocks += count
        budget.swap_blocks -= count
        return True

    def _share_cached_prefix(self, request: Request) -> None:
        """A request computing from nothing starts after the cached blocks of its context."""
        num_hit = self._blocks.share_cached_prefix(request.request_id, request.token_ids)
        if not num_hit:
            return
        for kind, count in request.count_kinds(0, num_hit).items():
            self._stats.prefix_hit_tokens_by_kind[kind] += count
        self._stats.prefix_hit_blocks += len(self._blocks.layouts[request.request_id].device)
        request.num_computed = num_hit
        request.max_computed = max(request.max_computed, num_hit)

    # ----- committing positions -----

    def commit(
        self,
        request: Request,
        start: int,
        end: int,
        layout: BlockLayout,
        budget: Budget,
        kind: TokenKind | None = None,
        use_last_sampled: bool = False,
    ) -> None:
        """Positions [start, end) of `request` compute in this plan (its blocks cover them): the
        work item (sampling if it reaches the last token), the blocks they fill named for the
        prefix cache, their token kinds counted, the request's progress, the budget spent.
        `kind`: the kind of every position, if the caller knows it (a plain decode: the fast
        branch, counted once per iteration). `use_last_sampled`: a decode planned ahead, whose
        token at `start` the executor sampled in the plan still computing (it fills no block)."""
        rid, token_ids = request.request_id, request.token_ids
        sample = use_last_sampled or end == len(token_ids)
        self.builder.add_work(request, start, end, sample, layout, use_last_sampled)
        if self._caching and start // self._block_size != end // self._block_size:
            if use_last_sampled:  # its last token comes with the result of the plan computing now
                self.filled_ahead.append(request)
            else:
                self._blocks.register_computed(rid, token_ids, start, end)
        if kind is TokenKind.DECODE:
            self.num_decode_tokens += end - start
        else:
            kinds = request.count_kinds(start, end)
            for kind, count in kinds.items():
                self._stats.tokens_by_kind[kind] += count
            request.num_recomputed += kinds.get(TokenKind.RECOMPUTE, 0)
        if end > request.max_computed:
            request.max_computed = end
        request.num_computed = end
        budget.tokens -= end - start
        budget.seqs -= 1
        self.scheduled.add(rid)

    # ----- planning ahead -----

    def decodes_ahead(self, decodes: list[Request], ends_at_next_token: Callable[[Request], bool]) -> None:
        """The ready requests' decodes while the last plan computes, in queue order, each at
        most one token, with free blocks for all (Scheduler.schedule_ahead checked that, and
        that nothing else wants planning): a request whose token is known decodes it as usual; one
        whose token the last plan is sampling decodes the executor's last sampled token, unless
        `ends_at_next_token` says that token ends it (it waits for the result). With prefix
        caching, a block such a decode completes is named by its content once that token is
        known (`filled_ahead`, BlockManager.register_filled_ahead)."""
        layouts, block_size, budget = self._blocks.layouts, self._block_size, self.budget
        device = self._blocks.device
        for request in decodes:
            if budget.tokens <= 0 or budget.seqs <= 0:
                break
            position = request.num_computed
            in_flight = position == len(request.token_ids)
            if in_flight and ends_at_next_token(request):
                continue
            layout = layouts[request.request_id]
            if position == len(layout.device) * block_size:  # the token opens a new block
                layout.device += device.allocate(1)  # the caller checked that all fit
            if in_flight:
                self.commit(request, position, position + 1, layout, budget, TokenKind.DECODE, True)
            else:
                kind = TokenKind.DECODE if request.kind_at(position) is TokenKind.DECODE else None
                self.commit(request, position, position + 1, layout, budget, kind)

    def finish(self) -> None:
        """Count the fast branch's decode tokens (call once, after planning)."""
        self._stats.tokens_by_kind[TokenKind.DECODE] += self.num_decode_tokens
        self.num_decode_tokens = 0
