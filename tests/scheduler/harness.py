"""Driving the scheduler core with fabricated executor results, in-process and without sockets.

`FakeExecutor` obeys a StepPlan the way the real executor would, but instead of tensors it keeps,
for every KV slot, which (request, position, token, context digest) was written there; the digest
names every token up to and including the position, which is what a real KV entry depends on.
Before computing a work item it checks that every position the item attends to holds an entry for
that position whose digest is the reading request's own (so a block shared with another request
that has the same prefix reads correctly, and any other block does not), so a wrong swap, a stale
block table, a wrong prefix hit, a missed copy-on-write or a missed recomputation fails the test
where it happens. It applies device copies after the swaps, as the executor does, and refuses a
plan in which one request writes a block another reads or writes. The token it "samples" is
chosen by a rule the test controls.

`Harness` wires a Scheduler to a FakeExecutor and a clock: `step()` is one schedule → run →
update iteration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from tokenizers import Tokenizer

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.config import ExecutorDescription, SchedulerConfig
from scheduler_svc.cost_model import CostModel
from scheduler_svc.event_render import render
from scheduler_svc.events import Event, session_events
from scheduler_svc.scheduler import Scheduler
from svc_common.step_wire import Sampled, Work, pack_sampled, unpack_table_updates, unpack_work
from svc_common.wire import unpack_u32

BLOCK_SIZE = 4
VOCAB_SIZE = 300
EOS = 257

TokenRule = Callable[[int, int], int]  # (request id, position of the sampled token) -> token id
Slot = tuple[int, int, int, int]  # (writer request id, position, token id, context digest) in one KV slot


def counting_rule(request_id: int, position: int) -> int:
    """A token that depends on who samples it and where; never an end-of-sequence token."""
    return 1 + (request_id * 31 + position * 7) % 200


def ids(data: bytes) -> list[int]:
    return [int(x) for x in unpack_u32(data)]


def executor_description(
    num_device_blocks: int = 64, num_host_blocks: int = 64, max_model_len: int = 128
) -> ExecutorDescription:
    return ExecutorDescription(
        block_size=BLOCK_SIZE,
        num_device_blocks=num_device_blocks,
        num_host_blocks=num_host_blocks,
        vocab_size=VOCAB_SIZE,
        max_model_len=max_model_len,
        eos_token_ids=(EOS,),
    )


def generate_request(
    prompt_ids: Iterable[int] = (1, 2, 3, 4, 5),
    max_tokens: int = 8,
    script: Iterable[tuple[int, str]] = (),
    **sampling: Any,
) -> gen.GenerateRequest:
    """A GenerateRequest with token ids; `script` lists (after_tokens, tool) pairs."""
    return gen.GenerateRequest(
        prompt_token_ids=list(prompt_ids),
        sampling=gen.SamplingParams(max_tokens=max_tokens, **sampling),
        script=[gen.ScriptedCall(after_tokens=n, tool=tool) for n, tool in script],
    )


def fake_step(plan: pb.StepPlan, rule: TokenRule = counting_rule) -> pb.StepResult:
    """A StepResult for `plan` with no KV model: one token per sampling work item, by `rule`."""
    work = unpack_work(plan.work)
    sampled = [Sampled(w.request_id, rule(w.request_id, w.end_position)) for w in work if w.sample]
    num_tokens = sum(len(w.token_ids) for w in work)
    return pb.StepResult(step_id=plan.step_id, num_batched_tokens=num_tokens, sampled=pack_sampled(sampled))


class FakeExecutor:
    """Applies plans to a simulated paged KV cache and checks every read against what was written."""

    def __init__(self, desc: ExecutorDescription, rule: TokenRule = counting_rule) -> None:
        self.rule = rule
        self.block_size = desc.block_size
        self.device: list[list[Slot | None]] = [
            [None] * desc.block_size for _ in range(desc.num_device_blocks)
        ]
        self.host: list[list[Slot | None]] = [[None] * desc.block_size for _ in range(desc.num_host_blocks)]
        self.tables: dict[int, list[int]] = {}
        # The one true token at each position of each request: the first one ever sent or sampled.
        self.truth: dict[int, dict[int, int]] = defaultdict(dict)
        self._digests: dict[int, list[int]] = defaultdict(list)  # request -> digest at each position
        self.num_device_copies = 0
        self.last_sampled: dict[int, int] = {}  # request -> the token it sampled last
        self.num_last_sampled_used = 0  # work items that computed the last sampled token

    def run(self, plan: pb.StepPlan) -> pb.StepResult:
        for rid in plan.forget_request_ids:
            assert rid in self.tables, f"forget of unknown request {rid}"
            del self.tables[rid]
            self.last_sampled.pop(rid, None)
        for new in plan.new_requests:
            assert new.request_id not in self.tables, f"request {new.request_id} registered twice"
            self.tables[new.request_id] = []
        for update in unpack_table_updates(plan.block_table_updates):
            old = self.tables[update.request_id]
            assert update.num_kept_blocks <= len(old), f"keeps {update.num_kept_blocks} of {len(old)}"
            table = old[: update.num_kept_blocks] + list(update.appended_block_ids)
            assert len(set(table)) == len(table), f"table {table} repeats a block"
            self.tables[update.request_id] = table
        for block_map in (plan.swap_out, plan.swap_in, plan.device_copies):
            assert len(set(ids(block_map.dst_block_ids))) == len(ids(block_map.dst_block_ids)), (
                "a block written twice"
            )
        copy_src, copy_dst = ids(plan.device_copies.src_block_ids), ids(plan.device_copies.dst_block_ids)
        assert not set(copy_src) & set(copy_dst), "a device copy reads a block another writes"
        assert not set(copy_src + copy_dst) & set(ids(plan.swap_in.dst_block_ids)), (
            "a device copy touches a swap-in destination"
        )
        # Swap-outs run before swap-ins (a block freed by a swap-out may be a swap-in target).
        for src, dst in zip(ids(plan.swap_out.src_block_ids), ids(plan.swap_out.dst_block_ids), strict=True):
            self.host[dst] = list(self.device[src])
        for src, dst in zip(ids(plan.swap_in.src_block_ids), ids(plan.swap_in.dst_block_ids), strict=True):
            self.device[dst] = list(self.host[src])
        # Device copies after the swaps, before the forward (copy-on-write of shared blocks).
        for src, dst in zip(copy_src, copy_dst, strict=True):
            self.device[dst] = list(self.device[src])
        self.num_device_copies += len(copy_src)
        items = unpack_work(plan.work)
        self._check_no_conflicts(items)
        result = pb.StepResult(step_id=plan.step_id)
        written: set[int] = set()
        for work in items:
            result.num_batched_tokens += self._compute(work, written)
        sampled = []
        for work in items:
            if work.sample:
                rid, position = work.request_id, work.end_position
                token = self.rule(rid, position)
                self.truth[rid].setdefault(position, token)
                self.last_sampled[rid] = token
                sampled.append(Sampled(rid, token))
        result.sampled.CopyFrom(pack_sampled(sampled))
        return result

    def _compute(self, work: Work, written: set[int]) -> int:
        rid, start, tokens = work.request_id, work.start_position, list(work.token_ids)
        if work.use_last_sampled:
            assert rid in self.last_sampled, f"request {rid}: use_last_sampled before any sample"
            tokens.insert(0, self.last_sampled[rid])
            self.num_last_sampled_used += 1
        table, truth = self.tables[rid], self.truth[rid]
        assert tokens, f"request {rid}: empty work"
        assert len(table) * self.block_size >= start + len(tokens), f"request {rid}: table {table} too short"
        for position in range(start):  # the context attention reads
            slot = self.device[table[position // self.block_size]][position % self.block_size]
            assert slot is not None and slot[1:] == (
                position,
                truth.get(position),
                self._digest(rid, position),
            ), f"request {rid} position {position} reads {slot}"
        blocks = set(table[start // self.block_size : -(-(start + len(tokens)) // self.block_size)])
        assert not blocks & written, f"request {rid} writes blocks {blocks & written} another request writes"
        written |= blocks
        for offset, token in enumerate(tokens):
            position = start + offset
            assert truth.setdefault(position, token) == token, f"request {rid} position {position} changed"
            self.device[table[position // self.block_size]][position % self.block_size] = (
                rid,
                position,
                token,
                self._digest(rid, position),
            )
        return len(tokens)

    def know(self, request_id: int, start: int, token_ids: list[int]) -> None:
        """The client sent these tokens at positions start, start + 1, ...: the truth a prefix hit
        is checked against (the request itself never sends the positions it finds cached)."""
        for offset, token in enumerate(token_ids):
            self.truth[request_id].setdefault(start + offset, token)

    def _digest(self, request_id: int, position: int) -> int:
        """A name for the request's tokens [0, position]: equal for two requests exactly when
        their contexts agree up to there."""
        digests, truth = self._digests[request_id], self.truth[request_id]
        while len(digests) <= position:
            digests.append(hash((digests[-1] if digests else 0, truth[len(digests)])))
        return digests[position]

    def _check_no_conflicts(self, items: list[Work]) -> None:
        """No work item writes a block another work item of the plan reads or writes."""
        reads: dict[int, set[int]] = {}
        writes: dict[int, set[int]] = {}
        for work in items:
            rid, start = work.request_id, work.start_position
            end, table = work.end_position, self.tables[work.request_id]
            reads[rid] = set(table[: -(-start // self.block_size)])
            writes[rid] = set(table[start // self.block_size : -(-end // self.block_size)])
        for rid, blocks in writes.items():
            for other in writes:
                if other != rid:
                    assert not blocks & (reads[other] | writes[other]), (
                        f"request {rid} writes blocks {blocks & (reads[other] | writes[other])} request {other} uses"
                    )


def harness_cost_model() -> CostModel:
    """Costs on the harness's clock (one second per iteration): an iteration of up to 64 tokens
    takes 1 s, a block copy 0.1 s each way, so 10 blocks fit an iteration's swap budget."""
    return CostModel(
        forward_base_s=1.0,
        forward_s_per_token=0.01,
        saturation_tokens=64,
        swap_out_s_per_block=0.1,
        swap_in_s_per_block=0.1,
        swap_fixed_s=0.0,
    )


