"""Random ragged attention batches over a paged pool, shared by the attention backends' tests."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from executor_svc.attention import BatchLayout


@dataclasses.dataclass(frozen=True)
class Case:
    """One attention call: head shapes, dtype, and each sequence's (query_len, context_len)."""

    dtype: torch.dtype
    block_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    seqs: list[tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Batch:
    q: torch.Tensor  # (N, heads, head_dim)
    pool: torch.Tensor  # (2 layers, blocks, 2, block_size, kv_heads, head_dim)
    layout: BatchLayout

    @property
    def kv_layer(self) -> torch.Tensor:
        """Layer 1: a view at an offset into the pool, as the model passes it."""
        return self.pool[1]


def random_batch(case: Case, seed: int, device: torch.device) -> Batch:
    """Random q and KV pool; each context in random, non-contiguous blocks, its table sometimes
    longer than the context needs (as the scheduler's may be)."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    tables_len = [-(-context // case.block_size) + rng.randint(0, 1) for _, context in case.seqs]
    free_blocks = list(range(sum(tables_len) + 3))
    rng.shuffle(free_blocks)
    kv_shape = (len(free_blocks), 2, case.block_size, case.num_kv_heads, case.head_dim)
    pool = torch.randn((2, *kv_shape), generator=generator).to(device, case.dtype)
    tables = [[free_blocks.pop() for _ in range(n)] for n in tables_len]
    positions = [np.arange(context - query, context) for query, context in case.seqs]
    flat_positions = np.concatenate(positions)
    slot_blocks = np.concatenate(
        [np.asarray(t)[p // case.block_size] for t, p in zip(tables, positions, strict=True)]
    )
    layout = BatchLayout(
        block_size=case.block_size,
        query_starts=np.concatenate(([0], np.cumsum([q for q, _ in case.seqs]))).tolist(),
        context_lens=[context for _, context in case.seqs],
        block_tables=tables,
        slot_blocks=torch.from_numpy(slot_blocks).to(device),
        slot_offsets=torch.from_numpy(flat_positions % case.block_size).to(device),
    )
    num_tokens = len(flat_positions)
    q = torch.randn((num_tokens, case.num_heads, case.head_dim), generator=generator)
    return Batch(q.to(device, case.dtype), pool, layout)


def relative_error(ours: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference, relative to the largest expected magnitude."""
    diff = (ours.float() - expected.float()).abs().max()
    return float(diff / expected.float().abs().max())
