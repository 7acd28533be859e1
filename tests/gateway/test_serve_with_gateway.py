"""`infercept serve --gateway-listen` starts the gateway as a third child and stops it on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx


def test_serve_with_a_gateway_answers_over_http_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "infercept.cli", "serve", "--listen", "127.0.0.1:0", "--device", "cpu"]
    command += [
        "--model",
        "tiny",
        "--policy",
        "preserve",
        "--num-device-blocks",
        "64",
        "--log-dir",
        str(tmp_path),
    ]
    command += ["--gateway-listen", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    try:
        assert process.stdout.readline().startswith("InferCept serving on ")
        banner = process.stdout.readline()
        assert banner.startswith("OpenAI-compatible gateway on "), banner
        base_url = banner.split()[-1]
        models = httpx.get(f"{base_url}/models", timeout=10.0).json()
        assert [model["id"] for model in models["data"]] == ["tiny"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    with process.stdout:
        assert "stopped" in process.stdout.read()
    gateway_port = int((tmp_path / "gateway.port").read_text())
    try:
        httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=2.0)
        raise AssertionError("the gateway still answers after serve stopped")
    except httpx.TransportError:
        pass
