"""Randomised workloads under every policy: small pools, tight budgets, scripted tool calls that
return at different times, aborts. The fake executor checks every KV read; here we check that all
requests end, nothing leaks, budgets hold, outputs do not depend on the policy, and the core is
deterministic."""

from __future__ import annotations

import random

import pytest

from scheduler_svc.policies import POLICIES
from scheduler_svc.request import TokenKind
from scheduler_svc.stats_render import stats_proto
from svc_common.step_wire import unpack_work
from tests.scheduler.harness import Harness, generate_request

MAX_BATCHED_TOKENS = 16
NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS = 20, 8  # 80 device token slots > max_model_len

Outputs = dict[int, tuple[list[int], str]]  # request id -> (streamed tokens, finish reason)


def is_aborted_at(request_id: int, call_index: int) -> bool:
    """Even requests are aborted while paused in their second tool call."""
    return request_id % 2 == 0 and call_index == 1


def returned_ids(request_id: int, index: int) -> list[int]:
    return [1 + (request_id * 13 + index * 5 + i) % 250 for i in range((request_id + index) % 5)]


def simulate(
    policy: str,
    seed: int,
    enable_prefix_caching: bool | None = None,
    system_prompt_len: int = 0,
    iteration_structure: str = "mixed",
    plan_ahead: bool = False,
    disabled_techniques: tuple[str, ...] = (),
) -> tuple[Harness, Outputs]:
    """Run the random workload; with `system_prompt_len`, half the prompts begin with one shared
    system prompt of that many tokens (prefix caching shares it, copies on write); with
    `plan_ahead`, iterations are planned ahead where the scheduler can, as the step loop does;
    `disabled_techniques`: the policy's techniques switched off."""
    rng = random.Random(seed)
    h = Harness(
        policy,
        max_batched_tokens=MAX_BATCHED_TOKENS,
        num_device_blocks=NUM_DEVICE_BLOCKS,
        num_host_blocks=NUM_HOST_BLOCKS,
        max_model_len=64,
        enable_prefix_caching=enable_prefix_caching,
        iteration_structure=iteration_structure,
        plan_ahead=plan_ahead,
        disabled_techniques=disabled_techniques,
    )
    system = [rng.randrange(1, 250) for _ in range(system_prompt_len)]
    arrivals: dict[int, list[tuple[list[int], int, list[tuple[int, str]]]]] = {}
    for _ in range(12):
        prompt = [rng.randrange(1, 250) for _ in range(rng.randint(1, 30))]
        if system and rng.random() < 0.5:
            prompt = system + prompt[: rng.choice((0, rng.randint(1, 12)))]  # often exactly it
        script = [(rng.randint(1, 6), rng.choice(["calc", "search"])) for _ in range(rng.randint(0, 3))]
        arrivals.setdefault(rng.randrange(25), []).append((prompt, rng.randint(1, 20), script))
    due: dict[int, tuple[int, int]] = {}  # request id -> (step its tool returns, call index)
    rids: list[int] = []
    # vLLM 0.2's iterations spend the prefill budget, decode iterations too.
    is_mixed = iteration_structure == "mixed"
    token_budget = MAX_BATCHED_TOKENS if is_mixed else h.scheduler.config.prefill_token_budget
    for step in range(600):
        for prompt, max_tokens, script in arrivals.pop(step, []):
            rids.append(h.add(generate_request(prompt, max_tokens=max_tokens, script=script)))
        for rid, (when, index) in list(due.items()):
            if when == step:
                del due[rid]
                h.resume(rid, returned_ids(rid, index))
        if not arrivals and not h.scheduler.requests and h.ahead is None:
            break
        if not h.scheduler.has_work() and h.ahead is None:
            h.now += 1.0
            continue
        plan, events = h.iterate()
        if not POLICIES[policy].restores_for_free:  # ideal restores whole contexts, free, past it
            assert sum(w.end_position - w.start_position for w in unpack_work(plan.work)) <= token_budget
        for rid, event in events:
            if event.HasField("intercepted"):
                index = event.intercepted.index
                if is_aborted_at(rid, index):
                    h.abort(rid)
                else:
                    due[rid] = (step + 1 + (rid * 7 + index) % 6, index)
    else:
        raise AssertionError(f"{policy}: requests {sorted(h.scheduler.requests)} never finished")
    stats = stats_proto(h.scheduler)
    assert (stats.device_blocks_free, stats.host_blocks_free) == (NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS)
    h.scheduler.blocks.check_invariants()
    assert not h.scheduler.blocks.layouts
    # One more plan carries the last forgets: then the executor holds nothing either, and no request
    # was forgotten twice or without being known (the fake executor asserts that).
    assert not h.step().work.request_ids
    assert not h.executor.tables and not h.scheduler.has_work()
    # Every prompt token was computed once as a prompt token (later computations are recomputes),
    # or found in the prefix cache the first time it was needed.
    prompts = sum(
        e.accepted.num_prompt_tokens for rid in rids for e in h.events[rid] if e.HasField("accepted")
    )
    stats_ = h.scheduler.stats
    assert (
        stats_.tokens_by_kind[TokenKind.PROMPT] + stats_.prefix_hit_tokens_by_kind[TokenKind.PROMPT]
        == prompts
    )
    return h, {rid: (h.tokens(rid), h.finished(rid).finish_reason) for rid in rids}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_policy_gives_the_same_tokens_and_leaks_nothing(seed: int) -> None:
    results = {policy: simulate(policy, seed)[1] for policy in sorted(POLICIES)}
    reference = results["preserve"]
    for policy, outputs in results.items():
        assert outputs == reference, policy
    # lazy-swap without its admission reserve preempts where the reserve avoids it (below).
    assert simulate("lazy-swap", seed, disabled_techniques=("admission-reserve",))[1] == reference
    for rid, (tokens, reason) in reference.items():
        assert reason in {"length", "max_model_len", "abort"}
        assert reason != "abort" or rid % 2 == 0
        assert all(1 <= t <= 200 for t in tokens)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planning_ahead_gives_every_policy_the_same_tokens_and_leaks_nothing(seed: int) -> None:
    """The step loop's way: decodes planned while the last plan computes, each token still out
    taken by the executor from its own last sample; results applied in order. Every KV read is
    checked, and the tokens are those of the plain loop."""
    reference = simulate("preserve", seed)[1]
    for policy in sorted(POLICIES):
        h, outputs = simulate(policy, seed, plan_ahead=True)
        assert outputs == reference, policy
        assert h.executor.num_last_sampled_used > 0, policy
    for structure, caching in (("prefill-first", None), ("mixed", True)):
        h, outputs = simulate(
            "swap", seed, enable_prefix_caching=caching, iteration_structure=structure, plan_ahead=True
        )
        assert outputs == reference, (structure, caching)
        assert h.executor.num_last_sampled_used > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_policy_on_vllm_0_2_iterations_gives_the_same_tokens_and_leaks_nothing(seed: int) -> None:
    # prefill-first: resumed contexts in the running batch, swap-ins whole into free blocks, whole
    # prompts only while no swap-in waits; the fake executor still checks every KV read.
    reference = simulate("preserve", seed)[1]
    runs = {
        policy: simulate(policy, seed, iteration_structure="prefill-first") for policy in sorted(POLICIES)
    }
    for policy, (_, outputs) in runs.items():
        assert outputs == reference, policy
    assert runs["swap"][0].scheduler.stats.swap_in_blocks > 0
    assert runs["vllm"][0].scheduler.stats.preemptions > 0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_core_is_deterministic(policy: str) -> None:
    first, first_outputs = simulate(policy, seed=5)
    second, second_outputs = simulate(policy, seed=5)
    assert first_outputs == second_outputs
    assert [p.SerializeToString() for p in first.plans] == [p.SerializeToString() for p in second.plans]


