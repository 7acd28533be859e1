"""Assembling one StepPlan as diffs against what the executor already knows."""

from __future__ import annotations

import struct

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.request import Request
from svc_common.wire import pack_u32

BlockPairs = list[tuple[int, int]]
_ONE_U32 = struct.Struct("<I")  # packed u32, one value


class PlanBuilder:
    def __init__(self, step_id: int) -> None:
        self.plan = pb.StepPlan(step_id=step_id)
        self._work = self.plan.work
        self._swap_out: BlockPairs = []
        self._swap_in: BlockPairs = []
        self._device_copies: BlockPairs = []

    def forget(self, request_ids: list[int]) -> None:
        self.plan.forget_request_ids.extend(request_ids)

    def swap_out(self, pairs: BlockPairs) -> None:
        self._swap_out += pairs

    def swap_in(self, pairs: BlockPairs) -> None:
        self._swap_in += pairs

    def device_copy(self, pairs: BlockPairs) -> None:
        """Copy device blocks (source, destination) before the forward: copy-on-write of shared blocks."""
        self._device_copies += pairs

    @property
    def num_swapped_blocks(self) -> tuple[int, int]:
        """Blocks copied (device -> host, host -> device) by the plan so far."""
        return len(self._swap_out), len(self._swap_in)

    def add_work(self, request: Request, start: int, end: int, sample: bool, layout: BlockLayout) -> None:
        """Compute positions [start, end) of `request`; register it and sync its table first."""
        rid = request.request_id
        if not request.executor_known:
            s = request.sampling
            sampling = pb.RequestSampling(
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed
            )
            self.plan.new_requests.add(request_id=rid, sampling=sampling)
            request.executor_known, layout.num_synced = True, 0
        device = layout.device
        if layout.num_synced != len(device) or not device:
            kept = layout.num_synced
            self.plan.block_table_updates.add(
                request_id=rid, num_kept_blocks=kept, appended_block_ids=pack_u32(device[kept:])
            )
            layout.num_synced = len(device)
        # One token (a decode step) is the common case: pack it without building an array.
        tokens = request.token_ids
        packed = _ONE_U32.pack(tokens[start]) if end - start == 1 else pack_u32(tokens[start:end])
        self._work.add(request_id=rid, start_position=start, token_ids=packed, sample=sample)

    def build(self) -> pb.StepPlan:
        maps = [(self.plan.swap_out, self._swap_out), (self.plan.swap_in, self._swap_in)]
        if self._device_copies:  # rare: leave the field unset otherwise
            maps.append((self.plan.device_copies, self._device_copies))
        for block_map, pairs in maps:
            block_map.src_block_ids = pack_u32([src for src, _ in pairs])
            block_map.dst_block_ids = pack_u32([dst for _, dst in pairs])
        return self.plan
