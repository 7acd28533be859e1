"""Sweeps: the same workload at several rates, under several policies.

With a stack to launch, each policy gets a fresh local stack (executor + scheduler processes), so
no run inherits another's queues or caches; rates of one policy share its stack, one after the
other. Without one, every rate runs against the given target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tooling.launcher import launch
from tooling.loadgen.load_run import Target, run_load
from tooling.loadgen.workload_spec import WorkloadSpec
from tooling.run_record import RunRecord
from tooling.stack_spec import StackSpec


def sweep(
    workload: WorkloadSpec,
    rates: Sequence[float],
    target: Target,
    *,
    stack: StackSpec | None = None,
    policies: Sequence[str] = (),
    policy_label: str | None = None,
) -> list[RunRecord]:
    """Records of every (policy, rate), policies in the given order (default: the stack's), each
    on a fresh `stack` when one is given, else every rate against `target`. Raises ValueError
    for a bad argument, and what run_load and launch raise."""
    if policies and stack is None:
        raise ValueError("--policies needs --launch: each policy runs on a fresh stack")
    for rate in rates:
        workload.at_rate(rate).validate()
    if stack is None:
        return [asyncio.run(run_load(target, workload.at_rate(rate), policy_label)) for rate in rates]
    records: list[RunRecord] = []
    for policy in policies or [stack.policy]:
        fresh = stack.with_policy(policy)
        print(f"\n=== policy {policy}: starting a local stack ===", flush=True)
        with launch(fresh.executor_argv(), fresh.scheduler_argv(), log_dir=fresh.log_dir) as running:
            local = Target(running.scheduler_address)
            records += [asyncio.run(run_load(local, workload.at_rate(rate), policy_label)) for rate in rates]
    return records
