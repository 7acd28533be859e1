from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from executor_svc.config import ExecutorConfig
from executor_svc.main import config_from_args, parse_args
from executor_svc.threads import serving_threads, set_compute_threads


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
        "--threads",
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


def test_threads_flag_reaches_the_config_and_is_validated() -> None:
    assert config_from_args(parse_args(["--threads", "3"])).num_threads == 3
    assert config_from_args(parse_args([])).num_threads == serving_threads()
    with pytest.raises(ValueError, match="num_threads"):
        ExecutorConfig(num_threads=0)


def test_a_serving_executor_leaves_one_core_to_its_grpc_loop() -> None:
    assert serving_threads(16) == 15
    assert serving_threads(2) == 1
    assert serving_threads(1) == 1  # never none
    assert 1 <= serving_threads() < max(os.cpu_count() or 1, 2)


def test_set_compute_threads_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_compute_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_compute_threads(0)
