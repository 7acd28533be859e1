"""The gateway as a child process of `infercept serve` (stdlib and the launcher only: `infercept
serve` imports it without the gateway's own dependencies)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tooling.launcher import LaunchError

STOP_TIMEOUT_S = 20.0


class GatewayLaunchError(LaunchError):
    """The gateway did not come up; the message carries the end of its log."""


@contextlib.contextmanager
def run_gateway(
    listen: str,
    scheduler_address: str,
    log_dir: Path,
    startup_timeout_s: float = 60.0,
    *,
    token_file: str | None = None,
    ca_path: str | None = None,
) -> Iterator[str]:
    """Run `python -m gateway` against the scheduler until the block ends; yields its base URL
    once /health answers. token_file / ca_path: the gateway's --token-file / --ca (a scheduler
    that requires a token / serves TLS). Raises GatewayLaunchError if it exits or does not
    answer in time."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port_file, log_path = log_dir / "gateway.port", log_dir / "gateway.log"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "gateway", "--listen", listen, "--scheduler", scheduler_address]
    command += ["--port-file", str(port_file)]
    command += ["--token-file", token_file] if token_file else []
    command += ["--ca", ca_path] if ca_path else []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _wait_healthy(process, listen.rsplit(":", 1)[0], port_file, log_path, startup_timeout_s)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(
    process: subprocess.Popen[bytes], host: str, port_file: Path, log_path: Path, timeout_s: float
) -> str:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if process.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise GatewayLaunchError(f"the gateway exited with {process.returncode}:\n{tail}")
        port = port_file.read_text().strip() if port_file.exists() else ""
        if port:
            url = f"http://{host}:{port}"
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/health", timeout=1.0) as response,
            ):
                if response.status == 200:
                    return url
        time.sleep(0.1)
    raise GatewayLaunchError(f"the gateway did not answer within {timeout_s:.0f}s (log: {log_path})")
