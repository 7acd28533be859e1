"""`infercept serve` keeps its services alive: an executor killed or hung, a scheduler killed,
each comes back on the same port and the stack serves again."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from infercept import Client, SamplingParams
from svc_common.healthcheck import check
from tests.e2e.chaos import WAIT_S, wait_for


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        with contextlib.suppress(ValueError):  # the test closed the pipe
            for line in stdout:
                lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], text: str) -> str:
    """The first printed line containing `text` (AssertionError if none within WAIT_S * 2)."""
    while True:
        try:
            line = lines.get(timeout=WAIT_S * 2)
        except queue.Empty as nothing:
            raise AssertionError(f"no line with {text!r}") from nothing
        if text in line:
            return line


def _executor_pid(log_dir: Path) -> int:
    return int((log_dir / "executor.pid").read_text())


def test_serve_restarts_a_killed_or_hung_executor_and_a_killed_scheduler_on_their_ports(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "tooling.cli", "serve", "--listen", "127.0.0.1:0", "--device", "cpu"]
    command += ["--num-device-blocks", "64", "--log-dir", str(tmp_path)]
    command += ["--health-interval", "0.5", "--health-timeout", "1", "--max-missed-checks", "2"]
    command += ["--scheduler-args", "--probe-interval 0.2 --reset-timeout 2"]
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = _lines(process)
        banner = _until(lines, "InferCept serving on ")
        address, executor_address = banner.split()[3], banner.split("executor ")[1].split(",")[0]
        sampling = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        with Client(address) as client:
            clean = client.generate(prompt_token_ids=[1, 2, 3], sampling=sampling, timeout_s=WAIT_S)
            for fault in (signal.SIGKILL, signal.SIGSTOP):
                first_pid = _executor_pid(tmp_path)
                os.kill(first_pid, fault)
                assert executor_address in _until(lines, "executor: restarting on")
                _until(lines, "executor: serving again")
                assert _executor_pid(tmp_path) != first_pid
                wait_for(lambda: check(address)[0], "the scheduler SERVING again")
                again = client.generate(prompt_token_ids=[1, 2, 3], sampling=sampling, timeout_s=WAIT_S * 2)
                assert again.output_token_ids == clean.output_token_ids
            os.kill(int((tmp_path / "scheduler.pid").read_text()), signal.SIGKILL)
            assert address in _until(lines, "scheduler: restarting on")
            _until(lines, "scheduler: serving again")
            again = client.generate(prompt_token_ids=[1, 2, 3], sampling=sampling, timeout_s=WAIT_S * 2)
            assert again.output_token_ids == clean.output_token_ids
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
