"""Prefix caching with fabricated executor results: shared prompts hit, eviction is least recently
used, a shared block is copied before it is written, swaps and resets keep the cache sound, and
the invariant checker catches a broken refcount. The fake executor checks every KV read against
the reading request's own context, so a wrong hit fails where it is read."""

from __future__ import annotations

import pytest

from scheduler_svc.cost_model import CostModel
from scheduler_svc.main import parse_args
from scheduler_svc.policies import POLICIES
from scheduler_svc.policies.continuum import ContinuumPolicy
from scheduler_svc.policies.spec import parse_policy_spec
from scheduler_svc.prefix_cache import CachingBlockPool, extend_chain_hashes
from scheduler_svc.stats_render import stats_proto
from svc_common.step_wire import unpack_work
from tests.scheduler.harness import BLOCK_SIZE, Harness, counting_rule, generate_request, ids

SYSTEM = list(range(10, 22))  # a 12-token system prompt: 3 full blocks of 4


def expected_tokens(request_id: int, context_len: int, num_tokens: int) -> list[int]:
    return [counting_rule(request_id, p) for p in range(context_len, context_len + num_tokens)]


def num_cached_blocks(h: Harness, token_ids: list[int]) -> int:
    """How many leading full blocks of `token_ids` the scheduler's cache holds."""
    hashes: list[int] = []
    extend_chain_hashes(hashes, token_ids, BLOCK_SIZE, len(token_ids) // BLOCK_SIZE)
    return len(h.scheduler.blocks.device.lookup(hashes))


# ----- the pool -----


def test_chain_hashes_name_a_block_by_everything_before_it() -> None:
    a: list[int] = []
    b: list[int] = []
    extend_chain_hashes(a, [1, 2, 3, 4, 5, 6, 7, 8, 9], 4, 9)
    extend_chain_hashes(b, [9, 2, 3, 4, 5, 6, 7, 8], 4, 2)
    assert len(a) == 2 and len(b) == 2  # only full blocks are named
    assert a[0] != b[0] and a[1] != b[1]  # same tokens in block 1, different first block
    grown = a[:1]
    extend_chain_hashes(grown, [1, 2, 3, 4, 5, 6, 7, 8, 9], 4, 2)
    assert grown == a


def test_allocation_takes_free_blocks_then_evicts_the_least_recently_released_tail_first() -> None:
    pool = CachingBlockPool(6)
    first, second = pool.allocate(2), pool.allocate(2)  # [0, 1], [2, 3]; blocks 4, 5 stay free
    for block, chain_hash in zip(first + second, (11, 12, 21, 22), strict=True):
        pool.register(block, chain_hash)
    pool.publish()
    pool.free(first)
    pool.free(second)
    assert (pool.num_free, pool.num_cached) == (6, 4)
    assert pool.lookup([11, 12]) == [0, 1] and pool.lookup([12]) == [1]
    # Free blocks first, then cached ones: the first released context's tail, then its head.
    assert pool.allocate(4) == [4, 5, 1, 0]
    assert pool.num_evicted == 2 and pool.lookup([11]) == [] and pool.lookup([21, 22]) == [2, 3]
    pool.share([2])  # a cached block taken again is no longer evictable
    assert pool.allocate(1) == [3] and pool.num_free == 0


def test_a_block_is_findable_only_after_its_iteration_is_planned() -> None:
    pool = CachingBlockPool(2)
    (block,) = pool.allocate(1)
    pool.register(block, 7)
    assert pool.lookup([7]) == []
    pool.publish()
    assert pool.lookup([7]) == [block]


# ----- the scheduler -----


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_prefix_caching_is_on_by_default_only_for_todays_engines(policy: str) -> None:
    assert Harness(policy).scheduler.prefix_caching == (policy in ("vllm-apc", "continuum", "lazy-swap"))
    assert Harness(policy, enable_prefix_caching=True).scheduler.prefix_caching
    assert not Harness(policy, enable_prefix_caching=False).scheduler.prefix_caching


def test_a_policy_spec_switches_prefix_caching() -> None:
    assert parse_policy_spec("infercept/prefix-caching=on").prefix_caching is True
    assert parse_policy_spec("vllm-apc/prefix-caching=off").prefix_caching is False
    assert parse_policy_spec("vllm-apc").prefix_caching is None
    with pytest.raises(ValueError):
        parse_policy_spec("vllm/prefix-caching=maybe")


def test_two_requests_with_one_system_prompt_share_its_blocks() -> None:
    h = Harness("vllm-apc")
    a = h.add(generate_request([*SYSTEM, 50, 51], max_tokens=6))
    h.step()
    b = h.add(generate_request([*SYSTEM, 60], max_tokens=6))
    plan = h.step()
    work = h.work(plan, b)
    assert work is not None and work.start_position == 12 and list(work.token_ids) == [60]
    layouts = h.scheduler.blocks.layouts
    assert layouts[a].device[:3] == layouts[b].device[:3]
    assert all(h.scheduler.blocks.device.refcount(block) == 2 for block in layouts[b].device[:3])
    stats = stats_proto(h.scheduler)
    assert (stats.prefix_hit_tokens, stats.prefix_hit_blocks) == (12, 3)
    assert stats.last_iteration.prefix_hit_tokens == 12 and stats.prefix_caching
    assert stats.prompt_tokens == 14 + 1  # the shared 12 were computed once
    h.run()
    assert h.tokens(a) == expected_tokens(a, 14, 6) and h.tokens(b) == expected_tokens(b, 13, 6)


def test_requests_planned_in_one_iteration_do_not_share_what_it_writes() -> None:
    h = Harness("vllm-apc")
    a = h.add(generate_request([*SYSTEM, 50], max_tokens=2))
    b = h.add(generate_request([*SYSTEM, 60], max_tokens=2))
    plan = h.step()
    assert all(work.start_position == 0 for work in unpack_work(plan.work) if work.request_id in (a, b))
    assert len(plan.work.request_ids) == 2
    c = h.add(generate_request([*SYSTEM, 70], max_tokens=2))
    work = h.work(h.step(), c)
    assert work is not None and work.start_position == 12
    h.run()
    assert h.tokens(c) == expected_tokens(c, 13, 2)


def test_a_returning_vllm_apc_request_computes_only_what_is_no_longer_cached() -> None:
    runs = {}
    for policy in ("vllm", "vllm-apc"):
        h = Harness(policy)
        a = h.add(generate_request(list(range(1, 19)), max_tokens=8, script=[(3, "calc")]))
        h.run_until_paused(a)
        computed = h.scheduler.requests[a].max_computed  # all of it released at the pause
        stats = stats_proto(h.scheduler)
        assert stats.device_blocks_free == stats.device_blocks_total  # released: cached is reusable
        assert stats.device_blocks_cached == (computed // BLOCK_SIZE if policy == "vllm-apc" else 0)
        h.resume(a, [7, 8])
        work = h.work(h.step(), a)
        assert work is not None
        assert work.start_position == (computed // BLOCK_SIZE * BLOCK_SIZE if policy == "vllm-apc" else 0)
        h.run()
        runs[policy] = (h.tokens(a), h.finished(a).usage.recomputed_tokens, stats_proto(h.scheduler))
    assert runs["vllm"][0] == runs["vllm-apc"][0]
    assert runs["vllm-apc"][1] < runs["vllm"][1]
    assert runs["vllm-apc"][2].prefix_hit_tokens > 0 and runs["vllm"][2].prefix_hit_tokens == 0


def test_eviction_takes_the_least_recently_released_blocks_tail_first() -> None:
    h = Harness("vllm-apc", num_device_blocks=8)
    prompt_a, prompt_b = [1] * 8, [2] * 8  # two full blocks each
    for prompt in (prompt_a, prompt_b):
        h.add(generate_request(prompt, max_tokens=1))
        h.run()
    assert stats_proto(h.scheduler).device_blocks_cached == 4
    h.add(generate_request([3] * 20, max_tokens=1))  # 5 blocks: the 4 never used, then one evicted
    h.run()
    assert h.scheduler.blocks.device.num_evicted == 1
    assert num_cached_blocks(h, prompt_a) == 1  # lost its tail
    assert num_cached_blocks(h, prompt_b) == 2
    e = h.add(generate_request([*prompt_b, 9], max_tokens=1))
    work = h.work(h.step(), e)
    assert work is not None and work.start_position == 8
    h.run()
    assert h.tokens(e) == expected_tokens(e, 9, 1)


def test_a_shared_block_is_copied_before_it_is_written() -> None:
    h = Harness("vllm-apc")
    prompt = list(range(30, 42))  # exactly 3 blocks: the last token must be computed in block 2
    a = h.add(generate_request(prompt, max_tokens=6))
    h.step()
    b = h.add(generate_request(prompt, max_tokens=6))
    plan = h.step()
    work = h.work(plan, b)
    assert work is not None and work.start_position == 11 and list(work.token_ids) == [prompt[-1]]
    table_a, table_b = (h.scheduler.blocks.layouts[rid].device for rid in (a, b))
    assert ids(plan.device_copies.src_block_ids) == [table_a[2]]
    assert ids(plan.device_copies.dst_block_ids) == [table_b[2]] and table_b[:2] == table_a[:2]
    assert table_b[2] != table_a[2] and h.executor.num_device_copies == 1
    h.run()
    assert h.tokens(a) == expected_tokens(a, 12, 6) and h.tokens(b) == expected_tokens(b, 12, 6)


def test_a_cached_block_nobody_else_holds_is_rewritten_in_place() -> None:
    h = Harness("vllm-apc")
    prompt = list(range(30, 42))
    h.add(generate_request(prompt, max_tokens=1))
    h.run()
    b = h.add(generate_request(prompt, max_tokens=3))
    plan = h.step()
    work = h.work(plan, b)
    assert work is not None and work.start_position == 11 and not plan.HasField("device_copies")
    h.run()
    assert h.tokens(b) == expected_tokens(b, 12, 3)


def test_swapping_out_a_shared_block_leaves_it_to_the_others() -> None:
    h = Harness("swap", enable_prefix_caching=True)
    a = h.add(generate_request([*SYSTEM, 50], max_tokens=8, script=[(2, "calc")]))
    h.step()
    b = h.add(generate_request([*SYSTEM, 60], max_tokens=12))
    assert h.run_until_paused(a).context_action == "swap"
    shared = h.scheduler.blocks.layouts[b].device[:3]
    plan = h.step()  # copies a's context out, shared blocks included, while b reads them
    assert set(shared) <= set(ids(plan.swap_out.src_block_ids))
    assert h.scheduler.blocks.layouts[b].device[:3] == shared
    assert all(h.scheduler.blocks.device.refcount(block) == 1 for block in shared)
    h.resume(a, [5, 6])
    h.run()
    assert h.tokens(a)[2:] == expected_tokens(a, 13 + 2 + 2, 6) and h.tokens(b) == expected_tokens(b, 13, 12)
    assert stats_proto(h.scheduler).device_blocks_free == stats_proto(h.scheduler).device_blocks_total


def test_an_executor_reset_forgets_the_cache() -> None:
    h = Harness("vllm-apc")
    h.add(generate_request([*SYSTEM, 50], max_tokens=1))
    h.run()
    assert stats_proto(h.scheduler).device_blocks_cached == 3
    h.scheduler.reset_executor_state()
    assert stats_proto(h.scheduler).device_blocks_cached == 0
    b = h.add(generate_request([*SYSTEM, 60], max_tokens=1))
    work = h.work(h.step(), b)
    assert work is not None and work.start_position == 0


def test_the_invariant_checker_catches_a_reference_the_pool_does_not_count() -> None:
    h = Harness("vllm-apc")
    a = h.add(generate_request([*SYSTEM, 50], max_tokens=4))
    h.step()
    b = h.add(generate_request([1, 2, 3], max_tokens=4))
    h.step()
    blocks = h.scheduler.blocks
    blocks.check_invariants()
    blocks.layouts[b].device.append(blocks.layouts[a].device[0])  # shared behind the pool's back
    with pytest.raises(AssertionError, match="refcount"):
        blocks.check_invariants()


# ----- continuum -----


def continuum_harness(num_device_blocks: int = 64) -> Harness:
    """A continuum scheduler that has seen 8 calls of each tool: `calc` lasts up to 8 s (its
    0.9-quantile), `env` 600 s. A reload costs 10 s (a slow device), so a short call is pinned."""
    cost = CostModel(
        forward_base_s=10.0,
        forward_s_per_token=0.01,
        saturation_tokens=64,
        swap_out_s_per_block=0.1,
        swap_in_s_per_block=0.1,
        swap_fixed_s=0.0,
    )
    h = Harness("continuum", cost_model=cost, num_device_blocks=num_device_blocks)
    policy = h.scheduler.policy
    assert isinstance(policy, ContinuumPolicy)
    for duration_s in range(1, 9):
        policy.estimator.observe("calc", float(duration_s))
        policy.estimator.observe("env", 600.0)
    return h


def test_continuum_pins_a_short_calls_context_for_its_ttl_then_releases_it_to_the_cache() -> None:
    h = continuum_harness()
    a = h.add(generate_request(list(range(1, 17)), max_tokens=10, script=[(2, "calc"), (2, "env")]))
    assert h.run_until_paused(a).context_action == "preserve"
    layout = h.scheduler.blocks.layouts[a]
    num_blocks = len(layout.device)
    for _ in range(7):  # the TTL is 8 s; the harness clock moves 1 s per iteration
        h.step()
        assert len(layout.device) == num_blocks
    h.step()
    stats = stats_proto(h.scheduler)
    assert not layout.device and stats.paused_discards == 1
    num_cached = h.scheduler.requests[a].max_computed // BLOCK_SIZE
    assert stats.device_blocks_cached == num_cached
    h.resume(a, [3])
    work = h.work(h.step(), a)
    assert work is not None and work.start_position == num_cached * BLOCK_SIZE
    assert h.scheduler.requests[a].arrival_s == 0.0  # program-level FCFS: its first arrival
    # A 600 s call: holding the context would cost more device time than reloading it.
    assert h.run_until_paused(a).context_action == "discard"
    h.resume(a, [4])
    h.run()
    assert h.finished(a).finish_reason == "length" and stats_proto(h.scheduler).prefix_hit_tokens > 0


def test_continuum_plans_decodes_ahead_while_a_pin_holds_and_revisits_when_it_expires() -> None:
    h = continuum_harness()
    h.plan_ahead = True
    a = h.add(generate_request(list(range(1, 17)), max_tokens=4, script=[(2, "calc")]))
    b = h.add(generate_request(list(range(40, 48)), max_tokens=30))
    assert h.run_until_paused(a).context_action == "preserve"  # pinned for 8 s
    planned = []
    for _ in range(9):
        h.iterate()
        planned.append(h.ahead is not None)
    assert planned[:6] == [True] * 6 and False in planned[6:]  # the expiry's iteration is not
    while h.ahead is not None:
        h.iterate()
    assert not h.scheduler.blocks.layouts[a].device and h.scheduler.stats.paused_discards == 1
    h.resume(a, [5])
    h.run()
    assert h.finished(a).finish_reason == h.finished(b).finish_reason == "length"


def test_continuum_releases_pinned_contexts_when_memory_is_short() -> None:
    h = continuum_harness(num_device_blocks=12)
    a = h.add(generate_request(list(range(1, 17)), max_tokens=4, script=[(2, "calc")]))
    assert h.run_until_paused(a).context_action == "preserve"
    b = h.add(generate_request(list(range(100, 140)), max_tokens=4))  # 10 blocks: more than are free
    h.step()
    assert h.scheduler.blocks.layouts[a].device  # still pinned: b computed what fitted
    h.step()
    assert not h.scheduler.blocks.layouts[a].device and h.scheduler.stats.paused_discards == 1
    h.run()
    assert h.tokens(b) == expected_tokens(b, 40, 4)
    h.resume(a, [5])
    h.run()
    assert h.finished(a).finish_reason == "length"


def test_continuum_pins_nothing_for_a_tool_without_history() -> None:
    h = Harness("continuum")
    a = h.add(generate_request(list(range(1, 17)), max_tokens=4, script=[(2, "new-tool")]))
    assert h.run_until_paused(a).context_action == "discard"
    assert stats_proto(h.scheduler).device_blocks_cached > 0


def test_the_scheduler_command_line_switches_prefix_caching() -> None:
    assert parse_args([]).prefix_caching is None  # the policy's default
    assert parse_args(["--prefix-caching"]).prefix_caching is True
    assert parse_args(["--no-prefix-caching", "--policy", "vllm-apc"]).prefix_caching is False
