"""Measures the executor's cost model: forward time against batched tokens, the saturation
point, and swap time per block each way. Cached on disk per model, device, dtype and block size.

Measurements run real plans through the engine (the same path as serving), so they need an
idle executor: they overwrite KV blocks. A cached profile is returned without measuring.

Kept to seconds on a CPU: the token grid stops once one forward takes longer than
_MAX_PREFILL_SAMPLE_S (far past the saturation point; the time is linear in tokens there), and
decode steps are timed over context whose KV is not computed first (a step's time does not
depend on the values in the blocks it reads, only on how many).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from google.protobuf import json_format

from executor_svc.engine import Engine
from executor_svc.random_model import cache_dir
from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work

log = structlog.get_logger(__name__)

# Request ids the profiler borrows; they never collide with a scheduler's while the engine is idle.
_PROFILE_REQUEST_BASE = 1 << 62
_TOKEN_GRID = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# The grid goes on past a forward this slow only until it has this many points.
_MAX_PREFILL_SAMPLE_S = 0.25
_MIN_PREFILL_POINTS = 8
_DECODE_BATCHES = (1, 8, 32, 64)
_DECODE_CONTEXT_TOKENS = 512
_SWAP_BLOCKS = (1, 64)
_NO_BLOCKS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class ProfilerBusy(RuntimeError):
    """A measurement was needed while requests are live."""


def profile_path(engine: Engine) -> Path:
    config_bytes = (engine.loaded.directory / "config.json").read_bytes()
    model_key = hashlib.sha256(str(engine.loaded.directory.resolve()).encode() + config_bytes).hexdigest()[
        :16
    ]
    dtype = str(engine.dtype).removeprefix("torch.")
    name = f"{model_key}-{engine.device.type}-{dtype}-bs{engine.config.block_size}.json"
    return cache_dir() / "profiles" / name


def get_profile(engine: Engine, refresh: bool = False, repeats: int = 3) -> pb.ProfileResponse:
    """The cached profile, or a fresh measurement (saved to the cache) if none or `refresh`."""
    path = profile_path(engine)
    if path.is_file() and not refresh:
        cached = json_format.Parse(path.read_text(), pb.ProfileResponse())
        cached.from_cache = True
        return cached
    profile = measure_profile(engine, repeats)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_format.MessageToJson(profile))
    return profile


def measure_profile(engine: Engine, repeats: int = 3) -> pb.ProfileResponse:
    if engine.requests:
        raise ProfilerBusy(
            f"cannot measure with {len(engine.requests)} live requests; Reset first or use the cache"
        )
    began = time.perf_counter()
    samples = _prefill_samples(engine, repeats) + _decode_samples(engine, repeats)
    prefill = [s for s in samples if s.context_tokens == 0]
    saturation, base_s, per_token_s = fit_saturation(
        [s.num_batched_tokens for s in prefill], [s.forward_s for s in prefill]
    )
    out_s_per_block, in_s_per_block, fixed_s = _swap_costs(engine, repeats)
    log.info("profile.measured", seconds=round(time.perf_counter() - began, 2), saturation_tokens=saturation)
    return pb.ProfileResponse(
        forward_samples=samples,
        saturation_tokens=saturation,
        forward_base_s=base_s,
        forward_s_per_token=per_token_s,
        swap_out_s_per_block=out_s_per_block,
        swap_in_s_per_block=in_s_per_block,
        swap_fixed_s=fixed_s,
        model=str(engine.loaded.directory),
        device=str(engine.device),
        dtype=str(engine.dtype).removeprefix("torch."),
        block_size_tokens=engine.config.block_size,
    )


def fit_saturation(num_tokens: list[int], forward_s: list[float]) -> tuple[float, float, float]:
    """Fit T(x) = base for x <= S, base + k (x - S) above; returns (S, base, k).

    Every measured x is tried as S; base is the mean time at or below it, k the least-squares
    slope through (S, base) of the points above; the S with the least squared error wins.
    """
    x, t = np.asarray(num_tokens, dtype=float), np.asarray(forward_s, dtype=float)
    best: tuple[float, float, float, float] | None = None
    for s in sorted(set(x.tolist())):
        below, above = x <= s, x > s
        base = float(t[below].mean())
        dx, dt = x[above] - s, t[above] - base
        slope = float(max((dx * dt).sum() / (dx * dx).sum(), 0.0)) if above.any() else 0.0
        error = float(((t - np.where(below, base, base + slope * (x - s))) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, s, base, slope)
    assert best is not None, "fit_saturation needs at least one sample"
    return best[1], best[2], best[3]


def _prefill_samples(engine: Engine, repeats: int) -> list[pb.ForwardSample]:
    limit = min(engine.limits.max_model_len, engine.limits.num_device_blocks * engine.config.block_size)
    samples: list[pb.ForwardSample] = []
    for num_tokens in (n for n in _TOKEN_GRID if n <= limit):
        if len(samples) >= _MIN_PREFILL_POINTS and samples[-1].forward_s > _MAX_PREFILL_SAMPLE_S:
            break
        seconds = _median_time(repeats, _prefill_once, engine, num_tokens)
        samples.append(pb.ForwardSample(num_batched_tokens=num_tokens, num_requests=1, forward_s=seconds))
    return samples


def _decode_samples(engine: Engine, repeats: int) -> list[pb.ForwardSample]:
    block_size = engine.config.block_size
    context = min(_DECODE_CONTEXT_TOKENS, engine.limits.max_model_len - 1)
    blocks_each = -(-(context + 1) // block_size)
    samples = []
    for batch in (b for b in _DECODE_BATCHES if b * blocks_each <= engine.limits.num_device_blocks):
        # The first call registers the requests with tables covering the context; its KV is
        # whatever the blocks hold (the timing does not depend on it).
        seconds = _median_time(repeats, _run_batch, engine, batch, 1, context)
        _forget_all(engine)
        samples.append(
            pb.ForwardSample(
                num_batched_tokens=batch, context_tokens=context, num_requests=batch, forward_s=seconds
            )
        )
    return samples


def _prefill_once(engine: Engine, num_tokens: int) -> None:
    _run_batch(engine, num_requests=1, chunk=num_tokens, context=0)
    _forget_all(engine)


def _run_batch(engine: Engine, num_requests: int, chunk: int, context: int) -> None:
    """One step computing `chunk` tokens at position `context` for each of `num_requests`
    borrowed requests; new ones get tables of consecutive device blocks for all of them."""
    block_size = engine.config.block_size
    blocks_each = -(-(context + chunk) // block_size)
    new_ids, tables, work = [], [], []
    tokens = (np.arange(chunk) % engine.limits.vocab_size).tolist()
    for index in range(num_requests):
        request_id = _PROFILE_REQUEST_BASE + index
        if request_id not in engine.requests:
            new_ids.append(request_id)
            first = index * blocks_each
            tables.append(TableUpdate(request_id, 0, range(first, first + blocks_each)))
        work.append(Work(request_id, context, tokens, sample=True))
    plan = pb.StepPlan(
        step_id=0,
        new_requests=[pb.NewRequest(request_id=rid) for rid in new_ids],
        block_table_updates=pack_table_updates(tables),
        work=pack_work(work),
    )
    result = engine.step(plan)
    assert not result.HasField("error"), f"profiling plan refused: {result.error.message}"


def _forget_all(engine: Engine) -> None:
    ids = [rid for rid in engine.requests if rid >= _PROFILE_REQUEST_BASE]
    if ids:
        engine.step(pb.StepPlan(step_id=0, forget_request_ids=ids))


def _swap_costs(engine: Engine, repeats: int) -> tuple[float, float, float]:
    """(out s/block, in s/block, fixed s per call) from timing 1 and many blocks each way."""
    most = min(_SWAP_BLOCKS[-1], engine.limits.num_device_blocks, engine.limits.num_host_blocks)
    if most < 2:
        return 0.0, 0.0, 0.0
    timings: dict[tuple[str, int], float] = {}
    for n in (1, most):
        ids = np.arange(n, dtype=np.int64)
        timings["out", n] = _median_time(repeats, _swap, engine, (ids, ids), _NO_BLOCKS, "out")
        timings["in", n] = _median_time(repeats, _swap, engine, _NO_BLOCKS, (ids, ids), "in")
    out_per_block = per_block_s(timings["out", 1], timings["out", most], most)
    in_per_block = per_block_s(timings["in", 1], timings["in", most], most)
    fixed = max(min(timings["out", 1] - out_per_block, timings["in", 1] - in_per_block), 0.0)
    return out_per_block, in_per_block, fixed


def per_block_s(one_block_s: float, many_blocks_s: float, many: int) -> float:
    """Seconds per block of a swap call, from timing one block and `many` (> 1) blocks: the slope
    between the two. Where noise makes the slope zero or negative (small blocks copy in
    microseconds, and a busy machine can stall the one-block call longer), the many-block
    call's time per block, an upper bound, stands in: a swap is never profiled as free."""
    slope_s = (many_blocks_s - one_block_s) / (many - 1)
    return slope_s if slope_s > 0 else many_blocks_s / many


def _swap(
    engine: Engine, swap_out: tuple[np.ndarray, np.ndarray], swap_in: tuple[np.ndarray, np.ndarray], way: str
) -> float:
    engine.swap.start(swap_out, swap_in)
    times = engine.swap.finish()
    return times.swap_out_s if way == "out" else times.swap_in_s


def _median_time(repeats: int, run: Callable[..., object], *args: Any) -> float:
    """Median wall time of run(*args) after one warm-up call; if it returns a float, that is the time."""
    run(*args)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        measured = run(*args)
        times.append(measured if isinstance(measured, float) else time.perf_counter() - began)
    return statistics.median(times)
