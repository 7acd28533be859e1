"""The authors' InferCept selection (scheduler_v2's policy V) on the fabricated cost model of
tests.scheduler.harness: every iteration, every paused context with W_d < W_p is discarded except
the most expensive to discard, which is swapped out once memory is short."""

from __future__ import annotations

from scheduler_svc.policies import create_policy
from scheduler_svc.policies.infercept_authors import InferceptAuthorsPolicy
from scheduler_svc.sim.profiles import a100_40gb_gptj6b
from tests.scheduler.harness import Harness, ids
from tests.scheduler.test_infercept import quiet_logs, scripted

__all__ = ["quiet_logs"]  # the autouse fixture, applied here too


def pause_three(h: Harness) -> tuple[int, int, int]:
    """`large` (40 tokens) and `small` (24) in 1000 s calls, `short` (8) in a 50 ms call."""
    large = h.add(scripted(40, "search", 1000.0))
    small = h.add(scripted(24, "search", 1000.0, first=5))
    short = h.add(scripted(8, "calc", 0.05, first=7))
    h.run()
    assert all(h.interceptions(r) for r in (large, small, short))
    return large, small, short


def test_it_discards_every_call_worth_discarding_but_the_costliest_even_with_memory_to_spare() -> None:
    held = {}
    for policy in ("infercept-authors", "infercept"):
        h = Harness(policy, num_device_blocks=64, estimator="oracle")
        large, small, short = pause_three(h)
        h.add(scripted(4, "calc", 1.0, first=3))  # keeps iterations going
        h.step()
        held[policy] = [len(h.scheduler.blocks.layout(r).device) for r in (large, small, short)]
    assert held["infercept-authors"] == [11, 0, 3]  # 42 tokens kept, 26 discarded, the 50 ms call kept
    assert held["infercept"] == [11, 7, 3]  # ours waits for memory to be short


def test_its_costliest_context_is_swapped_out_within_the_budget_once_memory_is_short() -> None:
    h = Harness("infercept-authors", num_device_blocks=24, estimator="oracle")
    large, small, short = pause_three(h)
    h.add(scripted(40, "calc", 1.0, first=3))  # needs 11 blocks of the 24 - 11 - 3 left after the discard
    for _ in range(3):
        h.step()
    layouts = h.scheduler.blocks.layouts
    assert len(layouts[small].device) == 0 and len(layouts[short].device) == 3
    assert len(layouts[large].host) > 0 and h.scheduler.stats.swap_out_blocks <= 10 * 3


def test_it_takes_the_infercept_options() -> None:
    policy = create_policy("infercept-authors", estimator="elapsed", disabled=("swap-budget",))
    assert isinstance(policy, InferceptAuthorsPolicy)
    assert policy.revisits_paused_always and policy.options.estimator == "elapsed"
    assert not policy.options.swap_budget


def test_a_returned_request_still_swapped_out_is_recomputed_when_nothing_waits() -> None:
    h = Harness("infercept-authors", num_device_blocks=24, estimator="oracle")
    large, _, _ = pause_three(h)
    h.add(scripted(40, "calc", 1.0, first=3))
    for _ in range(3):
        h.step()
    assert h.scheduler.blocks.layouts[large].host and not h.scheduler.table.queues.num_waiting
    preemptions = h.scheduler.stats.preemptions
    h.resume(large, [9])
    plan = h.step()
    # Their `_active_discard`: nothing waits, so the oldest swapped request recomputes instead.
    assert not h.scheduler.blocks.layouts[large].host and h.scheduler.stats.preemptions > preemptions
    assert not ids(plan.swap_in.src_block_ids)
    work = h.work(plan, large)
    assert work is not None and work.start_position == 0


def test_its_swap_limits_split_the_budget_at_m_by_the_free_device_memory() -> None:
    policy = create_policy("infercept-authors", estimator="oracle")
    profile = a100_40gb_gptj6b()
    policy.bind_cost_model(profile.policy_cost_model())
    block = profile.block_size_tokens  # 64
    # GPT-J-6B: in = 110.76 + free/2, out = 494.76 - free/2 tokens (their sed-in constants).
    assert policy.swap_limits_blocks(0, block) == (110 // block, 494 // block)
    assert policy.swap_limits_blocks(640, block) == ((110 + 320) // block, (494 - 320) // block)
    assert policy.swap_limits_blocks(100_000, block) == (50_110 // block, 0)
    assert create_policy("infercept").swap_limits_blocks(0, block) is None
