"""Paged attention in one Triton kernel: the whole ragged batch, every layer one launch.

Decode tokens and multi-token chunks go through the same kernel. The batch is cut into *work
items*: (sequence, first query of a tile of up to ``tile_tokens`` queries). The grid is::

    grid = (num_work_items, num_kv_heads)

One program computes every query head that shares its KV head (grouped-query attention) for
every query of its tile, so each KV tile is loaded once for the whole group. Its rows are
(query, head-in-group) pairs::

    row r  ->  query  r // group_pad,  query head  kv_head * group_size + r % group_pad

It walks the sequence's keys from position 0 to its last query's position in tiles of
``BLOCK_N`` keys, reading them straight from the paged pool: key position p is slot
``p % block_size`` of block ``block_table[p // block_size]`` (a per-key gather, so any
power-of-two block size works, smaller or larger than the tile). Softmax is online
(flash-attention): a running max and sum per row, accumulating in float32 whatever the input
dtype. Causal masking: the query at position q sees keys at positions <= q, which also hides
the unwritten tail of a context's last block.

A decode-only batch uses one-query tiles; a batch with chunks uses larger tiles (so a long chunk
does not re-read its context once per query), and its decode items then leave rows idle. That
waste is compute, not memory traffic, which is what decode is bound by.

Runs on CUDA, or on CPU in the Triton interpreter when ``TRITON_INTERPRET=1`` was set before
this module was imported (the tests do that; it is far too slow to serve with).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import numpy.typing as npt
import torch
import triton
import triton.language as tl

from executor_svc.attention.base import AttentionBackend, AttentionMetadata, BatchLayout

# Triton decides at @triton.jit time whether a kernel is compiled or interpreted.
IS_INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

# tl.dot needs every dimension of a tile to be at least 16.
MIN_DOT_DIM = 16


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Tile sizes for one dtype and head size.

    Not tuned by timing (no GPU was at hand): chosen so that the kernel compiles for sm_90
    (Triton 3.9's ptxas) without register spills for head_dim 64 to 256, which the
    (rows, head_dim) float32 accumulator decides.
    """

    target_rows: int  # (query, head) rows per program when the batch has chunks
    block_n: int  # keys per loop step

    @classmethod
    def for_dtype(cls, dtype: torch.dtype, head_dim_pad: int) -> Tiling:
        if dtype == torch.float32:  # "ieee" dots run without tensor cores: fewer rows and keys
            return cls(target_rows=max(MIN_DOT_DIM, min(32, 4096 // head_dim_pad)), block_n=16)
        return cls(
            target_rows=max(MIN_DOT_DIM, min(64, 8192 // head_dim_pad)),
            block_n=64 if head_dim_pad <= 128 else 32,
        )


# Kernel arguments stay unannotated: Triton reads annotations as type and constexpr hints.
@triton.jit
def _paged_attention_kernel(  # type: ignore[no-untyped-def]
    q_ptr,
    kv_ptr,
    out_ptr,
    block_tables_ptr,
    query_starts_ptr,
    context_lens_ptr,
    work_seqs_ptr,
    work_first_queries_ptr,
    qk_scale,
    stride_q_token,
    stride_q_head,
    stride_q_dim,
    stride_out_token,
    stride_out_head,
    stride_out_dim,
    stride_kv_block,
    stride_kv_half,
    stride_kv_slot,
    stride_kv_head,
    stride_kv_dim,
    stride_table,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    TILE_TOKENS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):
    work = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.load(work_seqs_ptr + work)
    first_query = tl.load(work_first_queries_ptr + work)  # index within the sequence's chunk
    query_begin = tl.load(query_starts_ptr + seq)
    query_len = tl.load(query_starts_ptr + seq + 1) - query_begin
    context_len = tl.load(context_lens_ptr + seq)
    num_queries = tl.minimum(query_len - first_query, TILE_TOKENS)
    first_position = context_len - query_len + first_query

    rows = tl.arange(0, BLOCK_M)
    row_query = rows // GROUP_PAD
    row_head = rows % GROUP_PAD
    row_valid = (row_query < num_queries) & (row_head < GROUP_SIZE)
    # Idle rows get real positions too (>= 0, so key 0 is visible): no row is all -inf.
    row_position = first_position + row_query
    row_token = (query_begin + first_query + row_query).to(tl.int64)
    row_q_head = (kv_head * GROUP_SIZE + row_head).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM_PAD)
    dim_valid = dims < HEAD_DIM

    q_offsets = row_token[:, None] * stride_q_token + row_q_head[:, None] * stride_q_head
    q_mask = row_valid[:, None] & dim_valid[None, :]
    q = tl.load(q_ptr + q_offsets + dims[None, :] * stride_q_dim, mask=q_mask, other=0.0)  # (M, D)
    if DOT_IN_FP32:
        q = q.to(tl.float32)

    running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    num_keys = first_position + num_queries  # the tile's last query sees keys [0, num_keys)
    table_row = block_tables_ptr + seq * stride_table
    for key_start in range(0, num_keys, BLOCK_N):
        key_position = key_start + tl.arange(0, BLOCK_N)
        key_valid = key_position < num_keys
        block_ids = tl.load(table_row + key_position // BLOCK_SIZE, mask=key_valid, other=0)
        key_offsets = (
            block_ids.to(tl.int64) * stride_kv_block
            + (key_position % BLOCK_SIZE).to(tl.int64) * stride_kv_slot
            + kv_head.to(tl.int64) * stride_kv_head
        )
        kv_offsets = key_offsets[:, None] + dims[None, :] * stride_kv_dim  # (N, D)
        kv_mask = key_valid[:, None] & dim_valid[None, :]
        keys = tl.load(kv_ptr + kv_offsets, mask=kv_mask, other=0.0)
        values = tl.load(kv_ptr + stride_kv_half + kv_offsets, mask=kv_mask, other=0.0)
        if DOT_IN_FP32:
            keys = keys.to(tl.float32)

        scores = tl.dot(q, tl.trans(keys), input_precision=DOT_PRECISION) * qk_scale  # (M, N), log2 units
        visible = (key_position[None, :] <= row_position[:, None]) & key_valid[None, :]
        scores = tl.where(visible, scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        rescale = tl.exp2(running_max - new_max)
        probs = tl.exp2(scores - new_max[:, None])
        running_sum = running_sum * rescale + tl.sum(probs, 1)
        # Probabilities enter the second product in the KV dtype, as tensor cores take them.
        probs = probs.to(values.dtype)
        if DOT_IN_FP32:
            probs = probs.to(tl.float32)
            values = values.to(tl.float32)
        acc = tl.dot(probs, values, acc * rescale[:, None], input_precision=DOT_PRECISION)
        running_max = new_max

    out = acc / running_sum[:, None]
    out_offsets = row_token[:, None] * stride_out_token + row_q_head[:, None] * stride_out_head
    out_ptrs = out_ptr + out_offsets + dims[None, :] * stride_out_dim
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=q_mask)


class TritonAttentionMetadata(AttentionMetadata):
    """The layout as int32 device tensors, built once per iteration and read by every layer."""

    def __init__(self, layout: BatchLayout, device: torch.device) -> None:
        self.layout = layout
        query_starts = np.asarray(layout.query_starts, dtype=np.int64)
        self.query_lens: npt.NDArray[np.int64] = query_starts[1:] - query_starts[:-1]  # (B,)
        self.max_query_len = int(self.query_lens.max())
        self.query_starts, self.context_lens, self.block_tables = _to_device(
            [
                np.asarray(layout.query_starts, dtype=np.int32),
                np.asarray(layout.context_lens, dtype=np.int32),
                padded_block_tables(layout),
            ],
            device,
        )
        self._device = device
        self._work: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def work_items(self, tile_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(work_seqs, work_first_queries), (W,) int32 each, for tiles of `tile_tokens` queries.

        Built on the first layer's call and reused: the tile size depends on the head grouping,
        which the layout does not know. Items come longest-context first, so the longest
        programs start early and short ones fill in behind them.
        """
        if tile_tokens not in self._work:
            seqs, first_queries = work_mapping(self.query_lens, self.layout.context_lens, tile_tokens)
            work_seqs, work_first = _to_device([seqs, first_queries], self._device)
            self._work[tile_tokens] = (work_seqs, work_first)
        return self._work[tile_tokens]


class TritonAttentionBackend(AttentionBackend):
    name = "triton"

    def prepare(self, layout: BatchLayout) -> TritonAttentionMetadata:
        return TritonAttentionMetadata(layout, layout.slot_blocks.device)

    def attend(self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        assert isinstance(meta, TritonAttentionMetadata), "metadata from another backend"
        num_heads, head_dim = q.shape[1], q.shape[2]
        _, _, block_size, num_kv_heads, kv_head_dim = kv_layer.shape
        assert kv_head_dim == head_dim and num_heads % num_kv_heads == 0, "q and kv_layer disagree"
        assert block_size == meta.layout.block_size, "kv_layer's block size is not the layout's"
        group_size = num_heads // num_kv_heads
        group_pad = triton.next_power_of_2(group_size)
        head_dim_pad = max(MIN_DOT_DIM, triton.next_power_of_2(head_dim))
        tiling = Tiling.for_dtype(q.dtype, head_dim_pad)
        tile_tokens = choose_tile_tokens(meta.max_query_len, group_pad, tiling.target_rows)
        work_seqs, work_first_queries = meta.work_items(tile_tokens)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        grid = (work_seqs.numel(), num_kv_heads)
        _paged_attention_kernel[grid](
            q,
            kv_layer,
            out,
            meta.block_tables,
            meta.query_starts,
            meta.context_lens,
            work_seqs,
            work_first_queries,
            math.log2(math.e) / math.sqrt(head_dim),
            *q.stride(),
            *out.stride(),
            *kv_layer.stride(),
            meta.block_tables.stride(0),
            HEAD_DIM=head_dim,
            HEAD_DIM_PAD=head_dim_pad,
            GROUP_SIZE=group_size,
            GROUP_PAD=group_pad,
            TILE_TOKENS=tile_tokens,
            BLOCK_M=max(MIN_DOT_DIM, tile_tokens * group_pad),
            BLOCK_N=tiling.block_n,
            BLOCK_SIZE=block_size,
            # float32 stays float32: no silent TF32 rounding in the dot products.
            DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
            # The interpreter multiplies bfloat16 tiles as their raw uint16 bits; widen them there.
            DOT_IN_FP32=IS_INTERPRETED and q.dtype == torch.bfloat16,
            num_warps=4,
            num_stages=2,
            # Explicit, so results do not change when Triton flips its default (3.10).
            enable_fp_fusion=True,
        )
        return out


def choose_tile_tokens(max_query_len: int, group_pad: int, target_rows: int) -> int:
    """Queries per program: 1 for a decode-only batch, else up to target_rows rows' worth."""
    if max_query_len == 1:
        return 1
    return max(1, min(triton.next_power_of_2(max_query_len), target_rows // group_pad))


def work_mapping(
    query_lens: npt.NDArray[np.int64], context_lens: list[int], tile_tokens: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Every (sequence, first query) tile of the batch, most keys to read first."""
    tiles_per_seq = -(-query_lens // tile_tokens)  # (B,)
    seqs = np.repeat(np.arange(len(query_lens)), tiles_per_seq)
    tile_starts = np.repeat(np.cumsum(tiles_per_seq) - tiles_per_seq, tiles_per_seq)
    first_queries = (np.arange(len(seqs)) - tile_starts) * tile_tokens
    # A tile reads keys up to its last query's position; a sequence's last tile may be partial.
    last_queries = np.minimum(first_queries + tile_tokens, query_lens[seqs])
    num_keys = np.asarray(context_lens)[seqs] - query_lens[seqs] + last_queries
    order = np.argsort(-num_keys, kind="stable")
    return seqs[order].astype(np.int32), first_queries[order].astype(np.int32)


def padded_block_tables(layout: BatchLayout) -> npt.NDArray[np.int32]:
    """(B, max_blocks) int32: each table cut to the blocks its context covers, padded with 0.

    The padding is never read: every key the kernel loads lies inside its context.
    """
    block_size = layout.block_size
    lengths = np.asarray([-(-n // block_size) for n in layout.context_lens], dtype=np.int64)
    used = itertools.chain.from_iterable(
        table[:length] for table, length in zip(layout.block_tables, lengths.tolist(), strict=True)
    )
    flat = np.fromiter(used, dtype=np.int32, count=int(lengths.sum()))
    tables = np.zeros((layout.num_seqs, max(1, int(lengths.max()))), dtype=np.int32)
    tables[np.arange(tables.shape[1])[None, :] < lengths[:, None]] = flat
    return tables


def _to_device(arrays: list[npt.NDArray[np.int32]], device: torch.device) -> list[torch.Tensor]:
    """Copy int32 arrays to `device` in one transfer; returns views shaped like the arrays."""
    flat = torch.from_numpy(np.concatenate([a.ravel() for a in arrays])).to(device)
    sizes = [a.size for a in arrays]
    return [part.view(a.shape) for part, a in zip(flat.split(sizes), arrays, strict=True)]
