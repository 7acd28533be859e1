"""The executor over real gRPC, in its own process, on a free port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from executor_svc.attention import BACKENDS
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work
from tests.executor.conftest import ModelSpec
from tests.executor.executor_process import RunStream, running_executor
from tests.executor.plan_driver import PlanDriver
from tests.executor.reference import assert_matches_reference, load_reference
from tests.executor.test_exactness import random_prompts

NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS = 48, 32


@pytest.fixture(scope="module")
def executor(
    model_spec: tuple[ModelSpec, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModelSpec, Path, str, subprocess.Popen[bytes]]]:
    spec, model_dir = model_spec
    args = ["--model", str(model_dir), "--device", "cpu", "--block-size", str(spec.block_size)]
    args += ["--num-device-blocks", str(NUM_DEVICE_BLOCKS), "--num-host-blocks", str(NUM_HOST_BLOCKS)]
    with running_executor(args, tmp_path_factory.mktemp("executor")) as (address, process):
        yield spec, model_dir, address, process
    assert process.returncode == 0, "the executor stops cleanly on SIGTERM"


@pytest.fixture
def stub(
    executor: tuple[ModelSpec, Path, str, subprocess.Popen[bytes]],
) -> Iterator[executor_pb2_grpc.ExecutorStub]:
    with grpc.insecure_channel(executor[2]) as channel:
        yield executor_pb2_grpc.ExecutorStub(channel)


def test_exact_over_grpc(
    executor: tuple[ModelSpec, Path, str, subprocess.Popen[bytes]], stub: executor_pb2_grpc.ExecutorStub
) -> None:
    spec, model_dir, _, _ = executor
    stream = RunStream(stub)
    driver = PlanDriver(
        stream.step,
        block_size=spec.block_size,
        num_device_blocks=NUM_DEVICE_BLOCKS,
        num_host_blocks=NUM_HOST_BLOCKS,
        seed=7,
    )
    requests = driver.run(random_prompts(7, spec.config.vocab_size, count=5), num_new_tokens=10)
    stream.close()
    assert driver.num_swapped_in > 0 and driver.num_discarded > 0
    assert_matches_reference(load_reference(model_dir), requests)


def test_describe_and_health(
    executor: tuple[ModelSpec, Path, str, subprocess.Popen[bytes]], stub: executor_pb2_grpc.ExecutorStub
) -> None:
    spec = executor[0]
    info = stub.Describe(pb.DescribeRequest())
    assert info.model.vocab_size == spec.config.vocab_size
    assert info.model.num_key_value_heads == spec.config.num_key_value_heads
    assert (info.block_size_tokens, info.num_device_blocks, info.num_host_blocks) == (
        spec.block_size,
        NUM_DEVICE_BLOCKS,
        NUM_HOST_BLOCKS,
    )
    assert (
        info.device == "cpu"
        and info.dtype == "float32"
        and info.attention_backend == ("numba" if "numba" in BACKENDS else "torch")
    )
    assert '"model"' in info.tokenizer_json
    with grpc.insecure_channel(executor[2]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "infercept.v1.Executor"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def _prefill_plan(step_id: int, request_id: int, tokens: list[int], blocks: list[int]) -> pb.StepPlan:
    return pb.StepPlan(
        step_id=step_id,
        new_requests=[pb.NewRequest(request_id=request_id)],
        block_table_updates=pack_table_updates(
            [TableUpdate(request_id=request_id, appended_block_ids=blocks)]
        ),
        work=pack_work([Work(request_id=request_id, token_ids=tokens, sample=True)]),
    )


def test_bad_plans_are_refused_in_band_and_the_stream_keeps_serving(
    stub: executor_pb2_grpc.ExecutorStub,
) -> None:
    stream = RunStream(stub)
    good = stream.step(_prefill_plan(1, 5, [1, 2, 3], [3]))
    assert not good.HasField("error")
    bad_plans = {
        "NOT_FOUND": pb.StepPlan(step_id=2, work=pack_work([Work(request_id=999, token_ids=[1])])),
        "OUT_OF_RANGE": _prefill_plan(3, 6, [1], [NUM_DEVICE_BLOCKS]),
        "FAILED_PRECONDITION": pb.StepPlan(
            step_id=4, work=pack_work([Work(request_id=5, start_position=3, token_ids=[1] * 30)])
        ),
        "INVALID_ARGUMENT": pb.StepPlan(
            step_id=5, work=pack_work([Work(request_id=5, start_position=3, token_ids=[10**6])])
        ),
    }
    for code, plan in bad_plans.items():
        result = stream.step(plan)
        assert result.step_id == plan.step_id
        assert result.error.code == code, result.error
        assert result.error.message and not result.sampled.request_ids
    # Nothing of the refused plans was applied: request 6 does not exist, request 5 continues.
    after = stream.step(
        pb.StepPlan(
            step_id=6,
            work=pack_work([Work(request_id=5, start_position=3, use_last_sampled=True, sample=True)]),
        )
    )
    assert not after.HasField("error") and list(after.sampled.request_ids) == [5]
    assert stream.step(pb.StepPlan(step_id=7, forget_request_ids=[6])).error.code == "NOT_FOUND"
    assert not stream.step(pb.StepPlan(step_id=8, forget_request_ids=[5])).HasField("error")
    stream.close()


def test_plans_sent_ahead_run_in_order_each_after_the_last(stub: executor_pb2_grpc.ExecutorStub) -> None:
    """A decode sent before the result of the step that samples its token computes that token."""

    def decode(step_id: int, request_id: int, position: int) -> pb.StepPlan:
        work = [Work(request_id, position, use_last_sampled=True, sample=True)]
        return pb.StepPlan(step_id=step_id, work=pack_work(work))

    stream = RunStream(stub)
    one_by_one = [stream.step(_prefill_plan(1, 21, [4, 5, 6], [0]))]
    one_by_one += [stream.step(decode(2 + i, 21, 3 + i)) for i in range(3)]
    stream.send(_prefill_plan(5, 22, [4, 5, 6], [1]))
    for i in range(3):
        stream.send(decode(6 + i, 22, 3 + i))
    ahead = [stream.receive() for _ in range(4)]
    assert [r.step_id for r in ahead] == [5, 6, 7, 8]
    assert [list(r.sampled.token_ids) for r in ahead] == [list(r.sampled.token_ids) for r in one_by_one]
    stream.close()
    stub.Reset(pb.ResetRequest())


def test_one_run_stream_at_a_time(stub: executor_pb2_grpc.ExecutorStub) -> None:
    first = RunStream(stub)
    assert not first.step(pb.StepPlan(step_id=1)).HasField("error")
    second = RunStream(stub)
    with pytest.raises(grpc.RpcError) as refused:
        second.step(pb.StepPlan(step_id=1))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    first.close()
    third = RunStream(stub)  # the slot is free again once the first stream ends
    assert not third.step(pb.StepPlan(step_id=2)).HasField("error")
    third.close()


def test_reset_forgets_every_request(stub: executor_pb2_grpc.ExecutorStub) -> None:
    stream = RunStream(stub)
    assert not stream.step(_prefill_plan(1, 11, [4, 5], [0])).HasField("error")
    assert stub.Reset(pb.ResetRequest()).num_forgotten_requests == 1
    # The same id is new again after the reset.
    assert not stream.step(_prefill_plan(2, 11, [4, 5], [0])).HasField("error")
    stream.close()
    stub.Reset(pb.ResetRequest())


def test_profile_is_measured_then_cached(stub: executor_pb2_grpc.ExecutorStub) -> None:
    measured = stub.Profile(pb.ProfileRequest(refresh=True))
    assert not measured.from_cache
    tokens = [s.num_batched_tokens for s in measured.forward_samples if s.context_tokens == 0]
    assert tokens[0] == 1 and measured.saturation_tokens in tokens
    assert all(s.forward_s > 0 for s in measured.forward_samples)
    assert (
        measured.forward_base_s > 0 and measured.swap_out_s_per_block > 0 and measured.swap_in_s_per_block > 0
    )
    cached = stub.Profile(pb.ProfileRequest())
    assert cached.from_cache and cached.saturation_tokens == measured.saturation_tokens
