"""The paper-fidelity options of the core and the simulator: vLLM 0.2's prefill-first iterations,
the `ideal` policy, the recompute share of forward time, and requests cut at the window's end."""

from __future__ import annotations

import dataclasses

import pytest

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.main import main as scheduler_main
from scheduler_svc.policies.spec import parse_policy_spec
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.sim.driver import Simulation, SimulationResult, simulate
from scheduler_svc.sim.request_plan import Segment
from scheduler_svc.sim.virtual_executor import VirtualExecutor
from scheduler_svc.stats_render import stats_proto
from svc_common.step_wire import Work, pack_work, unpack_work
from tests.scheduler.harness import FakeExecutor, executor_description, generate_request, ids
from tests.sim.helpers import FORWARD_S, SATURATION, one_call_plan, tiny_profile
from tooling.loadgen.metrics import normalized_latency_s

LONG_S = 1e6


class Core:
    """A scheduler on a FakeExecutor (every KV read checked), one second per iteration."""

    def __init__(
        self,
        structure: str,
        prefill_token_budget: int = 2048,
        policy: str = "vllm",
        num_device_blocks: int = 64,
    ) -> None:
        desc = executor_description(num_device_blocks=num_device_blocks, max_model_len=128)
        config = SchedulerConfig(
            policy=policy,
            max_batched_tokens=64,
            iteration_structure=structure,
            prefill_token_budget=prefill_token_budget,
            check_invariants=True,
        )
        self.scheduler = Scheduler(config, desc, None)
        self.executor = FakeExecutor(desc)
        self.now = 0.0
        self.plan = pb.StepPlan()

    def add(self, num_prompt_tokens: int, max_tokens: int = 8, pause_after: int = 0) -> int:
        script = [(pause_after, "t")] if pause_after else []
        request, _ = self.scheduler.add(
            generate_request(range(1, num_prompt_tokens + 1), max_tokens, script), self.now
        )
        return request.request_id

    def resume(self, request_id: int, num_returned: int) -> None:
        start = len(self.scheduler.requests[request_id].token_ids)
        self.scheduler.resume(request_id, [7] * num_returned, self.now)
        self.executor.know(request_id, start, [7] * num_returned)

    def step(self) -> dict[int, tuple[int, int]]:
        """One iteration: request id -> (start position, tokens computed)."""
        self.now += 1.0
        self.plan = self.scheduler.schedule(self.now)
        self.scheduler.update(self.plan, self.executor.run(self.plan), self.now)
        return {w.request_id: (w.start_position, len(w.token_ids)) for w in unpack_work(self.plan.work)}


def test_prefill_first_runs_a_waiting_prompt_alone_and_mixed_runs_it_with_the_decodes() -> None:
    for structure, expected in (("mixed", {1: (5, 1), 2: (0, 5)}), ("prefill-first", {2: (0, 5)})):
        core = Core(structure)
        first = core.add(5)
        assert core.step() == {first: (0, 5)}
        core.add(5)
        assert core.step() == expected, structure
    # Once nothing waits, the decodes run again (both of them).
    assert core.step() == {1: (5, 1), 2: (5, 1)}


def test_prefill_first_takes_whole_prompts_within_its_budget_in_queue_order() -> None:
    core = Core("prefill-first", prefill_token_budget=50)
    a, b, c = core.add(30), core.add(30), core.add(10)
    # b does not fit whole in what a leaves (20 tokens): it is not chunked, and c waits behind it.
    assert core.step() == {a: (0, 30)}
    assert core.step() == {b: (0, 30), c: (0, 10)}
    assert core.step() == {a: (30, 1), b: (30, 1), c: (10, 1)}


def test_prefill_first_chunks_a_prompt_longer_than_its_whole_budget() -> None:
    core = Core("prefill-first", prefill_token_budget=16)
    long = core.add(40)
    assert core.step() == {long: (0, 16)}
    assert core.step() == {long: (16, 16)}
    assert core.step() == {long: (32, 8)}


