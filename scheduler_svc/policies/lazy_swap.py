"""Lazy swap: pay for a paused context only when its memory is actually needed.

InferCept decides once per pause and pays in full: a discarded context is freed at once, a
swapped one comes back only after its call. This policy instead keeps every copy it can for as
long as nobody needs the memory:

- **opportunistic swap** (`opportunistic-swap`): every iteration, the swap-out budget left after
  swap-ins (what the link moves within the forward pass) copies paused contexts to the host,
  furthest expected return first. The device copies stay in the prefix cache, so the context is
  on the device *and* on the host: when memory is needed its device blocks go at no cost, and a
  call that returns before that takes them back with no copy (BlockManager.reattach_cached).
  A context is copied only when reloading it from the host is cheaper than recomputing it, under
  the cost model measured online (on a CPU the link is memory itself; on a GPU it is PCIe).
- **lazy discard** with **ranked eviction** (`ranked-eviction`): a context that is not (yet) on
  the host is released into the prefix cache when memory is short, not wiped: it loses blocks
  only when another request takes them, furthest expected return first (the cache's eviction
  rank, prefix_cache.py), and copies that have a host copy before those that have none. Off:
  the cache's plain LRU order.
- **hold what is cheap to hold** (`hold-cheap`): under memory pressure a context is released
  only when holding it for its expected remaining time costs more device time than reloading it
  (its share of the pool x remaining time against the reload's time); the others stay owned.
  Off: every paused context not being copied out is released when memory is short.
- **learned durations** (`learned-durations`): the expected return is the history estimator's
  remaining time given what has elapsed (per tool), with the client's hint until a tool has
  history. Off: the paper's "as long again as it has lasted".
- **TTL pinning** (`ttl-pin`): where a tool's durations are tight (p90 <= 2 x median) and
  reloading costs more than holding (Continuum's rule), the context stays owned for the TTL.
- **program-level order** (`program-order`): a returning turn keeps its program's first arrival.
  Off: it joins the back of the queue.
- **admission reserve** (`admission-reserve`): a new request starts only if its context leaves
  a share of the pool (reserve_share) free or evictable for the running batch to grow; it waits
  otherwise. Without it, a full pool makes every decode that opens a block preempt the newest
  request, whose context is recomputed: on the trace at 5 req/s that recomputation was a third of
  the forward tokens. Off: new requests start whenever their first chunk fits.

Without memory pressure a paused context stays where it is (owned) until the link has copied it:
nothing is recomputed or reloaded that did not have to be. Below the copy watermark nothing is
revisited at all (`revisits_paused`), so the decode iterations are planned ahead as preserve's are.
The watermark follows the measured link (`copy_watermark_share`): half the pool on a slow link,
later the more a few iterations' swap budgets can move, a full pool where they move most of it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.cost_model import CostModel
from scheduler_svc.estimators import DurationEstimator, ElapsedEstimator, HistoryEstimator
from scheduler_svc.policies.base import IterationView, PauseAction, PausedContext, PausedDecision, Policy
from scheduler_svc.request import Request

LAZY_SWAP_TECHNIQUES = (
    "opportunistic-swap",
    "ranked-eviction",
    "hold-cheap",
    "learned-durations",
    "ttl-pin",
    "program-order",
    "admission-reserve",
)

MAX_HOST_COPY_STRETCH = 100.0  # bound on the rank's stretch for blocks with a host copy
# The copy watermark from the link: the share of the pool a link that moves nothing in time must
# copy ahead for (the watermark's first, fixed value), and the iterations after memory runs short
# within which the link may still copy what is needed (LazySwapPolicy.copy_watermark_share).
SLOW_LINK_WATERMARK_SHARE = 0.5
CATCH_UP_ITERATIONS = 4
# The admission reserve holds for this long after the last preemption (s): memory that ran out
# once runs out again while the load lasts; a pool that never runs out holds no one back.
RESERVE_HOLD_S = 60.0


@dataclasses.dataclass(frozen=True)
class LazySwapOptions:
    opportunistic_swap: bool = True
    ranked_eviction: bool = True
    hold_cheap: bool = True
    learned_durations: bool = True
    ttl_pin: bool = True
    program_order: bool = True
    admission_reserve: bool = True
    reserve_share: float = 0.1  # of the device pool, kept for the running batch to grow
    # Copies start once requests own this share of the device pool (the running batch, the
    # paused contexts, prompts being computed): below it memory cannot run short soon, and a copy
    # only costs (on a CPU the "link" is the cores the forward runs on: 10-20% of the latency of
    # `make demo`'s load, where the pool never filled). None: from the measured link
    # (LazySwapPolicy.copy_watermark_share); a share in [0, 1] overrides it.
    copy_watermark_share: float | None = None
    ttl_quantile: float = 0.9  # the pin covers this share of the tool's calls
    tight_ratio: float = 2.0  # a tool's durations are tight when p90 <= tight_ratio x median

    def __post_init__(self) -> None:
        share = self.copy_watermark_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"copy_watermark_share must be in [0, 1] or None, got {share}")

    @classmethod
    def with_disabled(cls, disabled: tuple[str, ...]) -> LazySwapOptions:
        """Options with the named LAZY_SWAP_TECHNIQUES off; ValueError naming an unknown one."""
        unknown = sorted(set(disabled) - set(LAZY_SWAP_TECHNIQUES))
        if unknown:
            raise ValueError(f"unknown technique(s) {unknown}; choose from {list(LAZY_SWAP_TECHNIQUES)}")
        return cls(**{t.replace("-", "_"): t not in disabled for t in LAZY_SWAP_TECHNIQUES})


class LazySwapPolicy(Policy):
    name = "lazy-swap"
    description = (
        "copy paused contexts to the host in the link's idle time keeping the device copy cached; "
        "release into the prefix cache only when memory is short, evicting the furthest expected "
        "return first; learned per-tool durations; TTL pins; program-level FCFS; new requests leave "
        "the running batch a reserve"
    )
    manages_paused: ClassVar[bool] = True
    revisits_host_contexts: ClassVar[bool] = False  # only what holds device blocks is copied or released
    prefix_caching: ClassVar[bool] = True
    pipelines_swaps = True

    def __init__(self, options: LazySwapOptions | None = None) -> None:
        self.options = options or LazySwapOptions()
        self.history = HistoryEstimator()
        self.estimator: DurationEstimator = (
            self.history if self.options.learned_durations else ElapsedEstimator()
        )
        self.cost: CostModel | None = None
        self._pinned_until_s: dict[int, float] = {}  # request id -> when its pin expires
        # This iteration's swap-outs -> recompute time / copy-back time (read by evict_rank).
        self._swapping_out: dict[int, float] = {}
        self._pool_tokens = 0  # the device pool's capacity, tokens (known from the first pause)
        self._preempted_at_s: float | None = None  # the last preemption for memory

    def bind_cost_model(self, cost: CostModel | None) -> None:
        if cost is None:
            raise ValueError("the lazy-swap policy needs the executor's cost model (its Profile)")
        self.cost = cost

    def swap_budget_blocks(self, expected_tokens: int) -> int | None:
        cost = self._cost()
        return cost.swap_budget_blocks(cost.forward_s(max(expected_tokens, 1)))

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        self._pool_tokens = blocks.device.num_total * blocks.block_size
        if self.options.ttl_pin:
            ttl_s = self._ttl_s(request, blocks)
            if ttl_s is not None:
                self._pinned_until_s[request.request_id] = now + ttl_s
        # Kept until the link copies it out or memory runs short (manage_paused).
        return PauseAction.PRESERVE

    def admission_reserve_blocks(self, num_device_blocks: int, now: float) -> int:
        """A share of the pool kept for the running batch's growth (`admission-reserve`) while
        preemption has been happening (within RESERVE_HOLD_S): a new request starts only if its
        context leaves it free, so that running requests' new blocks preempt (and recompute) no
        one. Where memory never runs out (the CPU stack's pool), it holds no one back. Off: none."""
        last_s = self._preempted_at_s
        if not self.options.admission_reserve or last_s is None or now - last_s > RESERVE_HOLD_S:
            return 0
        return round(self.options.reserve_share * num_device_blocks)

    def preempted(self, request: Request, now: float) -> None:
        self._preempted_at_s = now

    def arrival_on_resume(self, request: Request, now: float) -> float:
        return request.arrival_s if self.options.program_order else now

    def call_ended(self, request: Request, duration_s: float) -> None:
        self._pinned_until_s.pop(request.request_id, None)
        if request.pending_call is not None:
            self.history.observe(request.pending_call.tool, duration_s)

    def evict_rank(self, request: Request, now: float) -> float | None:
        """The expected return time (s), the remaining part stretched by how much cheaper the
        reload from the host is than recomputation when the blocks being released have a host
        copy (losing them costs only the copy back); `now` for a preempted request (it waits at
        its queue place and is back first). None (LRU) with ranked eviction off."""
        if not self.options.ranked_eviction:
            return None
        if request.pending_call is None:
            return now
        remaining_s = self.remaining_s(request, now)
        return now + remaining_s * self._swapping_out.get(request.request_id, 1.0)

    def remaining_s(self, request: Request, now: float) -> float:
        """Expected seconds until the paused request's call returns."""
        call = request.pending_call
        assert call is not None, f"request {request.request_id} is paused without a call"
        return self.estimator.remaining_s(call.tool, now - call.paused_at_s, call.expected_duration_s)

    def revisits_paused(self, now: float, blocks: BlockManager, memory_is_short: bool) -> bool:
        """When memory is short (releases), or when copies may go out: the pool is filling (the
        copy watermark) and the host has room. Elsewhere (a pool that never fills, as on `make
        demo`'s CPU load) nothing is revisited, and every decode iteration can be planned ahead."""
        return memory_is_short or (
            self.options.opportunistic_swap and blocks.host.num_free > 0 and self._pool_filling(blocks)
        )

    def manage_paused(self, paused: list[PausedContext], view: IterationView) -> list[PausedDecision]:
        """Copy out what the budget and the host allow, furthest expected return first; when memory
        is short, release the rest (unpinned, or pinned past their TTL) into the prefix cache.
        Called only in the iterations that revisits_paused asks for."""
        now = view.now_s
        # Only what holds device blocks can be copied out or released; the rest (most of the
        # paused, once copied out) is not looked at: this runs every iteration the pool is filling.
        holders = [c for c in paused if c.num_device_blocks]
        live = {c.request.request_id for c in holders}
        self._pinned_until_s = {r: t for r, t in self._pinned_until_s.items() if r in live and t > now}
        self._swapping_out = {}
        short = view.memory_is_short
        swap_left, host_free = view.swap_out_budget_blocks, view.host_free_blocks
        if not short:  # only copies: of the unpinned, if the link and the host have room
            holders = [c for c in holders if c.request.request_id not in self._pinned_until_s]
            if not (self.options.opportunistic_swap and swap_left > 0 and host_free > 0):
                return []
        order = sorted(holders, key=lambda c: (-self.remaining_s(c.request, now), c.request.request_id))
        decisions: list[PausedDecision] = []
        for context in order:
            if not short and (swap_left <= 0 or host_free <= 0):
                break
            rid = context.request.request_id
            count = min(context.num_device_blocks, swap_left, host_free)
            stretch = self._copy_stretch(context, now)
            if count > 0 and stretch is not None:
                decisions.append(PausedDecision(rid, PauseAction.SWAP, count))
                self._swapping_out[rid] = stretch
                swap_left, host_free = swap_left - count, host_free - count
            elif view.memory_is_short and self._cheaper_released(context, now):
                decisions.append(PausedDecision(rid, PauseAction.DISCARD))
        return decisions

    def copy_watermark_share(self, num_device_blocks: int) -> float:
        """The share of the device pool requests must own before copies start, in [0.5, 1]:

            min(SLOW_LINK_WATERMARK_SHARE + CATCH_UP_ITERATIONS x B / pool, 1)

        B is the swap budget of the shortest iteration (blocks; the measured cost model's, so it
        follows the link). The option overrides it when set."""
        if self.options.copy_watermark_share is not None:
            return self.options.copy_watermark_share
        cost = self._cost()
        budget_blocks = cost.swap_budget_blocks(cost.forward_s(1))
        # A head start is needed only for what the link cannot copy once memory runs short: the
        # fixed watermark left half the pool free for the copies to keep ahead of its filling;
        # what the link moves within a few iterations after memory runs short need not be on the
        # host before. On a GPU (PCIe: ~9 blocks an iteration of a ~830-block pool) that is
        # nearly the fixed 0.5; on a CPU (hundreds of blocks an iteration of 1,024) it is 1:
        # copies wait until memory is short, and the iterations before it are planned ahead.
        link_share = CATCH_UP_ITERATIONS * budget_blocks / max(num_device_blocks, 1)
        return min(SLOW_LINK_WATERMARK_SHARE + link_share, 1.0)

    def _pool_filling(self, blocks: BlockManager) -> bool:
        """Whether requests own at least the copy watermark's share of the device pool (free and
        cached blocks are not owned: a cached block is taken at no cost). At a watermark of 1
        only a full pool fills, where memory is short anyway."""
        device = blocks.device
        num_owned = device.num_total - device.num_free
        return num_owned >= self.copy_watermark_share(device.num_total) * device.num_total

    def _cheaper_released(self, context: PausedContext, now: float) -> bool:
        """Whether holding the context until its call returns costs more device time than
        reloading it (its device share for the remaining time against the reload's whole device
        time: InferCept's waste comparison, and Continuum's pin rule, on the expected remaining
        time). Always true with `hold-cheap` off."""
        if not self.options.hold_cheap or not self._pool_tokens:
            return True
        cost = self._cost()
        reload_s = cost.forward_s(max(context.computed_tokens, 1))
        if context.num_host_blocks:  # the part on the host comes back by copy
            device_s = cost.forward_s(max(context.device_tokens, 1))
            reload_s = min(reload_s, device_s + cost.swap_in_s(context.num_host_blocks))
        hold_s = self.remaining_s(context.request, now) * context.device_tokens / self._pool_tokens
        return hold_s > reload_s

    def _copy_stretch(self, context: PausedContext, now: float) -> float | None:
        """None if a host copy is not worth the link's time: reloading from the host is not
        cheaper than recomputing (measured costs), or the call is expected back before the copy
        is out. Else how many times cheaper the copy back is (>= 1, at most MAX_HOST_COPY_STRETCH)."""
        if not self.options.opportunistic_swap:
            return None
        cost = self._cost()
        copy_back_s = cost.swap_in_s(context.num_device_blocks)
        recompute_s = cost.forward_s(max(context.computed_tokens, 1))
        if copy_back_s >= recompute_s:
            return None
        if self.remaining_s(context.request, now) < cost.swap_out_s(context.num_device_blocks):
            return None
        return min(recompute_s / max(copy_back_s, 1e-9), MAX_HOST_COPY_STRETCH)

    def _ttl_s(self, request: Request, blocks: BlockManager) -> float | None:
        """The pin's time-to-live when the tool's durations are tight and reloading the context
        costs more device time than holding it (Continuum's rule); None for no pin."""
        assert request.pending_call is not None
        tool, p = request.pending_call.tool, self.options.ttl_quantile
        ttl_s, median_s = self.history.quantile_s(tool, p), self.history.quantile_s(tool, 0.5)
        context_tokens = request.num_computed
        if ttl_s is None or median_s is None or not context_tokens:
            return None
        if ttl_s > self.options.tight_ratio * median_s:
            return None
        reload_s = self._cost().forward_s(context_tokens)
        hold_s = ttl_s * context_tokens / (blocks.device.num_total * blocks.block_size)
        return ttl_s if p * reload_s > hold_s else None

    def _cost(self) -> CostModel:
        assert self.cost is not None, "bind_cost_model first"
        return self.cost
