"""Sweeps: the same workload at several rates, under several policies.

With a stack to launch, each policy gets a fresh local stack (executor + scheduler processes), so
no run inherits another's queues or caches; rates of one policy share its stack, one after the
other. Its records are labelled with the policy as given (a spec such as
lazy-swap/no-opportunistic-swap, which the server reports by its policy's name only). With
repeats, every policy runs once per round, the order rotated from round to round (repeats.py).
Without a stack, every rate runs against the given target.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tooling.launcher import launch
from tooling.loadgen.load_run import Target, run_load
from tooling.loadgen.repeats import round_orders
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
    repeats: int = 1,
) -> list[RunRecord]:
    """Records of every (policy, rate), each on a fresh `stack` when one is given, policies in
    the given order (default: the stack's), `repeats` rounds of them; else every rate against
    `target` (repeats then run one after the other). Labelled `policy_label`, else the policy as
    given. Raises ValueError for a bad argument, and what run_load and launch raise."""
    if policies and stack is None:
        raise ValueError("--policies needs --launch: each policy runs on a fresh stack")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for rate in rates:
        workload.at_rate(rate).validate()
    if stack is None:
        return [
            asyncio.run(run_load(target, workload.at_rate(rate), policy_label))
            for _ in range(repeats)
            for rate in rates
        ]
    records: list[RunRecord] = []
    for round_index, order in enumerate(round_orders(list(policies or [stack.policy]), repeats)):
        for policy in order:
            fresh = stack.with_policy(policy)
            which = f", round {round_index + 1} of {repeats}" if repeats > 1 else ""
            print(f"\n=== policy {policy}{which}: starting a local stack ===", flush=True)
            with launch(fresh.executor_argv(), fresh.scheduler_argv(), log_dir=fresh.log_dir) as running:
                local = Target(running.scheduler_address)
                label = policy_label or policy
                records += [asyncio.run(run_load(local, workload.at_rate(rate), label)) for rate in rates]
    return records
