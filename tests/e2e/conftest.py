"""A real two-process stack (executor + scheduler) on free ports, shared per module."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tooling.launcher import Stack, launch

# Small pools, so that preemption and the host-pool fallback really happen.
NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS, BLOCK_SIZE = 64, 16, 16


def stack_args(policy: str, max_batched_tokens: int = 256) -> tuple[list[str], list[str]]:
    executor = ["--model", "tiny", "--device", "cpu", "--block-size", str(BLOCK_SIZE)]
    executor += ["--num-device-blocks", str(NUM_DEVICE_BLOCKS), "--num-host-blocks", str(NUM_HOST_BLOCKS)]
    scheduler = ["--policy", policy, "--max-batched-tokens", str(max_batched_tokens), "--check-invariants"]
    # The small pools are overcommitted on purpose: no refusal for load may depend on the machine's speed.
    scheduler += ["--max-queue-wait-s", "0"]
    return executor, scheduler


@contextlib.contextmanager
def launched(tmp_path_factory: pytest.TempPathFactory, policy: str, *scheduler_flags: str) -> Iterator[Stack]:
    """The stack of stack_args(policy), the scheduler given `scheduler_flags` too, its logs in a
    fresh temporary folder."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    executor_args, scheduler_args = stack_args(policy)
    logs: Path = tmp_path_factory.mktemp("stack")
    with launch(executor_args, [*scheduler_args, *scheduler_flags], log_dir=logs) as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with launched(tmp_path_factory, "swap") as running:
        yield running
