"""Paged attention on CPU without gathering: one compiled (Numba) kernel reads keys and values
straight from the paged pool through the block tables.

Why: gathering each context into a dense buffer and then calling SDPA copies every key and value
once per layer and step before reading them again; at batch 64 the copy cost more than the
attention. Decode is bound by memory traffic, so reading the pool in place is what makes a paged
decode step as fast as a dense one.

The kernel computes single-query rows: every decode token of the batch. A work item is one row
and a range of its KV heads (all of them when there are at least as many rows as threads, so each
block is read as one contiguous range; one head each otherwise, so a small batch still uses every
thread; a batch with fewer keys than PARALLEL_MIN_KEYS runs on the calling thread alone); it
computes all the query heads that share those KV heads (grouped-query attention), so
each key and value is read once. One pass over the blocks, with an online softmax::

    for each block b of the row's table (block_size slots, the last one cut at the context):
        s[h, slot] = q[row, h] . K[b, slot, kv_head(h)] * scale
        m' = max(m, max s[h]);  w = exp(s[h] - m')
        total = total * exp(m - m') + sum w;   acc[h] = acc[h] * exp(m - m') + w . V[b, :, kv_head(h)]
    out[row, h] = acc[h] / total

Reading each block's keys and then its values while they are hot, in place, is what makes the
step as fast as a dense one: the dense forward reads every key and value once too.

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

F32Array = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]

# Reassociation lets LLVM vectorise the head_dim dot products (a different summation order than
# SDPA's, far inside the exactness tolerance); no nnan/ninf, which would change results.
_FASTMATH = {"reassoc", "contract"}

# exp(x) for x <= 0 as 2**n * p(r), x = n ln2 + r, |r| <= ln2 / 2 (Cephes' expf polynomial, about
# 1 ulp). Written out because numba's np.exp is a scalar libm call per element (no SVML here):
# the softmax's exps then cost as much as the rest of the kernel; these loops vectorise.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two so that n * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_P = (  # highest power first
    np.float32(1.9875691500e-4),
    np.float32(1.3981999507e-3),
    np.float32(8.3334519073e-3),
    np.float32(4.1665795894e-2),
    np.float32(1.6666665459e-1),
    np.float32(5.0000001201e-1),
)
# Below this exp(x) < 1.7e-38, where 2**n would be subnormal: the weight is flushed to 0.
_EXP_FLOOR = np.float32(-87.0)


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def exp_nonpositive(  # pragma: no cover - compiled; exercised through the tests
    x: npt.NDArray[np.float32],  # (n,) values <= 0, replaced by their exp
    bits: npt.NDArray[np.int32],  # (n,) scratch
) -> None:
    """x[i] = exp(x[i]) in place, for x[i] <= 0 (see _EXP_P); 0 below _EXP_FLOOR."""
    n = x.shape[0]
    scale = bits.view(np.float32)
    for i in range(n):
        clamped = max(x[i], _EXP_FLOOR)
        whole = np.floor(clamped * _LOG2E + np.float32(0.5))
        bits[i] = (np.int32(whole) + np.int32(127)) << np.int32(23)  # the float 2**whole
        r = clamped - whole * _LN2_HI - whole * _LN2_LO
        p = _EXP_P[0]
        p = p * r + _EXP_P[1]
        p = p * r + _EXP_P[2]
        p = p * r + _EXP_P[3]
        p = p * r + _EXP_P[4]
        p = p * r + _EXP_P[5]
        x[i] = (p * r * r + r + np.float32(1.0)) * np.float32(x[i] >= _EXP_FLOOR)
    for i in range(n):
        x[i] *= scale[i]


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def decode_item(  # pragma: no cover - compiled; exercised through the backend's tests
    q: npt.NDArray[np.float32],  # (N, heads, head_dim) the flat batch's queries
    kv: npt.NDArray[np.float32],  # (blocks, 2, block_size, kv_heads, head_dim) one layer's pool
    rows: npt.NDArray[np.int64],  # (R,) the single-query rows to compute
    limits: npt.NDArray[np.int64],  # (R,) keys each row sees: positions [0, limit)
    tables: npt.NDArray[np.int64],  # (R, max_blocks) block table of each row's sequence
    scale: float,
    kv_heads_per_item: int,  # divides kv_heads: how many KV heads one work item reads
    out: npt.NDArray[np.float32],  # (N, heads, head_dim) written at `rows` only
    item: int,  # in [0, R * kv_heads / kv_heads_per_item): a row and its first KV head
) -> None:
    """One work item of the decode attention of `rows` (see the module docstring)."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = kv.shape[2], kv.shape[3]
    group = num_heads // num_kv_heads
    splits = num_kv_heads // kv_heads_per_item
    width = kv_heads_per_item * group  # query heads per work item
    index, first_kv = item // splits, (item % splits) * kv_heads_per_item
    row, limit, first_head = rows[index], limits[index], first_kv * group
    queries = np.empty((width, head_dim), dtype=np.float32)
    for h in range(width):
        for d in range(head_dim):
            queries[h, d] = q[row, first_head + h, d] * np.float32(scale)
    acc = np.zeros((width, head_dim), dtype=np.float32)  # unnormalised outputs
    peak = np.full(width, -np.inf, dtype=np.float32)  # running max score per head
    total = np.zeros(width, dtype=np.float32)  # running softmax denominator per head
    correction = np.empty(width, dtype=np.float32)  # exp(old peak - new peak) per head
    weights = np.zeros((width, block_size), dtype=np.float32)  # scores, then their exps
    flat_weights = weights.reshape(width * block_size)
    bits = np.empty(width * block_size, dtype=np.int32)
    for j in range((limit + block_size - 1) // block_size):
        block, count = tables[index, j], min(block_size, limit - j * block_size)
        for slot in range(count):  # the block's keys are read once, contiguously
            for kv_head in range(kv_heads_per_item):
                for g in range(group):
                    h = kv_head * group + g
                    dot = np.float32(0.0)
                    for d in range(head_dim):
                        dot += queries[h, d] * kv[block, 0, slot, first_kv + kv_head, d]
                    weights[h, slot] = dot
        for h in range(width):  # online softmax: what came before is rescaled to the new peak
            new_peak = peak[h]
            for slot in range(count):
                new_peak = max(new_peak, weights[h, slot])
            for slot in range(count):
                weights[h, slot] -= new_peak
            correction[h] = np.exp(peak[h] - new_peak)
            peak[h] = new_peak
        exp_nonpositive(flat_weights, bits)  # the slots past `count` hold stale finite values
        for h in range(width):
            block_total = np.float32(0.0)
            for slot in range(count):
                block_total += weights[h, slot]
            total[h] = total[h] * correction[h] + block_total
            for d in range(head_dim):
                acc[h, d] *= correction[h]
        for slot in range(count):
            for kv_head in range(kv_heads_per_item):
                for g in range(group):
                    h = kv_head * group + g
                    weight = weights[h, slot]
                    for d in range(head_dim):
                        acc[h, d] += weight * kv[block, 1, slot, first_kv + kv_head, d]
    for h in range(width):
        inverse = np.float32(1.0) / total[h]
        for d in range(head_dim):
            out[row, first_head + h, d] = acc[h, d] * inverse


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def paged_decode_kernel(  # pragma: no cover - compiled; exercised through the backend's tests
    q: npt.NDArray[np.float32],  # (N, heads, head_dim) the flat batch's queries
    kv: npt.NDArray[np.float32],  # (blocks, 2, block_size, kv_heads, head_dim) one layer's pool
    rows: npt.NDArray[np.int64],  # (R,) the single-query rows to compute
    limits: npt.NDArray[np.int64],  # (R,) keys each row sees: positions [0, limit)
    tables: npt.NDArray[np.int64],  # (R, max_blocks) block table of each row's sequence
    scale: float,
    kv_heads_per_item: int,  # divides kv_heads: how many KV heads one work item reads
    out: npt.NDArray[np.float32],  # (N, heads, head_dim) written at `rows` only
) -> None:
    """Decode attention of `rows` over their paged contexts (decode_item's arguments), the items
    spread over numba's threads."""
    splits = kv.shape[3] // kv_heads_per_item
    for item in numba.prange(rows.shape[0] * splits):
        decode_item(q, kv, rows, limits, tables, scale, kv_heads_per_item, out, item)


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def paged_decode_serial(  # pragma: no cover - compiled; exercised through the backend's tests
    q: F32Array,
    kv: F32Array,
    rows: I64Array,
    limits: I64Array,
    tables: I64Array,
    scale: float,
    kv_heads_per_item: int,
    out: F32Array,
) -> None:
    """paged_decode_kernel on the calling thread alone."""
    splits = kv.shape[3] // kv_heads_per_item
    for item in range(rows.shape[0] * splits):
        decode_item(q, kv, rows, limits, tables, scale, kv_heads_per_item, out, item)


# Below this many key positions per KV head (8 decode rows at 512 tokens of context) the kernel
# runs on the calling thread: it takes well under a millisecond, and handing it to numba's
# workers (asleep after the torch operations in between) costs about as much, far more when
# the cores are busy with other work.
PARALLEL_MIN_KEYS = 4096


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
        self.num_keys = int(limits.sum())  # key positions the decode rows read, per KV head


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
            num_threads, num_kv_heads = numba.get_num_threads(), kv_layer.shape[3]
            is_parallel = num_threads > 1 and meta.num_keys >= PARALLEL_MIN_KEYS
            # Whole rows (contiguous reads) once every thread has one; single heads before that.
            is_whole_rows = not is_parallel or meta.rows.size >= num_threads
            kernel = paged_decode_kernel if is_parallel else paged_decode_serial
            kernel(
                q.numpy(),
                kv_layer.numpy(),
                meta.rows,
                meta.limits,
                meta.tables,
                float(q.shape[-1]) ** -0.5,
                num_kv_heads if is_whole_rows else 1,
                out.numpy(),
            )
        self._torch.attend_into(q, kv_layer, meta.rest, out)
        return out


def _compile_now() -> None:
    """Compile (or load from numba's cache) the kernel at start-up, not in the first step."""
    q = np.zeros((1, 1, 1), dtype=np.float32)
    kv = np.zeros((1, 2, 1, 1, 1), dtype=np.float32)
    one = np.ones(1, dtype=np.int64)
    for kernel in (paged_decode_kernel, paged_decode_serial):
        kernel(q, kv, one * 0, one, np.zeros((1, 1), dtype=np.int64), 1.0, 1, q.copy())
    exp_nonpositive(np.zeros(1, dtype=np.float32), np.zeros(1, dtype=np.int32))


def _padded_tables(
    layout: BatchLayout, seqs: list[int], limits: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """(len(seqs), max blocks) block tables cut to each context; padding is never read."""
    num_blocks = -(-limits // layout.block_size)
    tables = np.zeros((len(seqs), int(num_blocks.max(initial=0))), dtype=np.int64)
    for index, (seq, count) in enumerate(zip(seqs, num_blocks.tolist(), strict=True)):
        tables[index, :count] = layout.block_tables[seq][:count]
    return tables