def test_prefill_first_computes_a_preserved_requests_returned_tokens_in_a_decode_iteration() -> None:
    # vLLM 0.2 puts a resumed preserved request back in its running batch: the returned tokens
    # ride with the decodes (within the whole 2048-token budget, not the 64 of max_batched_tokens),
    # while a waiting prompt still gets its iteration alone first.
    core = Core("prefill-first", policy="preserve")
    paused, other = core.add(4, max_tokens=6, pause_after=2), core.add(4, max_tokens=20)
    assert core.step() == {paused: (0, 4), other: (0, 4)}
    assert core.step() == {paused: (4, 1), other: (4, 1)}  # `paused` is intercepted after it
    core.resume(paused, 70)
    prompt = core.add(4)
    assert core.step() == {prompt: (0, 4)}
    assert core.step() == {paused: (5, 71), other: (5, 1), prompt: (4, 1)}


def test_prefill_first_brings_a_swapped_request_back_in_a_decode_iteration_and_holds_prompts_meanwhile() -> (
    None
):
    core = Core("prefill-first", policy="swap")
    swapped, other = core.add(4, max_tokens=6, pause_after=2), core.add(4, max_tokens=20)
    core.step()
    core.step()  # `swapped` is intercepted; its blocks go out with the next plan
    assert core.step() == {other: (5, 1)} and ids(core.plan.swap_out.src_block_ids)
    core.resume(swapped, 2)
    prompt = core.add(4)
    # vLLM 0.2 runs no prompt while a swapped request waits: the swap-in and the returned tokens
    # ride in a decode iteration, and the prompt runs in the next one.
    assert core.step() == {swapped: (5, 3), other: (6, 1)}
    assert len(ids(core.plan.swap_in.src_block_ids)) == 2
    assert core.step() == {prompt: (0, 4)}


def test_prefill_first_swaps_a_request_back_last_and_only_into_free_blocks() -> None:
    # Six blocks of 4 tokens. `swapped` (the oldest) comes back when all six are taken: vLLM 0.2
    # serves its swapped queue after the running batch and brings a request back only into free
    # blocks, so it waits, and no newer request is preempted for it.
    core = Core("prefill-first", policy="swap", num_device_blocks=6)
    swapped = core.add(8, max_tokens=6, pause_after=2)
    core.add(8, max_tokens=20)  # running beside it
    core.step()
    core.step()  # `swapped` is intercepted after its second token
    core.step()  # its three blocks go out
    big = core.add(12, max_tokens=20)
    assert core.step() == {big: (0, 12)}  # the three free blocks
    core.resume(swapped, 1)
    core.step()
    blocks = core.scheduler.blocks
    assert stats_proto(core.scheduler).preemptions == 0
    assert len(blocks.layout(swapped).host) == 3 and len(blocks.layout(big).device) == 3


def test_prefill_first_swaps_in_only_in_an_iteration_that_preempted_no_one() -> None:
    # Seven blocks of 4 tokens. `running` opens a block when none is free and preempts `newest`;
    # vLLM 0.2 then neither recomputes `newest` in that decode iteration (it waits for a prompt
    # iteration) nor swaps `swapped` back into the freed blocks: that waits for the next one.
    core = Core("prefill-first", policy="swap", num_device_blocks=7)
    swapped = core.add(8, max_tokens=6, pause_after=2)
    running = core.add(8, max_tokens=20)
    core.step()
    core.step()  # `swapped` is intercepted after its second token
    core.step()  # its three blocks go out
    newest = core.add(11, max_tokens=20)
    core.step()  # its prompt
    core.resume(swapped, 1)
    core.step()
    core.step()  # every block taken
    assert core.step() == {running: (12, 1)}
    assert stats_proto(core.scheduler).preemptions == 1 and not ids(core.plan.swap_in.src_block_ids)
    assert core.scheduler.blocks.device.num_free == 3
    assert core.step() == {running: (13, 1), swapped: (9, 2)}
    assert len(ids(core.plan.swap_in.src_block_ids)) == 3
    assert newest in {r.request_id for r in core.scheduler.table.queues.waiting()}


