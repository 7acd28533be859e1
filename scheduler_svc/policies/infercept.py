"""The InferCept policy (DESIGN §1, §5): per paused request and per iteration, the strategy that
wastes the least device memory × time, with each strategy made cheaper.

At the pause the context is kept; from then on, every iteration while memory is short:

1. estimate each paused request's remaining call time (a duration estimator) and the waste of
   preserving its device context (W_p) and of discarding it for chunked recomputation (W_d);
2. rank the paused requests by the waste of their best non-swap strategy, most wasteful first
   (min-waste selection), and give the iteration's swap-out budget to them in that order (blocks
   from the back of their device context), skipping calls expected to end before the copy could
   go out and come back;
3. for the rest, preserve or discard, whichever wastes less;
4. when host memory is full, swapped requests expected to wait longer than the candidate are
   turned into discards to make room.

Swaps are budgeted: an iteration copies only what the link moves within its forward time (the
executor pipelines the copies layer by layer), swap-ins first (a returning request computes once
its blocks are back), swap-outs with the rest. Recomputation is chunked into the token budget
left after decode tokens. Each technique can be switched off for ablations (`InferceptOptions`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from scheduler_svc.block_manager import BlockManager
from scheduler_svc.cost_model import CostModel
from scheduler_svc.estimators import ESTIMATORS, create_estimator
from scheduler_svc.policies.base import IterationView, PauseAction, PausedContext, PausedDecision, Policy
from scheduler_svc.request import Request
from scheduler_svc.waste import discard_waste, preserve_waste

TECHNIQUES = ("chunked-recompute", "swap-budget", "min-waste")


@dataclasses.dataclass(frozen=True)
class InferceptOptions:
    estimator: str = "history"  # oracle | elapsed | history
    chunked_recompute: bool = True  # off: a discarded context is recomputed in one iteration
    swap_budget: bool = True  # off: a chosen context is swapped whole, out and in, stalling the batch
    min_waste: bool = True  # off: swap budget by pause order, the rest preserved

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown duration estimator {self.estimator!r}; choose one of {sorted(ESTIMATORS)}"
            )

    @classmethod
    def with_disabled(cls, estimator: str, disabled: tuple[str, ...]) -> InferceptOptions:
        """Options with the named TECHNIQUES switched off; ValueError naming an unknown one."""
        unknown = sorted(set(disabled) - set(TECHNIQUES))
        if unknown:
            raise ValueError(f"unknown technique(s) {unknown}; choose from {list(TECHNIQUES)}")
        return cls(
            estimator=estimator,
            chunked_recompute="chunked-recompute" not in disabled,
            swap_budget="swap-budget" not in disabled,
            min_waste="min-waste" not in disabled,
        )


@dataclasses.dataclass(frozen=True)
class _Estimate:
    context: PausedContext
    remaining_s: float
    preserve_waste: float  # token·s
    discard_waste: float  # token·s

    @property
    def best_waste(self) -> float:
        return min(self.preserve_waste, self.discard_waste)


class InferceptPolicy(Policy):
    name = "infercept"
    description = (
        "min-waste per paused request and iteration: preserve, discard (chunked recompute) or swap "
        "(budgeted, pipelined); FCFS by original arrival"
    )
    manages_paused: ClassVar[bool] = True

    def __init__(self, options: InferceptOptions | None = None) -> None:
        self.options = options or InferceptOptions()
        self.estimator = create_estimator(self.options.estimator)
        self.cost: CostModel | None = None
        self.pipelines_swaps = self.options.swap_budget
        self.chunks_recompute = self.options.chunked_recompute

    def bind_cost_model(self, cost: CostModel | None) -> None:
        if cost is None:
            raise ValueError("the infercept policy needs the executor's cost model (its Profile)")
        self.cost = cost

    def on_pause(self, request: Request, blocks: BlockManager, now: float) -> PauseAction:
        return PauseAction.PRESERVE  # revisited every iteration by manage_paused

    def call_ended(self, request: Request, duration_s: float) -> None:
        if request.pending_call is not None:
            self.estimator.observe(request.pending_call.tool, duration_s)

    def swap_budget_blocks(self, expected_tokens: int) -> int | None:
        if not self.options.swap_budget:
            return None
        cost = self._cost()
        return cost.swap_budget_blocks(cost.forward_s(max(expected_tokens, 1)))

    def manage_paused(self, paused: list[PausedContext], view: IterationView) -> list[PausedDecision]:
        estimates = [self._estimate(context, view) for context in paused]
        if self.options.min_waste:
            estimates.sort(key=lambda e: (-e.best_waste, e.context.request.request_id))
        else:
            estimates.sort(key=lambda e: _pause_order(e.context.request))
        return _Selection(self, view, estimates).run()

    # ----- waste -----

    def _estimate(self, context: PausedContext, view: IterationView) -> _Estimate:
        request, cost = context.request, self._cost()
        call = request.pending_call
        assert call is not None, f"request {request.request_id} is paused without a call"
        remaining_s = self.estimator.remaining_s(
            call.tool, view.now_s - call.paused_at_s, call.expected_duration_s
        )
        spare_tokens = max(view.token_budget - view.decode_tokens, 1)
        chunk_tokens = spare_tokens if self.options.chunked_recompute else max(context.computed_tokens, 1)
        # With others waiting, the spare budget is not free: a recompute chunk displaces their
        # tokens, so it is charged as riding on a full iteration.
        batch_tokens = (
            max(view.token_budget, view.decode_tokens) if view.others_waiting else view.decode_tokens
        )
        return _Estimate(
            context=context,
            remaining_s=remaining_s,
            preserve_waste=preserve_waste(context.device_tokens, remaining_s),
            discard_waste=discard_waste(
                context.computed_tokens, chunk_tokens, batch_tokens, view.batch_context_tokens, cost
            ),
        )

    def worth_swapping(self, estimate: _Estimate, num_blocks: int) -> bool:
        """Whether the call is expected to outlast the copy out and back in."""
        cost = self._cost()
        return estimate.remaining_s > cost.swap_out_s(num_blocks) + cost.swap_in_s(num_blocks)

    def _cost(self) -> CostModel:
        assert self.cost is not None, "bind_cost_model first"
        return self.cost


def _pause_order(request: Request) -> tuple[float, int]:
    assert request.pending_call is not None
    return request.pending_call.paused_at_s, request.request_id


class _Selection:
    """One iteration's decisions, in rank order, under the swap budget and the free host memory."""

    def __init__(self, policy: InferceptPolicy, view: IterationView, estimates: list[_Estimate]) -> None:
        self.policy = policy
        self.view = view
        self.estimates = estimates
        self.swap_left_blocks = view.swap_out_budget_blocks
        self.host_free_blocks = view.host_free_blocks
        self.decisions: list[PausedDecision] = []
        self.decided: set[int] = set()
        # Host-memory victims: requests with blocks out, longest expected wait first.
        self.host_holders = sorted(
            (e for e in estimates if e.context.num_host_blocks),
            key=lambda e: (e.remaining_s, e.context.request.request_id),
        )

    def run(self) -> list[PausedDecision]:
        for estimate in self.estimates:
            rid = estimate.context.request.request_id
            if rid in self.decided:
                continue
            self.decided.add(rid)
            if self._try_swap(estimate):
                continue
            if self.policy.options.min_waste and estimate.discard_waste < estimate.preserve_waste:
                self.decisions.append(PausedDecision(rid, PauseAction.DISCARD))
        return self.decisions

    def _try_swap(self, estimate: _Estimate) -> bool:
        num_device = estimate.context.num_device_blocks
        if not num_device:
            return False
        wanted = min(num_device, self.swap_left_blocks) if self.policy.options.swap_budget else num_device
        if wanted <= 0 or not self.policy.worth_swapping(estimate, num_device):
            return False
        self._make_host_room(wanted, estimate)
        count = min(wanted, self.host_free_blocks)
        if count <= 0 or (not self.policy.options.swap_budget and count < num_device):
            return False
        rid = estimate.context.request.request_id
        self.decisions.append(PausedDecision(rid, PauseAction.SWAP, count))
        self.swap_left_blocks -= count
        self.host_free_blocks -= count
        return True

    def _make_host_room(self, wanted_blocks: int, candidate: _Estimate) -> None:
        """Discard swapped requests expected to wait longer than `candidate` until it fits."""
        while self.host_free_blocks < wanted_blocks and self.host_holders:
            victim = self.host_holders[-1]
            if victim.remaining_s <= candidate.remaining_s:
                return
            self.host_holders.pop()
            rid = victim.context.request.request_id
            if rid in self.decided:  # already given its strategy this iteration
                continue
            self.decided.add(rid)
            self.decisions.append(PausedDecision(rid, PauseAction.DISCARD))
            self.host_free_blocks += victim.context.num_host_blocks
