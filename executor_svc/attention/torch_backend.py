"""Attention in plain torch: gather each context's blocks into a reused buffer, then SDPA.

Runs on CPU and CUDA. Decode tokens (one query each) are batched into one padded call; each
multi-token chunk (prefill, recompute, returned tokens) gets its own call with a causal mask
offset by its start position. Gathers write into buffers that grow on demand and are reused
across layers and iterations: allocating fresh large tensors per layer was measured 3x slower.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from executor_svc.attention.base import AttentionBackend, AttentionMetadata, BatchLayout


@dataclasses.dataclass(frozen=True)
class DecodeGroup:
    """Every sequence with exactly one query token, padded to the longest context."""

    token_indices: torch.Tensor  # (B,) rows of the flat batch
    block_ids: torch.Tensor  # (B * num_blocks,) padded block tables, flattened
    num_blocks: int  # blocks per padded table
    visible: torch.Tensor  # (B, 1, 1, num_blocks * block_size) key is inside the context


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One sequence with several query tokens."""

    start: int  # first row in the flat batch
    end: int  # one past the last row
    block_ids: torch.Tensor  # (num_blocks,) its block table
    context_len: int
    visible: torch.Tensor | None  # (L, context_len) causal mask; None when the chunk is the whole context


class TorchAttentionMetadata(AttentionMetadata):
    def __init__(self, layout: BatchLayout, decode: DecodeGroup | None, chunks: list[Chunk]) -> None:
        self.layout = layout
        self.decode = decode
        self.chunks = chunks


class GatherBuffer:
    """A reusable (blocks, block_size, kv_heads, head_dim) buffer that grows when it must."""

    def __init__(self) -> None:
        self._storage: torch.Tensor | None = None

    def gather(self, kv_half: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
        """Copy kv_half[block_ids] (kv_half: (blocks, block_size, heads, dim)) into the buffer."""
        shape = (block_ids.numel(), *kv_half.shape[1:])
        numel = block_ids.numel() * kv_half[0].numel()
        storage = self._storage
        if (
            storage is None
            or storage.numel() < numel
            or storage.dtype != kv_half.dtype
            or storage.device != kv_half.device
        ):
            storage = torch.empty(numel, dtype=kv_half.dtype, device=kv_half.device)
            self._storage = storage
        out = storage[:numel].view(shape)
        torch.index_select(kv_half, 0, block_ids, out=out)
        return out


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def __init__(self) -> None:
        self._keys = GatherBuffer()
        self._values = GatherBuffer()

    def prepare(self, layout: BatchLayout) -> TorchAttentionMetadata:
        device = layout.slot_blocks.device
        decode_seqs = [i for i in range(layout.num_seqs) if layout.query_len(i) == 1]
        decode = self._decode_group(layout, decode_seqs, device) if decode_seqs else None
        return TorchAttentionMetadata(layout, decode, self.prepare_chunks(layout).chunks)

    def prepare_chunks(self, layout: BatchLayout) -> TorchAttentionMetadata:
        """Metadata of the multi-token chunks only: attend_into then leaves decode rows alone."""
        device = layout.slot_blocks.device
        chunks = [self._chunk(layout, i, device) for i in range(layout.num_seqs) if layout.query_len(i) > 1]
        return TorchAttentionMetadata(layout, None, chunks)

    def attend(self, q: torch.Tensor, kv_layer: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        assert isinstance(meta, TorchAttentionMetadata), "metadata from another backend"
        out = torch.empty_like(q)
        self.attend_into(q, kv_layer, meta, out)
        return out

    def attend_into(
        self, q: torch.Tensor, kv_layer: torch.Tensor, meta: TorchAttentionMetadata, out: torch.Tensor
    ) -> None:
        """attend, writing the rows `meta` covers into `out` (N, heads, head_dim) in place."""
        if meta.decode is not None:
            self._attend_decode(q, kv_layer, meta.decode, out)
        for chunk in meta.chunks:
            self._attend_chunk(q, kv_layer, chunk, out)

    def _attend_decode(
        self, q: torch.Tensor, kv_layer: torch.Tensor, group: DecodeGroup, out: torch.Tensor
    ) -> None:
        num_seqs = group.token_indices.numel()
        keys = self._context(self._keys, kv_layer[:, 0], group.block_ids, num_seqs)
        values = self._context(self._values, kv_layer[:, 1], group.block_ids, num_seqs)
        queries = q[group.token_indices].unsqueeze(2)  # (B, heads, 1, head_dim)
        attended = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=group.visible, enable_gqa=True
        )
        out[group.token_indices] = attended.squeeze(2)

    def _attend_chunk(self, q: torch.Tensor, kv_layer: torch.Tensor, chunk: Chunk, out: torch.Tensor) -> None:
        keys = self._context(self._keys, kv_layer[:, 0], chunk.block_ids, 1)[:, :, : chunk.context_len]
        values = self._context(self._values, kv_layer[:, 1], chunk.block_ids, 1)[:, :, : chunk.context_len]
        queries = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)  # (1, heads, L, head_dim)
        attended = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=chunk.visible,
            is_causal=chunk.visible is None,
            enable_gqa=True,
        )
        out[chunk.start : chunk.end] = attended.squeeze(0).transpose(0, 1)

    @staticmethod
    def _context(
        buffer: GatherBuffer, kv_half: torch.Tensor, block_ids: torch.Tensor, num_seqs: int
    ) -> torch.Tensor:
        """Gathered context as (num_seqs, kv_heads, tokens, head_dim)."""
        gathered = buffer.gather(kv_half, block_ids)  # (num_seqs * blocks, block_size, heads, dim)
        _, _, heads, dim = gathered.shape
        return gathered.view(num_seqs, -1, heads, dim).transpose(1, 2)

    @staticmethod
    def _decode_group(layout: BatchLayout, seqs: list[int], device: torch.device) -> DecodeGroup:
        tables = [layout.block_tables[i][: -(-layout.context_lens[i] // layout.block_size)] for i in seqs]
        num_blocks = max(len(table) for table in tables)
        # Padding points at block 0; the mask hides whatever it holds.
        padded = [table + [0] * (num_blocks - len(table)) for table in tables]
        context_lens = torch.tensor([layout.context_lens[i] for i in seqs], device=device)
        key_positions = torch.arange(num_blocks * layout.block_size, device=device)
        visible = key_positions[None, :] < context_lens[:, None]
        return DecodeGroup(
            token_indices=torch.tensor([layout.query_starts[i] for i in seqs], device=device),
            block_ids=torch.tensor(padded, device=device).flatten(),
            num_blocks=num_blocks,
            visible=visible[:, None, None, :],
        )

    @staticmethod
    def _chunk(layout: BatchLayout, seq: int, device: torch.device) -> Chunk:
        query_len, context_len = layout.query_len(seq), layout.context_lens[seq]
        visible = None
        if context_len != query_len:
            first_position = context_len - query_len
            query_positions = torch.arange(first_position, context_len, device=device)
            visible = torch.arange(context_len, device=device)[None, :] <= query_positions[:, None]
        num_blocks = -(-context_len // layout.block_size)
        return Chunk(
            start=layout.query_starts[seq],
            end=layout.query_starts[seq + 1],
            block_ids=torch.tensor(layout.block_tables[seq][:num_blocks], device=device),
            context_len=context_len,
            visible=visible,
        )
