"""Attention and swap benchmark on one CUDA device: the torch and triton backends side by side.

    python -m benchmarks.attention_bench [--dtype bfloat16] [--repeats 20] [--swap-blocks 64,256]

Everything is measured in the same run, on the same device:

1. Decode attention: one layer's ``attend()`` for batches 1..256 and contexts 512..4096
   (Llama-3-8B heads by default: 32 query heads, 8 KV heads, head_dim 128, block 16), torch
   backend against triton backend, plus each backend's host-side ``prepare()``. Block tables are
   random permutations of the pool, as after a while of serving.
2. Bandwidth: the triton kernel's KV bytes read per second against a device-to-device copy's
   bytes read plus written per second (what the memory can do).
3. Swap overlap: one decode iteration over every layer (attention only: no projections, no MLP)
   alone; with N blocks swapped out and N swapped in on the swap engine's side stream
   (overlapped); with the same copies finished before the first layer (serialized); and the
   copies alone. ``hidden`` is the share of the copy time the overlap took off the serialized
   iteration. Block maps are scattered (one copy call per block and layer) or contiguous (one
   per layer); a last variant moves the scattered maps with the Triton block copy kernel
   (executor_svc/block_copy.py) through pinned host memory, as swap.py could.

Exits with a message, measuring nothing, when there is no CUDA device. Written on a machine
without a GPU: it has not been run yet, and its numbers have not been looked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from executor_svc.attention import BACKENDS, AttentionBackend, BatchLayout
from executor_svc.attention.selection import HeadShape
from executor_svc.config import DTYPES
from executor_svc.kv_cache import KVPools, KVShape
from executor_svc.swap import SwapEngine

BlockIds = npt.NDArray[np.int64]
BlockMap = tuple[BlockIds, BlockIds]  # (src ids, dst ids)
# Back-to-back attend() calls per timing sample: keeps the GPU queue full, so the figure is the
# kernel's time and not the host's launch latency.
CALLS_PER_SAMPLE = 10


def kv_bytes(shape: HeadShape, dtype: torch.dtype, num_tokens: int) -> int:
    """Bytes of keys and values of `num_tokens` positions in one layer."""
    return num_tokens * 2 * shape.num_kv_heads * shape.head_dim * dtype.itemsize


def median_cuda_s(run: Callable[[], object], repeats: int, calls: int = 1) -> float:
    """Median device seconds of one run(), timed by CUDA events over `calls` back-to-back runs."""
    run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(calls):
            run()
        end.record()
        end.synchronize()
        samples.append(begin.elapsed_time(end) / 1e3 / calls)
    return statistics.median(samples)


def median_wall_s(run: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of run() up to the device going idle, after a warm-up."""
    run()
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        began = time.perf_counter()
        run()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def copy_bandwidth_bytes_s(num_bytes: int, repeats: int) -> float:
    """Device-to-device copy: bytes read plus bytes written, per second."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * num_bytes / median_cuda_s(lambda: dst.copy_(src), repeats)


def decode_layout(
    shape: HeadShape, batch: int, context: int, block_ids: BlockIds, device: torch.device
) -> BatchLayout:
    """`batch` sequences decoding their token at position context - 1, in the given blocks."""
    blocks_each = -(-context // shape.block_size)
    tables = block_ids[: batch * blocks_each].reshape(batch, blocks_each)
    last = context - 1
    return BatchLayout(
        block_size=shape.block_size,
        query_starts=list(range(batch + 1)),
        context_lens=[context] * batch,
        block_tables=tables.tolist(),
        slot_blocks=torch.from_numpy(tables[:, last // shape.block_size].copy()).to(device),
        slot_offsets=torch.full((batch,), last % shape.block_size, dtype=torch.long, device=device),
    )


def bench_decode(
    shape: HeadShape, dtype: torch.dtype, batches: list[int], contexts: list[int], repeats: int
) -> list[str]:
    device = torch.device("cuda")
    max_blocks = max(batches) * -(-max(contexts) // shape.block_size)
    kv_layer = torch.empty(
        (max_blocks, 2, shape.block_size, shape.num_kv_heads, shape.head_dim),
        dtype=dtype,
        device=device,
    ).normal_()
    rng = np.random.default_rng(0)
    backends: dict[str, AttentionBackend] = {name: BACKENDS[name]() for name in ("torch", "triton")}
    copy_bytes_s = copy_bandwidth_bytes_s(1 << 30, repeats)
    lines = [
        f"device-to-device copy: {copy_bytes_s / 1e9:,.0f} GB/s (read + write)",
        f"{'batch':>6} {'context':>8} {'torch ms':>9} {'triton ms':>10} {'speedup':>8} "
        f"{'triton GB/s':>12} {'of copy':>8} {'prep ms torch':>14} {'prep ms triton':>15}",
    ]
    for context in contexts:
        for batch in batches:
            layout = decode_layout(shape, batch, context, rng.permutation(max_blocks), device)
            q = torch.randn((batch, shape.num_heads, shape.head_dim), dtype=dtype, device=device)
            (torch_prepare_s, torch_s), (triton_prepare_s, triton_s) = (
                time_backend(backends[name], q, kv_layer, layout, repeats) for name in ("torch", "triton")
            )
            read_bytes_s = kv_bytes(shape, dtype, batch * context) / triton_s
            lines.append(
                f"{batch:>6} {context:>8} {torch_s * 1e3:>9.3f} {triton_s * 1e3:>10.3f} "
                f"{torch_s / triton_s:>7.2f}x {read_bytes_s / 1e9:>12,.0f} {read_bytes_s / copy_bytes_s:>8.0%} "
                f"{torch_prepare_s * 1e3:>14.2f} {triton_prepare_s * 1e3:>15.2f}"
            )
    return lines


def time_backend(
    backend: AttentionBackend, q: torch.Tensor, kv_layer: torch.Tensor, layout: BatchLayout, repeats: int
) -> tuple[float, float]:
    """(prepare() host seconds, attend() device seconds), medians."""
    prepare_s = host_seconds(lambda: backend.prepare(layout), repeats)
    meta = backend.prepare(layout)
    return prepare_s, median_cuda_s(lambda: backend.attend(q, kv_layer, meta), repeats, CALLS_PER_SAMPLE)


def host_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of run() as the host sees it (prepare() is host work plus uploads)."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


class Swapper(Protocol):
    """SwapEngine's interface, which the Triton variant below copies."""

    def start(self, swap_out: BlockMap, swap_in: BlockMap) -> object: ...
    def wait_for_layer(self, layer: int) -> None: ...
    def finish(self) -> object: ...


