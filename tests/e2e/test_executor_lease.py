"""One executor serves one scheduler: a second one and a stranger's Reset are refused, a dead
holder's broken stream frees the executor, and Reset or cancel in any order never crashes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from executor_svc.lease import CLIENT_ID_KEY
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from svc_common.healthcheck import check
from tests.e2e.chaos import WAIT_S, chaos_stack, wait_for
from tests.e2e.conftest import stack_args
from tests.executor.executor_process import running_executor


def as_client(client_id: str) -> tuple[tuple[str, str], ...]:
    return ((CLIENT_ID_KEY, client_id),)


def test_a_second_scheduler_and_a_strangers_reset_are_refused(tmp_path: Path) -> None:
    with chaos_stack(tmp_path / "stack") as stack:
        command = [sys.executable, "-m", "scheduler_svc", "--listen", "127.0.0.1:0", "--executor"]
        second = subprocess.run(
            [*command, stack.executor_address, "--executor-timeout", "10"],
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
        )
        assert second.returncode == 3, second.stderr
        assert "FAILED_PRECONDITION" in second.stderr and "another scheduler" in second.stderr
        with grpc.insecure_channel(stack.executor_address) as channel:
            stub = executor_pb2_grpc.ExecutorStub(channel)
            for metadata in ((), as_client("stranger")):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Reset(pb.ResetRequest(), metadata=metadata, timeout=10)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert stack.scheduler_health() == "SERVING"  # the holder was not disturbed


def test_repeated_resets_and_cancelled_streams_never_crash_the_executor_and_free_it(
    tmp_path: Path,
) -> None:
    executor_args, _ = stack_args("vllm")
    with running_executor(executor_args, tmp_path) as (address, process):
        with grpc.insecure_channel(address) as channel:
            stub = executor_pb2_grpc.ExecutorStub(channel)
            for step_id in range(1, 11):
                stream = stub.Run(iter([pb.StepPlan(step_id=step_id)] * 1000), metadata=as_client("a"))
                assert not next(iter(stream)).HasField("error")
                stub.Reset(pb.ResetRequest(), metadata=as_client("a"), timeout=10)
                stub.Reset(pb.ResetRequest(), metadata=as_client("a"), timeout=10)
                stream.cancel()  # a scheduler that goes away mid-stream
            # Every stream of "a" is gone: another scheduler may take the executor over.
            wait_for(lambda: _try_reset(stub, "b"), "the lease released by the cancelled streams")
            with pytest.raises(grpc.RpcError) as refused:
                stub.Reset(pb.ResetRequest(), metadata=as_client("a"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert process.poll() is None and check(address)[0]


def _try_reset(stub: executor_pb2_grpc.ExecutorStub, client_id: str) -> bool:
    try:
        stub.Reset(pb.ResetRequest(), metadata=as_client(client_id), timeout=10)
    except grpc.RpcError:
        return False
    return True
