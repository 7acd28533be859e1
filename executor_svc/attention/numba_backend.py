"""Paged attention on CPU without gathering: one compiled (Numba) kernel reads keys and values
straight from the paged pool through the block tables.

Why: gathering each context into a dense buffer and then calling SDPA copies every key and value
once per layer and step before reading them again; at batch 64 the copy cost more than the
attention. Decode is bound by memory traffic, so reading the pool in place is what makes a paged
decode step as fast as a dense one.

The kernel computes single-query rows: every decode token of the batch. Work items are
(row, kv_head) pairs, split across Numba's threads; each item computes all the query heads that
share its KV head (grouped-query attention), so each key and value is read once per item::

    for each key position p < limit:            block = table[p // block_size], slot = p % block_size
        score[g, p] = q[row, head g] . K[block, slot, kv_head] * scale
    softmax over p (max-subtracted, float32)
    out[row, head g] = sum_p weight[g, p] * V[block, slot, kv_head]

Multi-token chunks (prefill, recompute, returned tokens) reuse their gathered context across all
their queries, so they keep the torch backend's SDPA path, as does any dtype but float32 (NumPy,
which Numba compiles against, has no bfloat16).
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt
import torch

from executor_svc.attention.base import AttentionBackend, AttentionMetadata, BatchLayout
from executor_svc.attention.torch_backend import TorchAttentionBackend, TorchAttentionMetadata
from executor_svc.threads import select_numba_threading_layer

select_numba_threading_layer()  # before any kernel starts numba's threads

# Reassociation lets LLVM vectorise the head_dim dot products (a different summation order than
# SDPA's, far inside the exactness tolerance); no nnan/ninf, which would change results.
_FASTMATH = {"reassoc", "contract"}


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def paged_decode_kernel(  # pragma: no cover - compiled; exercised through the backend's tests
    q: npt.NDArray[np.float32],  # (N, heads, head_dim) the flat batch's queries
    kv: npt.NDArray[np.float32],  # (blocks, 2, block_size, kv_heads, head_dim) one layer's pool
    rows: npt.NDArray[np.int64],  # (R,) the single-query rows to compute
    limits: npt.NDArray[np.int64],  # (R,) keys each row sees: positions [0, limit)
    tables: npt.NDArray[np.int64],  # (R, max_blocks) block table of each row's sequence
    scale: float,
    out: npt.NDArray[np.float32],  # (N, heads, head_dim) written at `rows` only
) -> None:
    """Decode attention of `rows` over their paged contexts (see the module docstring)."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = kv.shape[2], kv.shape[3]
    group = num_heads // num_kv_heads
    for item in numba.prange(rows.shape[0] * num_kv_heads):
        index, kv_head = item // num_kv_heads, item % num_kv_heads
        row, limit = rows[index], limits[index]
        first_head = kv_head * group
        num_blocks = (limit + block_size - 1) // block_size
        # Loops run block by block, then slot by slot: one table lookup per block, and inner
        # loops over head_dim that LLVM vectorises (measured faster than per-position lookups).
        scores = np.empty((group, limit), dtype=np.float32)
        for j in range(num_blocks):
            block, first = tables[index, j], j * block_size
            for slot in range(min(block_size, limit - first)):
                for g in range(group):
                    dot = np.float32(0.0)
                    for d in range(head_dim):
                        dot += q[row, first_head + g, d] * kv[block, 0, slot, kv_head, d]
                    scores[g, first + slot] = dot * scale
        for g in range(group):
            peak = scores[g, 0]
            for p in range(1, limit):
                peak = max(peak, scores[g, p])
            total = np.float32(0.0)
            for p in range(limit):
                weight = np.exp(scores[g, p] - peak)
                scores[g, p] = weight
                total += weight
            head = first_head + g
            for d in range(head_dim):
                out[row, head, d] = 0.0
            for j in range(num_blocks):
                block, first = tables[index, j], j * block_size
                for slot in range(min(block_size, limit - first)):
                    weight = scores[g, first + slot]
                    for d in range(head_dim):
                        out[row, head, d] += weight * kv[block, 1, slot, kv_head, d]
            inverse = np.float32(1.0) / total
            for d in range(head_dim):
                out[row, head, d] *= inverse


class NumbaAttentionMetadata(AttentionMetadata):
    """The decode rows for the kernel, and the torch metadata of everything else."""

    def __init__(
        self,
        layout: BatchLayout,
        rows: npt.NDArray[np.int64],
        limits: npt.NDArray[np.int64],
        tables: npt.NDArray[np.int64],
        rest: TorchAttentionMetadata,
    ) -> None:
        self.layout = layout
        self.rows = rows
        self.limits = limits
        self.tables = tables
        self.rest = rest


class NumbaAttentionBackend(AttentionBackend):
    """CPU float32: decode rows through the compiled kernel, chunks through torch SDPA."""

    name = "numba"

    def __init__(self) -> None:
        self._torch = TorchAttentionBackend()
        _compile_now()

    def prepare(self, layout: BatchLayout) -> NumbaAttentionMetadata:
        is_decode = np.diff(np.asarray(layout.query_starts)) == 1
        decode_seqs = np.flatnonzero(is_decode)
        rows = np.asarray(layout.query_starts[:-1], dtype=np.int64)[decode_seqs]
        limits = np.asarray(layout.context_lens, dtype=np.int64)[decode_seqs]
        tables = _padded_tables(layout, decode_seqs.tolist(), limits)
        return NumbaAttentionMetadata(layout, rows, limits, tables, self._torch.prepare_chunks(layout))

    def attend(self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        assert isinstance(meta, NumbaAttentionMetadata), "metadata from another backend"
        assert q.dtype == torch.float32 and q.device.type == "cpu", "the numba backend is CPU float32"
        q = q.contiguous()
        out = torch.empty_like(q)
        if meta.rows.size:
            scale = float(q.shape[-1]) ** -0.5
            paged_decode_kernel(
                q.numpy(), kv_layer.numpy(), meta.rows, meta.limits, meta.tables, scale, out.numpy()
            )
        self._torch.attend_into(q, kv_layer, meta.rest, out)
        return out


def _compile_now() -> None:
    """Compile (or load from numba's cache) the kernel at start-up, not in the first step."""
    q = np.zeros((1, 1, 1), dtype=np.float32)
    kv = np.zeros((1, 2, 1, 1, 1), dtype=np.float32)
    one = np.ones(1, dtype=np.int64)
    paged_decode_kernel(q, kv, one * 0, one, np.zeros((1, 1), dtype=np.int64), 1.0, q.copy())


def _padded_tables(
    layout: BatchLayout, seqs: list[int], limits: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """(len(seqs), max blocks) block tables cut to each context; padding is never read."""
    num_blocks = -(-limits // layout.block_size)
    tables = np.zeros((len(seqs), int(num_blocks.max(initial=0))), dtype=np.int64)
    for index, (seq, count) in enumerate(zip(seqs, num_blocks.tolist(), strict=True)):
        tables[index, :count] = layout.block_tables[seq][:count]
    return tables
