"""Copying whole KV blocks between two pools' layers by id: one Triton launch for any block map.

A pool layer is ``(blocks, 2, block_size, kv_heads, head_dim)`` (attention/base.py), so one
block of one layer is a single contiguous range; the two pools may differ in their number of
blocks but not in the block's shape or dtype::

    src_pool_layer  [ b0 | b1 | b2 | b3 | ... ]        dst_ids[i] <- src_ids[i]
                            \\          /
    dst_pool_layer  [ b0 | b1 | b2 | ... ]

``copy_blocks_triton`` runs one program per (block pair, chunk of CHUNK elements); each program
loads its chunk from the source block and stores it into the destination block. One launch moves
an arbitrary, scattered block map, where ``copy_`` needs one call per contiguous run.
``copy_blocks_torch`` is the same operation as an index_select and an index_copy_; it is what
``copy_blocks`` uses on CPU, and the reference the Triton kernel is tested against (on CPU, in
the Triton interpreter).

Wired into the engine for the plan's device-to-device copies (copy-on-write of shared prefix
blocks), one call per layer before the layer computes. For swaps it is NOT yet wired into swap.py.
Intended use for swaps on CUDA (UNVERIFIED on a GPU: it was written and tested on CPU only). The host pool is pinned (KVPools pins it on CUDA); under unified virtual
addressing a pinned host tensor's address is valid on the device, so the kernel can read and
write host blocks directly, with no staging copy. The swap side stream would, per layer, do::

    with torch.cuda.stream(side_stream):
        copy_blocks(device_pool[layer], host_pool[layer], out_src_ids, out_dst_ids)  # swap-out
        copy_blocks(host_pool[layer], device_pool[layer], in_src_ids, in_dst_ids)    # swap-in
        layer_event.record()

with the four id tensors uploaded to the GPU once per iteration (not per layer). Unlike
``copy_``, whose transfers run on the copy engines, this kernel's own loads and stores cross
PCIe (zero-copy access), so it occupies SMs while the forward runs: whether it beats one
``copy_`` per contiguous run must be measured (benchmarks/attention_bench.py prints both)
before it replaces them.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

# Elements one program moves: 4096 half-precision values are 8 KiB, large enough to keep
# loads in flight, small enough that a 64 KiB block spreads over several programs.
CHUNK = 4096


# Kernel arguments stay unannotated: Triton reads annotations as type and constexpr hints.
@triton.jit
def _copy_blocks_kernel(  # type: ignore[no-untyped-def]
    src_ptr,
    dst_ptr,
    src_ids_ptr,
    dst_ids_ptr,
    src_stride_block,
    dst_stride_block,
    block_numel,
    CHUNK: tl.constexpr,
):
    pair = tl.program_id(0)
    chunk = tl.program_id(1)
    src_block = tl.load(src_ids_ptr + pair).to(tl.int64)
    dst_block = tl.load(dst_ids_ptr + pair).to(tl.int64)
    offsets = chunk * CHUNK + tl.arange(0, CHUNK)
    in_block = offsets < block_numel
    values = tl.load(src_ptr + src_block * src_stride_block + offsets, mask=in_block)
    tl.store(dst_ptr + dst_block * dst_stride_block + offsets, values, mask=in_block)


def copy_blocks(
    src_pool_layer: torch.Tensor, dst_pool_layer: torch.Tensor, src_ids: torch.Tensor, dst_ids: torch.Tensor
) -> None:
    """``dst_pool_layer[dst_ids[i]] = src_pool_layer[src_ids[i]]`` for every i, in one launch.

    src_ids, dst_ids: (n,) integer tensors; ids must be in range and dst_ids distinct (not
    checked on the Triton path: the plan validator guarantees it). Within one pool layer, no
    block may be both a source and a destination: the kernel reads and writes in place, where
    the torch path gathers into a temporary first. The Triton kernel runs when either pool is on
    CUDA (the other may be pinned host memory); plain torch otherwise. Asynchronous on CUDA, on
    the current stream. Raises ValueError if the pools' blocks differ.
    """
    if src_pool_layer.is_cuda or dst_pool_layer.is_cuda:
        copy_blocks_triton(src_pool_layer, dst_pool_layer, src_ids, dst_ids)
    else:
        copy_blocks_torch(src_pool_layer, dst_pool_layer, src_ids, dst_ids)


def copy_blocks_triton(
    src_pool_layer: torch.Tensor, dst_pool_layer: torch.Tensor, src_ids: torch.Tensor, dst_ids: torch.Tensor
) -> None:
    """copy_blocks as one Triton launch, grid (n, ceil(block_numel / CHUNK))."""
    check_pools(src_pool_layer, dst_pool_layer, src_ids, dst_ids)
    if not len(src_ids):
        return
    # The kernel reads the ids, so they live where it runs.
    kernel_device = dst_pool_layer.device if dst_pool_layer.is_cuda else src_pool_layer.device
    src_ids = src_ids.to(kernel_device)
    dst_ids = dst_ids.to(kernel_device)
    block_numel = math.prod(src_pool_layer.shape[1:])
    grid = (len(src_ids), triton.cdiv(block_numel, CHUNK))
    _copy_blocks_kernel[grid](
        src_pool_layer,
        dst_pool_layer,
        src_ids,
        dst_ids,
        src_pool_layer.stride(0),
        dst_pool_layer.stride(0),
        block_numel,
        CHUNK=CHUNK,
        # Explicit, so Triton 3.9 does not warn that its default will change (nothing to fuse).
        enable_fp_fusion=True,
    )


def copy_blocks_torch(
    src_pool_layer: torch.Tensor, dst_pool_layer: torch.Tensor, src_ids: torch.Tensor, dst_ids: torch.Tensor
) -> None:
    """copy_blocks as a gather into a temporary and a scatter; any devices."""
    check_pools(src_pool_layer, dst_pool_layer, src_ids, dst_ids)
    blocks = src_pool_layer.index_select(0, src_ids.to(src_pool_layer.device, torch.int64))
    dst_pool_layer.index_copy_(
        0, dst_ids.to(dst_pool_layer.device, torch.int64), blocks.to(dst_pool_layer.device)
    )


def check_pools(
    src_pool_layer: torch.Tensor, dst_pool_layer: torch.Tensor, src_ids: torch.Tensor, dst_ids: torch.Tensor
) -> None:
    """Raise ValueError unless both layers hold contiguous blocks of one shape and dtype."""
    if src_pool_layer.shape[1:] != dst_pool_layer.shape[1:] or src_pool_layer.dtype != dst_pool_layer.dtype:
        raise ValueError(
            f"blocks differ: {src_pool_layer.dtype} {tuple(src_pool_layer.shape[1:])} vs "
            f"{dst_pool_layer.dtype} {tuple(dst_pool_layer.shape[1:])}"
        )
    if not (_blocks_are_contiguous(src_pool_layer) and _blocks_are_contiguous(dst_pool_layer)):
        raise ValueError("each block must be one contiguous range (a layer of a pool, not a slice of blocks)")
    if src_ids.shape != dst_ids.shape or src_ids.dim() != 1:
        raise ValueError(f"src_ids {tuple(src_ids.shape)} and dst_ids {tuple(dst_ids.shape)} must be (n,)")


def _blocks_are_contiguous(pool_layer: torch.Tensor) -> bool:
    """Whether each block (index along dim 0) is one dense row-major range."""
    expected_stride = 1
    for size, stride in reversed(list(zip(pool_layer.shape[1:], pool_layer.stride()[1:], strict=True))):
        if size != 1 and stride != expected_stride:
            return False
        expected_stride *= size
    return True
