"""The scheduler core: a synchronous, deterministic object that decides every iteration.

    plan   = scheduler.schedule(now)              # who computes what, which blocks move
    result = executor.run(plan)
    events = scheduler.update(plan, result, now)  # append tokens, finish, intercept

Between iterations the server feeds it new requests (add), tool progress (tool_started, resume)
and aborts. It never touches tensors; it holds every token, so a lost executor costs only
recomputation (reset_executor_state).

Each iteration: decode tokens of requests whose context is computed go first, then chunks of
everyone else (prompts, recomputation of discarded context, tool-returned tokens), both by queue
order (arrival time; a policy may move a resumed request), within the token budget. A request
whose host segment is out is swapped back in before it computes. When device blocks run out, the
newest requests holding device blocks are preempted by discarding their context (never one
older than the request in need); when none can be, scheduling stops there (first come, first
served).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import structlog
from tokenizers import Tokenizer

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.admission import RequestError, admit, check_token_ids
from scheduler_svc.admission_control import QueueWaitControl
from scheduler_svc.block_manager import BlockManager
from scheduler_svc.chat_template import ChatTemplateError
from scheduler_svc.config import ExecutorDescription, SchedulerConfig
from scheduler_svc.cost_model import UNLIMITED_BLOCKS, CostModel
from scheduler_svc.detokenizer import IncrementalDecoder
from scheduler_svc.interception import find_stop_string
from scheduler_svc.pause_expiry import expired_ids, next_expiry_s
from scheduler_svc.plan_builder import BlockPairs, PlanBuilder
from scheduler_svc.policies import IterationView, PauseAction, PausedContext, Policy, create_policy
from scheduler_svc.queues import ComputeQueues, WaitingPlace, queue_key
from scheduler_svc.request import PendingCall, Request, Status
from scheduler_svc.resume import effective_seed, replay
from scheduler_svc.stats import SchedulerStats

log = structlog.get_logger(__name__)

Event = tuple[int, gen.ServerEvent]  # (request id, event for its session)


# Below this share of free device blocks, memory is short even if nothing had to wait for it.
LOW_MEMORY_SHARE = 0.02


@dataclasses.dataclass
class _Budget:
    tokens: int
    seqs: int
    swap_blocks: int  # blocks still to be copied this iteration, in and out together

    @property
    def exhausted(self) -> bool:
        return self.tokens <= 0 or self.seqs <= 0


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
        self.requests: dict[int, Request] = {}
        self.stats = SchedulerStats()
        self._next_request_id = 1
        self._step_id = 0
        self._pending_swap_out: dict[int, BlockPairs] = {}  # request id -> pairs for the next plan
        self._pending_forget: list[int] = []
        self._last_now: float | None = None
        # Kept incrementally so that an iteration costs O(active), not O(live) requests:
        # Requests that want computation; on vLLM 0.2's iterations a resumed context rejoins the
        # running batch (queues.py).
        self._queues = ComputeQueues(ready_includes_resumed=config.iteration_structure == "prefill-first")
        self._paused_held: dict[int, int] = {}  # paused request id -> device blocks it holds
        self._paused_held_blocks = 0
        self._holders: list[Request] | None = None  # this iteration's preemption candidates
        self._chunked: list[Request] = []  # this iteration's requests that compute more than a decode
        self._paused_requests: dict[int, Request] = {}
        self._swapping_in: set[int] = set()  # returned requests with blocks still on the host
        self._room_failed = False  # this iteration, a request could not get the blocks it needed
        self._swapped_blocks = (0, 0)  # (out, in) in the last plan, for the cost model
        self._iteration = gen.IterationStats()  # the last plan's, completed by its result
        # Called with each iteration's statistics once its result is in (the iteration log).
        self.on_iteration: Callable[[gen.IterationStats], None] | None = None
        self.admission = QueueWaitControl(config.max_queue_wait_s, self._cost_model_tokens_per_s())

    # ----- inputs between iterations -----

    def check_capacity(self, now: float) -> None:
        """RequestError RESOURCE_EXHAUSTED if a request arriving at `now` would be refused for
        load: the live cap, or an expected queue wait over the bound (with a retry hint). Cheap:
        call it first."""
        if len(self.requests) >= self.config.max_live_requests:
            raise RequestError(
                "RESOURCE_EXHAUSTED",
                f"the server holds {len(self.requests)} live requests already",
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
        self.requests[request.request_id] = request
        self._queues.place(request, self.blocks.layout(request.request_id))
        accepted = gen.Accepted(
            request_id=str(request.request_id),
            num_prompt_tokens=request.num_prompt_tokens,
            seed=seed,
        )
        events: list[Event] = [(request.request_id, gen.ServerEvent(accepted=accepted))]
        if len(request.token_ids) > request.segment_start:  # resumed mid-generation: the last token
            events += self._after_token(request, request.token_ids[-1], last_text, now)  # may have ended it
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
        self._account_paused_time(now)  # the pause ends now, even if no iteration ran during it
        assert request.pending_call is not None
        self.policy.call_ended(request, now - request.pending_call.paused_at_s)
        del self._paused_requests[request_id]
        start = len(request.token_ids)
        request.token_ids += returned_ids
        request.returned_ranges.append((start, new_len))
        request.num_returned += len(returned_ids)
        request.segment_start = new_len
        request.decoder = IncrementalDecoder(self.tokenizer)
        request.arrival_s = self.policy.arrival_on_resume(request, now)
        request.status, request.pending_call = Status.ACTIVE, None
        self._release_paused_hold(request_id)
        layout = self.blocks.layout(request_id)
        self._queues.place(request, layout, self.policy.waiting_place_on_resume, now)
        if layout.host:
            self._swapping_in.add(request_id)
        resumed = gen.Resumed(
            num_returned_tokens=len(returned_ids),
            num_device_blocks_kept=len(layout.device),
            num_blocks_swapped_in=len(layout.host),
            # Everything computed before that is no longer in the device prefix or host segment.
            num_recomputed_tokens=max(request.max_computed - request.num_computed, 0),
        )
        return [(request_id, gen.ServerEvent(resumed=resumed))]

    def abort(self, request_id: int, now: float | None = None) -> list[Event]:
        """End a live request with Finished(abort) and free its blocks (NOT_FOUND if none)."""
        if now is not None:
            self._account_paused_time(now)
        request = self.requests.get(request_id)
        if request is None:
            raise RequestError("NOT_FOUND", f"no live request {request_id}")
        self.stats.aborted_requests += 1
        return self._finish(request, "abort")

    def expire_pauses(self, now: float) -> list[int]:
        """End every request paused for config.pause_timeout_s or longer (freeing its blocks on
        device and host) and return their ids; the caller tells their sessions."""
        ids = expired_ids(self._paused_requests, now, self.config.pause_timeout_s)
        if ids:
            self._account_paused_time(now)
        for request_id in ids:
            self._finish(self.requests[request_id], "pause_timeout")
        return ids

    def next_pause_expiry_s(self) -> float | None:
        """When the oldest pause expires (the clock of `now`), or None."""
        return next_expiry_s(self._paused_requests, self.config.pause_timeout_s)

    # ----- the iteration -----

    def has_work(self) -> bool:
        """Whether schedule() would produce a non-empty plan (or could, given memory)."""
        return bool(self._pending_forget or self._pending_swap_out or self._queues)

    def schedule(self, now: float) -> pb.StepPlan:
        self._account_paused_time(now)
        kinds_before, discards_before = dict(self.stats.tokens_by_kind), self.stats.paused_discards
        hits_before = sum(self.stats.prefix_hit_tokens_by_kind.values())
        self._step_id += 1
        builder = PlanBuilder(self._step_id)
        builder.forget(self._pending_forget)
        for pairs in self._pending_swap_out.values():
            builder.swap_out(pairs)
        self._pending_forget, self._pending_swap_out = [], {}
        decodes = self._queues.ready()
        budget = self._budget(len(decodes))
        # Paused contexts are revisited first, so that what they free serves this iteration.
        if (
            self.policy.manages_paused
            and self._paused_requests
            and (self.policy.revisits_paused_always or self._memory_is_short())
        ):
            self._manage_paused(builder, budget, decodes, now)
        self._holders, self._chunked, self._room_failed = None, [], False
        scheduled: set[int] = set()
        if self.config.iteration_structure == "prefill-first":
            self._schedule_prefill_first(decodes, builder, budget, scheduled)
        else:
            self._schedule_decodes(decodes, builder, budget, scheduled)
            decode_ids = {r.request_id for r in decodes}  # preempted ones move to waiting: seen already
            for request in self._queues.waiting():
                if request.request_id in decode_ids:
                    continue
                if budget.exhausted or not self._schedule_one(request, builder, budget, scheduled):
                    break
        self._swapped_blocks = builder.num_swapped_blocks
        if self.admission.is_enabled:
            self.admission.scheduled(now, *self._work_ahead())  # O(live): only when enabled
        self.blocks.end_iteration()
        plan = builder.build()
        if self.config.check_invariants:
            self.blocks.check_invariants()
            for work in plan.work:  # a shared block is never written
                start = work.start_position
                self.blocks.check_writable(work.request_id, start, start + len(work.token_ids) // 4)
        self._iteration = self._iteration_stats(plan, kinds_before, discards_before, hits_before)
        return plan

    def update(self, plan: pb.StepPlan, result: pb.StepResult, now: float) -> list[Event]:
        """Apply the executor's result of `plan`: append sampled tokens, finish, intercept."""
        assert result.step_id == plan.step_id, f"result {result.step_id} for plan {plan.step_id}"
        self._account_paused_time(now)  # before this update's pauses start
        self.stats.iterations += 1
        if self.cost_model is not None and not result.error.code:
            self.cost_model.observe(result, *self._swapped_blocks)
        self._record_iteration(result)
        if self.admission.is_enabled:
            it = self._iteration
            self.admission.completed(now, it.prompt_tokens)
        events: list[Event] = []
        requests, active = self.requests, Status.ACTIVE
        for sampled in result.sampled:
            request = requests.get(sampled.request_id)
            if request is not None and request.status is active:  # else aborted meanwhile
                self._append_token(request, sampled.token_id, now, events)
        # A decode leaves its request ready (unless it paused or finished); a chunk may make it so.
        for request in self._chunked:
            if request.status is Status.ACTIVE:
                self._queues.place(request, self.blocks.layouts[request.request_id])
        self._chunked = []
        return events

    def reset_executor_state(self) -> None:
        """The executor lost everything (restart or Reset): recompute every context from scratch."""
        for request in self.requests.values():
            self.blocks.drop_after(request.request_id, 0)
            request.num_computed = 0
            request.executor_known = False
            if request.status is Status.ACTIVE:
                self._queues.place(request, self.blocks.layout(request.request_id))
        self._pending_swap_out, self._pending_forget = {}, []
        self._paused_held.clear()  # paused contexts are gone too: they are rebuilt on resume
        self._paused_held_blocks = 0
        self._swapping_in.clear()
        self.blocks.end_iteration()
        self.blocks.forget_cached()

    def _iteration_stats(
        self, plan: pb.StepPlan, kinds_before: dict[str, int], discards_before: int, hits_before: int
    ) -> gen.IterationStats:
        kinds = self.stats.tokens_by_kind
        num_out, num_in = self._swapped_blocks
        return gen.IterationStats(
            step_id=plan.step_id,
            prompt_tokens=kinds["prompt"] - kinds_before.get("prompt", 0),
            decode_tokens=kinds["decode"] - kinds_before.get("decode", 0),
            returned_tokens=kinds["returned"] - kinds_before.get("returned", 0),
            recomputed_tokens=kinds["recompute"] - kinds_before.get("recompute", 0),
            num_requests=len(plan.work),
            swap_out_blocks=num_out,
            swap_in_blocks=num_in,
            paused_device_blocks=self._paused_held_blocks,
            paused_discards=self.stats.paused_discards - discards_before,
            prefix_hit_tokens=sum(self.stats.prefix_hit_tokens_by_kind.values()) - hits_before,
        )

    def _record_iteration(self, result: pb.StepResult) -> None:
        """Complete the iteration's statistics with the executor's measured times."""
        iteration = self._iteration
        iteration.forward_s, iteration.step_s = result.forward_s, result.step_s
        iteration.stall_s = max(result.step_s - result.forward_s, 0.0)
        self.stats.stall_s += iteration.stall_s
        # The recompute share of forward time: the iteration's forward time split over its tokens.
        num_tokens = (
            iteration.prompt_tokens
            + iteration.decode_tokens
            + iteration.returned_tokens
            + iteration.recomputed_tokens
        )
        self.stats.forward_s += result.forward_s
        if iteration.recomputed_tokens:
            self.stats.recomputed_forward_s += result.forward_s * iteration.recomputed_tokens / num_tokens
        self.stats.last_iteration = iteration
        if self.on_iteration is not None:
            self.on_iteration(iteration)

    def _work_ahead(self) -> tuple[int, float | None, int]:
        """What a request arriving now waits behind: the prompt tokens not yet computed of the
        requests not yet started, the arrival time of the oldest of those (None if none), and the
        device tokens wanted beyond the pool (every live context; a paused one: what it holds)."""
        num_tokens, oldest_unstarted_s = 0, None
        for request in self._queues.waiting():  # in queue order: the first unstarted is the oldest
            if request.num_generated == 0:
                num_tokens += max(request.num_prompt_tokens - request.max_computed, 0)
                if oldest_unstarted_s is None:
                    oldest_unstarted_s = request.arrival_s
        num_wanted = sum(len(r.token_ids) for r in self.requests.values() if r.status is not Status.PAUSED)
        num_wanted += self._paused_held_blocks * self.blocks.block_size
        num_excess = num_wanted - self.blocks.device.num_total * self.blocks.block_size
        return num_tokens, oldest_unstarted_s, max(num_excess, 0)

    def _cost_model_tokens_per_s(self) -> float | None:
        """Tokens per second of full iterations as the cost model predicts them, or None."""
        if self.cost_model is None:
            return None
        forward_s = self.cost_model.forward_s(self.config.max_batched_tokens)
        return self.config.max_batched_tokens / forward_s if forward_s > 0 else None

    def _budget(self, num_decodes: int) -> _Budget:
        """This iteration's budgets: tokens and sequences from the config, swap blocks from the
        policy for the iteration's expected size (decodes, plus a full chunk budget if any wait)."""
        tokens = self.config.max_batched_tokens
        expected_tokens = max(num_decodes, tokens) if self._queues.num_waiting else num_decodes
        swap_blocks = self.policy.swap_budget_blocks(expected_tokens)
        return _Budget(
            tokens, self.config.max_num_seqs, UNLIMITED_BLOCKS if swap_blocks is None else swap_blocks
        )

    def _manage_paused(
        self, builder: PlanBuilder, budget: _Budget, decodes: list[Request], now: float
    ) -> None:
        """Let the policy revisit the paused contexts and apply its decisions: swap-outs go into
        this plan (the executor copies them out before anything computes), discards free the
        blocks at once. Swap-ins of returning requests keep the first claim on the swap budget."""
        contexts = [c for c in map(self._paused_context, self._paused_requests.values()) if c is not None]
        if not contexts:
            return
        view = IterationView(
            now_s=now,
            decode_tokens=len(decodes),
            batch_context_tokens=sum(r.num_computed for r in decodes),
            others_waiting=self._queues.num_waiting > 0,
            token_budget=self.config.max_batched_tokens,
            swap_out_budget_blocks=max(budget.swap_blocks - self._swap_in_demand_blocks(), 0),
            host_free_blocks=self.blocks.host.num_free,
            block_size_tokens=self.blocks.block_size,
            memory_is_short=self._memory_is_short(),
        )
        for decision in self.policy.manage_paused(contexts, view):
            request = self._paused_requests[decision.request_id]
            rank = self.policy.evict_rank(request, now)
            if decision.action is PauseAction.SWAP:
                builder.swap_out(self._swap_out_paused(request, decision.num_blocks, rank))
                budget.swap_blocks -= decision.num_blocks
            else:
                self._drop_context(request, rank)
                self.stats.paused_discards += 1

    def _memory_is_short(self) -> bool:
        """Whether device memory is contended: the last iteration could not give a request the
        blocks it needed, or almost nothing is free."""
        device = self.blocks.device
        return self._room_failed or device.num_free < LOW_MEMORY_SHARE * device.num_total

    def _swap_in_demand_blocks(self) -> int:
        """Host blocks of returned requests still to be brought back."""
        layouts = self.blocks.layouts
        return sum(len(layouts[rid].host) for rid in self._swapping_in)

    def _paused_context(self, request: Request) -> PausedContext | None:
        layout = self.blocks.layouts[request.request_id]
        if not (layout.device or layout.host):
            return None
        device_tokens = min(len(layout.device) * self.blocks.block_size, request.num_computed)
        return PausedContext(
            request=request,
            num_device_blocks=len(layout.device),
            num_host_blocks=len(layout.host),
            device_tokens=device_tokens,
            computed_tokens=request.num_computed,
        )

    def _swap_out_paused(
        self, request: Request, num_blocks: int, evict_rank: float | None = None
    ) -> BlockPairs:
        """Move the last `num_blocks` device blocks of a paused request to the host (their device
        copies stay cached with `evict_rank` under prefix caching)."""
        rid = request.request_id
        pairs = self.blocks.swap_out(rid, num_blocks, evict_rank)
        self.stats.swap_out_blocks += num_blocks
        self._release_paused_hold(rid)
        self._hold_paused(rid)
        return pairs

    # ----- scheduling one request -----

    def _schedule_one(
        self, request: Request, builder: PlanBuilder, budget: _Budget, scheduled: set[int]
    ) -> bool:
        rid = request.request_id
        layout = self.blocks.layout(rid)
        if layout.host and self.prefix_caching and rid not in self._pending_swap_out:
            self.stats.reattached_blocks += self.blocks.reattach_cached(rid)
        if layout.host:
            count = min(len(layout.host), budget.swap_blocks)
            if (
                self._queues.ready_includes_resumed
            ):  # vLLM 0.2: back into free blocks, whole, preempting no one
                if not self.blocks.can_grow(rid, len(request.token_ids)):
                    return False
            elif count and not self._make_room(request, count, scheduled):
                return False
            if count:
                pairs = self.blocks.swap_in(rid, count)
                builder.swap_in(pairs)
                self.stats.swap_in_blocks += count
                budget.swap_blocks -= count
            if layout.host:  # it computes once all its blocks are back; the others go on
                scheduled.add(rid)
                return True
        self._swapping_in.discard(rid)
        if self.prefix_caching and not (request.num_computed or layout.device or layout.host):
            self._share_cached_prefix(request)
        start = request.num_computed
        end = start + min(request.num_pending, budget.tokens)
        if not self.policy.chunks_recompute and start < request.max_computed:
            end = len(request.token_ids)  # the whole context at once, past the budget
        num_copies = self.blocks.num_blocks_to_copy(rid, start)
        if not self._make_room(request, self.blocks.num_blocks_to_grow(rid, end) + num_copies, scheduled):
            # Chunked prefill: compute what fits in the blocks it has and the free ones.
            num_usable = len(layout.device) + self.blocks.device.num_free - num_copies
            end = min(end, num_usable * self.blocks.block_size)
            if end <= start:
                return False
        builder.device_copy(self.blocks.prepare_write(rid, start))
        self.blocks.grow(rid, end)
        builder.add_work(request, start, end, sample=end == len(request.token_ids), layout=layout)
        self.blocks.register_computed(rid, request.token_ids, start, end)
        kinds = request.count_kinds(start, end)
        for kind, count in kinds.items():
            self.stats.tokens_by_kind[kind] += count
        request.num_recomputed += kinds["recompute"]
        request.max_computed = max(request.max_computed, end)
        request.num_computed = end
        budget.tokens -= end - start
        budget.seqs -= 1
        scheduled.add(rid)
        self._chunked.append(request)
        return True

    def _share_cached_prefix(self, request: Request) -> None:
        """A request computing from nothing starts after the cached blocks of its context."""
        num_hit = self.blocks.share_cached_prefix(request.request_id, request.token_ids)
        if not num_hit:
            return
        for kind, count in request.count_kinds(0, num_hit).items():
            self.stats.prefix_hit_tokens_by_kind[kind] += count
        self.stats.prefix_hit_blocks += len(self.blocks.layouts[request.request_id].device)
        request.num_computed = num_hit
        request.max_computed = max(request.max_computed, num_hit)

    def _schedule_prefill_first(
        self, decodes: list[Request], builder: PlanBuilder, budget: _Budget, scheduled: set[int]
    ) -> None:
        """vLLM 0.2's iteration (iteration_structure "prefill-first"): if prompts or discarded
        contexts wait, an iteration of them alone, in queue order, each whole, within
        prefill_token_budget, stopping at the first that does not fit (one longer than the whole
        budget is chunked, rather than wait forever); if none could be scheduled, an iteration of
        the running batch: decodes, and resumed contexts' returned tokens and swap-ins."""
        # vLLM 0.2 runs no prompt while a swapped request waits to come back (prompts go first
        # only when `swapped` is empty), and a prompt that does not fit in the free blocks waits,
        # preempting no one.
        if self._queues.num_waiting and not self._swapping_in:
            prefill = _Budget(self.config.prefill_token_budget, budget.seqs, budget.swap_blocks)
            for request in self._queues.waiting():
                if prefill.exhausted or (request.num_pending > prefill.tokens and scheduled):
                    break
                whole = self.blocks.num_blocks_to_grow(request.request_id, len(request.token_ids))
                if not self.blocks.device.can_allocate(whole):
                    break
                if not self._schedule_one(request, builder, prefill, scheduled):
                    break
            if scheduled:
                return
        # Its decode iterations have the same token budget (max_num_batched_tokens).
        budget.tokens = self.config.prefill_token_budget
        self._schedule_decodes(decodes, builder, budget, scheduled)

    def _schedule_decodes(
        self, decodes: list[Request], builder: PlanBuilder, budget: _Budget, scheduled: set[int]
    ) -> None:
        """Schedule the ready requests in order until the budget is spent or one cannot run.
        The hot loop of the scheduler: a decode that needs no new block and is no recomputation
        is handled inline; anything else goes through _schedule_decode."""
        layouts, block_size, add_work = self.blocks.layouts, self.blocks.block_size, builder.add_work
        caching = self.prefix_caching
        num_plain = 0  # plain decode tokens, counted once at the end
        for request in decodes:
            if budget.tokens <= 0 or budget.seqs <= 0:
                break
            rid, position = request.request_id, request.num_computed
            layout = layouts[rid]
            if (
                position == len(layout.device) * block_size  # opens a block (or a preempted context)
                or request.kind_at(position) != "decode"  # recomputation, the last prompt or returned token
                or len(request.token_ids) != position + 1  # resumed (prefill-first): returned tokens
                or layout.host  # resumed (prefill-first): swapped out
            ):
                if not self._schedule_decode(request, builder, budget, scheduled):
                    break
                continue
            add_work(request, position, position + 1, True, layout)
            request.max_computed = request.num_computed = position + 1
            if caching and not (position + 1) % block_size:  # the token fills its block
                self.blocks.register_computed(rid, request.token_ids, position, position + 1)
            budget.tokens -= 1
            budget.seqs -= 1
            scheduled.add(rid)
            num_plain += 1
        self.stats.tokens_by_kind["decode"] += num_plain

    def _schedule_decode(
        self, request: Request, builder: PlanBuilder, budget: _Budget, scheduled: set[int]
    ) -> bool:
        """_schedule_one for a ready request, kept cheap: one pending token, context on the device."""
        rid, position = request.request_id, request.num_computed
        if position == 0:  # preempted earlier in this iteration: its context must be recomputed
            return self._schedule_one(request, builder, budget, scheduled)
        if request.num_pending > 1 or self.blocks.layouts[rid].host:  # resumed, under prefill-first
            return self._schedule_one(request, builder, budget, scheduled)
        if self.prefix_caching and self.blocks.num_blocks_to_copy(rid, position):
            return self._schedule_one(request, builder, budget, scheduled)  # writes a shared block
        layout = self.blocks.layouts[rid]
        if position == len(layout.device) * self.blocks.block_size:  # the token opens a new block
            if not self._make_room(request, 1, scheduled):
                return False
            layout.device += self.blocks.device.allocate(1)
        builder.add_work(request, position, position + 1, sample=True, layout=layout)
        self.blocks.register_computed(rid, request.token_ids, position, position + 1)
        kind = request.kind_at(position)
        self.stats.tokens_by_kind[kind] += 1
        if kind == "recompute":
            request.num_recomputed += 1
        request.max_computed = max(request.max_computed, position + 1)
        request.num_computed = position + 1
        budget.tokens -= 1
        budget.seqs -= 1
        scheduled.add(rid)
        return True

    def _make_room(self, request: Request, num_blocks: int, scheduled: set[int]) -> bool:
        """Preempt newer requests (newest first) until `num_blocks` device blocks are free."""
        while not self.blocks.device.can_allocate(num_blocks):
            victim = self._next_victim(request, scheduled)
            if victim is None:
                self._room_failed = True
                return False
            self._preempt(victim)
        return True

    def _next_victim(self, request: Request, scheduled: set[int]) -> Request | None:
        """The newest request holding device blocks that is newer than `request` and not
        computing this iteration, or None."""
        if self._holders is None:  # built once per iteration, only when memory runs out
            self._holders = sorted(
                (r for r in self.requests.values() if self.blocks.layout(r.request_id).device), key=queue_key
            )
        key = queue_key(request)
        while self._holders and queue_key(self._holders[-1]) > key:
            candidate = self._holders.pop()
            # Computing this iteration, or already preempted/finished: never a victim now.
            if candidate.request_id not in scheduled and self.blocks.layout(candidate.request_id).device:
                if candidate.status is Status.PAUSED and not self.policy.preempts_paused_contexts:
                    continue  # vLLM 0.2's baselines preempt running requests only
                return candidate
        return None

    def _preempt(self, victim: Request) -> None:
        """Discard the victim's context; it recomputes when its turn comes."""
        self._drop_context(victim, waiting_place=self.policy.waiting_place_on_preempt)
        self.stats.preemptions += 1
        log.debug("request.preempted", request_id=victim.request_id, status=victim.status.value)

    def _drop_context(
        self,
        request: Request,
        evict_rank: float | None = None,
        waiting_place: WaitingPlace = WaitingPlace.ARRIVAL,
    ) -> None:
        """Free the request's context (device blocks into the prefix cache, ranked by
        `evict_rank`, when prefix caching is on); it recomputes what is gone when its turn comes,
        waiting at `waiting_place`."""
        self._release_paused_hold(request.request_id)
        self._pending_swap_out.pop(request.request_id, None)
        self._swapping_in.discard(request.request_id)
        self.blocks.drop_after(request.request_id, 0, evict_rank)
        request.num_computed = 0
        if request.status is Status.ACTIVE:
            self._queues.place(
                request, self.blocks.layout(request.request_id), waiting_place, self._last_now or 0.0
            )

    # ----- after a token -----

    def _append_token(self, request: Request, token_id: int, now: float, events: list[Event]) -> None:
        """Append a sampled token and its events (a token delta, then finish or interception)."""
        request.token_ids.append(token_id)
        request.num_generated += 1
        if request.num_generated == 1 and self.admission.is_enabled:
            self.admission.started(request.request_id, now - request.arrival_s)
        text = request.decoder.push(token_id)
        delta = gen.ServerEvent()  # filled in place: half the cost of nested constructors
        tokens = delta.tokens
        tokens.token_ids.append(token_id)
        if text:
            tokens.text = text
        events.append((request.request_id, delta))
        events += self._after_token(request, token_id, text, now)

    def _after_token(self, request: Request, token_id: int, text: str, now: float) -> list[Event]:
        """Finish or intercept the request if its last token, completing `text`, says so."""
        reason = self._finish_reason(request, token_id, text)
        if reason:
            return self._finish(request, reason)
        if request.script or request.tools:
            return self._maybe_intercept(request, text, now)
        return []

    def _finish_reason(self, request: Request, token_id: int, text: str) -> str:
        if token_id in self.executor.eos_token_ids and not request.sampling.ignore_eos:
            return "eos"
        if request.sampling.stop and find_stop_string(request.decoder.text, text, request.sampling.stop):
            return "stop"
        if request.num_generated >= request.sampling.max_tokens:
            return "length"
        if len(request.token_ids) >= self.executor.max_model_len:
            return "max_model_len"
        return ""

    def _maybe_intercept(self, request: Request, text: str, now: float) -> list[Event]:
        num_segment_tokens = len(request.token_ids) - request.segment_start
        if request.script and request.script[0].after_tokens == num_segment_tokens:
            stop = request.script.popleft()
            return self._pause(request, stop.tool, request.decoder.text, stop.expected_duration_s, now)
        for tool in request.tools:
            # Only a token-id trigger's length of the segment's ids is ever compared.
            tail = request.token_ids[
                max(request.segment_start, len(request.token_ids) - len(tool.stop_token_ids)) :
            ]
            call = tool.detect(request.decoder.text, tail, text)
            if call is not None:
                return self._pause(
                    request, call.name, call.call_text, tool.expected_duration_s, now, call.arguments
                )
        return []

    def _pause(
        self, request: Request, tool: str, call_text: str, expected_s: float, now: float, arguments: str = ""
    ) -> list[Event]:
        rid = request.request_id
        # Set first: a policy may decide by the call (continuum learns per tool).
        request.pending_call = PendingCall(tool, call_text, now, expected_s, context_action="")
        action = self.policy.on_pause(request, self.blocks, now)
        num_device = len(self.blocks.layout(rid).device)
        if action is PauseAction.SWAP and not (num_device and self.blocks.can_swap_out(num_device)):
            action = PauseAction.DISCARD
        if action is PauseAction.SWAP:
            self._pending_swap_out[rid] = self.blocks.swap_out(rid, num_device)
            self.stats.swap_out_blocks += num_device
        elif action is PauseAction.DISCARD:
            self._drop_context(request, self.policy.evict_rank(request, now))
        request.status = Status.PAUSED
        self._queues.remove(request)
        self._paused_requests[rid] = request
        self._hold_paused(rid)
        request.pending_call.context_action = action.value
        request.num_interceptions += 1
        self.stats.count_interception(tool)
        intercepted = gen.Intercepted(
            tool=tool,
            call_text=call_text,
            num_context_tokens=len(request.token_ids),
            index=request.num_interceptions - 1,
            context_action=action.value,
            arguments=arguments,
        )
        return [(rid, gen.ServerEvent(intercepted=intercepted))]

    def _finish(self, request: Request, reason: str) -> list[Event]:
        rid = request.request_id
        request.status, request.finish_reason = Status.FINISHED, reason
        self._queues.remove(request)
        self._paused_requests.pop(rid, None)
        self._swapping_in.discard(rid)
        self._release_paused_hold(rid)
        self._pending_swap_out.pop(rid, None)
        self.blocks.free(rid)
        if self.admission.is_enabled:
            self.admission.finished(rid, self._last_now, len(request.token_ids))
        if request.executor_known:
            self._pending_forget.append(rid)
        del self.requests[rid]
        self.stats.finished_requests += 1
        usage = gen.Usage(
            prompt_tokens=request.num_prompt_tokens,
            generated_tokens=request.num_generated,
            returned_tokens=request.num_returned,
            recomputed_tokens=request.num_recomputed,
            interceptions=request.num_interceptions,
        )
        return [(rid, gen.ServerEvent(finished=gen.Finished(finish_reason=reason, usage=usage)))]

    # ----- helpers -----

    def _paused(self, request_id: int) -> Request:
        request = self.requests.get(request_id)
        if request is None:
            raise RequestError("NOT_FOUND", f"no live request {request_id}")
        if request.status is not Status.PAUSED:
            raise RequestError("FAILED_PRECONDITION", f"request {request_id} has no interception pending")
        return request

    def _account_paused_time(self, now: float) -> None:
        if self._last_now is not None and now > self._last_now:
            self.stats.paused_device_block_seconds += self._paused_held_blocks * (now - self._last_now)
        self._last_now = now

    def _hold_paused(self, request_id: int) -> None:
        """Count the device blocks the paused request holds now (it holds none counted yet)."""
        if held := len(self.blocks.layout(request_id).device):
            self._paused_held[request_id] = held
            self._paused_held_blocks += held

    def _release_paused_hold(self, request_id: int) -> None:
        """The request no longer holds device blocks as a paused request."""
        self._paused_held_blocks -= self._paused_held.pop(request_id, 0)

    def stats_proto(self) -> gen.Stats:
        by_state = {"waiting": 0, "running": 0, "paused": 0}
        for r in self.requests.values():
            if r.status is Status.PAUSED:
                by_state["paused"] += 1
            else:
                by_state["running" if r.num_computed and r.num_pending == 1 else "waiting"] += 1
        by_state["finished"] = self.stats.finished_requests
        kinds = self.stats.tokens_by_kind
        return gen.Stats(
            prompt_tokens=kinds["prompt"],
            decode_tokens=kinds["decode"],
            returned_tokens=kinds["returned"],
            recomputed_tokens=kinds["recompute"],
            swap_out_blocks=self.stats.swap_out_blocks,
            swap_in_blocks=self.stats.swap_in_blocks,
            device_blocks_free=self.blocks.device.num_free,
            device_blocks_total=self.blocks.device.num_total,
            host_blocks_free=self.blocks.host.num_free,
            host_blocks_total=self.blocks.host.num_total,
            requests_by_state=by_state,
            interceptions_by_tool=dict(self.stats.interceptions_by_tool),
            paused_device_block_seconds=self.stats.paused_device_block_seconds,
            iterations=self.stats.iterations,
            aborted_requests=self.stats.aborted_requests,
            preemptions=self.stats.preemptions,
            paused_discards=self.stats.paused_discards,
            stall_s=self.stats.stall_s,
            last_iteration=self.stats.last_iteration,
            prefix_hit_tokens=sum(self.stats.prefix_hit_tokens_by_kind.values()),
            prefix_hit_blocks=self.stats.prefix_hit_blocks,
            device_blocks_cached=self.blocks.device.num_cached,
            prefix_caching=self.prefix_caching,
            forward_s=self.stats.forward_s,
            recomputed_forward_s=self.stats.recomputed_forward_s,
        )
