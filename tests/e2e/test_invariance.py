"""Output invariance over two real processes: whatever a policy does with paused contexts
(preserve, discard, swap, host-pool fallback, preemption, prefix caching), 50 greedy requests
with random scripts produce exactly the tokens of a `transformers` reference loop on the same
weights; so do requests that share a system prompt through the prefix cache."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from executor_svc.random_model import ensure_tiny_model
from infercept import AsyncClient, Client, GenerateResult, SamplingParams, ScriptedCall
from scheduler_svc.policies import POLICIES
from tests.e2e.conftest import BLOCK_SIZE, stack_args
from tests.executor.reference import load_reference
from tooling.launcher import launch

NUM_REQUESTS = 50


@dataclasses.dataclass(frozen=True)
class Spec:
    prompt: list[int]
    script: list[ScriptedCall]
    final_tokens: int  # generated after the last interception

    @property
    def max_tokens(self) -> int:
        return sum(call.after_tokens for call in self.script) + self.final_tokens


def workload(seed: int) -> list[Spec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(NUM_REQUESTS):
        script = [
            ScriptedCall(
                after_tokens=rng.randint(1, 8),
                tool=rng.choice(["calc", "search", "env"]),
                wait_s=rng.uniform(0.0, 0.3),
                returned_token_ids=[rng.randrange(256) for _ in range(rng.randint(0, 40))],
            )
            for _ in range(rng.randint(1, 6))
        ]
        prompt = [rng.randrange(256) for _ in range(rng.randint(5, 60))]
        specs.append(Spec(prompt, script, final_tokens=rng.randint(1, 8)))
    return specs


@torch.inference_mode()
def reference_loop(model: torch.nn.Module, spec: Spec) -> list[int]:
    """generate N1 -> append the returned tokens -> generate N2 -> ..., greedy, with a KV cache."""
    # transformers 5 calls the KV cache `cache`; 4.x called it `past_key_values`.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    output: list[int] = []
    past, pending = None, list(spec.prompt)
    segments = [(c.after_tokens, list(c.returned_token_ids)) for c in spec.script] + [(spec.final_tokens, [])]
    for num_tokens, returned in segments:
        for _ in range(num_tokens):
            step = model(torch.tensor([pending]), use_cache=True, **{cache_arg: past})
            past, token = step[cache_arg], int(step.logits[0, -1].argmax())
            output.append(token)
            pending = [token]
        output += returned
        pending += returned
    return output


@pytest.fixture(scope="module")
def specs() -> list[Spec]:
    return workload(seed=2024)


@pytest.fixture(scope="module")
def expected(specs: list[Spec]) -> list[list[int]]:
    model = load_reference(ensure_tiny_model())
    return [reference_loop(model, spec) for spec in specs]


async def _run_all(address: str, specs: list[Spec]) -> list[GenerateResult]:
    async with AsyncClient(address) as client:
        return await asyncio.gather(
            *(
                client.generate(
                    prompt_token_ids=spec.prompt,
                    sampling=SamplingParams(max_tokens=spec.max_tokens, temperature=0.0, ignore_eos=True),
                    script=spec.script,
                )
                for spec in specs
            )
        )


@pytest.fixture(
    scope="module", params=sorted(name for name, cls in POLICIES.items() if not cls.simulator_only)
)
def policy_run(
    request: pytest.FixtureRequest, specs: list[Spec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[GenerateResult], dict[str, Any]]]:
    policy: str = request.param
    executor_args, scheduler_args = stack_args(policy, max_batched_tokens=128)
    with launch(executor_args, scheduler_args, log_dir=tmp_path_factory.mktemp(policy)) as stack:
        results = asyncio.run(_run_all(stack.scheduler_address, specs))
        with Client(stack.scheduler_address) as client:
            stats = client.server_stats()
        yield policy, results, stats


def test_every_policy_gives_the_reference_tokens(
    policy_run: tuple[str, list[GenerateResult], dict[str, Any]],
    specs: list[Spec],
    expected: list[list[int]],
) -> None:
    policy, results, _ = policy_run
    for index, (spec, result, want) in enumerate(zip(specs, results, expected, strict=True)):
        assert result.finish_reason == "length"
        assert len(result.interceptions) == len(spec.script)
        assert result.output_token_ids == want, f"{policy}: request {index} differs from the reference"


def test_all_blocks_are_free_afterwards(
    policy_run: tuple[str, list[GenerateResult], dict[str, Any]],
) -> None:
    _, _, stats = policy_run
    assert stats["device_blocks_free"] == stats["device_blocks_total"]
    assert stats["host_blocks_free"] == stats["host_blocks_total"]


def test_memory_pressure_really_happened(
    policy_run: tuple[str, list[GenerateResult], dict[str, Any]],
) -> None:
    policy, results, stats = policy_run
    actions = {i.context_action for r in results for i in r.interceptions}
    recomputed = sum(r.usage.recomputed_tokens for r in results)
    if policy == "preserve":
        assert actions == {"preserve"} and recomputed > 0, "preemption must have discarded some contexts"
    if policy == "swap":
        assert stats["swap_out_blocks"] > 0 and stats["swap_in_blocks"] == stats["swap_out_blocks"]
        assert "discard" in actions, "the small host pool must have forced the discard fallback"
    if policy in ("vllm", "improved-discard"):
        assert actions == {"discard"} and recomputed > 0
    if policy == "vllm-apc":  # a returning request finds its context cached, minus evictions
        assert actions == {"discard"} and stats["prefix_hit_tokens"] > 0 and stats["prefix_caching"]
    if policy == "continuum":  # no pin before a tool has history; released contexts are cached
        assert "discard" in actions and stats["prefix_hit_tokens"] > 0 and stats["prefix_caching"]
    if policy == "lazy-swap":  # copies paused contexts out in the link's idle time, device copy cached
        assert actions == {"preserve"} and stats["swap_out_blocks"] > 0 and stats["prefix_caching"]
    if policy not in ("vllm-apc", "continuum", "lazy-swap"):
        assert not stats.get("prefix_hit_tokens") and not stats.get("prefix_caching")
    if policy == "infercept-authors":  # discards every context worth it at once, but the costliest
        assert actions == {"preserve"} and recomputed > 0
    if policy == "infercept":  # decides after the pause: swaps (some partial) and discards
        assert actions == {"preserve"}
        assert stats["swap_out_blocks"] > 0 and stats["swap_in_blocks"] > 0 and recomputed > 0


def test_requests_sharing_a_system_prompt_get_the_reference_tokens_from_shared_blocks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    rng = random.Random(7)
    system = [rng.randrange(256) for _ in range(2 * BLOCK_SIZE)]  # two full blocks
    # The first computes the system prompt; the second's prompt is exactly it, so its last token
    # is computed into a copy of the shared last block (copy-on-write on the executor).
    specs = [
        Spec(system + tail, [], final_tokens=6) for tail in ([1, 2, 3], [], [4] * 20, [rng.randrange(256)])
    ]
    model = load_reference(ensure_tiny_model())
    executor_args, scheduler_args = stack_args("vllm-apc")
    with (
        launch(executor_args, scheduler_args, log_dir=tmp_path_factory.mktemp("shared")) as stack,
        Client(stack.scheduler_address) as client,
    ):
        for spec in specs:  # one after another: each finds what the ones before it left cached
            sampling = SamplingParams(max_tokens=spec.max_tokens, temperature=0.0, ignore_eos=True)
            result = client.generate(prompt_token_ids=spec.prompt, sampling=sampling)
            assert result.output_token_ids == reference_loop(model, spec)
        stats = client.server_stats()
    assert stats["prefix_hit_blocks"] >= 2 * (len(specs) - 1)
    assert stats["prefix_hit_tokens"] >= (2 * BLOCK_SIZE - 1) * (len(specs) - 1)
