"""The tools' typed specs: one definition of the workload and stack flags, each tool's defaults
stated as a spec, parsed once; the services' command lines made from a StackSpec."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from scheduler_svc import main as scheduler_main
from tooling import simulate
from tooling.harness import fidelity
from tooling.loadgen import main as loadgen
from tooling.loadgen.truncation import count_prompt_only
from tooling.loadgen.workload_spec import (
    WorkloadSpec,
    add_workload_flags,
    parse_rates,
    plans_for,
    workload_from_flags,
)
from tooling.stack_spec import StackSpec, add_stack_flags, stack_from_flags


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def workload_options() -> set[str]:
    parser = argparse.ArgumentParser()
    add_workload_flags(parser, WorkloadSpec())
    return option_strings(parser) - {"-h", "--help"}


def test_every_tool_takes_the_same_workload_flags_with_its_own_defaults() -> None:
    assert {"--workload", "--rate", "--duration", "--statistics", "--count-unfinished"} <= workload_options()
    for parser, defaults in (
        (loadgen.build_parser(), loadgen.DEFAULT_WORKLOAD),
        (simulate.build_parser(), simulate.DEFAULT_WORKLOAD),
    ):
        assert workload_options() <= option_strings(parser)
        assert workload_from_flags(parser.parse_args([])) == defaults
    spec, _ = fidelity.parse_args([])
    assert spec.workload == fidelity.DEFAULT_WORKLOAD and spec.stack == fidelity.DEFAULT_STACK
    # The defaults that differ are stated, not copied: the simulator counts unfinished requests
    # and replays the trace; the fidelity check draws Table 1 at a short length.
    assert simulate.DEFAULT_WORKLOAD.count_unfinished and not loadgen.DEFAULT_WORKLOAD.count_unfinished
    assert (fidelity.DEFAULT_WORKLOAD.statistics, fidelity.DEFAULT_WORKLOAD.max_model_len) == ("table1", 512)


def test_flags_are_parsed_into_the_spec() -> None:
    parser = argparse.ArgumentParser()
    add_workload_flags(parser, WorkloadSpec())
    args = ["--workload", "qa", "--rate", "2.5", "--duration", "30", "--warmup", "5", "--seed", "7"]
    args += [
        "--duration-scale",
        "0.1",
        "--max-model-len",
        "256",
        "--statistics",
        "table1",
        "--count-unfinished",
    ]
    spec = workload_from_flags(parser.parse_args(args))
    assert spec == WorkloadSpec("qa", 2.5, 30.0, 5.0, 7, 0.1, 256, "table1", True)
    trace = workload_from_flags(parser.parse_args(["--workload", "trace", "--augmentations", "math, qa"]))
    assert trace.augmentations == ("math", "qa")
    assert spec.span_s == 35.0 and spec.at_rate(4.0).rate == 4.0
    assert parse_rates("1, 2,3", 9.0) == [1.0, 2.0, 3.0] and parse_rates(None, 9.0) == [9.0]


@pytest.mark.parametrize(
    "change",
    [
        {"rate": 0.0},
        {"duration_s": -1.0},
        {"warmup_s": -1.0},
        {"seed": -1},
        {"statistics": "other"},
        {"workload": "no-such-workload"},
        {"max_model_len": 0},
        {"augmentations": ("math",)},  # a drawn workload (mixed) has no trace to filter
    ],
)
def test_a_workload_no_run_can_take_is_refused(change: dict[str, object]) -> None:
    WorkloadSpec().validate()
    with pytest.raises(ValueError):
        dataclasses.replace(WorkloadSpec(), **change).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("workload", ["math", "qa", "ve", "mixed"])
def test_a_workload_whose_prompts_mostly_do_not_fit_the_length_is_refused_with_what_to_do(
    workload: str,
) -> None:
    """math's prompts average 405 tokens: at 256 every request would be cut to its prompt and end
    after one token, without a call, under the name of math (the reported bug)."""
    spec = WorkloadSpec(workload=workload, rate=2.0, duration_s=30.0, max_model_len=256)
    with pytest.raises(ValueError, match=r"end after one token without a tool call.*--statistics table1"):
        spec.validate()
    with pytest.raises(ValueError, match="model length 256"):
        plans_for(spec, 256)


def test_the_trace_replayed_at_a_length_its_prompts_do_not_fit_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"requests of trace do not fit the model length 256.*raise --max-model-len$"
    ):
        plans_for(WorkloadSpec(workload="trace", rate=2.0, duration_s=30.0), 256)


@pytest.mark.parametrize("workload", ["math", "qa", "ve", "mixed"])
def test_table1_draws_fit_a_short_length_with_their_calls(workload: str) -> None:
    spec = WorkloadSpec(workload=workload, rate=2.0, duration_s=30.0, statistics="table1", max_model_len=256)
    spec.validate()
    plans, assumptions = plans_for(spec, 256)
    assert assumptions["prompt_only_requests"] == 0
    assert all(len(plan.segments) > 1 for plan in plans)  # every request makes a call


@pytest.mark.parametrize(("workload", "max_model_len"), [("chatbot", 256), ("mixed", 512), ("trace", 512)])
def test_a_few_requests_left_only_their_prompt_are_counted_not_refused(
    workload: str, max_model_len: int
) -> None:
    plans, assumptions = plans_for(WorkloadSpec(workload=workload, rate=2.0, duration_s=30.0), max_model_len)
    assert 0 < assumptions["prompt_only_requests"] <= len(plans) / 2  # type: ignore[operator]
    assert assumptions["prompt_only_requests"] == count_prompt_only(plans, max_model_len)


def test_the_services_command_lines_come_from_the_stack_spec(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_stack_flags(parser, StackSpec(model="tiny"))
    args = ["--policy", "swap", "--device", "cpu", "--num-device-blocks", "64", "--num-host-blocks", "0"]
    args += ["--executor-args", "--threads 2", "--scheduler-args", "--max-queue-wait-s '0'"]
    stack = stack_from_flags(parser.parse_args([*args, "--log-dir", str(tmp_path)]))
    assert stack.executor_argv() == [
        "--model", "tiny", "--device", "cpu", "--block-size", "16",
        "--num-device-blocks", "64", "--num-host-blocks", "0", "--threads", "2",
    ]  # fmt: skip
    assert stack.scheduler_argv() == [
        "--policy",
        "swap",
        "--max-batched-tokens",
        "512",
        "--max-queue-wait-s",
        "0",
    ]
    assert stack.with_policy("vllm").scheduler_argv()[:2] == ["--policy", "vllm"]
    assert stack.log_dir == tmp_path
    assert stack_from_flags(parser.parse_args([])) == StackSpec(model="tiny")


def test_the_simulators_own_flags_are_parsed_into_its_sim_spec() -> None:
    parser = simulate.build_parser()
    assert simulate.sim_from_flags(parser.parse_args([])) == simulate.SimSpec()
    args = parser.parse_args(["--overlap-swaps", "--harness-timing", "--max-num-seqs", "8"])
    assert simulate.sim_from_flags(args) == simulate.SimSpec(
        overlap_swaps=True, harness_timing=True, max_num_seqs=8
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("swap", ("swap", "history", "", None)),
        (
            "lazy-swap/no-opportunistic-swap/no-ttl-pin",
            ("lazy-swap", "history", "opportunistic-swap,ttl-pin", None),
        ),
        ("infercept/estimator=elapsed/prefix-caching=on", ("infercept", "elapsed", "", True)),
        ("vllm-apc/prefix-caching=off", ("vllm-apc", "history", "", False)),
    ],
)
def test_a_policy_spec_reaches_the_real_scheduler_as_its_flags(
    spec: str, expected: tuple[object, ...]
) -> None:
    """The load generator's --policies take specs (as the simulator does): a launched stack's
    scheduler gets them as --policy, --estimator, --disable and --prefix-caching."""
    args = scheduler_main.parse_args(StackSpec(policy=spec).scheduler_argv())
    assert (args.policy, args.estimator, args.disable, args.prefix_caching) == expected


def test_a_simulator_only_spec_is_refused_for_the_real_scheduler() -> None:
    with pytest.raises(ValueError, match="simulator only"):
        StackSpec(policy="vllm/prefill-first").scheduler_argv()
