from __future__ import annotations

import pytest

from scheduler_svc.config import SchedulerConfig
from scheduler_svc.sim.driver import SimulationResult, simulate
from scheduler_svc.sim.profiles import a100_gptj6b
from scheduler_svc.sim.request_plan import RequestPlan, Segment
from tests.sim.helpers import FORWARD_S, SATURATION, one_call_plan, tiny_profile
from tooling.loadgen.workloads import generate_plans

LONG_S = 1e6  # a window that outlasts every request


def run_one_call(policy: str) -> SimulationResult:
    config = SchedulerConfig(policy=policy, max_batched_tokens=SATURATION, check_invariants=True)
    return simulate([one_call_plan()], tiny_profile(), config, warmup_s=0.0, duration_s=LONG_S)


@pytest.mark.parametrize("policy", ["vllm", "improved-discard", "preserve"])
def test_one_request_one_call_timeline_adds_up(policy: str) -> None:
    # Prompt of 10 (one iteration, first token), 2 decodes (3 generated: the call), 0.5 s in the
    # tool, then the 4 returned tokens with the pending one (plus the 12 discarded ones under the
    # discard policies: 17 <= S) in one iteration, then 1 decode: 5 iterations + the call.
    result = run_one_call(policy)
    [record] = result.records
    assert record.completed
    assert record.first_token_s == pytest.approx(FORWARD_S)
    assert record.finish_s == pytest.approx(5 * FORWARD_S + 0.5)
    assert record.tool_time_s == 0.5
    assert (record.generated_tokens, record.returned_tokens) == (5, 4)
    # The 5 that compute, and one that only tells the executor to forget the finished request.
    assert result.stats_after["iterations"] == result.num_iterations == 6


@pytest.mark.parametrize("policy", ["vllm", "preserve"])
def test_the_iteration_overhead_lengthens_every_iteration(policy: str) -> None:
    overhead_s = 0.002 + 0.001  # per iteration, and per sequence (one computes in each)
    profile = tiny_profile(iteration_overhead_s=0.002, iteration_overhead_s_per_sequence=0.001)
    config = SchedulerConfig(policy=policy, max_batched_tokens=SATURATION)
    [record] = simulate([one_call_plan()], profile, config, warmup_s=0.0, duration_s=LONG_S).records
    assert record.first_token_s == pytest.approx(FORWARD_S + overhead_s)
    assert record.finish_s == pytest.approx(5 * (FORWARD_S + overhead_s) + 0.5)


def test_the_iteration_that_computes_returned_tokens_pays_their_host_side() -> None:
    # preserve: the 4 returned tokens compute in the iteration after the call, which alone takes
    # 4 * 1 ms longer; every other iteration is unchanged.
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    plain, host = (
        simulate([one_call_plan()], profile, config, warmup_s=0.0, duration_s=LONG_S).records[0]
        for profile in (tiny_profile(), tiny_profile(iteration_overhead_s_per_returned_token=0.001))
    )
    assert host.first_token_s == plain.first_token_s
    assert plain.finish_s is not None and host.finish_s == pytest.approx(plain.finish_s + 4 * 0.001)


def test_swap_stalls_only_for_its_copy_back() -> None:
    # The swap-out of 3 blocks (12 computed tokens) runs while the tool does; the swap-in does not.
    profile = tiny_profile()
    result = run_one_call("swap")
    [record] = result.records
    assert record.finish_s == pytest.approx(5 * FORWARD_S + 0.5 + profile.swap_in_s(3))
    assert result.stats_after["swap_out_blocks"] == result.stats_after["swap_in_blocks"] == 3


