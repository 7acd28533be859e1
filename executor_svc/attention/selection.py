"""Measured choice of the attention backend for `auto` on CUDA.

A backend is only worth picking if it is correct and faster *on this device*: the Triton kernels
were written without a GPU at hand. At start-up every candidate attends one trial batch (decode
rows beside a prefill chunk, random paged blocks, the model's head shape); a candidate qualifies
when its output is within the dtype's tolerance of the torch backend's, and the fastest qualifier
wins. The torch backend is the reference and the fallback. Trials are cached on disk per device
name, dtype, head shape, block size and library versions, so a restart does not measure again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog
import torch

from executor_svc.attention import BACKENDS, create_backend
from executor_svc.attention.base import AttentionBackend, BatchLayout

log = structlog.get_logger(__name__)

REFERENCE = "torch"
# Largest error relative to the reference output's largest magnitude that still counts as equal.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
Seqs = list[tuple[int, int]]  # (query tokens, context tokens) per sequence
# The trial batch: long decode contexts beside a prefill chunk.
TRIAL_SEQS: Seqs = [(1, 1000)] * 16 + [(1, 3000)] * 4 + [(128, 640)]
TRIAL_REPEATS = 5


@dataclasses.dataclass(frozen=True)
class HeadShape:
    """What sizes one layer's attention."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    block_size: int


@dataclasses.dataclass(frozen=True)
class BackendTrial:
    """One candidate on the trial batch."""

    name: str
    rel_error: float  # vs the reference output; inf when the candidate failed to run
    seconds: float  # median attend time (prepare excluded); inf when it failed


def select_backend(
    device: torch.device,
    dtype: torch.dtype,
    shape: HeadShape,
    cache_dir: Path,
    refresh: bool = False,
    seqs: Seqs = TRIAL_SEQS,
) -> tuple[str, list[BackendTrial]]:
    """The backend `auto` means on `device`, and the trials that decided it (cached, unless
    `refresh` or none are cached: then measured now and saved)."""
    path = trials_path(cache_dir, device, dtype, shape)
    trials = None if refresh else load_trials(path)
    if trials is None:
        candidates = {}
        for name in BACKENDS:
            try:
                candidates[name] = create_backend(name, device, dtype)
            except ValueError:  # not for this device or dtype
                continue
        trials = measure_trials(candidates, shape, dtype, device, seqs)
        save_trials(path, trials)
    chosen = choose_backend(trials, dtype)
    log.info("attention.selected", backend=chosen, trials=[dataclasses.asdict(t) for t in trials])
    return chosen, trials


def choose_backend(trials: list[BackendTrial], dtype: torch.dtype) -> str:
    """The fastest trial within TOLERANCE[dtype] of the reference; the reference if none is
    faster (or the reference itself was not tried)."""
    reference = next((t for t in trials if t.name == REFERENCE), None)
    if reference is None:
        return REFERENCE
    qualified = [t for t in trials if t.rel_error <= TOLERANCE[dtype] and t.seconds < reference.seconds]
    return min(qualified, key=lambda t: t.seconds).name if qualified else REFERENCE


def measure_trials(
    backends: dict[str, AttentionBackend],
    shape: HeadShape,
    dtype: torch.dtype,
    device: torch.device,
    seqs: Seqs = TRIAL_SEQS,
) -> list[BackendTrial]:
    """Each backend on one random trial batch of `seqs`; backends must include REFERENCE."""
    q, kv_layer, layout = trial_batch(shape, dtype, device, seqs)
    expected = backends[REFERENCE].attend(q, kv_layer, backends[REFERENCE].prepare(layout))
    trials = []
    for name, backend in backends.items():
        try:
            meta = backend.prepare(layout)
            out = backend.attend(q, kv_layer, meta)
            error = float((out.float() - expected.float()).abs().max() / expected.float().abs().max())
            seconds = _median_s(functools.partial(backend.attend, q, kv_layer, meta), device)
        except Exception as failure:  # a kernel that does not compile or run here is not a candidate
            log.warning("attention.trial_failed", backend=name, error=f"{type(failure).__name__}: {failure}")
            error = seconds = float("inf")
        trials.append(BackendTrial(name, error, seconds))
    return trials


def trial_batch(
    shape: HeadShape, dtype: torch.dtype, device: torch.device, seqs: Seqs = TRIAL_SEQS
) -> tuple[torch.Tensor, torch.Tensor, BatchLayout]:
    """(q, one layer's KV pool, layout) for `seqs` in shuffled blocks, seeded."""
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    blocks_each = [-(-context // shape.block_size) for _, context in seqs]
    order = rng.permutation(sum(blocks_each))
    tables = np.split(order, np.cumsum(blocks_each)[:-1])
    positions = [np.arange(context - query, context) for query, context in seqs]
    flat_positions = np.concatenate(positions)
    slot_blocks = np.concatenate([t[p // shape.block_size] for t, p in zip(tables, positions, strict=True)])
    layout = BatchLayout(
        block_size=shape.block_size,
        query_starts=np.concatenate(([0], np.cumsum([q for q, _ in seqs]))).tolist(),
        context_lens=[context for _, context in seqs],
        block_tables=[t.tolist() for t in tables],
        slot_blocks=torch.from_numpy(slot_blocks).to(device),
        slot_offsets=torch.from_numpy(flat_positions % shape.block_size).to(device),
    )
    kv_shape = (len(order), 2, shape.block_size, shape.num_kv_heads, shape.head_dim)
    kv_layer = torch.randn(kv_shape, generator=generator).to(device, dtype)
    q = torch.randn((len(flat_positions), shape.num_heads, shape.head_dim), generator=generator)
    return q.to(device, dtype), kv_layer, layout


def trials_path(cache_dir: Path, device: torch.device, dtype: torch.dtype, shape: HeadShape) -> Path:
    """Where the trials for this device, dtype and shape are cached."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    versions = f"torch{torch.__version__}"
    try:
        import triton

        versions += f"-triton{triton.__version__}"
    except ImportError:  # no triton: the key says so by omission
        pass
    key = (
        f"{device_name}-{str(dtype).removeprefix('torch.')}-h{shape.num_heads}-kv{shape.num_kv_heads}"
        f"-d{shape.head_dim}-bs{shape.block_size}-{versions}"
    )
    return cache_dir / "attention" / f"{''.join(c if c.isalnum() or c in '.-' else '_' for c in key)}.json"


def save_trials(path: Path, trials: list[BackendTrial]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(t) for t in trials], indent=1))


def load_trials(path: Path) -> list[BackendTrial] | None:
    """The cached trials, or None if there are none (or they are unreadable)."""
    try:
        return [BackendTrial(**row) for row in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return None


def _median_s(run: Callable[[], object], device: torch.device) -> float:
    samples = []
    for _ in range(TRIAL_REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)
