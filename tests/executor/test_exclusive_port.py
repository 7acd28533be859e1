"""A port belongs to one server: a second executor on a port already served exits with a message
instead of sharing the port's connections (gRPC's default SO_REUSEPORT is off)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.executor.executor_process import running_executor

ARGS = ["--model", "tiny", "--device", "cpu", "--num-device-blocks", "16", "--num-host-blocks", "0"]


def test_a_second_executor_on_a_served_port_exits_with_a_clear_message(tmp_path: Path) -> None:
    with running_executor(ARGS, tmp_path) as (address, first):
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "INFERCEPT_CACHE_DIR": str(tmp_path / "cache")}
        second = subprocess.run(
            [sys.executable, "-m", "executor_svc", "--listen", address, *ARGS],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"could not bind {address}" in second.stderr
        assert first.poll() is None, "the first executor keeps serving"