def test_policies_differ_in_what_the_pause_costs() -> None:
    preserve, vllm, swap = (run_one_call(p).stats_after for p in ("preserve", "vllm", "swap"))
    # preserve holds the 3 blocks through the 0.5 s call; the others hold none.
    assert preserve["paused_device_block_seconds"] == pytest.approx(3 * 0.5)
    assert vllm["paused_device_block_seconds"] == swap["paused_device_block_seconds"] == 0.0
    # vllm recomputes the 12 computed tokens of the context; preserve and swap recompute none.
    assert vllm["recomputed_tokens"] == 12
    assert preserve["recomputed_tokens"] == swap["recomputed_tokens"] == 0


@pytest.mark.parametrize("policy", ["vllm", "improved-discard", "preserve", "swap"])
def test_every_block_is_free_after_a_run_that_completes_everything(policy: str) -> None:
    # A small pool, so that requests are preempted and the swap policy runs out of host blocks.
    profile = tiny_profile(num_device_blocks=96, num_host_blocks=12, block_size_tokens=16, max_model_len=512)
    plans = generate_plans("mixed", rate=4.0, duration_s=10.0, seed=3, max_model_len=512)
    config = SchedulerConfig(policy=policy, max_batched_tokens=SATURATION, check_invariants=True)
    result = simulate(plans, profile, config, warmup_s=0.0, duration_s=LONG_S)
    assert len(result.records) == len(plans) > 20
    assert all(r.completed for r in result.records)
    assert result.errors == {}
    after = result.stats_after
    assert after["device_blocks_free"] == after["device_blocks_total"] == 96
    assert after["host_blocks_free"] == after["host_blocks_total"] == 12
    assert after["requests_by_state"] == {"waiting": 0, "running": 0, "paused": 0, "finished": len(plans)}
    assert after["recomputed_tokens"] > 0  # the pool was tight enough to preempt


def test_the_same_plans_give_the_same_results() -> None:
    profile = a100_gptj6b()
    plans = generate_plans("mixed", rate=3.0, duration_s=60.0, seed=11, max_model_len=profile.max_model_len)
    config = SchedulerConfig(policy="swap", max_batched_tokens=profile.saturation_tokens)
    first = simulate(plans, profile, config, warmup_s=5.0, duration_s=55.0)
    second = simulate(list(reversed(plans)), profile, config, warmup_s=5.0, duration_s=55.0)
    assert first == second
    assert sum(r.completed for r in first.records) > 0


def test_the_window_measures_only_its_arrivals_and_stops_at_its_end() -> None:
    plans = [
        one_call_plan(arrival_s=0.0, index=0),  # in the warm-up: not measured
        one_call_plan(arrival_s=1.0, index=1),  # measured, finishes at 1.55
        one_call_plan(arrival_s=2.0, duration_s=100.0, index=2),  # still in its call at the end
    ]
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    result = simulate(plans, tiny_profile(), config, warmup_s=0.5, duration_s=10.0)
    assert [r.index for r in result.records] == [1, 2]
    done, unfinished = result.records
    assert done.completed and done.finish_s == pytest.approx(1.0 + 5 * FORWARD_S + 0.5)
    assert not unfinished.completed and unfinished.finish_s is None
    assert unfinished.first_token_s == pytest.approx(2.0 + FORWARD_S)
    assert result.end_s <= result.window_end_s == 10.5
    # At the window's start (0.5 s) the warm-up request was in its call (0.03 s to 0.53 s).
    assert result.stats_before["requests_by_state"] == {
        "waiting": 0,
        "running": 0,
        "paused": 1,
        "finished": 0,
    }
    assert result.stats_after["requests_by_state"] == {"waiting": 0, "running": 0, "paused": 1, "finished": 2}


def test_a_request_the_server_refuses_is_recorded_as_not_completed() -> None:
    too_long = RequestPlan(0, 0.0, "test", prompt_tokens=300, segments=(Segment(2),))
    config = SchedulerConfig(policy="vllm", max_batched_tokens=SATURATION)
    result = simulate([too_long, one_call_plan(index=1)], tiny_profile(), config, 0.0, LONG_S)
    assert [r.completed for r in result.records] == [False, True]
    assert result.errors == {"OUT_OF_RANGE": 1}