def test_prefill_first_makes_a_prompt_that_does_not_fit_whole_wait_without_preempting() -> None:
    # Four blocks of 4 tokens: `running` holds two, so the 12-token prompt (three blocks) waits,
    # neither computed in part nor taking the older request's blocks, until memory frees up.
    core = Core("prefill-first", num_device_blocks=4)
    running = core.add(6, max_tokens=3)
    assert core.step() == {running: (0, 6)}
    waiting = core.add(12, max_tokens=2)
    assert core.step() == {running: (6, 1)}
    assert core.step() == {running: (7, 1)}  # and it finishes
    assert stats_proto(core.scheduler).preemptions == 0
    assert core.step() == {waiting: (0, 12)}


def test_a_policy_spec_can_ask_for_the_prefill_first_structure() -> None:
    spec = parse_policy_spec("vllm/prefill-first")
    assert (spec.label, spec.policy, spec.iteration_structure) == (
        "vllm/prefill-first",
        "vllm",
        "prefill-first",
    )
    assert spec.apply(SchedulerConfig()).iteration_structure == "prefill-first"
    assert parse_policy_spec("infercept").iteration_structure == "mixed"


def test_an_unknown_iteration_structure_is_refused() -> None:
    with pytest.raises(ValueError, match="iteration_structure"):
        SchedulerConfig(iteration_structure="decode-first")


def run_one_call(policy: str, structure: str = "mixed") -> SimulationResult:
    config = SchedulerConfig(
        policy=policy, max_batched_tokens=SATURATION, iteration_structure=structure, check_invariants=True
    )
    return simulate([one_call_plan()], tiny_profile(), config, warmup_s=0.0, duration_s=LONG_S)


def test_ideal_holds_nothing_through_a_call_and_restores_the_context_for_free() -> None:
    ideal, vllm = run_one_call("ideal"), run_one_call("vllm")
    # The context is dropped at the pause, and its 12 tokens restored at the resume (counted as
    # recomputed) without costing forward time: the same timeline as vllm's on this flat profile,
    # but no forward time attributed to recomputation.
    assert ideal.stats_after["paused_device_block_seconds"] == 0.0
    assert ideal.stats_after["recomputed_tokens"] == vllm.stats_after["recomputed_tokens"] == 12
    assert ideal.stats_after["recomputed_forward_s"] == 0.0 < vllm.stats_after["recomputed_forward_s"]
    assert ideal.records[0].completed and ideal.records[0].finish_s == pytest.approx(5 * FORWARD_S + 0.5)


def test_the_virtual_executor_computes_free_tokens_for_nothing_and_reads_them_as_context() -> None:
    profile = tiny_profile(forward_s_per_token=0.001, saturation_tokens=1, forward_s_per_context_token=1e-4)
    plan = pb.StepPlan(step_id=1, work=pack_work([Work(1, 0, [1] * 20, sample=True)]))
    executor = VirtualExecutor(profile)
    assert executor.run(plan).forward_s == pytest.approx(profile.forward_s(20))
    # As if the 15 restored tokens had been held: 5 computed, attending those 15.
    assert executor.run(plan, num_free_tokens=15).forward_s == pytest.approx(profile.forward_s(5, 15))
    assert profile.forward_s(5, 15) > profile.forward_s(5)


def test_the_recompute_share_of_forward_time_is_the_recomputed_tokens_share_of_their_iteration() -> None:
    stats = run_one_call("vllm").stats_after
    # The resume iteration computes 12 recomputed + 4 returned + 1 pending token in FORWARD_S.
    assert stats["recomputed_forward_s"] == pytest.approx(FORWARD_S * 12 / 17)
    assert stats["forward_s"] == pytest.approx(5 * FORWARD_S)


def test_the_scheduler_counts_the_same_recompute_time_as_the_simulator() -> None:
    config = SchedulerConfig(policy="vllm", max_batched_tokens=SATURATION)
    simulation = Simulation([one_call_plan()], tiny_profile(), config)
    simulation.run(0.0, LONG_S)
    stats = stats_proto(simulation.scheduler)  # what GetStats reports on a real server
    assert stats.recomputed_forward_s == pytest.approx(FORWARD_S * 12 / 17)
    assert stats.forward_s == pytest.approx(5 * FORWARD_S)