class TritonBlockSwap:
    """What swap.py would do with block_copy: one kernel per layer and direction, side stream."""

    def __init__(self, pools: KVPools) -> None:
        self._pools = pools
        self._stream = torch.cuda.Stream()
        self._layer_events: list[torch.cuda.Event] = []

    def start(self, swap_out: BlockMap, swap_in: BlockMap) -> None:
        # Imported here: it needs triton, and main() explains its absence before anything runs.
        from executor_svc.block_copy import copy_blocks

        device, host = self._pools.device, self._pools.host
        out_src, out_dst, in_src, in_dst = (
            torch.from_numpy(ids).to(device.device) for ids in (*swap_out, *swap_in)
        )
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            for layer in range(device.shape[0]):
                copy_blocks(device[layer], host[layer], out_src, out_dst)
                copy_blocks(host[layer], device[layer], in_src, in_dst)
                event = torch.cuda.Event()
                event.record()
                self._layer_events.append(event)

    def wait_for_layer(self, layer: int) -> None:
        if self._layer_events:
            torch.cuda.current_stream().wait_event(self._layer_events[layer])

    def finish(self) -> None:
        if self._layer_events:
            self._layer_events[-1].synchronize()
        self._layer_events = []


@dataclasses.dataclass(frozen=True)
class SwapSetup:
    """A decode batch over every layer of a pool, and block maps to move beside it."""

    pools: KVPools
    backend: AttentionBackend
    q: torch.Tensor
    layout: BatchLayout
    scattered: tuple[BlockMap, BlockMap]  # (swap_out, swap_in), ids in random order
    contiguous: tuple[BlockMap, BlockMap]  # the same number of blocks, in consecutive ids

    def iteration(self, swapper: Swapper, serialized: bool) -> None:
        """One forward's attention; each layer waits for its own copies, or all of them first."""
        meta = self.backend.prepare(self.layout)
        num_layers = self.pools.device.shape[0]
        if serialized:
            swapper.wait_for_layer(num_layers - 1)  # the last layer's event follows every copy
        for layer in range(num_layers):
            swapper.wait_for_layer(layer)
            self.backend.attend(self.q, self.pools.device[layer], meta)


