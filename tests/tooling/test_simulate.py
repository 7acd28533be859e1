from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from scheduler_svc.sim.cost_profile import CostProfile
from tests.sim.helpers import tiny_profile
from tooling.simulate import main


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    tiny_profile(num_device_blocks=512, block_size_tokens=16, max_model_len=2048).save(path)
    return path


def table_rows(stdout: str) -> list[list[str]]:
    """(policy, rate) of each row of the sweep table: the lines after its header, up to a blank one."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("policy")) + 1
    end = lines.index("", start)
    return [line.split()[:2] for line in lines[start:end]]


def test_one_run_writes_the_shared_results_schema(
    profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    argv = ["--profile", str(profile_path), "--workload", "qa", "--rate", "2", "--duration", "30"]
    assert main([*argv, "--warmup", "5", "--policy", "preserve", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert (record["tool"], record["policy"], record["workload"], record["rate"]) == (
        "sim",
        "preserve",
        "qa",
        2.0,
    )
    assert record["completed"] > 0 and record["normalized_latency_s_per_token"]["mean"] > 0
    assert record["server"]["paused_device_block_seconds"] > 0
    assumptions = record["assumptions"]
    assert assumptions["profile"]["name"] == "tiny"
    assert assumptions["scheduler"]["max_batched_tokens"] == 64  # the profile's saturation point
    assert assumptions["family"] == "lognormal"  # the load generator's workload assumptions
    assert assumptions["prompt_and_returned_ids"].startswith("all 1")
    assert table_rows(capsys.readouterr().out) == [["preserve", "2.00"]]


def test_a_sweep_writes_a_list_and_a_table(
    profile_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    argv = ["--profile", str(profile_path), "--workload", "math", "--duration", "20", "--warmup", "0"]
    assert main([*argv, "--rates", "1,3", "--policies", "vllm,swap", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["policy"], r["rate"]) for r in records] == [
        (p, r) for r in (1.0, 3.0) for p in ("vllm", "swap")
    ]
    rows = table_rows(capsys.readouterr().out)
    assert rows == [["vllm", "1.00"], ["vllm", "3.00"], ["swap", "1.00"], ["swap", "3.00"]]


def test_bad_arguments_are_refused(profile_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "nope"]) == 2
    assert main(["--profile", str(profile_path), "--policies", "vllm,nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


class FakeExecutor(executor_pb2_grpc.ExecutorServicer):
    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        return pb.DescribeResponse(
            model=pb.ModelInfo(name="default", max_model_len=1024),
            block_size_tokens=16,
            num_device_blocks=300,
            num_host_blocks=200,
            kv_bytes_per_block=4096,
        )

    def Profile(self, request: pb.ProfileRequest, context: grpc.ServicerContext) -> pb.ProfileResponse:
        return pb.ProfileResponse(
            saturation_tokens=128,
            forward_base_s=0.005,
            forward_s_per_token=2e-5,
            swap_out_s_per_block=1e-4,
            swap_in_s_per_block=2e-4,
            swap_fixed_s=1e-5,
            model="default",
            device="cpu",
            dtype="float32",
            block_size_tokens=16,
            from_cache=not request.refresh,
        )


@pytest.fixture
def executor_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    # The generated type stubs declare every RPC abstract; at run time the servicer base answers
    # UNIMPLEMENTED for the RPCs a stand-in leaves out, which is all it needs.
    executor_pb2_grpc.add_ExecutorServicer_to_server(FakeExecutor(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_profile_is_saved_from_a_running_executor(executor_address: str, tmp_path: Path) -> None:
    path = tmp_path / "measured.json"
    assert main(["--save-profile", str(path), "--executor", executor_address]) == 0
    profile = CostProfile.load(path)
    assert (profile.forward_base_s, profile.saturation_tokens, profile.swap_in_s_per_block) == (
        0.005,
        128,
        2e-4,
    )
    assert (profile.num_device_blocks, profile.num_host_blocks, profile.max_model_len) == (300, 200, 1024)
    assert profile.assumptions["from_cache"] is True
    assert profile.assumptions["kv_bytes_per_block"] == 4096


def test_saving_a_profile_from_no_executor_fails_cleanly(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once (UNAVAILABLE).
    assert main(["--save-profile", str(tmp_path / "x.json"), "--executor", "127.0.0.1:1"]) == 3
    assert not (tmp_path / "x.json").exists()