def test_a_request_cut_at_the_windows_end_keeps_the_output_it_had() -> None:
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    # The window ends inside the call (it starts after 3 iterations and lasts 0.5 s).
    result = simulate([one_call_plan()], tiny_profile(), config, warmup_s=0.0, duration_s=3 * FORWARD_S + 0.2)
    [record] = result.records
    assert not record.completed and record.cut_s == pytest.approx(3 * FORWARD_S + 0.2)
    assert (record.generated_tokens, record.returned_tokens) == (3, 0)
    assert record.tool_time_s == pytest.approx(0.2)  # the part of the call inside the window


def test_the_real_scheduler_refuses_the_ideal_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduler_main(["--policy", "ideal"]) == 2
    assert "simulator only" in capsys.readouterr().err


def test_harness_timing_takes_a_call_from_the_iteration_that_intercepted_to_the_poll_after_its_return() -> (
    None
):
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    # Alone: iterations of FORWARD_S; intercepted by the third (which began at 2 * FORWARD_S), the
    # call returns while nothing runs (polled at once), and two more iterations finish it.
    exact, harness = (
        simulate([one_call_plan()], tiny_profile(), config, 0.0, LONG_S, harness_timing=timing).records[0]
        for timing in (False, True)
    )
    assert exact.tool_time_s == pytest.approx(0.5) and exact.finish_s == pytest.approx(5 * FORWARD_S + 0.5)
    assert harness.tool_time_s == pytest.approx(3 * FORWARD_S + 0.5 - 2 * FORWARD_S)
    assert harness.finish_s == pytest.approx(4 * FORWARD_S + 0.5)  # its last iteration's start
    # Beside a busy request, the result is polled at the end of the iteration it came in.
    busy = dataclasses.replace(
        one_call_plan(index=1, before_call=200, after_call=1), segments=(Segment(300),)
    )
    [record, _] = simulate(
        [one_call_plan(duration_s=0.505), busy], tiny_profile(), config, 0.0, LONG_S, harness_timing=True
    ).records
    assert record.tool_time_s == pytest.approx(54 * FORWARD_S - 2 * FORWARD_S)


def test_harness_timing_does_not_subtract_a_call_still_running_at_the_windows_end() -> None:
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    result = simulate(
        [one_call_plan()], tiny_profile(), config, 0.0, 3 * FORWARD_S + 0.2, harness_timing=True
    )
    [record] = result.records
    assert not record.completed and record.tool_time_s == 0.0 and record.generated_tokens == 3


def test_harness_timing_times_a_request_added_before_the_loop_from_its_first_tokens_iteration() -> None:
    config = SchedulerConfig(policy="preserve", max_batched_tokens=SATURATION)
    # Two prompts of 40 tokens at t = 0: the first iteration (64 tokens, FORWARD_S) computes the
    # first and part of the second, whose first token comes from the second iteration. The
    # harness adds both before its loop and starts their clocks at the iteration that gave their
    # first token, not counting that token; a request arriving later is timed from its arrival.
    plans = [one_call_plan(prompt_tokens=40, index=i) for i in range(2)]
    plans.append(one_call_plan(arrival_s=0.001, index=2))
    first, second, later = simulate(plans, tiny_profile(), config, 0.0, LONG_S, harness_timing=True).records
    assert first.timed_from_s == 0.0 and second.timed_from_s == pytest.approx(FORWARD_S)
    assert first.untimed_tokens == second.untimed_tokens == 1
    assert later.timed_from_s is None and later.untimed_tokens == 0
    tokens = second.generated_tokens + second.returned_tokens - 1
    assert second.finish_s is not None
    expected_s = (second.finish_s - FORWARD_S - second.tool_time_s) / tokens
    assert normalized_latency_s(second) == pytest.approx(expected_s)
    exact = simulate(plans, tiny_profile(), config, 0.0, LONG_S).records[1]
    assert exact.timed_from_s is None and exact.untimed_tokens == 0
