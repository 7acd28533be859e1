from __future__ import annotations

import dataclasses

import pytest

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.sim.virtual_executor import SAMPLED_TOKEN_ID, VOCAB_SIZE, VirtualExecutor
from svc_common.step_wire import Work, pack_work, unpack_sampled
from svc_common.wire import pack_u32
from tests.sim.helpers import tiny_profile


def plan_with(
    num_tokens: list[int],
    samples: list[bool],
    swap_out: int = 0,
    swap_in: int = 0,
    starts: tuple[int, ...] | None = None,
) -> pb.StepPlan:
    starts = starts or (0,) * len(num_tokens)
    work = [
        Work(request_id, start, [1] * n, sample)
        for request_id, (n, sample, start) in enumerate(
            zip(num_tokens, samples, starts, strict=True), start=1
        )
    ]
    plan = pb.StepPlan(step_id=7, work=pack_work(work))
    plan.swap_out.src_block_ids = plan.swap_out.dst_block_ids = pack_u32(list(range(swap_out)))
    plan.swap_in.src_block_ids = plan.swap_in.dst_block_ids = pack_u32(list(range(swap_in)))
    return plan


def test_a_token_for_each_sampling_item_and_the_forward_time() -> None:
    profile = tiny_profile()
    result = VirtualExecutor(profile).run(plan_with([30, 1, 60], [False, True, True]))
    assert result.step_id == 7
    assert [(s.request_id, s.token_id) for s in unpack_sampled(result.sampled)] == [
        (2, SAMPLED_TOKEN_ID),
        (3, SAMPLED_TOKEN_ID),
    ]
    assert SAMPLED_TOKEN_ID < VOCAB_SIZE
    assert result.num_batched_tokens == 91
    assert result.forward_s == pytest.approx(profile.forward_s(91))
    assert result.step_s == result.forward_s


def test_serialized_swaps_add_their_whole_copy_time() -> None:
    profile = tiny_profile()
    result = VirtualExecutor(profile).run(plan_with([1], [True], swap_out=3, swap_in=2))
    assert result.swap_out_s == pytest.approx(profile.swap_out_s(3))
    assert result.swap_in_s == pytest.approx(profile.swap_in_s(2))
    assert result.step_s == pytest.approx(profile.forward_s(1) + profile.swap_out_s(3) + profile.swap_in_s(2))


def test_overlapped_swaps_cost_only_what_exceeds_the_forward() -> None:
    profile = tiny_profile()  # 10 ms forward; 1 ms + 3 ms per block in
    executor = VirtualExecutor(profile, overlap_swaps=True)
    assert executor.run(plan_with([1], [True], swap_in=2)).step_s == pytest.approx(profile.forward_s(1))
    big = executor.run(plan_with([1], [True], swap_in=10))
    assert big.step_s == pytest.approx(profile.swap_in_s(10))  # 31 ms: the copy is the iteration


def test_an_empty_plan_takes_no_time_and_a_swap_only_plan_its_copy() -> None:
    profile = tiny_profile()
    executor = VirtualExecutor(profile)
    assert executor.run(pb.StepPlan(step_id=1)).step_s == 0.0
    swap_only = executor.run(plan_with([], [], swap_out=4))
    assert swap_only.forward_s == 0.0
    assert swap_only.step_s == pytest.approx(profile.swap_out_s(4))


def test_cached_context_adds_to_the_forward_and_overhead_to_the_iteration() -> None:
    profile = tiny_profile(
        forward_s_per_context_token=1e-5, iteration_overhead_s=0.002, iteration_overhead_s_per_sequence=0.001
    )
    executor = VirtualExecutor(profile)
    plan = plan_with([1, 1, 30], [True, True, False], starts=(100, 50, 0))
    result = executor.run(plan)
    assert result.forward_s == pytest.approx(profile.forward_s(32) + 150 * 1e-5)
    assert result.step_s == result.forward_s  # the executor's own step: no overhead in it
    assert executor.iteration_s(plan, result) == pytest.approx(result.step_s + 0.002 + 3 * 0.001)
    # The host side per attended context token (150 here) and per tool-returned token.
    host = VirtualExecutor(
        dataclasses.replace(
            profile, iteration_overhead_s_per_context_token=1e-6, iteration_overhead_s_per_returned_token=1e-4
        )
    )
    assert host.iteration_s(plan, result, num_returned_tokens=5) == pytest.approx(
        result.step_s + 0.002 + 3 * 0.001 + 150 * 1e-6 + 5 * 1e-4
    )


def test_a_plan_the_loop_would_not_send_costs_no_overhead_but_a_forget_only_plan_does() -> None:
    executor = VirtualExecutor(tiny_profile(iteration_overhead_s=0.002))
    empty = pb.StepPlan(step_id=1)
    assert executor.iteration_s(empty, executor.run(empty)) == 0.0
    forget = pb.StepPlan(step_id=2, forget_request_ids=[5])
    assert executor.iteration_s(forget, executor.run(forget)) == pytest.approx(0.002)
