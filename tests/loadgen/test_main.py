"""infercept-loadgen against a real two-process stack: it measures, reports and ends on time."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infercept import Client
from tooling.launcher import Stack, launch
from tooling.loadgen.main import main

SCHEMA_KEYS = [
    "tool", "policy", "workload", "rate", "duration_s", "seed", "submitted", "completed",
    "completed_per_s", "unfinished_counted", "normalized_latency_s_per_token", "ttft_s",
    "output_tokens_per_s", "server", "assumptions",
]  # fmt: skip
SERVER_KEYS = [
    "forward_tokens", "recomputed_tokens", "recompute_share", "recompute_time_share",
    "swap_out_blocks", "swap_in_blocks", "paused_device_block_seconds",
]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    executor = ["--model", "tiny", "--device", "cpu", "--block-size", "16"]
    executor += ["--num-device-blocks", "64", "--num-host-blocks", "16"]
    scheduler = ["--policy", "swap", "--max-batched-tokens", "256"]
    with launch(executor, scheduler, log_dir=tmp_path_factory.mktemp("stack")) as running:
        yield running


def test_a_generated_workload_runs_and_writes_the_results(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    args = ["--target", stack.scheduler_address, "--workload", "math", "--rate", "2", "--duration", "6"]
    args += ["--warmup", "1", "--seed", "0", "--max-model-len", "256", "--statistics", "table1"]
    args += ["--out", str(out)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert list(record) == SCHEMA_KEYS and list(record["server"]) == SERVER_KEYS
    assert (record["tool"], record["policy"], record["workload"]) == ("loadgen", "swap", "math")
    assert (record["rate"], record["duration_s"], record["seed"]) == (2.0, 6.0, 0)
    assert 0 < record["completed"] <= record["submitted"]
    assert record["completed_per_s"] == pytest.approx(record["completed"] / 6)
    assert record["normalized_latency_s_per_token"]["p50"] > 0 and record["ttft_s"]["mean"] > 0
    assert record["output_tokens_per_s"] > 0
    assert record["server"]["forward_tokens"] > 0
    assumptions = record["assumptions"]
    assert assumptions["max_model_len"] == 256 and assumptions["warmup_s"] == 1.0
    assert assumptions["family"] == "lognormal" and assumptions["vocab_size"] == 258
    printed = capsys.readouterr().out
    assert "still running at the end (cancelled)" in printed and f"results: {out}" in printed


def test_requests_still_running_at_the_windows_end_are_cancelled_not_waited_for(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every request is inside a 10-minute tool call when the 2 s window closes: the run ends by
    cancelling them all (the server counts each as aborted), not by waiting for their calls."""
    trace = tmp_path / "trace.json"
    segments = [{"prompt_tokens": 20, "completion_tokens": 4, "api_time": 600.0, "api_token_length": 2}]
    segments.append({"completion_tokens": 4})
    trace.write_text(json.dumps({"r1": segments}))
    out = tmp_path / "results.json"
    aborted_before = server_stats(stack)["aborted_requests"]
    args = ["--target", stack.scheduler_address, "--workload", str(trace), "--rate", "4", "--duration", "2"]
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["submitted"] > 0 and record["completed"] == 0
    running = re.search(r"(\d+) still running at the end \(cancelled\)", capsys.readouterr().out)
    assert running is not None and int(running[1]) == record["submitted"]
    stats = stats_once_idle(stack)
    assert num_live(stats) == 0
    # Each request the server had seen is aborted (the close may overtake a stream just opened).
    assert 0 < stats["aborted_requests"] - aborted_before <= record["submitted"]


def num_live(stats: dict[str, Any]) -> int:
    return sum(count for state, count in stats["requests_by_state"].items() if state != "finished")


def server_stats(stack: Stack) -> dict[str, Any]:
    with Client(stack.scheduler_address) as client:
        return client.server_stats()


def stats_once_idle(stack: Stack, max_polls: int = 100) -> dict[str, Any]:
    """The server's stats once no request is live: a cancelled stream's abort reaches the
    scheduler after the client has returned. A bounded poll, so that a request left running
    fails the caller's assertions rather than hanging."""
    for _ in range(max_polls):
        stats = server_stats(stack)
        if num_live(stats) == 0:
            break
        time.sleep(0.1)
    return stats


def test_a_trace_runs_with_a_policy_label(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.json"
    segments = [
        {"prompt_tokens": 30, "completion_tokens": 8, "api_time": 0.1, "api_token_length": 5},
        {"prompt_tokens": 43, "completion_tokens": 6},
    ]
    too_long = [{"prompt_tokens": 5000, "completion_tokens": 6}]  # past the server's length
    trace.write_text(json.dumps({"r1": segments, "r2": segments[1:], "r3": too_long}))
    out = tmp_path / "results.json"
    # 5 s: the harness's arrivals begin 6 gaps in, and the draw must not be mostly r3 (refused).
    args = ["--target", stack.scheduler_address, "--workload", str(trace), "--rate", "4", "--duration", "5"]
    args += ["--policy-label", "mine", "--out", str(out)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert (record["policy"], record["workload"]) == ("mine", str(trace))
    assert record["completed"] > 0 and record["assumptions"]["trace"] == str(trace)
    # The seeded draw has r3 a few times, cut to its prompt: counted and said, not hidden.
    num_prompt_only = record["assumptions"]["prompt_only_requests"]
    assert num_prompt_only > 0
    assert f"; {num_prompt_only} of them reach it with their prompt" in capsys.readouterr().out


def test_bad_flags_are_refused_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", "127.0.0.1:1", "--workload", "poetry", "--out", str(tmp_path / "r.json")]) == 2
    assert "neither a workload" in capsys.readouterr().err
    assert main(["--target", "127.0.0.1:1", "--rate", "0"]) == 2
    # math's prompts do not fit 256 tokens: refused before any connection or launch.
    assert main(["--launch", "--workload", "math", "--max-model-len", "256", "--rates", "2"]) == 2
    assert "end after one token without a tool call" in capsys.readouterr().err
    assert main(["--launch", "--policies", "vllm", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
