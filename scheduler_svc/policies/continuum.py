"""Continuum (2025): pin a paused context for a time-to-live learned per tool.

At a pause the context is pinned (preserved) for a TTL, or released at once:

    ttl_s     = the p-quantile of the tool's recent call durations (the history estimator);
                no pin while the tool has too little history
    reload_s  = T_fwd(context tokens)             recomputing the context if it is released
    hold_s    = ttl_s * context / device capacity device time the pin takes from everyone else
    pin iff     p * reload_s > hold_s             (the call returns within the TTL with chance ~p)

Both costs are device-seconds: a recompute occupies the whole device for its forward time; a pin
occupies its share of the KV pool for the TTL. A pinned context is discarded when its TTL expires
or when memory is short. Discarding releases the blocks into the prefix cache (prefix caching is
on by default), so a call that returns before anybody needed the memory still finds its context.

Queues are program-level first come, first served: a returning turn keeps its program's original
arrival, as improved discard does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.cost_model import CostModel
from scheduler_svc.estimators import HistoryEstimator
from scheduler_svc.policies.base import IterationView, PauseAction, PausedContext, PausedDecision, Policy
from scheduler_svc.request import Request


@dataclasses.dataclass(frozen=True)
class ContinuumOptions:
    ttl_quantile: float = 0.9  # the TTL covers this share of the tool's calls
    min_samples: int = 8  # calls of a tool recorded before its contexts are pinned

    def __post_init__(self) -> None:
        if not 0 < self.ttl_quantile <= 1:
            raise ValueError(f"ttl_quantile must be in (0, 1], got {self.ttl_quantile}")


class ContinuumPolicy(Policy):
    name = "continuum"
    description = (
        "pin the paused context for a TTL learned per tool when reloading it costs more than holding "
        "it; discard into the prefix cache on expiry or memory pressure; program-level FCFS"
    )
    manages_paused: ClassVar[bool] = True
    prefix_caching: ClassVar[bool] = True

    def __init__(self, options: ContinuumOptions | None = None) -> None:
        self.options = options or ContinuumOptions()
        self.estimator = HistoryEstimator(min_samples=self.options.min_samples)
        self.cost: CostModel | None = None
        self._pinned_until_s: dict[int, float] = {}  # request id -> when its pin expires

    def bind_cost_model(self, cost: CostModel | None) -> None:
        if cost is None:
            raise ValueError("the continuum policy needs the executor's cost model (its Profile)")
        self.cost = cost

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        ttl_s = self.ttl_s(request, blocks)
        if ttl_s is None:
            return PauseAction.DISCARD
        self._pinned_until_s[request.request_id] = now + ttl_s
        return PauseAction.PRESERVE

    def ttl_s(self, request: Request, blocks: BlockManager) -> float | None:
        """How long to pin the paused request's context, None for not at all (see the module
        docstring)."""
        assert request.pending_call is not None, f"request {request.request_id} is paused without a call"
        p = self.options.ttl_quantile
        ttl_s = self.estimator.quantile_s(request.pending_call.tool, p)
        context_tokens = request.num_computed
        if ttl_s is None or not context_tokens:
            return None
        assert self.cost is not None, "bind_cost_model first"
        reload_s = self.cost.forward_s(context_tokens)
        hold_s = ttl_s * context_tokens / (blocks.device.num_total * blocks.block_size)
        return ttl_s if p * reload_s > hold_s else None

    def revisits_paused(self, now: float, blocks: BlockManager, memory_is_short: bool) -> bool:
        """When memory is short, or once a pin has expired (TTLs expire whether or not memory is
        short); between expiries the decode iterations are planned ahead."""
        return memory_is_short or min(self._pinned_until_s.values(), default=now + 1.0) <= now

    def manage_paused(self, paused: list[PausedContext], view: IterationView) -> list[PausedDecision]:
        """Discard the pinned contexts whose TTL has expired, or all of them when memory is short
        (they go to the prefix cache: the cache evicts only what is needed, oldest first)."""
        pinned, decisions = {}, []
        for context in paused:
            rid = context.request.request_id
            until_s = self._pinned_until_s.get(rid)
            if until_s is None:
                continue
            if view.memory_is_short or view.now_s >= until_s:
                decisions.append(PausedDecision(rid, PauseAction.DISCARD))
            else:
                pinned[rid] = until_s
        self._pinned_until_s = pinned  # also forgets requests that ended or lost their blocks
        return decisions

    def call_ended(self, request: Request, duration_s: float) -> None:
        self._pinned_until_s.pop(request.request_id, None)
        if request.pending_call is not None:
            self.estimator.observe(request.pending_call.tool, duration_s)
