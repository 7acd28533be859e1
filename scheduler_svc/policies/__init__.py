"""Scheduling policies, chosen by name from a registry."""

from __future__ import annotations

from scheduler_svc.policies.base import IterationView, PauseAction, PausedContext, PausedDecision, Policy
from scheduler_svc.policies.baselines import ImprovedDiscardPolicy, PreservePolicy, SwapPolicy, VllmPolicy
from scheduler_svc.policies.continuum import ContinuumPolicy
from scheduler_svc.policies.ideal import IdealPolicy
from scheduler_svc.policies.infercept import TECHNIQUES, InferceptOptions, InferceptPolicy
from scheduler_svc.policies.infercept_authors import InferceptAuthorsPolicy
from scheduler_svc.policies.lazy_swap import LAZY_SWAP_TECHNIQUES, LazySwapOptions, LazySwapPolicy
from scheduler_svc.policies.vllm_apc import VllmApcPolicy

POLICIES: dict[str, type[Policy]] = {
    policy.name: policy
    for policy in (
        VllmPolicy,
        ImprovedDiscardPolicy,
        PreservePolicy,
        SwapPolicy,
        InferceptPolicy,
        InferceptAuthorsPolicy,
        VllmApcPolicy,
        ContinuumPolicy,
        LazySwapPolicy,
    )
}
POLICIES[IdealPolicy.name] = IdealPolicy  # simulator only
# The policies that take InferceptOptions (an estimator, techniques to switch off).
INFERCEPT_POLICIES: dict[str, type[InferceptPolicy]] = {
    policy.name: policy for policy in (InferceptPolicy, InferceptAuthorsPolicy)
}

__all__ = [
    "LAZY_SWAP_TECHNIQUES",
    "POLICIES",
    "TECHNIQUES",
    "InferceptOptions",
    "IterationView",
    "LazySwapOptions",
    "PauseAction",
    "PausedContext",
    "PausedDecision",
    "Policy",
    "create_policy",
]


def create_policy(name: str, estimator: str = "history", disabled: tuple[str, ...] = ()) -> Policy:
    """The policy called `name`; ValueError naming the choices otherwise. `estimator` and the
    `disabled` techniques configure the infercept policies (ablations), `disabled` the lazy-swap
    policy (its own techniques, LAZY_SWAP_TECHNIQUES); the baselines have none."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}")
    if name in INFERCEPT_POLICIES:
        return INFERCEPT_POLICIES[name](InferceptOptions.with_disabled(estimator, disabled))
    if name == LazySwapPolicy.name:
        return LazySwapPolicy(LazySwapOptions.with_disabled(disabled))
    if disabled:
        raise ValueError(
            f"policy {name!r} has no techniques to disable (only {InferceptPolicy.name!r} and "
            f"{LazySwapPolicy.name!r} do)"
        )
    return POLICIES[name]()
