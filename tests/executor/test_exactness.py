"""The executor's greedy tokens and logits match `transformers` on the same weights, whatever
the plan does to the KV blocks (chunking, interleaving, swaps, discards, device copies, random
block ids)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from tests.executor.conftest import ModelSpec
from tests.executor.plan_driver import PlanDriver
from tests.executor.reference import assert_matches_reference, load_reference


def random_prompts(seed: int, vocab_size: int, count: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 40))] for _ in range(count)]


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_tokens_and_logits_match_transformers(model_spec: tuple[ModelSpec, Path], seed: int) -> None:
    spec, model_dir = model_spec
    num_device_blocks, num_host_blocks = 48, 32
    engine = Engine(
        ExecutorConfig(
            model=str(model_dir),
            device="cpu",
            block_size=spec.block_size,
            num_device_blocks=num_device_blocks,
            num_host_blocks=num_host_blocks,
        )
    )
    driver = PlanDriver(
        engine.step,
        block_size=spec.block_size,
        num_device_blocks=num_device_blocks,
        num_host_blocks=num_host_blocks,
        seed=seed,
        device_copies=seed == 1,  # blocks also move by device-side copies (copy-on-write)
    )
    requests = driver.run(random_prompts(seed, spec.config.vocab_size, count=6), num_new_tokens=12)
    # The run really exercised what it is meant to.
    assert driver.num_swapped_out > 0 and driver.num_swapped_in > 0 and driver.num_discarded > 0
    assert (driver.num_copied > 0) == (seed == 1)
    assert not engine.requests, "every request was forgotten"
    assert_matches_reference(load_reference(model_dir), requests)
    # Greedy outputs vary with the prompt: the weights are not degenerate.
    assert len({tuple(r.tokens[r.num_prompt_tokens :]) for r in requests}) > 1


def test_tiny_model_matches_transformers() -> None:
    engine = Engine(
        ExecutorConfig(model="tiny", device="cpu", block_size=16, num_device_blocks=40, num_host_blocks=16)
    )
    driver = PlanDriver(engine.step, block_size=16, num_device_blocks=40, num_host_blocks=16, seed=3)
    prompts = [list(text.encode()) for text in ("What is 2+2?", "Call the weather tool for Paris", "x")]
    requests = driver.run(prompts, num_new_tokens=24)
    assert_matches_reference(load_reference(engine.loaded.directory), requests)
    assert len({tuple(r.tokens[r.num_prompt_tokens :]) for r in requests}) == len(requests)
