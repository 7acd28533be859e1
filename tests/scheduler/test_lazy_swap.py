"""The lazy-swap policy and the prefix cache's eviction rank, with fabricated executor results
(the fake executor checks every KV read): ranked blocks go after the LRU ones, highest rank first;
a paused context is copied out while memory is free and taken back from the cache with no copy;
memory pressure releases the furthest expected return first; a preempted context is evicted last;
a new request leaves the running batch its reserve; techniques switch off."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler_svc.cost_model import CostModel
from scheduler_svc.paused_revisit import paused_context
from scheduler_svc.policies import create_policy
from scheduler_svc.policies.lazy_swap import RESERVE_HOLD_S, LazySwapOptions, LazySwapPolicy
from scheduler_svc.policies.spec import parse_policy_spec
from scheduler_svc.prefix_cache import CachingBlockPool
from scheduler_svc.stats_render import stats_proto
from tests.scheduler.harness import BLOCK_SIZE, Harness, generate_request, ids


def cached_pool(num_blocks: int) -> CachingBlockPool:
    """A pool whose blocks are all owned and published under hash 100 + block."""
    pool = CachingBlockPool(num_blocks)
    for block in pool.allocate(num_blocks):
        pool.register(block, 100 + block)
    pool.publish()
    return pool


def test_ranked_blocks_are_evicted_after_the_lru_ones_highest_rank_first() -> None:
    pool = cached_pool(6)
    pool.free([0, 1], evict_rank=5.0)
    pool.free([2], evict_rank=50.0)
    pool.free([3])  # unranked: plain LRU
    pool.free([4], evict_rank=20.0)
    assert (pool.num_free, pool.num_cached) == (5, 5)
    pool.check(__import__("collections").Counter({5: 1}))
    assert pool.allocate(3) == [3, 2, 4]  # LRU first, then ranks 50, 20
    assert pool.allocate(2) == [1, 0]  # one rank: the tail (released first) before the head


def test_a_ranked_block_taken_again_loses_its_rank() -> None:
    pool = cached_pool(3)
    pool.free([0], evict_rank=9.0)
    pool.free([1], evict_rank=1.0)
    pool.share([0])  # owned again: not evictable, its heap entry stale
    assert pool.allocate(1) == [1]
    assert not pool.can_allocate(1)
    pool.free([0])  # released again, unranked this time
    assert pool.allocate(1) == [0]
    pool.forget_all()
    assert pool.num_cached == 0


def lazy_harness(**kwargs: object) -> Harness:
    return Harness("lazy-swap", **kwargs)  # type: ignore[arg-type]


def with_slow_link_watermark(h: Harness) -> Harness:
    """The harness with the copy watermark fixed at half the pool, as a slow link's: its own link
    (10 blocks an iteration) would move most of its small pools, and copies would wait until
    memory is short."""
    policy = h.scheduler.policy
    assert isinstance(policy, LazySwapPolicy)
    policy.options = dataclasses.replace(policy.options, copy_watermark_share=0.5)
    return h


def test_a_paused_context_is_not_copied_while_the_pool_is_mostly_free() -> None:
    h = lazy_harness()  # 64 blocks: the paused context's 5 are far below the copy watermark
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    assert h.run_until_paused(a).context_action == "preserve"
    for _ in range(3):
        assert not ids(h.step().swap_out.src_block_ids)
    assert not h.scheduler.blocks.layouts[a].host and len(h.scheduler.blocks.layouts[a].device) == 5


def test_a_paused_context_is_copied_out_and_taken_back_from_the_cache_without_a_copy() -> None:
    h = with_slow_link_watermark(lazy_harness(num_device_blocks=8))  # 5 blocks: over half the pool
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    assert h.run_until_paused(a).context_action == "preserve"
    plan = h.step()  # memory is free: the link copies the context out, the device copy stays cached
    layout = h.scheduler.blocks.layouts[a]
    assert len(ids(plan.swap_out.src_block_ids)) == 5 and not layout.device and len(layout.host) == 5
    assert stats_proto(h.scheduler).device_blocks_cached == 4  # the full blocks; the partial one is free
    # Wholly on the host now: lazy-swap's revisit no longer looks at it (other policies still do).
    request = h.scheduler.requests[a]
    assert not LazySwapPolicy.revisits_host_contexts
    assert paused_context(request, h.scheduler.blocks, with_host_only=False) is None
    assert paused_context(request, h.scheduler.blocks) is not None
    h.resume(a, [7])
    plan = h.step()
    assert len(ids(plan.swap_in.src_block_ids)) == 1  # only the partial block comes from the host
    assert h.scheduler.stats.reattached_blocks == 4 and stats_proto(h.scheduler).recomputed_tokens == 0
    h.run()
    assert h.finished(a).finish_reason == "length"


def two_paused_calls_then_a_big_prompt(h: Harness) -> tuple[int, int, int]:
    """Two contexts of 5 blocks paused in a pool of 12, a 2 s and a 500 s call by the clients'
    hints, then a prompt that needs 7 blocks: memory runs short."""
    short = h.add(generate_request(list(range(1, 17)), max_tokens=4, script=[(2, "calc")]))
    long = h.add(generate_request(list(range(20, 36)), max_tokens=4, script=[(2, "calc")]))
    for _ in range(10):  # both pause in the same iterations
        h.step()
    assert all(h.interceptions(rid) for rid in (short, long))
    h.scheduler.tool_started(short, 2.0)
    h.scheduler.tool_started(long, 500.0)
    big = h.add(generate_request(list(range(100, 116)), max_tokens=12))
    for _ in range(8):
        h.step()
    return short, long, big


def finish_all(h: Harness, short: int, long: int, big: int) -> None:
    h.resume(short, [5])
    h.resume(long, [6])
    h.run()
    assert h.scheduler.requests == {} and h.finished(big).finish_reason == "length"


def test_memory_pressure_evicts_the_furthest_expected_return_first() -> None:
    h = lazy_harness(num_device_blocks=12, disabled_techniques=("opportunistic-swap", "hold-cheap"))
    short, long, big = two_paused_calls_then_a_big_prompt(h)
    assert h.scheduler.stats.paused_discards == 2  # both released to the cache
    finish_all(h, short, long, big)
    # The short call's full blocks stayed cached (only its partial last block is recomputed);
    # the long call's were evicted.
    assert h.finished(short).usage.recomputed_tokens < BLOCK_SIZE
    assert h.finished(long).usage.recomputed_tokens >= 2 * BLOCK_SIZE


def test_memory_pressure_releases_only_what_costs_more_to_hold_than_to_reload() -> None:
    h = lazy_harness(num_device_blocks=12, disabled_techniques=("opportunistic-swap",))
    short, long, big = two_paused_calls_then_a_big_prompt(h)
    # Holding 16 of 48 tokens for 2 s costs less than a 1 s reload; for 500 s, more.
    assert h.scheduler.stats.paused_discards == 1
    assert h.scheduler.blocks.layouts[short].device and not h.scheduler.blocks.layouts[long].device
    finish_all(h, short, long, big)
    assert h.finished(short).usage.recomputed_tokens == 0


def test_the_evict_rank_follows_the_expected_return_and_the_host_copy() -> None:
    policy = create_policy("lazy-swap")
    assert isinstance(policy, LazySwapPolicy)
    assert callable(create_policy("lazy-swap", disabled=("ranked-eviction",)).evict_rank)  # still a hook
    h = lazy_harness()
    a = h.add(generate_request(list(range(1, 9)), max_tokens=4, script=[(1, "calc")]))
    h.run_until_paused(a)
    h.scheduler.tool_started(a, 30.0)
    request = h.scheduler.requests[a]
    rank = h.scheduler.policy.evict_rank(request, h.now)
    assert request.pending_call is not None
    assert rank is not None and rank == pytest.approx(
        h.now + 30.0 - (h.now - request.pending_call.paused_at_s)
    )
    off = lazy_harness(disabled_techniques=("ranked-eviction",))
    b = off.add(generate_request(list(range(1, 9)), max_tokens=4, script=[(1, "calc")]))
    off.run_until_paused(b)
    assert off.scheduler.policy.evict_rank(off.scheduler.requests[b], off.now) is None


def test_techniques_switch_off_by_name_and_unknown_ones_are_refused() -> None:
    spec = parse_policy_spec("lazy-swap/no-opportunistic-swap/no-program-order")
    assert spec.disabled_techniques == ("opportunistic-swap", "program-order")
    h = lazy_harness(disabled_techniques=spec.disabled_techniques)
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    h.run_until_paused(a)
    h.step()
    assert h.scheduler.stats.swap_out_blocks == 0  # no copy: the context stays owned
    h.now = 40.0
    h.resume(a, [3])
    assert h.scheduler.requests[a].arrival_s == 40.0  # the back of the queue
    with pytest.raises(ValueError, match="unknown technique"):
        create_policy("lazy-swap", disabled=("min-waste",))


def a_running_request_and_a_new_one_that_would_take_its_reserve(h: Harness) -> tuple[int, int]:
    """In a pool of 20 blocks (a reserve of 2), a running request, then a new one whose prompt
    would leave one block free."""
    a = h.add(generate_request(list(range(1, 41)), max_tokens=12))
    h.step()
    free = h.scheduler.blocks.device.num_free
    b = h.add(generate_request(list(range(50, 50 + (free - 1) * BLOCK_SIZE)), max_tokens=2))
    return a, b


def test_after_a_preemption_a_new_request_waits_while_it_would_take_the_running_batchs_reserve() -> None:
    h = lazy_harness(num_device_blocks=20)
    policy = h.scheduler.policy
    assert policy.admission_reserve_blocks(20, h.now) == 0  # memory has not run out yet
    a, b = a_running_request_and_a_new_one_that_would_take_its_reserve(h)
    policy.preempted(h.scheduler.requests[a], h.now)  # as if memory had just run out
    assert policy.admission_reserve_blocks(20, h.now) == 2
    assert policy.admission_reserve_blocks(20, h.now + RESERVE_HOLD_S + 1) == 0  # not for ever
    for _ in range(3):
        plan = h.step()
        assert h.work(plan, a) is not None and h.work(plan, b) is None  # a decodes alone
    h.run()
    assert h.finished(b).finish_reason == "length" and h.scheduler.stats.preemptions == 0
    assert h.finished(a).usage.recomputed_tokens == 0


@pytest.mark.parametrize("disabled", [(), ("admission-reserve",)])
def test_without_a_preemption_or_the_reserve_the_new_request_starts_at_once(
    disabled: tuple[str, ...],
) -> None:
    h = lazy_harness(num_device_blocks=20, disabled_techniques=disabled)
    a, b = a_running_request_and_a_new_one_that_would_take_its_reserve(h)
    if disabled:
        h.scheduler.policy.preempted(h.scheduler.requests[a], h.now)
        assert h.scheduler.policy.admission_reserve_blocks(20, h.now) == 0
    plan = h.step()
    assert h.work(plan, a) is not None and h.work(plan, b) is not None
    h.run()
    assert h.finished(b).finish_reason == "length"


def test_the_reserve_holds_back_no_request_when_nothing_else_computes() -> None:
    h = lazy_harness(num_device_blocks=20)
    h.scheduler.policy.preempted(h.scheduler.requests[h.add(generate_request([1], max_tokens=1))], h.now)
    h.run()
    a = h.add(generate_request(list(range(1, 19 * BLOCK_SIZE + 1)), max_tokens=2))  # 19 of 20 blocks
    assert h.work(h.step(), a) is not None
    h.run()
    assert h.finished(a).finish_reason == "length"


def test_a_preempted_context_is_ranked_to_be_evicted_last_it_comes_back_first() -> None:
    h = lazy_harness()
    a = h.add(generate_request(list(range(1, 9)), max_tokens=4))
    h.step()
    assert h.scheduler.policy.evict_rank(h.scheduler.requests[a], h.now) == h.now  # no call: now


def plans_ahead(h: Harness) -> bool:
    """Whether the next decode iteration is planned while the current one computes (as the step
    loop plans it); every plan is applied before it returns."""
    h.iterate()
    planned = h.ahead is not None
    while h.ahead is not None:
        h.iterate()
    return planned


def test_a_context_paused_in_a_mostly_free_pool_is_not_revisited_and_decodes_are_planned_ahead() -> None:
    h = Harness("lazy-swap", plan_ahead=True)  # 64 blocks: far below the copy watermark
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    b = h.add(generate_request(list(range(40, 48)), max_tokens=30))
    h.run_until_paused(a)
    assert plans_ahead(h) and not h.scheduler.policy.revisits_paused(h.now, h.scheduler.blocks, False)
    assert h.scheduler.policy.revisits_paused(h.now, h.scheduler.blocks, True)  # memory short: always
    h.resume(a, [7])
    h.run()
    assert h.finished(a).finish_reason == h.finished(b).finish_reason == "length"
    assert h.scheduler.stats.swap_out_blocks == 0


def test_a_filling_pool_is_revisited_until_the_paused_context_is_copied_out() -> None:
    h = with_slow_link_watermark(Harness("lazy-swap", num_device_blocks=12, plan_ahead=True))
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    b = h.add(generate_request(list(range(40, 48)), max_tokens=30))
    h.run_until_paused(a)  # a's 5 blocks and b's 2 of 12: above half the pool
    policy, blocks = h.scheduler.policy, h.scheduler.blocks
    assert policy.revisits_paused(h.now, blocks, False)
    plan, _ = h.iterate()  # the revisit copies a out; its device copy is cached, not owned
    assert len(ids(plan.swap_out.src_block_ids)) == 5 and not blocks.layouts[a].device
    assert not policy.revisits_paused(h.now, blocks, False) and plans_ahead(h)
    h.resume(a, [7])
    h.run()
    assert h.finished(a).finish_reason == h.finished(b).finish_reason == "length"


def link(forward_s: float, swap_s_per_block: float, swap_fixed_s: float = 0.0) -> CostModel:
    return CostModel(
        forward_base_s=forward_s,
        forward_s_per_token=0.0,
        saturation_tokens=64,
        swap_out_s_per_block=swap_s_per_block,
        swap_in_s_per_block=swap_s_per_block,
        swap_fixed_s=swap_fixed_s,
    )


def watermark(cost: CostModel, num_device_blocks: int, share: float | None = None) -> float:
    policy = LazySwapPolicy(LazySwapOptions(copy_watermark_share=share))
    policy.bind_cost_model(cost)
    return policy.copy_watermark_share(num_device_blocks)


def test_the_copy_watermark_follows_the_measured_link() -> None:
    # A CPU's "link" (5 ms iterations, 10 us a block: 500 blocks an iteration of a 1,024 pool):
    # copies wait until the pool is full, where memory is short.
    assert watermark(link(0.005, 10e-6), 1024) == 1.0
    # PCIe on the A100 profile (27.8 ms iterations, 2.9 ms a block: 9 of 867): nearly half.
    assert watermark(link(0.0278, 0.0029), 867) == pytest.approx(0.5 + 4 * 9 / 867)
    # A link whose fixed cost fills the iteration moves nothing in time: half the pool.
    assert watermark(link(0.01, 0.001, swap_fixed_s=0.01), 867) == 0.5
    # The same link, a pool 10 times larger: the link's share shrinks with it.
    assert watermark(link(0.005, 10e-6), 10240) == pytest.approx(0.5 + 4 * 500 / 10240)
    # An explicit share overrides the link; a share outside [0, 1] is refused.
    assert watermark(link(0.005, 10e-6), 1024, share=0.5) == 0.5
    with pytest.raises(ValueError, match="copy_watermark_share"):
        LazySwapOptions(copy_watermark_share=1.5)


def test_on_a_fast_link_copies_wait_until_memory_is_short_and_decodes_are_planned_ahead() -> None:
    h = lazy_harness(num_device_blocks=12, plan_ahead=True)  # 10 blocks an iteration of 12
    a = h.add(generate_request(list(range(1, 17)), max_tokens=6, script=[(2, "calc")]))
    b = h.add(generate_request(list(range(40, 48)), max_tokens=30))
    h.run_until_paused(a)  # a's 5 blocks and b's 2 of 12: over half the pool, not full
    policy, blocks = h.scheduler.policy, h.scheduler.blocks
    assert not policy.revisits_paused(h.now, blocks, False) and plans_ahead(h)
    assert h.scheduler.stats.swap_out_blocks == 0 and len(blocks.layouts[a].device) == 5
    big = h.add(generate_request(list(range(100, 132)), max_tokens=12))  # needs more than is free
    while not h.scheduler.stats.swap_out_blocks and h.scheduler.requests[big].num_computed == 0:
        h.iterate()
    # Memory ran short: the link copied a out (its device copy cached) before anyone recomputed.
    assert h.scheduler.stats.swap_out_blocks == 5 and blocks.layouts[a].host
    h.resume(a, [7])
    h.run()
    assert h.finished(a).finish_reason == h.finished(b).finish_reason == h.finished(big).finish_reason
    assert h.finished(a).usage.recomputed_tokens == 0
