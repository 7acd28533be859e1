"""A randomised stand-in for the scheduler that stresses the executor's plan contract.

It drives several greedy requests to completion with plans that split prompts into random
chunks, mix them with other requests' decode tokens, swap random tails of paused requests out to
host blocks and back into different device blocks, discard tails to be recomputed, and allocate
blocks at random from small pools (so ids are non-contiguous and reused), and (with
`device_copies`) move tails of block tables to other device blocks by device-side copies, as
copy-on-write does. Whatever happens to the KV blocks, the tokens must come out as without any of it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np

from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work, unpack_sampled
from svc_common.wire import pack_u32

StepFn = Callable[[pb.StepPlan], pb.StepResult]


@dataclasses.dataclass
class DrivenRequest:
    request_id: int
    tokens: list[int]  # prompt, then every sampled token
    num_prompt_tokens: int
    num_new_tokens: int  # tokens to sample in all
    device_blocks: list[int] = dataclasses.field(default_factory=list)
    host_blocks: list[int] = dataclasses.field(default_factory=list)  # the segment after the device prefix
    num_computed: int = 0  # positions whose KV is valid (device prefix + host segment)
    logits: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # position -> logits row
    registered: bool = False

    @property
    def is_done(self) -> bool:
        return len(self.tokens) - self.num_prompt_tokens >= self.num_new_tokens


class PlanDriver:
    def __init__(
        self,
        step: StepFn,
        *,
        block_size: int,
        num_device_blocks: int,
        num_host_blocks: int,
        seed: int,
        return_logits: bool = True,
        device_copies: bool = False,
    ) -> None:
        self._step = step
        self.block_size = block_size
        self._rng = random.Random(seed)
        self._free_device = list(range(num_device_blocks))
        self._free_host = list(range(num_host_blocks))
        self._return_logits = return_logits
        self._device_copies = device_copies
        self.num_copied = 0
        self._step_id = 0
        self.num_swapped_out = self.num_swapped_in = self.num_discarded = 0
        # The plan being built: its table changes (request id -> kept, appended) and work.
        self._tables: dict[int, tuple[int, list[int]]] = {}
        self._work: list[Work] = []

    def run(self, prompts: list[list[int]], num_new_tokens: int) -> list[DrivenRequest]:
        requests = [DrivenRequest(1000 + i, list(p), len(p), num_new_tokens) for i, p in enumerate(prompts)]
        while any(not r.is_done for r in requests):
            self._iteration([r for r in requests if not r.is_done])
        self._finish(requests)
        return requests

    # One iteration: pick a random subset to compute, disturb some of the others.
    def _iteration(self, active: list[DrivenRequest]) -> None:
        plan = pb.StepPlan(step_id=self._next_step_id())
        self._tables, self._work = {}, []
        chosen = self._rng.sample(active, self._rng.randint(1, len(active)))
        idle = [r for r in active if r not in chosen and r.registered]
        swap_out: list[tuple[int, int]] = []
        for request in idle:
            roll = self._rng.random()
            if roll < 0.25:
                swap_out += self._swap_out_tail(request, plan)
            elif roll < 0.35:
                self._discard_tail(request, plan)
        swap_in: list[tuple[int, int]] = []
        copies: list[tuple[int, int]] = []
        copied_from: list[int] = []  # reusable only after this plan: a copy reads them after the swaps
        work_items: list[DrivenRequest] = []
        for request in chosen:
            if not request.registered:
                plan.new_requests.add(request_id=request.request_id, sampling=pb.RequestSampling())
                request.registered = True
            if self._device_copies and self._rng.random() < 0.3:
                copies += self._copy_tail(request, plan, copied_from)
            swap_in += self._swap_in(request, plan)
            if self._add_work(request, plan):
                work_items.append(request)
        _set_map(plan.swap_out, swap_out)
        _set_map(plan.swap_in, swap_in)
        if copies:
            _set_map(plan.device_copies, copies)
        plan.block_table_updates.CopyFrom(
            pack_table_updates(TableUpdate(rid, kept, blocks) for rid, (kept, blocks) in self._tables.items())
        )
        plan.work.CopyFrom(pack_work(self._work))
        result = self._step(plan)
        assert not result.HasField("error"), result.error
        self._free_device += copied_from
        sampled = {s.request_id: s for s in unpack_sampled(result.sampled)}
        for request in work_items:
            token = sampled[request.request_id]
            if self._return_logits:
                assert token.logits is not None
                request.logits[len(request.tokens)] = token.logits.copy()
            request.tokens.append(token.token_id)

    def _add_work(self, request: DrivenRequest, plan: pb.StepPlan) -> bool:
        if request.host_blocks:  # its context is not all on the device: it cannot compute
            return False
        pending = len(request.tokens) - request.num_computed
        chunk = self._rng.randint(1, pending) if pending > 1 else 1
        start = request.num_computed
        if not self._grow(request, start + chunk, plan):
            return False
        samples = start + chunk == len(request.tokens)
        # A decode token may instead be the one the executor sampled last: it knows it already.
        has_sampled = len(request.tokens) > request.num_prompt_tokens
        use_last_sampled = pending == 1 and has_sampled and self._rng.random() < 0.5
        self._work.append(
            Work(
                request.request_id,
                start,
                [] if use_last_sampled else request.tokens[start : start + chunk],
                sample=samples,
                use_last_sampled=use_last_sampled,
                return_logits=samples and self._return_logits,
            )
        )
        request.num_computed += chunk
        return samples

    def _grow(self, request: DrivenRequest, num_tokens: int, plan: pb.StepPlan) -> bool:
        needed = -(-num_tokens // self.block_size) - len(request.device_blocks)
        if needed > len(self._free_device):
            return False
        if needed > 0:
            new_blocks = self._take(self._free_device, needed)
            self._update_table(plan, request, len(request.device_blocks), new_blocks)
            request.device_blocks += new_blocks
        return True

    def _swap_out_tail(self, request: DrivenRequest, plan: pb.StepPlan) -> list[tuple[int, int]]:
        """Move the last k device blocks to the front of the host segment."""
        k = min(self._rng.randint(1, 3), len(request.device_blocks), len(self._free_host))
        if k == 0 or request.num_computed == 0:
            return []
        moved = request.device_blocks[-k:]
        host = self._take(self._free_host, k)
        request.device_blocks = request.device_blocks[:-k]
        request.host_blocks = host + request.host_blocks
        self._update_table(plan, request, len(request.device_blocks), [])
        self._free_device += moved
        self.num_swapped_out += k
        return list(zip(moved, host, strict=True))

    def _copy_tail(
        self, request: DrivenRequest, plan: pb.StepPlan, copied_from: list[int]
    ) -> list[tuple[int, int]]:
        """Move the last k device blocks to fresh ones by device-side copies (before the forward)."""
        k = min(self._rng.randint(1, 3), len(request.device_blocks), len(self._free_device))
        if k == 0:
            return []
        old = request.device_blocks[-k:]
        new = self._take(self._free_device, k)
        request.device_blocks = request.device_blocks[:-k] + new
        self._update_table(plan, request, len(request.device_blocks) - k, new)
        copied_from += old
        self.num_copied += k
        return list(zip(old, new, strict=True))

    def _swap_in(self, request: DrivenRequest, plan: pb.StepPlan) -> list[tuple[int, int]]:
        """Bring the whole host segment back, into freshly drawn device blocks."""
        k = len(request.host_blocks)
        if k == 0 or k > len(self._free_device):
            return []
        device = self._take(self._free_device, k)
        pairs = list(zip(request.host_blocks, device, strict=True))
        self._free_host += request.host_blocks
        request.host_blocks = []
        self._update_table(plan, request, len(request.device_blocks), device)
        request.device_blocks += device
        self.num_swapped_in += k
        return pairs

    def _discard_tail(self, request: DrivenRequest, plan: pb.StepPlan) -> None:
        """Drop the host segment and some device blocks: those positions get recomputed."""
        keep = self._rng.randint(0, len(request.device_blocks))
        self._free_host += request.host_blocks
        self._free_device += request.device_blocks[keep:]
        request.host_blocks = []
        request.device_blocks = request.device_blocks[:keep]
        request.num_computed = min(request.num_computed, keep * self.block_size)
        self._update_table(plan, request, keep, [])
        self.num_discarded += 1

    def _finish(self, requests: list[DrivenRequest]) -> None:
        plan = pb.StepPlan(step_id=self._next_step_id())
        plan.forget_request_ids.extend(r.request_id for r in requests if r.registered)
        result = self._step(plan)
        assert not result.HasField("error"), result.error

    def _update_table(
        self, plan: pb.StepPlan, request: DrivenRequest, keep: int, appended: list[int]
    ) -> None:
        rid = request.request_id
        if rid in self._tables:
            # Fold into the update already in this plan: its table is request.device_blocks.
            kept = min(self._tables[rid][0], keep)
            self._tables[rid] = (kept, request.device_blocks[kept:keep] + appended)
            return
        self._tables[rid] = (keep, appended)

    def _take(self, pool: list[int], n: int) -> list[int]:
        taken = self._rng.sample(pool, n)
        for block in taken:
            pool.remove(block)
        return taken

    def _next_step_id(self) -> int:
        self._step_id += 1
        return self._step_id


def _set_map(block_map: pb.BlockMap, pairs: list[tuple[int, int]]) -> None:
    block_map.src_block_ids = pack_u32([s for s, _ in pairs])
    block_map.dst_block_ids = pack_u32([d for _, d in pairs])
