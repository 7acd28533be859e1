"""The attention backend interface: how one layer reads and writes the paged KV cache.

KV pool layout, one tensor per pool (device and host alike)::

    pool[layer, block, 0 | 1, slot, kv_head, head_dim]     0 = keys, 1 = values

so that one block of one layer is a single contiguous range (one copy per block and layer when
swapping). A request's position p lives in block ``table[p // block_size]`` at slot
``p % block_size``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Where the N tokens of one iteration come from and what each attends to.

    Sequences are in plan order; sequence i owns tokens [query_starts[i], query_starts[i+1]) of
    the flat batch, which sit at positions [context_lens[i] - query_lens[i], context_lens[i]).
    """

    block_size: int
    query_starts: list[int]  # (B + 1,) offsets into the flat token batch
    context_lens: list[int]  # (B,) tokens each sequence attends to, including its own chunk
    block_tables: list[list[int]]  # (B, *) device block ids covering each context
    slot_blocks: torch.Tensor  # (N,) int64, device block each new token is written to
    slot_offsets: torch.Tensor  # (N,) int64, slot within that block

    @property
    def num_seqs(self) -> int:
        return len(self.context_lens)

    def query_len(self, seq: int) -> int:
        return self.query_starts[seq + 1] - self.query_starts[seq]


class AttentionMetadata:
    """Per-iteration data a backend derives once from the BatchLayout and reuses in every layer."""

    layout: BatchLayout


class AttentionBackend(abc.ABC):
    """Reads and writes one layer's paged KV. One instance per executor; not thread-safe."""

    name: ClassVar[str]

    @abc.abstractmethod
    def prepare(self, layout: BatchLayout) -> AttentionMetadata:
        """Build the per-iteration metadata (index tensors, masks) once for all layers."""

    def write_kv(
        self, kv_layer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> None:
        """Store the new tokens' keys and values, each (N, kv_heads, head_dim), in their slots."""
        layout = meta.layout
        kv_layer[layout.slot_blocks, 0, layout.slot_offsets] = k
        kv_layer[layout.slot_blocks, 1, layout.slot_offsets] = v

    @abc.abstractmethod
    def attend(self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Causal attention of q (N, heads, head_dim) over each sequence's paged context.

        kv_layer is one layer of the device pool, (blocks, 2, block_size, kv_heads, head_dim), with
        this iteration's keys and values already written. Returns (N, heads, head_dim) in q's dtype.
        """
