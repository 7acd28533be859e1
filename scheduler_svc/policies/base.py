"""The policy interface: what happens to a paused request's KV context, and to its queue place.

A policy answers three questions:

- at the pause (`on_pause`): preserve, discard or swap the context right away;
- every iteration (`manage_paused`, only for policies with `manages_paused`): revisit the paused
  contexts, given the iteration's budgets, and move or free some of them (`PausedDecision`s);
- at the resume (`arrival_on_resume`, `waiting_place_on_resume`): its FCFS priority, and where it
  enters the waiting queue if it must compute more than a decode (queues.py); a request
  preempted for memory enters it at `waiting_place_on_preempt`.

It also says how the iteration's swaps and recomputation are bounded (`swap_budget_blocks`,
`pipelines_swaps`, `chunks_recompute`): the baselines copy whole contexts at once, stalling the
batch, and recompute within the token budget like any prefill.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.cost_model import CostModel
from scheduler_svc.queues import WaitingPlace
from scheduler_svc.request import Request


class PauseAction(enum.Enum):
    PRESERVE = "preserve"  # keep the device blocks through the call
    DISCARD = "discard"  # free them; recompute the context after the call
    SWAP = "swap"  # copy them to host memory, and back after the call


@dataclasses.dataclass(frozen=True)
class PausedContext:
    """A paused request that still holds KV blocks, as the policy sees it in one iteration."""

    request: Request
    num_device_blocks: int  # blocks of its context on the device (the front of the context)
    num_host_blocks: int  # blocks right after them, in host memory
    device_tokens: int  # context tokens whose KV is on the device
    computed_tokens: int  # context tokens whose KV is on the device or the host


@dataclasses.dataclass(frozen=True)
class IterationView:
    """What the policy knows of the iteration being planned."""

    now_s: float
    decode_tokens: int  # tokens the running batch computes this iteration
    batch_context_tokens: int  # KV tokens the running batch holds on the device
    others_waiting: bool  # requests wait to compute: the spare token budget is contended
    token_budget: int  # tokens an iteration computes at most
    swap_out_budget_blocks: int  # blocks that may still be copied device -> host this iteration
    host_free_blocks: int
    block_size_tokens: int
    memory_is_short: bool = True  # a request could not get blocks last iteration, or almost none are free


@dataclasses.dataclass(frozen=True)
class PausedDecision:
    """Swap the last `num_blocks` device blocks of a paused request out, or discard its whole
    context (device and host)."""

    request_id: int
    action: PauseAction  # SWAP or DISCARD
    num_blocks: int = 0  # for SWAP


class Policy(abc.ABC):
    """A scheduling policy. Deterministic given its inputs."""

    name: ClassVar[str]
    description: ClassVar[str]
    manages_paused: ClassVar[bool] = False  # manage_paused is called every iteration
    # Swaps are bounded by what an iteration's compute hides, and pipelined with it (the simulator
    # hides them; the executor on a GPU overlaps them layer by layer).
    pipelines_swaps: bool = False
    chunks_recompute: bool = True  # recomputation stays within the token budget
    # The default of SchedulerConfig.enable_prefix_caching under this policy. Off for the paper's
    # baselines (their figures stay those of vLLM 0.2) and for infercept (not evaluated with it yet).
    prefix_caching: ClassVar[bool] = False
    # manage_paused is called every iteration with paused contexts, not only when memory is short
    # (the default of revisits_paused).
    revisits_paused_always: ClassVar[bool] = False
    # manage_paused also sees contexts wholly on the host (to discard them); False: only those
    # holding device blocks (cheaper: most paused contexts may be on the host).
    revisits_host_contexts: ClassVar[bool] = True
    # Only the simulator can run it (the real server refuses it): e.g. `ideal`, whose restored
    # contexts cost nothing.
    simulator_only: ClassVar[bool] = False
    # The simulator charges no forward time for recomputed tokens (`ideal`'s free restore).
    restores_for_free: ClassVar[bool] = False
    # Where a resumed request that must compute more than a decode enters the waiting queue, and
    # where one preempted for memory does (queues.WaitingPlace; ARRIVAL: by its arrival time).
    waiting_place_on_resume: ClassVar[WaitingPlace] = WaitingPlace.ARRIVAL
    waiting_place_on_preempt: ClassVar[WaitingPlace] = WaitingPlace.ARRIVAL
    # A request short of device blocks may take those of a newer paused request (dropping its
    # context). vLLM 0.2 preempts running requests only: paused contexts are not in its running list.
    preempts_paused_contexts: ClassVar[bool] = True
    # When no request waits, the oldest returned request whose context is still on the host is
    # turned into a recomputation (InferCept's authors' `_active_discard`), once per iteration.
    discards_swapped_when_idle: ClassVar[bool] = False

    @abc.abstractmethod
    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        """Decide what to do with `request`'s context now that it is intercepted."""

    def arrival_on_resume(self, request: Request, now: float) -> float:
        """The FCFS priority (arrival time) a request takes when its tool returns."""
        return request.arrival_s

    def manage_paused(self, paused: list[PausedContext], view: IterationView) -> list[PausedDecision]:
        """Revisit the paused contexts this iteration (policies with `manages_paused`)."""
        return []

    def revisits_paused(self, now: float, blocks: BlockManager, memory_is_short: bool) -> bool:
        """Whether manage_paused must see the paused contexts in the iteration planned at `now`
        (policies with `manages_paused`; `memory_is_short` as IterationView has it). A revisit
        costs more than its own time: an iteration that revisits is not planned ahead of the last
        result (Scheduler.schedule_ahead), so answer False wherever manage_paused would decide
        nothing. Default: when memory is short, or always with `revisits_paused_always`."""
        return memory_is_short or self.revisits_paused_always

    def call_ended(self, request: Request, duration_s: float) -> None:  # noqa: B027 (optional hook)
        """The tool call of `request` returned after `duration_s` seconds (learning policies)."""

    def evict_rank(self, request: Request, now: float) -> float | None:
        """The eviction rank of the device blocks a paused `request` releases now (discard or
        swap-out), or a running one preempted for memory, while they stay in the prefix cache:
        ranked blocks are evicted after the unranked (LRU) ones, highest rank first. None: plain
        LRU (the default)."""
        return None

    def admission_reserve_blocks(self, num_device_blocks: int, now: float) -> int:
        """Device blocks (of `num_device_blocks`) that a request starting from nothing must leave
        free or evictable at `now`, else it waits: room kept for the running batch to grow without
        preempting anyone (decode-first iterations). 0: none (the default)."""
        return 0

    def preempted(self, request: Request, now: float) -> None:  # noqa: B027 (optional hook)
        """`request` was preempted for memory at `now` (its context dropped)."""

    def bind_cost_model(self, cost: CostModel | None) -> None:  # noqa: B027 (optional hook)
        """The cost model of the executor this policy schedules for (None if not profiled)."""

    def swap_budget_blocks(self, expected_tokens: int) -> int | None:
        """Blocks an iteration computing `expected_tokens` tokens may copy (in and out together);
        None for no bound."""
        return None

    def swap_limits_blocks(self, num_free_device_tokens: int, block_size: int) -> tuple[int, int] | None:
        """Separate limits (swap-in blocks, swap-out blocks) for an iteration that starts with
        `num_free_device_tokens` free on the device, in place of swap_budget_blocks's shared one;
        None (the default): swap_budget_blocks bounds both directions together."""
        return None
