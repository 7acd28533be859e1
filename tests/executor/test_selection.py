"""`auto` on CUDA picks what measured correct and faster: the choice from fabricated trials, the
cache, and the measurement itself (run here on CPU backends; on a GPU, gpu_check.sh runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from executor_svc.attention import BACKENDS, create_backend
from executor_svc.attention.selection import (
    BackendTrial,
    HeadShape,
    choose_backend,
    load_trials,
    measure_trials,
    select_backend,
    trials_path,
)

F32, BF16 = torch.float32, torch.bfloat16
SMALL_SEQS = [(1, 40), (1, 17), (9, 30)]  # the real trial batch is sized for a GPU


def test_picks_the_fastest_correct_backend() -> None:
    trials = [BackendTrial("torch", 0.0, 2e-3), BackendTrial("triton", 3e-3, 1e-3)]
    assert choose_backend(trials, BF16) == "triton"


def test_refuses_a_faster_backend_whose_output_differs() -> None:
    trials = [BackendTrial("torch", 0.0, 2e-3), BackendTrial("triton", 0.5, 1e-3)]
    assert choose_backend(trials, BF16) == "torch"
    # What passes in bfloat16 is too far off in float32.
    assert (
        choose_backend([BackendTrial("torch", 0.0, 2e-3), BackendTrial("triton", 3e-3, 1e-3)], F32) == "torch"
    )


def test_keeps_torch_when_the_kernel_is_slower_or_failed() -> None:
    assert (
        choose_backend([BackendTrial("torch", 0.0, 1e-3), BackendTrial("triton", 0.0, 2e-3)], BF16) == "torch"
    )
    failed = BackendTrial("triton", float("inf"), float("inf"))
    assert choose_backend([BackendTrial("torch", 0.0, 1e-3), failed], BF16) == "torch"
    assert choose_backend([], BF16) == "torch"


def test_measures_every_candidate_against_the_reference() -> None:
    shape = HeadShape(num_heads=4, num_kv_heads=2, head_dim=16, block_size=16)
    candidates = {
        name: create_backend(name, torch.device("cpu")) for name in ("torch", "numba") if name in BACKENDS
    }
    trials = measure_trials(candidates, shape, F32, torch.device("cpu"), SMALL_SEQS)
    assert [t.name for t in trials] == list(candidates)
    assert all(t.rel_error < 1e-5 and 0 < t.seconds < float("inf") for t in trials)


class Broken(torch.nn.Module):
    """A backend whose kernel fails to run."""

    name = "broken"

    def prepare(self, layout: object) -> object:
        raise RuntimeError("no kernel image is available for execution on the device")


def test_a_candidate_that_fails_is_recorded_not_raised() -> None:
    shape = HeadShape(num_heads=2, num_kv_heads=1, head_dim=16, block_size=16)
    candidates = {"torch": create_backend("torch", torch.device("cpu")), "broken": Broken()}
    trials = measure_trials(candidates, shape, F32, torch.device("cpu"), SMALL_SEQS)  # type: ignore[arg-type]
    assert trials[1] == BackendTrial("broken", float("inf"), float("inf"))
    assert choose_backend(trials, F32) == "torch"


def test_trials_are_cached_per_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = HeadShape(num_heads=2, num_kv_heads=1, head_dim=16, block_size=16)
    cpu = torch.device("cpu")
    chosen, trials = select_backend(cpu, F32, shape, tmp_path, seqs=SMALL_SEQS)
    assert chosen in BACKENDS and load_trials(trials_path(tmp_path, cpu, F32, shape)) == trials

    def must_not_measure(*args: object) -> None:
        raise AssertionError("measured although cached")

    monkeypatch.setattr("executor_svc.attention.selection.measure_trials", must_not_measure)
    assert select_backend(cpu, F32, shape, tmp_path, seqs=SMALL_SEQS) == (chosen, trials)
    other = HeadShape(num_heads=4, num_kv_heads=1, head_dim=16, block_size=16)
    assert trials_path(tmp_path, cpu, F32, other) != trials_path(tmp_path, cpu, F32, shape)
