"""The scheduler core: a short, synchronous, deterministic orchestrator of one iteration.

    plan   = scheduler.schedule(now)              # who computes what, which blocks move
    result = executor.run(plan)
    events = scheduler.update(plan, result, now)  # append tokens, finish, intercept

While a plan computes, `schedule_ahead` may plan the next one before its result is applied, where
that plan cannot depend on the result but through the sampled tokens themselves (decodes only,
each token still out taken by the executor from its own last sample); results are applied in
order, each to its own plan, and a token is appended only where its request still waits for it.

Between iterations the server feeds it new requests (add), tool progress (tool_started, resume)
and aborts. It never touches tensors; it holds every token, so a lost executor costs only
recomputation (reset_executor_state). It speaks in domain events (`events.py`); the service edge
renders them.

Where each part lives: the request table and its transitions (`request_table.py`), paused
bookkeeping (`paused_requests.py`), one iteration's planning and its commit helper
(`iteration_plan.py`), preemption (`preemption.py`), the policy's revisit of paused contexts
(`paused_revisit.py`), post-processing a result (`step_output.py`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

from tokenizers import Tokenizer

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError, admit, check_token_ids
from scheduler_svc.admission_control import QueueWaitControl
from scheduler_svc.block_manager import BlockManager
from scheduler_svc.chat_template import ChatTemplateError
from scheduler_svc.config import ExecutorDescription, SchedulerConfig
from scheduler_svc.cost_model import CostModel
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.events import Accepted, Event, Resumed
from scheduler_svc.iteration_plan import Budget, IterationPlan
from scheduler_svc.iteration_stats import IterationStats, tokens_since
from scheduler_svc.paused_revisit import discard_oldest_swapped, memory_is_short, revisit_paused
from scheduler_svc.plan_builder import PlanBuilder, is_empty
from scheduler_svc.policies import Policy, create_policy
from scheduler_svc.request import FinishReason, Request, Status, TokenKind
from scheduler_svc.request_table import RequestTable
from scheduler_svc.resume import effective_seed, replay
from scheduler_svc.stats import SchedulerStats
from scheduler_svc.step_output import StepOutput


@dataclasses.dataclass
class PlanRecord:
    """What the scheduler keeps of a plan until `update` applies its result."""

    chunked: list[Request]  # requests that computed more than a decode (their queue place may change)
    swapped_blocks: tuple[int, int]  # (out, in), for the cost model
    iteration: IterationStats  # completed by the result
    # Per sampled token, in order: the length its request has once the token is appended; a
    # request that has another length by then (paused and resumed meanwhile) does not take it.
    sample_positions: list[int]
    # Requests whose block the next plan (planned ahead) completes with the token this plan
    # samples: named for the prefix cache when it comes (BlockManager.register_filled_ahead).
    filled_ahead: list[Request] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PlanDraft:
    """A plan being built: its builder, its iteration's planning, the ready requests, and the
    counters before it (for its statistics)."""

    builder: PlanBuilder
    iteration: IterationPlan
    decodes: list[Request]
    kinds_before: Counter[TokenKind]
    discards_before: int
    hits_before: int


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        executor: ExecutorDescription,
        tokenizer: Tokenizer | None,
        cost_model: CostModel | None = None,
    ) -> None:
        """`cost_model`: the executor's measured costs (from its Profile), refined online here;
        required by policies that manage paused contexts (infercept)."""
        self.config = config
        # A context can never outgrow the device pool (attention needs all of it there), so the
        # served maximum length is capped by the pool's capacity.
        capacity = executor.num_device_blocks * executor.block_size
        self.executor = dataclasses.replace(executor, max_model_len=min(executor.max_model_len, capacity))
        self.tokenizer = tokenizer
        self.policy: Policy = create_policy(config.policy, config.estimator, config.disabled_techniques)
        self.cost_model = cost_model
        if self.policy.manages_paused:
            self.policy.bind_cost_model(cost_model)
        self.prefix_caching = (
            self.policy.prefix_caching
            if config.enable_prefix_caching is None
            else config.enable_prefix_caching
        )
        self.blocks = BlockManager(
            executor.num_device_blocks, executor.num_host_blocks, executor.block_size, self.prefix_caching
        )
        # On vLLM 0.2's iterations a resumed context rejoins the running batch (queues.py).
        self.table = RequestTable(self.blocks, config.iteration_structure == "prefill-first")
        self.stats = SchedulerStats()
        self.admission = QueueWaitControl(config.max_queue_wait_s, self._cost_model_tokens_per_s())
        self.output = StepOutput(self.table, self.policy, self.stats, self.executor, self.admission)
        self._next_request_id = 1
        self._step_id = 0
        self._room_failed = False  # the last plan could not give a request the blocks it needed
        self._outstanding: dict[int, PlanRecord] = {}  # by step id: plans whose result is not applied
        # Called with each iteration's statistics once its result is in (the iteration log).
        self.on_iteration: Callable[[IterationStats], None] | None = None

    @property
    def requests(self) -> dict[int, Request]:
        """Every live request by id (read only: change them through the table)."""
        return self.table.requests

    # ----- inputs between iterations -----

    def check_capacity(self, now: float) -> None:
        """RequestError RESOURCE_EXHAUSTED if a request arriving at `now` would be refused for
        load: the live cap, or an expected queue wait over the bound (with a retry hint). Cheap:
        call it first."""
        if len(self.table) >= self.config.max_live_requests:
            raise RequestError(
                "RESOURCE_EXHAUSTED",
                f"the server holds {len(self.table)} live requests already",
                retry_after_s=1.0,
            )
        self.admission.check(now)

    def add(self, proto: gen.GenerateRequest, now: float) -> tuple[Request, list[Event]]:
        """Admit a request (RequestError if it is invalid or the server is full)."""
        self.check_capacity(now)
        request = admit(proto, self._next_request_id, now, self.executor, self.tokenizer)
        seed = request.sampling.seed
        if seed is None:  # chosen here, so that Accepted can tell a resuming client
            seed = effective_seed(request.request_id)
            request.sampling = dataclasses.replace(request.sampling, seed=seed)
        last_text = (
            replay(request, proto.resume, self.executor, self.tokenizer) if proto.HasField("resume") else ""
        )
        if self.admission.is_enabled:
            self.admission.admitted(request.request_id, request.num_pending, now)
        self._next_request_id += 1
        self.table.admit(request)
        events: list[Event] = [Accepted(request.request_id, request.num_prompt_tokens, seed)]
        if len(request.token_ids) > request.segment_start:  # resumed mid-generation: the last token
            self.output.after_token(request, request.token_ids[-1], last_text, now, events)  # may end it
        return request, events

    def tool_started(self, request_id: int, expected_duration_s: float) -> None:
        request = self._paused(request_id)
        if expected_duration_s > 0 and request.pending_call is not None:
            request.pending_call.expected_duration_s = expected_duration_s

    def tool_result_text(self, request_id: int, text: str) -> str:
        """The text a tool's text result appends: for a request given as messages, the chat
        template's tool turn around it (recorded in its conversation); otherwise `text` itself."""
        request = self._paused(request_id)
        if request.chat is None:
            return text
        try:
            return request.chat.append_tool_turn(request.decoder.text, text)
        except ChatTemplateError as error:
            raise RequestError("INVALID_ARGUMENT", f"the tool result: {error}") from error

    def resume(self, request_id: int, returned_ids: list[int], now: float) -> list[Event]:
        """Append a tool's returned tokens and let the request compute again."""
        request = self._paused(request_id)
        check_token_ids(returned_ids, self.executor, "tool result")
        new_len = len(request.token_ids) + len(returned_ids)
        if new_len >= self.executor.max_model_len:
            raise RequestError(
                "OUT_OF_RANGE",
                f"the tool result brings the context to {new_len} tokens; the maximum model length is "
                f"{self.executor.max_model_len} and at least one more token must fit",
            )
        self.table.paused.advance_clock(now)  # the pause ends now, even if no iteration ran during it
        assert request.pending_call is not None
        self.policy.call_ended(request, now - request.pending_call.paused_at_s)
        start = len(request.token_ids)
        request.token_ids += returned_ids
        request.returned_ranges.append((start, new_len))
        request.num_returned += len(returned_ids)
        request.segment_start = new_len
        request.decoder = IncrementalDecoder(self.tokenizer)
        request.arrival_s = self.policy.arrival_on_resume(request, now)
        self.table.resume(request, self.policy.waiting_place_on_resume, now)
        layout = self.blocks.layouts[request_id]
        resumed = Resumed(
            request_id=request_id,
            num_returned_tokens=len(returned_ids),
            num_device_blocks_kept=len(layout.device),
            num_blocks_swapped_in=len(layout.host),
            # Everything computed before that is no longer in the device prefix or host segment.
            num_recomputed_tokens=max(request.max_computed - request.num_computed, 0),
        )
        return [resumed]

    def abort(self, request_id: int, now: float | None = None) -> list[Event]:
        """End a live request with Finished(abort) and free its blocks (NOT_FOUND if none)."""
        if now is not None:
            self.table.paused.advance_clock(now)
        request = self.table.get(request_id)
        if request is None:
            raise RequestError("NOT_FOUND", f"no live request {request_id}")
        self.stats.aborted_requests += 1
        return [self.output.finish(request, FinishReason.ABORT)]

    def expire_pauses(self, now: float) -> list[int]:
        """End every request paused for config.pause_timeout_s or longer (freeing its blocks on
        device and host) and return their ids; the caller tells their sessions."""
        paused = self.table.paused
        ids = paused.expired_ids(now, self.config.pause_timeout_s)
        if ids:
            paused.advance_clock(now)
        for request_id in ids:
            self.output.finish(self.table.requests[request_id], FinishReason.PAUSE_TIMEOUT)
        return ids

    def next_pause_expiry_s(self) -> float | None:
        """When the oldest pause expires (the clock of `now`), or None."""
        return self.table.paused.next_expiry_s(self.config.pause_timeout_s)

    # ----- the iteration -----

    def has_work(self) -> bool:
        """Whether schedule() would produce a non-empty plan (or could, given memory)."""
        return self.table.has_pending_plan_work or bool(self.table.queues)

    def schedule(self, now: float) -> pb.StepPlan:
        """Plan one iteration at `now`: the diffs owed to the executor, then the paused contexts
        revisited (policies that manage them), then decodes and chunks within the budgets."""
        table = self.table
        draft = self._open_plan(now, self.config.max_batched_tokens)
        builder, iteration, decodes = draft.builder, draft.iteration, draft.decodes
        if self.policy.manages_paused and table.paused and self._revisits_paused(now):
            revisit_paused(
                table,
                self.policy,
                self.stats,
                builder,
                iteration.budget,
                decodes,
                self.config.max_batched_tokens,
                self._room_failed,
                now,
            )
        if self.config.iteration_structure == "prefill-first":
            iteration.prefill_first(decodes, self.config.prefill_token_budget)
        else:
            iteration.decode_first(decodes)
        self._room_failed = iteration.preemption.room_failed
        return self._close_plan(draft, now)

    def schedule_ahead(self, now: float) -> pb.StepPlan | None:
        """Plan the next iteration while the last plan computes, before its result is applied:
        the ready requests' decodes, a request whose token that plan is sampling computing the
        executor's last sampled token (use_last_sampled). None where the result could change the
        plan otherwise, or where there is nothing to plan: waiting requests (prompts, recomputes,
        the chunks of the last plan), swaps, paused contexts the policy revisits now, a ready
        request wanting more than a decode or a copy-on-write; then `update` first, then
        `schedule`. Exactly one plan may be outstanding; its tokens are identical either way."""
        assert len(self._outstanding) == 1, f"{len(self._outstanding)} plans outstanding"
        table = self.table
        (last,) = self._outstanding.values()
        if (
            not self.config.plan_ahead
            or last.chunked
            or table.queues.num_waiting
            or table.pending_swap_out
            or table.swapping_in
            or (self.policy.manages_paused and table.paused and self._revisits_paused(now))
        ):
            return None
        decodes = table.queues.ready()
        if not decodes or not self._can_decode_ahead(decodes):
            return None
        budget = (
            self.config.prefill_token_budget
            if self.config.iteration_structure == "prefill-first"
            else self.config.max_batched_tokens
        )
        draft = self._open_plan(now, budget)
        draft.iteration.decodes_ahead(draft.decodes, self._ends_at_next_token)
        last.filled_ahead = draft.iteration.filled_ahead
        plan = self._close_plan(draft, now)
        if is_empty(plan):  # every token out ends its request: nothing to do before the result
            self.withdraw(plan)
            return None
        return plan

    def update(self, plan: pb.StepPlan, result: pb.StepResult, now: float) -> list[Event]:
        """Apply the executor's result of `plan` (the oldest outstanding one): append sampled
        tokens, finish, intercept."""
        assert result.step_id == plan.step_id, f"result {result.step_id} for plan {plan.step_id}"
        record = self._outstanding.pop(plan.step_id)
        for step_id in [s for s in self._outstanding if s < plan.step_id]:
            del self._outstanding[step_id]  # planned, never run (a test looked at a plan only)
        self.table.paused.advance_clock(now)  # before this update's pauses start
        self.stats.iterations += 1
        if self.cost_model is not None and not result.error.code:
            self.cost_model.observe(result, *record.swapped_blocks)
        self._record_iteration(record.iteration, result)
        if self.admission.is_enabled:
            self.admission.completed(now, record.iteration.prompt_tokens)
        sampled = result.sampled
        if record.filled_ahead:  # before the tokens can end or pause their requests
            token_of = dict(zip(sampled.request_ids, sampled.token_ids, strict=True))
            for request in record.filled_ahead:
                if request.request_id in token_of:
                    self.blocks.register_filled_ahead(
                        request.request_id, request.token_ids, token_of[request.request_id]
                    )
        events = self.output.apply(
            list(sampled.request_ids), list(sampled.token_ids), record.sample_positions, now
        )
        # A decode leaves its request ready (unless it paused or finished); a chunk may make it so.
        for request in record.chunked:
            self.table.requeue(request)
        return events

    def withdraw(self, plan: pb.StepPlan) -> None:
        """`plan`, the last one, will not be sent (it is empty): no result will come for it."""
        assert is_empty(plan) and plan.step_id == self._step_id, f"plan {plan.step_id} withdrawn"
        del self._outstanding[plan.step_id]

    def reset_executor_state(self) -> None:
        """The executor lost everything (restart or Reset): recompute every context from scratch;
        the results of outstanding plans will not come."""
        self._outstanding.clear()
        self.table.reset_executor_state()
        self.blocks.end_iteration()
        self.blocks.forget_cached()

    # ----- helpers -----

    def _open_plan(self, now: float, max_batched_tokens: int) -> PlanDraft:
        """A new plan with the diffs owed to the executor, its iteration's budgets, and the
        ready requests in queue order."""
        table = self.table
        table.paused.advance_clock(now)
        stats = self.stats
        counters = (
            stats.tokens_by_kind.copy(),
            stats.paused_discards,
            sum(stats.prefix_hit_tokens_by_kind.values()),
        )
        self._step_id += 1
        builder = PlanBuilder(self._step_id)
        forget, swap_outs = table.take_plan_diffs()
        builder.forget(forget)
        for pairs in swap_outs:
            builder.swap_out(pairs)
        if self.policy.discards_swapped_when_idle:  # never while planning ahead: nothing swaps in then
            discard_oldest_swapped(table, self.policy, self.stats)
        decodes = table.queues.ready()
        budget = Budget.for_iteration(
            max_batched_tokens,
            self.config.max_num_seqs,
            self.policy,
            len(decodes),
            table.queues.num_waiting > 0,
            self.blocks.device.num_free * self.blocks.block_size,
            self.blocks.block_size,
        )
        iteration = IterationPlan(table, self.stats, self.policy, builder, budget)
        return PlanDraft(builder, iteration, decodes, *counters)

    def _close_plan(self, draft: PlanDraft, now: float) -> pb.StepPlan:
        """The plan built, checked (check_invariants), its statistics and record kept."""
        builder, iteration = draft.builder, draft.iteration
        iteration.finish()
        if self.admission.is_enabled:
            self.admission.scheduled(now, *self._work_ahead())  # O(live): only when enabled
        self.blocks.end_iteration()
        plan = builder.build()
        if self.config.check_invariants:
            self.blocks.check_invariants()
            ends = [
                start + num
                for start, num in zip(builder.work_start_positions, builder.work_num_tokens, strict=True)
            ]
            for row in builder.work_use_last_rows:
                ends[row] += 1
            for rid, start, end in zip(
                builder.work_request_ids, builder.work_start_positions, ends, strict=True
            ):
                self.blocks.check_writable(rid, start, end)  # a shared block is never written
        tokens = tokens_since(self.stats.tokens_by_kind, draft.kinds_before)
        num_out, num_in = builder.num_swapped_blocks
        stats = IterationStats(
            step_id=plan.step_id,
            prompt_tokens=tokens[TokenKind.PROMPT],
            decode_tokens=tokens[TokenKind.DECODE],
            returned_tokens=tokens[TokenKind.RETURNED],
            recomputed_tokens=tokens[TokenKind.RECOMPUTE],
            num_requests=len(builder.work_request_ids),
            swap_out_blocks=num_out,
            swap_in_blocks=num_in,
            paused_device_blocks=self.table.paused.num_held_blocks,
            paused_discards=self.stats.paused_discards - draft.discards_before,
            prefix_hit_tokens=sum(self.stats.prefix_hit_tokens_by_kind.values()) - draft.hits_before,
        )
        self._outstanding[plan.step_id] = PlanRecord(
            iteration.chunked, builder.num_swapped_blocks, stats, builder.sample_positions
        )
        return plan

    def _revisits_paused(self, now: float) -> bool:
        """Whether the policy revisits its paused contexts in the iteration planned at `now`."""
        return self.policy.revisits_paused(now, self.blocks, memory_is_short(self.blocks, self._room_failed))

    def _can_decode_ahead(self, decodes: list[Request]) -> bool:
        """Whether every ready request's next computation can be planned ahead: one token (known,
        or the one the outstanding plan samples), its context on the device, no shared block to
        copy, and blocks free for all that open one (planning ahead never preempts)."""
        layouts, block_size = self.blocks.layouts, self.blocks.block_size
        num_new_blocks = 0
        for request in decodes:
            position, layout = request.num_computed, layouts[request.request_id]
            if not 0 <= len(request.token_ids) - position <= 1 or layout.host:
                return False
            if self.prefix_caching and self.blocks.num_blocks_to_copy(request.request_id, position):
                return False
            num_new_blocks += position == len(layout.device) * block_size
        return self.blocks.device.can_allocate(num_new_blocks)

    def _ends_at_next_token(self, request: Request) -> bool:
        """Whether the token the outstanding plan samples for `request` surely ends or pauses it
        (its length, the model's length, a scripted stop): its decode ahead would be wasted."""
        num_tokens = len(request.token_ids) + 1
        script = request.script
        return (
            request.num_generated + 1 >= request.sampling.max_tokens
            or num_tokens >= self.executor.max_model_len
            or bool(script and script[0].after_tokens == num_tokens - request.segment_start)
        )

    def _record_iteration(self, iteration: IterationStats, result: pb.StepResult) -> None:
        """Complete the iteration's statistics with the executor's measured times."""
        iteration.complete(result.forward_s, result.step_s, result.idle_s)
        self.stats.stall_s += iteration.stall_s
        # The recompute share of forward time: the iteration's forward time split over its tokens.
        self.stats.forward_s += result.forward_s
        if iteration.recomputed_tokens:
            share = iteration.recomputed_tokens / iteration.num_tokens
            self.stats.recomputed_forward_s += result.forward_s * share
        self.stats.last_iteration = iteration
        if self.on_iteration is not None:
            self.on_iteration(iteration)

    def _paused(self, request_id: int) -> Request:
        request = self.table.get(request_id)
        if request is None:
            raise RequestError("NOT_FOUND", f"no live request {request_id}")
        if request.status is not Status.PAUSED:
            raise RequestError("FAILED_PRECONDITION", f"request {request_id} has no interception pending")
        return request

    def _work_ahead(self) -> tuple[int, float | None, int]:
        """What a request arriving now waits behind: the prompt tokens not yet computed of the
        requests not yet started, the arrival time of the oldest of those (None if none), and the
        device tokens wanted beyond the pool (every live context; a paused one: what it holds)."""
        num_tokens, oldest_unstarted_s = 0, None
        for request in self.table.queues.waiting():  # in queue order: the first unstarted is the oldest
            if request.num_generated == 0:
                num_tokens += max(request.num_prompt_tokens - request.max_computed, 0)
                if oldest_unstarted_s is None:
                    oldest_unstarted_s = request.arrival_s
        num_wanted = sum(len(r.token_ids) for r in self.table if r.status is not Status.PAUSED)
        num_wanted += self.table.paused.num_held_blocks * self.blocks.block_size
        num_excess = num_wanted - self.blocks.device.num_total * self.blocks.block_size
        return num_tokens, oldest_unstarted_s, max(num_excess, 0)

    def _cost_model_tokens_per_s(self) -> float | None:
        """Tokens per second of full iterations as the cost model predicts them, or None."""
        if self.cost_model is None:
            return None
        forward_s = self.cost_model.forward_s(self.config.max_batched_tokens)
        return self.config.max_batched_tokens / forward_s if forward_s > 0 else None
