"""Sweeps: the same workload at several rates, under several policies.

With --launch each policy gets a fresh local stack (executor + scheduler processes), so no run
inherits another's queues or caches; rates of one policy share its stack, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
from collections.abc import Callable, Coroutine
from typing import Any

from tooling.cli import stack_args
from tooling.launcher import launch


def _split(value: str | None, cast: type) -> list[Any]:
    return [cast(item) for item in value.split(",") if item.strip()] if value else []


def sweep(
    args: argparse.Namespace, run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Results records of every (policy, rate), policies in the given order; `run` runs one."""
    rates = _split(args.rates, float) or [args.rate]
    policies = _split(args.policies, str)
    if policies and not args.launch:
        raise ValueError("--policies needs --launch: each policy runs on a fresh stack")
    if any(rate <= 0 for rate in rates) or args.duration <= 0 or args.warmup < 0:
        raise ValueError("rates and --duration must be > 0, --warmup >= 0")
    records: list[dict[str, Any]] = []
    for policy in policies or [args.policy]:
        if not args.launch:
            records += [asyncio.run(run(_with(args, rate=rate))) for rate in rates]
            continue
        executor_args, scheduler_args = stack_args(_with(args, policy=policy))
        print(f"\n=== policy {policy}: starting a local stack ===", flush=True)
        with launch(executor_args, scheduler_args, log_dir=args.log_dir) as stack:
            for rate in rates:
                records.append(asyncio.run(run(_with(args, rate=rate, target=stack.scheduler_address))))
    return records


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    changed = copy.copy(args)
    for name, value in changes.items():
        setattr(changed, name, value)
    return changed
