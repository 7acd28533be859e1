"""Assembling one StepPlan as diffs against what the executor already knows.

The batch goes packed (wire version 2, `svc_common/step_wire.py`): each work item and block-table
change appends plain ints to the builder's lists, and `build` extends the plan's repeated fields
from them once, so that no message is built per request.
"""

from __future__ import annotations

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.block_manager import BlockLayout
from scheduler_svc.request import Request
from svc_common.wire import pack_u32

BlockPairs = list[tuple[int, int]]


def is_empty(plan: pb.StepPlan) -> bool:
    """Whether `plan` tells the executor nothing to do (the step loop does not send it)."""
    return not (
        plan.work.request_ids
        or plan.forget_request_ids
        or plan.swap_out.src_block_ids
        or plan.swap_in.src_block_ids
    )


class PlanBuilder:
    def __init__(self, step_id: int) -> None:
        self.plan = pb.StepPlan(step_id=step_id)
        self._swap_out: BlockPairs = []
        self._swap_in: BlockPairs = []
        self._device_copies: BlockPairs = []
        # The work, one entry per request in each list (WorkBatch's fields).
        self.work_request_ids: list[int] = []
        self.work_start_positions: list[int] = []
        self.work_num_tokens: list[int] = []
        self._work_token_ids: list[int] = []
        self._work_sample: list[bool] = []
        self.work_use_last_rows: list[int] = []  # the entries with use_last_sampled set
        # Per sampling entry, in order: the request's length once its sampled token is appended.
        self.sample_positions: list[int] = []
        # The block-table changes (BlockTableUpdates' fields).
        self._table_request_ids: list[int] = []
        self._table_num_kept: list[int] = []
        self._table_num_appended: list[int] = []
        self._table_appended: list[int] = []

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

    def add_work(
        self,
        request: Request,
        start: int,
        end: int,
        sample: bool,
        layout: BlockLayout,
        use_last_sampled: bool = False,
    ) -> None:
        """Compute positions [start, end) of `request`; register it and sync its table first.
        `use_last_sampled`: position `start` holds the token the executor sampled last for the
        request, which is not known here yet (a decode planned ahead); [start + 1, end) follow."""
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
            self._table_request_ids.append(rid)
            self._table_num_kept.append(kept)
            self._table_num_appended.append(len(device) - kept)
            self._table_appended += device[kept:]
            layout.num_synced = len(device)
        self.work_request_ids.append(rid)
        self.work_start_positions.append(start)
        if use_last_sampled:
            self.work_use_last_rows.append(len(self._work_sample))
            start += 1
        self.work_num_tokens.append(end - start)
        if end - start == 1:  # a decode step, the common case
            self._work_token_ids.append(request.token_ids[start])
        else:
            self._work_token_ids += request.token_ids[start:end]
        self._work_sample.append(sample)
        if sample:
            self.sample_positions.append(end + 1)

    def build(self) -> pb.StepPlan:
        maps = [(self.plan.swap_out, self._swap_out), (self.plan.swap_in, self._swap_in)]
        if self._device_copies:  # rare: leave the field unset otherwise
            maps.append((self.plan.device_copies, self._device_copies))
        for block_map, pairs in maps:
            block_map.src_block_ids = pack_u32([src for src, _ in pairs])
            block_map.dst_block_ids = pack_u32([dst for _, dst in pairs])
        if self._table_request_ids:
            tables = self.plan.block_table_updates
            tables.request_ids.extend(self._table_request_ids)
            tables.num_kept_blocks.extend(self._table_num_kept)
            tables.num_appended_blocks.extend(self._table_num_appended)
            tables.appended_block_ids = pack_u32(self._table_appended)
        work = self.plan.work
        work.request_ids.extend(self.work_request_ids)
        work.start_positions.extend(self.work_start_positions)
        work.num_tokens.extend(self.work_num_tokens)
        work.token_ids = pack_u32(self._work_token_ids)
        work.sample.extend(self._work_sample)
        if self.work_use_last_rows:
            use_last = [False] * len(self._work_sample)
            for row in self.work_use_last_rows:
                use_last[row] = True
            work.use_last_sampled.extend(use_last)
        return self.plan
