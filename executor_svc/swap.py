"""Moves KV blocks between the device and host pools as the plan's block maps say.

On CUDA the copies run on a side stream, layer by layer, each layer's copies followed by an event;
the forward pass waits for layer i's event just before layer i touches its KV. So layer i's
attention waits only for layer i's copies, and the copies of later layers overlap the compute of
earlier ones (InferCept's pipelined swap). Swap-out is enqueued before swap-in in every layer, so
a device block freed by a swap-out may be refilled by a swap-in, or rewritten by the forward, in
the same iteration.

On CPU the copies are plain gathers and scatters through a preallocated staging buffer.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import numpy.typing as npt
import torch

from executor_svc.kv_cache import KVPools

BlockIds = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class SwapTimes:
    swap_out_s: float
    swap_in_s: float


def contiguous_runs(src: BlockIds, dst: BlockIds) -> list[tuple[int, int, int]]:
    """Split a block map into (src_start, dst_start, length) runs where both sides are consecutive.

    Fewer, larger copies: a whole context swapped into fresh consecutive blocks is one copy.
    """
    runs: list[tuple[int, int, int]] = []
    for s, d in zip(src.tolist(), dst.tolist(), strict=True):
        if runs and runs[-1][0] + runs[-1][2] == s and runs[-1][1] + runs[-1][2] == d:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((s, d, 1))
    return runs


class SwapEngine:
    """Carries out one iteration's swap-out and swap-in. Call start(), then wait_for_layer(i)
    before layer i of the forward, then finish()."""

    def __init__(self, pools: KVPools) -> None:
        self._pools = pools
        self._is_cuda = pools.device.device.type == "cuda"
        self._stream = torch.cuda.Stream(pools.device.device) if self._is_cuda else None
        self._layer_events: list[torch.cuda.Event] = []
        self._timing_events: list[torch.cuda.Event] = []
        self._cpu_times = SwapTimes(0.0, 0.0)
        self._staging: torch.Tensor | None = None
        self._num_out = self._num_in = 0

    def start(self, swap_out: tuple[BlockIds, BlockIds], swap_in: tuple[BlockIds, BlockIds]) -> None:
        """Begin the copies: swap_out maps device -> host blocks, swap_in host -> device."""
        if self._is_cuda:
            self._start_cuda(swap_out, swap_in)
        else:
            out_s = self._copy_cpu(self._pools.device, self._pools.host, *swap_out)
            in_s = self._copy_cpu(self._pools.host, self._pools.device, *swap_in)
            self._cpu_times = SwapTimes(out_s, in_s)

    def wait_for_layer(self, layer: int) -> None:
        """Make the compute stream wait until `layer`'s copies are done (no-op on CPU)."""
        if self._layer_events:
            torch.cuda.current_stream().wait_event(self._layer_events[layer])

    def finish(self) -> SwapTimes:
        """Wait for every copy and return their durations."""
        if not self._is_cuda:
            return self._cpu_times
        times = SwapTimes(0.0, 0.0)
        if self._timing_events:
            begin, end = self._timing_events
            end.synchronize()
            # Out and in copies interleave layer by layer on one stream, so the stream's busy
            # time is split between them in proportion to the blocks each moved.
            total_s = begin.elapsed_time(end) / 1e3
            out_share = self._num_out / (self._num_out + self._num_in)
            times = SwapTimes(total_s * out_share, total_s * (1 - out_share))
        self._layer_events, self._timing_events = [], []
        return times

    def _copy_cpu(
        self, src_pool: torch.Tensor, dst_pool: torch.Tensor, src: BlockIds, dst: BlockIds
    ) -> float:
        if not len(src):
            return 0.0
        began = time.perf_counter()
        src_ids, dst_ids = torch.from_numpy(src), torch.from_numpy(dst)
        staging = self._staging_for(src_pool, len(src))
        torch.index_select(src_pool, 1, src_ids, out=staging)
        dst_pool.index_copy_(1, dst_ids, staging)
        return time.perf_counter() - began

    def _staging_for(self, pool: torch.Tensor, num_blocks: int) -> torch.Tensor:
        shape = (pool.shape[0], num_blocks, *pool.shape[2:])
        numel = int(np.prod(shape))
        if self._staging is None or self._staging.numel() < numel:
            self._staging = torch.empty(numel, dtype=pool.dtype)
        return self._staging[:numel].view(shape)

    def _start_cuda(self, swap_out: tuple[BlockIds, BlockIds], swap_in: tuple[BlockIds, BlockIds]) -> None:
        assert self._stream is not None
        if not len(swap_out[0]) and not len(swap_in[0]):
            return
        out_runs, in_runs = contiguous_runs(*swap_out), contiguous_runs(*swap_in)
        device_pool, host_pool = self._pools.device, self._pools.host
        # The side stream must see every KV write the compute stream has queued so far.
        self._stream.wait_stream(torch.cuda.current_stream())
        self._num_out, self._num_in = len(swap_out[0]), len(swap_in[0])
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self._stream):
            begin.record()
            for layer in range(device_pool.shape[0]):
                for s, d, n in out_runs:
                    host_pool[layer, d : d + n].copy_(device_pool[layer, s : s + n], non_blocking=True)
                for s, d, n in in_runs:
                    device_pool[layer, d : d + n].copy_(host_pool[layer, s : s + n], non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._layer_events.append(event)
            end.record()
        self._timing_events = [begin, end]
