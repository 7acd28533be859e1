"""`infercept serve` starts both services and stops both on Ctrl-C; `infercept demo` runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from infercept import Client
from tooling.launcher import is_serving


def test_serve_stops_both_services_on_ctrl_c(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tooling.cli", "serve", "--listen", "127.0.0.1:0", "--device", "cpu"]
    command += ["--model", "tiny"]
    command += ["--num-device-blocks", "64", "--log-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert banner.startswith("InferCept serving on "), banner
    address = banner.split()[3]
    executor_address = banner.split("executor ")[1].split(",")[0]
    with Client(address) as client:
        assert client.server_info().num_device_blocks == 64
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    with process.stdout:
        assert "stopped" in process.stdout.read()
    deadline = time.monotonic() + 10
    while (is_serving(address) or is_serving(executor_address)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_serving(address) and not is_serving(executor_address)
    assert "scheduler.stopping" in (tmp_path / "scheduler.log").read_text()
    assert "executor.stopping" in (tmp_path / "executor.log").read_text()


def test_the_demo_runs_and_tells_what_happened() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tooling.cli", "demo", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("pause   intercepted as") == 4 and "the server chose to SWAP it" in out
    assert "calc('12*34+5') = '413'" in out and "lookup('Kenya') = 'Nairobi'" in out
    assert "swapped back in" in out and "Stopped both services." in out
