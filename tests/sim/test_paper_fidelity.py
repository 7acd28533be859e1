"""The paper-fidelity options of the core and the simulator: vLLM 0.2's prefill-first iterations,
the `ideal` policy, the recompute share of forward time, and requests cut at the window's end."""

from __future__ import annotations

import pytest

from infercept.v1 import executor_pb2 as pb
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.main import main as scheduler_main
from scheduler_svc.policies.spec import parse_policy_spec
from scheduler_svc.scheduler import Scheduler
from scheduler_svc.sim.driver import Simulation, SimulationResult, simulate
from scheduler_svc.sim.virtual_executor import VirtualExecutor
from scheduler_svc.stats_render import stats_proto
from tests.scheduler.harness import FakeExecutor, executor_description, generate_request, ids
from tests.sim.helpers import FORWARD_S, SATURATION, one_call_plan, tiny_profile

LONG_S = 1e6


class Core:
    """A scheduler on a FakeExecutor (every KV read checked), one second per iteration."""

    def __init__(self, structure: str, prefill_token_budget: int = 2048) -> None:
        desc = executor_description(num_device_blocks=64, max_model_len=128)
        config = SchedulerConfig(
            policy="vllm",
            max_batched_tokens=64,
            iteration_structure=structure,
            prefill_token_budget=prefill_token_budget,
            check_invariants=True,
        )
        self.scheduler = Scheduler(config, desc, None)
        self.executor = FakeExecutor(desc)
        self.now = 0.0

    def add(self, num_prompt_tokens: int, max_tokens: int = 8) -> int:
        request, _ = self.scheduler.add(
            generate_request(range(1, num_prompt_tokens + 1), max_tokens), self.now
        )
        return request.request_id

    def step(self) -> dict[int, tuple[int, int]]:
        """One iteration: request id -> (start position, tokens computed)."""
        self.now += 1.0
        plan = self.scheduler.schedule(self.now)
        self.scheduler.update(plan, self.executor.run(plan), self.now)
        return {w.request_id: (w.start_position, len(ids(w.token_ids))) for w in plan.work}


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


def test_the_virtual_executor_charges_nothing_for_free_tokens() -> None:
    profile = tiny_profile(forward_s_per_token=0.001, saturation_tokens=1)
    plan = pb.StepPlan(step_id=1)
    plan.work.add(request_id=1, start_position=0, token_ids=b"\x01\x00\x00\x00" * 20, sample=True)
    executor = VirtualExecutor(profile)
    assert executor.run(plan).forward_s == pytest.approx(profile.forward_s(20))
    assert executor.run(plan, num_free_tokens=15).forward_s == pytest.approx(profile.forward_s(5))


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
