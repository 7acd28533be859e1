from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_help_lists_every_documented_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "executor_svc", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--listen",
        "--model",
        "--device",
        "--dtype",
        "--block-size",
        "--num-device-blocks",
        "--gpu-memory-fraction",
        "--num-host-blocks",
        "--seed",
        "--profile",
    ):
        assert flag in out


def test_a_bad_model_path_exits_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "executor_svc", "--model", str(tmp_path / "missing"), "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "not a built-in model" in result.stderr