def test_the_workloads_reach_preemption_swaps_and_aborts() -> None:
    # The checks above are only worth something if the workloads take the interesting paths.
    runs = {
        (policy, seed): simulate(policy, seed)[0].scheduler.stats for policy in POLICIES for seed in (1, 2, 3)
    }
    # lazy-swap's admission reserve keeps the running batch's room, so it preempts (and recomputes
    # from the prefix cache) in fewer runs, in some all the same; without the reserve, in every one.
    no_reserve = {
        seed: simulate("lazy-swap", seed, disabled_techniques=("admission-reserve",))[0].scheduler.stats
        for seed in (1, 2, 3)
    }
    assert all(stats.preemptions > 0 for (policy, _), stats in runs.items() if policy != "lazy-swap")
    assert any(stats.preemptions > 0 for (policy, _), stats in runs.items() if policy == "lazy-swap")
    assert all(stats.preemptions > 0 and stats.prefix_hit_blocks > 0 for stats in no_reserve.values())
    assert all(
        stats.swap_out_blocks > 0 for (policy, _), stats in runs.items() if policy in ("swap", "lazy-swap")
    )
    assert all(
        stats.swap_out_blocks == 0
        for (policy, _), stats in runs.items()
        if policy not in ("swap", "infercept", "infercept-authors", "lazy-swap")
    )
    # lazy-swap takes swapped-out blocks back from the prefix cache (no copy) in some run.
    assert any(stats.reattached_blocks > 0 for (policy, _), stats in runs.items() if policy == "lazy-swap")
    assert all(stats.swap_in_blocks > 0 for (policy, _), stats in runs.items() if policy == "swap")
    assert any(stats.aborted_requests > 0 for stats in runs.values())
    assert all(
        stats.prefix_hit_blocks > 0
        for (policy, _), stats in runs.items()
        if policy in ("vllm-apc", "continuum")
    )
    assert any(stats.prefix_hit_blocks > 0 for (policy, _), stats in runs.items() if policy == "lazy-swap")
    assert all(sum(stats.interceptions_by_tool.values()) > 5 for stats in runs.values())


@pytest.mark.parametrize("policy", ["vllm-apc", "continuum", "swap", "infercept", "lazy-swap"])
def test_shared_system_prompts_under_prefix_caching_give_the_same_tokens(policy: str) -> None:
    # Shared blocks meet every path: preemption, swaps of shared blocks, copy-on-write, discards.
    # Two full blocks: a prompt that is exactly the system prompt writes into a shared block.
    cached, outputs = simulate(policy, seed=7, enable_prefix_caching=True, system_prompt_len=8)
    assert outputs == simulate("preserve", seed=7, enable_prefix_caching=False, system_prompt_len=8)[1]
    stats = cached.scheduler.stats
    assert stats.prefix_hit_tokens_by_kind[TokenKind.PROMPT] > 0, "the system prompt was shared"
    assert cached.executor.num_device_copies > 0, "a shared block was copied on write"