class Harness:
    """A Scheduler, a FakeExecutor and a clock that advances one second per iteration."""

    def __init__(
        self,
        policy: str = "vllm",
        *,
        max_batched_tokens: int = 64,
        num_device_blocks: int = 64,
        num_host_blocks: int = 64,
        max_model_len: int = 128,
        max_num_seqs: int = 256,
        rule: TokenRule = counting_rule,
        tokenizer: Tokenizer | None = None,
        cost_model: CostModel | None = None,
        estimator: str = "history",
        disabled_techniques: tuple[str, ...] = (),
        enable_prefix_caching: bool | None = None,
        max_queue_wait_s: float = 0.0,
        pause_timeout_s: float = 0.0,
        iteration_structure: str = "mixed",
        plan_ahead: bool = False,
    ) -> None:
        """`plan_ahead`: `iterate` plans the next iteration ahead, as the step loop does."""
        self.desc = executor_description(num_device_blocks, num_host_blocks, max_model_len)
        self.plan_ahead = plan_ahead
        self.ahead: pb.StepPlan | None = None  # planned ahead, runs next
        config = SchedulerConfig(
            policy=policy,
            max_batched_tokens=max_batched_tokens,
            max_num_seqs=max_num_seqs,
            check_invariants=True,
            estimator=estimator,
            disabled_techniques=disabled_techniques,
            enable_prefix_caching=enable_prefix_caching,
            max_queue_wait_s=max_queue_wait_s,
            pause_timeout_s=pause_timeout_s,
            iteration_structure=iteration_structure,
        )
        self.scheduler = Scheduler(config, self.desc, tokenizer, cost_model or harness_cost_model())
        self.executor = FakeExecutor(self.desc, rule)
        self.now = 0.0
        self.plans: list[pb.StepPlan] = []
        self.events: dict[int, list[gen.ServerEvent]] = defaultdict(list)

    def add(self, proto: gen.GenerateRequest) -> int:
        request, events = self.scheduler.add(proto, self.now)
        self.executor.know(request.request_id, 0, request.token_ids)
        self._record(events)
        return request.request_id

    def schedule(self, dt: float = 1.0) -> pb.StepPlan:
        self.now += dt
        plan = self.scheduler.schedule(self.now)
        self.plans.append(plan)
        return plan

    def update(self, plan: pb.StepPlan) -> list[tuple[int, gen.ServerEvent]]:
        """Apply the fake executor's result of `plan`; the events as the sessions see them."""
        return self.apply(plan, self.executor.run(plan))

    def apply(self, plan: pb.StepPlan, result: pb.StepResult) -> list[tuple[int, gen.ServerEvent]]:
        """Apply `result`, computed already, of `plan`; the events as the sessions see them."""
        return self._record(self.scheduler.update(plan, result, self.now))

    def step(self, dt: float = 1.0) -> pb.StepPlan:
        plan = self.schedule(dt)
        self.update(plan)
        return plan

    def iterate(self, dt: float = 1.0) -> tuple[pb.StepPlan, list[tuple[int, gen.ServerEvent]]]:
        """One iteration as the step loop runs it: the plan (the one planned ahead, if any), and,
        with plan_ahead, the next one planned before this result is applied; the events."""
        if self.ahead is None:
            plan = self.schedule(dt)
        else:
            plan, self.ahead = self.ahead, None
            self.now += dt
        result = self.executor.run(plan)
        if self.plan_ahead:
            self.ahead = self.scheduler.schedule_ahead(self.now)
            if self.ahead is not None:
                self.plans.append(self.ahead)
        return plan, self.apply(plan, result)

    def resume(self, request_id: int, returned_ids: list[int]) -> None:
        request = self.scheduler.requests.get(request_id)
        self._record(self.scheduler.resume(request_id, returned_ids, self.now))
        assert request is not None  # resume raised otherwise
        self.executor.know(request_id, len(request.token_ids) - len(returned_ids), returned_ids)

    def abort(self, request_id: int) -> None:
        self._record(self.scheduler.abort(request_id))

    def run(self, max_steps: int = 500) -> None:
        """Iterate until no request wants computation (paused requests may remain)."""
        for _ in range(max_steps):
            if not self.scheduler.has_work():
                return
            self.step()
        raise AssertionError(f"still busy after {max_steps} steps")

    def run_until_paused(self, request_id: int, max_steps: int = 200) -> gen.Intercepted:
        """Iterate until `request_id` is intercepted; return the interception."""
        for _ in range(max_steps):
            for rid, event in self.update(self.schedule()):
                if rid == request_id and event.HasField("intercepted"):
                    return event.intercepted
        raise AssertionError(f"request {request_id} not intercepted within {max_steps} steps")

    def _record(self, events: list[Event]) -> list[tuple[int, gen.ServerEvent]]:
        """Render the core's events as the servicer does and record them per session."""
        rendered = [(event.request_id, render(event)) for event in session_events(events)]
        for rid, message in rendered:
            self.events[rid].append(message)
        return rendered

    # ----- what the sessions saw -----

    def finished(self, request_id: int) -> gen.Finished:
        last = self.events[request_id][-1]
        assert last.HasField("finished"), f"request {request_id} has not finished: {last}"
        return last.finished

    def tokens(self, request_id: int) -> list[int]:
        """Every token streamed to the session, in order."""
        return [t for e in self.events[request_id] if e.HasField("tokens") for t in e.tokens.token_ids]

    def text(self, request_id: int) -> str:
        return "".join(e.tokens.text for e in self.events[request_id] if e.HasField("tokens"))

    def interceptions(self, request_id: int) -> list[gen.Intercepted]:
        return [e.intercepted for e in self.events[request_id] if e.HasField("intercepted")]

    def work(self, plan: pb.StepPlan, request_id: int) -> Work | None:
        return next((w for w in unpack_work(plan.work) if w.request_id == request_id), None)
