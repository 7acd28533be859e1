"""Scheduling policies, chosen by name from a registry."""

from __future__ import annotations

from scheduler_svc.policies.base import PauseAction, Policy
from scheduler_svc.policies.baselines import ImprovedDiscardPolicy, PreservePolicy, SwapPolicy, VllmPolicy

POLICIES: dict[str, type[Policy]] = {
    policy.name: policy for policy in (VllmPolicy, ImprovedDiscardPolicy, PreservePolicy, SwapPolicy)
}

__all__ = ["POLICIES", "PauseAction", "Policy", "create_policy"]


def create_policy(name: str) -> Policy:
    """The policy called `name`; ValueError naming the choices otherwise."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name]()
