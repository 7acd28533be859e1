"""The live requests and every index over them, changed only through transition methods.

A live request is in exactly one state, and each state has its indexes::

    ACTIVE   wants computation   -> queues (ready or waiting);  swapping_in if its host
                                    segment is still out after a resume
    PAUSED   inside a tool call  -> paused (pause order, device blocks held);
                                    pending_swap_out while its swap-out is not yet planned
    (gone)   finished / aborted  -> in no index; its blocks freed; pending_forget until the
                                    next plan tells the executor (if it ever knew it)

Every transition below keeps all of them consistent, so no exit path can leave a trace
behind: `finish` removes a request from every index whatever its state, and `drop_context`
cancels whatever its context was doing (a planned swap-out, a swap-in in progress, a held
pause). The block manager's per-request layout is created by `admit` and freed by `finish`.
"""

from __future__ import annotations

from collections.abc import Iterator

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.paused_requests import PausedRequests
from scheduler_svc.plan_builder import BlockPairs
from scheduler_svc.policies.base import PauseAction
from scheduler_svc.queues import ComputeQueues, WaitingPlace
from scheduler_svc.request import FinishReason, Request, Status


class RequestTable:
    def __init__(self, blocks: BlockManager, ready_includes_resumed: bool = False) -> None:
        """`ready_includes_resumed`: a resumed context rejoins the running batch (vLLM 0.2's
        iterations, `prefill-first`; queues.py)."""
        self.blocks = blocks
        self.requests: dict[int, Request] = {}  # every live request
        self.queues = ComputeQueues(ready_includes_resumed)  # ACTIVE requests, in queue order
        self.paused = PausedRequests()
        # Resumed requests whose host segment is still (partly) out: they claim swap-in budget.
        self.swapping_in: set[int] = set()
        # Swap-outs decided between plans (at a pause): request id -> (device, host) pairs.
        self.pending_swap_out: dict[int, BlockPairs] = {}
        # Ended requests the executor knows: the next plan tells it to forget them.
        self.pending_forget: list[int] = []

    def __len__(self) -> int:
        return len(self.requests)

    def __contains__(self, request_id: int) -> bool:
        return request_id in self.requests

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests.values())

    def get(self, request_id: int) -> Request | None:
        return self.requests.get(request_id)

    @property
    def has_pending_plan_work(self) -> bool:
        """Whether the next plan has something to tell the executor besides computation."""
        return bool(self.pending_forget or self.pending_swap_out)

    # ----- transitions -----

    def admit(self, request: Request) -> None:
        """A new ACTIVE request: queued by its state (a resubmitted one may be mid-generation)."""
        assert request.request_id not in self.requests, f"request {request.request_id} admitted twice"
        self.requests[request.request_id] = request
        self.queues.place(request, self.blocks.layout(request.request_id))

    def requeue(
        self, request: Request, waiting_place: WaitingPlace = WaitingPlace.ARRIVAL, now_s: float = 0.0
    ) -> None:
        """An ACTIVE request's readiness may have changed (it computed, or lost its context); if
        it waits, at `waiting_place` (queues.py; BACK: as if it arrived at `now_s`)."""
        if request.status is Status.ACTIVE:
            self.queues.place(request, self.blocks.layouts[request.request_id], waiting_place, now_s)

    def pause(self, request: Request, action: PauseAction, evict_rank: float | None = None) -> None:
        """ACTIVE -> PAUSED, doing `action` with its context now: SWAP moves every device block
        to the host (copied by the next plan; the caller checked that it fits), DISCARD frees the
        context (ranked by `evict_rank` in the prefix cache), PRESERVE keeps it held."""
        rid = request.request_id
        request.status = Status.PAUSED
        self.queues.remove(request)
        if action is PauseAction.SWAP:
            self.pending_swap_out[rid] = self.blocks.swap_out(rid, len(self.blocks.layouts[rid].device))
        elif action is PauseAction.DISCARD:
            self.drop_context(request, evict_rank)
        self.paused.add(request, len(self.blocks.layouts[rid].device))

    def resume(
        self, request: Request, waiting_place: WaitingPlace = WaitingPlace.ARRIVAL, now_s: float = 0.0
    ) -> None:
        """PAUSED -> ACTIVE: queued again (at the arrival time it has now); if it waits, at
        `waiting_place` (BACK: as if it arrived at `now_s`)."""
        rid = request.request_id
        assert request.status is Status.PAUSED, f"request {rid} resumes while {request.status.value}"
        self.paused.remove(rid)
        request.status, request.pending_call = Status.ACTIVE, None
        layout = self.blocks.layouts[rid]
        self.queues.place(request, layout, waiting_place, now_s)
        if layout.host:
            self.swapping_in.add(rid)

    def swap_out_paused(self, request: Request, num_blocks: int, evict_rank: float | None) -> BlockPairs:
        """Move the last `num_blocks` device blocks of a paused request to the host (their device
        copies stay cached with `evict_rank` under prefix caching)."""
        rid = request.request_id
        pairs = self.blocks.swap_out(rid, num_blocks, evict_rank)
        self.paused.hold(rid, len(self.blocks.layouts[rid].device))
        return pairs

    def swapped_in(self, request: Request) -> None:
        """The request's host segment is all back on the device."""
        self.swapping_in.discard(request.request_id)

    def drop_context(
        self,
        request: Request,
        evict_rank: float | None = None,
        waiting_place: WaitingPlace = WaitingPlace.ARRIVAL,
    ) -> None:
        """Free the request's context, device blocks (into the prefix cache, ranked by
        `evict_rank`, when caching is on) and host blocks; it recomputes what is gone when its
        turn comes, waiting at `waiting_place` (BACK: as if it arrived at the latest clock
        reading). Cancels a planned swap-out and a swap-in in progress."""
        rid = request.request_id
        self.paused.release(rid)
        self.pending_swap_out.pop(rid, None)
        self.swapping_in.discard(rid)
        self.blocks.drop_after(rid, 0, evict_rank)
        request.num_computed = 0
        self.requeue(request, waiting_place, self.paused.last_now or 0.0)

    def finish(self, request: Request, reason: FinishReason) -> None:
        """Any state -> gone: out of every index, every block freed, the executor told."""
        rid = request.request_id
        request.status, request.finish_reason = Status.FINISHED, reason
        self.queues.remove(request)
        self.paused.remove(rid)
        self.swapping_in.discard(rid)
        self.pending_swap_out.pop(rid, None)
        self.blocks.free(rid)
        if request.executor_known:
            self.pending_forget.append(rid)
        del self.requests[rid]

    def take_plan_diffs(self) -> tuple[list[int], list[BlockPairs]]:
        """The ids to forget and the swap-outs decided since the last plan (handed over once)."""
        forget, swap_outs = self.pending_forget, list(self.pending_swap_out.values())
        self.pending_forget, self.pending_swap_out = [], {}
        return forget, swap_outs

    def reset_executor_state(self) -> None:
        """The executor lost everything: every context is gone, every request recomputes (paused
        ones when they resume); nothing is pending for it."""
        for request in self.requests.values():
            self.blocks.drop_after(request.request_id, 0)
            request.num_computed = 0
            request.executor_known = False
            self.requeue(request)
        self.pending_swap_out, self.pending_forget = {}, []
        self.paused.release_all()
        self.swapping_in.clear()