def swap_setup(
    shape: HeadShape, dtype: torch.dtype, num_layers: int, batch: int, context: int, num_swap_blocks: int
) -> SwapSetup:
    """Device blocks: [batch's context | swap-out sources | swap-in targets]; host: [out | in]."""
    kv_shape = KVShape(num_layers, shape.block_size, shape.num_kv_heads, shape.head_dim, dtype)
    batch_blocks = batch * -(-context // shape.block_size)
    device = torch.device("cuda")
    pools = KVPools(kv_shape, batch_blocks + 2 * num_swap_blocks, 2 * num_swap_blocks, device)
    pools.device.normal_()
    rng = np.random.default_rng(1)
    n = num_swap_blocks
    out_src, in_dst = batch_blocks + np.arange(n), batch_blocks + n + np.arange(n)
    out_dst, in_src = np.arange(n), n + np.arange(n)
    contiguous = ((out_src, out_dst), (in_src, in_dst))
    scattered = (
        (rng.permutation(out_src), rng.permutation(out_dst)),
        (rng.permutation(in_src), rng.permutation(in_dst)),
    )
    return SwapSetup(
        pools=pools,
        backend=BACKENDS["triton"](),
        q=torch.randn((batch, shape.num_heads, shape.head_dim), dtype=dtype, device=device),
        layout=decode_layout(shape, batch, context, rng.permutation(batch_blocks), device),
        scattered=scattered,
        contiguous=contiguous,
    )


def bench_swap(
    shape: HeadShape,
    dtype: torch.dtype,
    num_layers: int,
    batch: int,
    context: int,
    swap_blocks: list[int],
    repeats: int,
) -> list[str]:
    lines = [
        f"{num_layers} layers of decode attention (triton), batch {batch}, context {context}; "
        "N blocks out and N in",
        f"{'N':>6} {'maps':>11} {'copier':>7} {'MiB each way':>13} {'no swap ms':>11} {'copies ms':>10} "
        f"{'overlap ms':>11} {'serial ms':>10} {'hidden':>7}",
    ]
    for num_blocks in swap_blocks:
        lines += swap_rows(swap_setup(shape, dtype, num_layers, batch, context, num_blocks), repeats)
        torch.cuda.empty_cache()  # the next setup's pools replace this one's
    return lines


def swap_rows(setup: SwapSetup, repeats: int) -> list[str]:
    """One line per (block map, copier) for this setup's number of swapped blocks."""
    num_blocks = len(setup.contiguous[0][0])
    mib = num_blocks * setup.pools.shape.bytes_per_block / 2**20
    swappers: list[tuple[str, str, Swapper, tuple[BlockMap, BlockMap]]] = [
        ("scattered", "copy_", SwapEngine(setup.pools), setup.scattered),
        ("contiguous", "copy_", SwapEngine(setup.pools), setup.contiguous),
        ("scattered", "triton", TritonBlockSwap(setup.pools), setup.scattered),
    ]
    idle = SwapEngine(setup.pools)  # never started: wait_for_layer() does nothing
    alone_s = median_wall_s(lambda: setup.iteration(idle, serialized=False), repeats)
    lines = []
    for maps, copier, swapper, (swap_out, swap_in) in swappers:
        try:
            copies_s, overlap_s, serial_s = swap_times(setup, swapper, swap_out, swap_in, repeats)
        except Exception as error:  # the Triton copier is unverified on a GPU: report, go on
            lines.append(f"{num_blocks:>6} {maps:>11} {copier:>7} failed: {error!r}"[:300])
            continue
        hidden = (serial_s - overlap_s) / copies_s
        lines.append(
            f"{num_blocks:>6} {maps:>11} {copier:>7} {mib:>13,.0f} {alone_s * 1e3:>11.2f} "
            f"{copies_s * 1e3:>10.2f} {overlap_s * 1e3:>11.2f} {serial_s * 1e3:>10.2f} {hidden:>7.0%}"
        )
    return lines


def swap_times(
    setup: SwapSetup, swapper: Swapper, swap_out: BlockMap, swap_in: BlockMap, repeats: int
) -> tuple[float, float, float]:
    """(copies alone, overlapped iteration, serialized iteration), median wall seconds each."""

    def copies() -> None:
        swapper.start(swap_out, swap_in)
        swapper.finish()

    def with_swap(serialized: bool) -> None:
        swapper.start(swap_out, swap_in)
        setup.iteration(swapper, serialized)
        swapper.finish()

    return (
        median_wall_s(copies, repeats),
        median_wall_s(lambda: with_swap(serialized=False), repeats),
        median_wall_s(lambda: with_swap(serialized=True), repeats),
    )


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--batches", type=int_list, default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--contexts", type=int_list, default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--swap-layers", type=int, default=32)
    parser.add_argument("--swap-batch", type=int, default=64)
    parser.add_argument("--swap-context", type=int, default=1024)
    parser.add_argument("--swap-blocks", type=int_list, default=[64, 256])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_bench needs a CUDA device and torch sees none: nothing was measured.")
    if "triton" not in BACKENDS:
        sys.exit("attention_bench compares against the triton backend, but triton does not import.")
    shape, dtype = HeadShape(args.heads, args.kv_heads, args.head_dim, args.block_size), DTYPES[args.dtype]
    print(
        f"# attention benchmark: {torch.cuda.get_device_name()}, torch {torch.__version__}, {shape}, {dtype}"
    )
    print("\n## decode attention, one layer")
    print("\n".join(bench_decode(shape, dtype, args.batches, args.contexts, args.repeats)), flush=True)
    torch.cuda.empty_cache()
    print("\n## swap overlap")
    lines = bench_swap(
        shape, dtype, args.swap_layers, args.swap_batch, args.swap_context, args.swap_blocks, args.repeats
    )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
