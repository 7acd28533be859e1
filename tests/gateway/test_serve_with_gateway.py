"""`infercept serve --gateway-listen` starts the gateway as a third child, connected to a scheduler
that serves TLS and requires a token, and stops it on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.certs import make_pki


def test_serve_with_a_gateway_reaches_the_secured_scheduler_over_http_and_stops_it_on_ctrl_c(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "tokens").write_text("gateway s3cret-token\n")
    command = [sys.executable, "-m", "tooling.cli", "serve", "--listen", "127.0.0.1:0", "--device", "cpu"]
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
    command += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-ca", str(pki.ca)]
    command += ["--auth-token-file", str(tmp_path / "tokens"), "--gateway-listen", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    try:
        assert process.stdout.readline().startswith("InferCept serving on ")
        banner = process.stdout.readline()
        assert banner.startswith("OpenAI-compatible gateway on "), banner
        base_url = banner.split()[-1]
        models = httpx.get(f"{base_url}/models", timeout=10.0).json()
        assert [model["id"] for model in models["data"]] == ["tiny"]
        # A generation crosses the gateway's Session channel too, with the token and over TLS.
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 2, "infercept": {"ignore_eos": True}}
        completion = httpx.post(f"{base_url}/completions", json=body, timeout=30.0).json()
        assert completion["choices"][0]["finish_reason"] == "length", completion
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
