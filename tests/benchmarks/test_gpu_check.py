"""The GPU check's CPU-side parts: the script's self-test runs every part's command on CPU, and
the verdict on `auto` reads the executor benchmark's figures (the GPU run is `make gpu-check`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check_verdict import ModelFigures, read_figures, verdict

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("env", "gpu-tests", "selection", "attention-bench", "executor-bench", "verdict")

BENCH = """# executor benchmark (torch 2.5.1, 16 threads, decode: best of 10 by the wall clock)

## tiny: 3.3M parameters, torch.bfloat16, cuda:0, backends auto, torch, triton (auto: triton)
 batch  context     auto ms     auto/dense    torch ms    torch/dense   triton ms   triton/dense  dense ms    tok/s
     1      512        1.10          1.10        1.50          1.50        1.05          1.05      1.00      900
    64      512        2.00          1.00        4.00          2.00        2.10          1.05      2.00    32000
prefill: 1024 tokens in 5.0 ms = 204,800 tokens/s

## large: 60.0M parameters, torch.bfloat16, cuda:0, backends auto, torch, triton (auto: triton)
 batch  context     auto ms     auto/dense    torch ms    torch/dense   triton ms   triton/dense  dense ms    tok/s
     1      512        3.00          1.00        2.00          0.67        3.00          1.00      3.00      300
"""


def test_the_pick_is_judged_against_every_backend_measured() -> None:
    tiny, large = read_figures(BENCH)
    assert (tiny.model, tiny.picked) == ("tiny", "triton")
    assert tiny.total_ms == pytest.approx({"auto": 3.10, "torch": 5.50, "triton": 3.15})
    assert verdict(tiny, tolerance=0.05) == (
        True,
        "tiny: auto picked triton, the fastest (decode steps summed, ms: triton 3.15, torch 5.50)",
    )
    ok, line = verdict(large, tolerance=0.05)
    assert not ok and "SLOWER than torch" in line


def test_a_pick_not_measured_by_name_is_judged_by_autos_own_column() -> None:
    figures = ModelFigures("tiny", "numba", {"auto": 10.0, "torch": 30.0})
    assert verdict(figures, tolerance=0.0)[0]
    assert not verdict(ModelFigures("tiny", "numba", {"auto": 31.0, "torch": 30.0}), tolerance=0.0)[0]


def test_a_heading_without_autos_pick_is_not_judged() -> None:
    assert read_figures(BENCH.replace(" (auto: triton)", "")) == []


def test_the_script_runs_every_part_on_cpu_and_writes_the_verdict(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "INFERCEPT_CACHE_DIR": str(tmp_path / "cache"),
    }
    # The suite runs Triton in its interpreter (conftest.py): far too slow for the selection's trials.
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--self-test"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    statuses = dict(line.split(": exit ")[0:2] for line in summary if ": exit " in line)
    assert list(statuses) == list(PARTS)
    # Every part ran clean; the verdict may find the pick slower on a noisy CPU, but it judged.
    assert all(statuses[name].startswith("0 ") for name in PARTS[:-1]), summary
    assert statuses["verdict"].split()[0] in {"0", "1"}, summary
    assert any(line.startswith("tiny: auto picked ") for line in summary), summary
    for name in PARTS:
        assert (tmp_path / f"{name}.txt").stat().st_size > 0, name
