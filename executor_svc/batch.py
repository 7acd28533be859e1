"""Flattening one iteration's work into the tensors of a single ragged forward pass."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch

from executor_svc.attention.base import BatchLayout
from executor_svc.plan import PlannedWork


@dataclasses.dataclass(frozen=True)
class ForwardBatch:
    input_ids: torch.Tensor  # (N,) token ids of every computed token, sequences back to back
    positions: torch.Tensor  # (N,) absolute position of each
    layout: BatchLayout
    logit_indices: torch.Tensor  # (S,) rows whose next token is sampled
    sampling_rows: list[int]  # (S,) the sequences those rows belong to (indexes into the work)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


def build_batch(work: PlannedWork, block_size: int, device: torch.device) -> ForwardBatch:
    """Token ids, positions, KV slots and sampling rows for `work` (non-empty), in plan order,
    computed over the whole batch at once."""
    query_lens = work.query_lens
    query_ends = np.cumsum(query_lens)
    query_starts = query_ends - query_lens
    # Token j of the batch belongs to sequence s: its position is start_s + (j - query_start_s).
    positions = np.repeat(work.start_positions - query_starts, query_lens) + np.arange(work.num_tokens)
    # Its block is table_s[position // block_size]: index the concatenation of the blocks each
    # sequence writes (those from its first computed position's to its last's).
    tables = work.block_tables
    first_blocks = work.start_positions // block_size
    end_blocks = -(-work.context_lens // block_size)
    spans = end_blocks - first_blocks
    span_offsets = np.cumsum(spans) - spans
    written = itertools.chain.from_iterable(
        table[first:end]
        for table, first, end in zip(tables, first_blocks.tolist(), end_blocks.tolist(), strict=True)
    )
    written_blocks = np.fromiter(written, dtype=np.int64, count=int(spans.sum()))
    slot_blocks = written_blocks[np.repeat(span_offsets - first_blocks, query_lens) + positions // block_size]
    layout = BatchLayout(
        block_size=block_size,
        query_starts=[0, *query_ends.tolist()],
        context_lens=work.context_lens.tolist(),
        block_tables=tables,
        slot_blocks=torch.from_numpy(slot_blocks).to(device),
        slot_offsets=torch.from_numpy(positions % block_size).to(device),
    )
    sampling_rows = np.flatnonzero(work.sample)
    return ForwardBatch(
        input_ids=torch.from_numpy(work.token_ids).to(device),
        positions=torch.from_numpy(positions).to(device),
        layout=layout,
        logit_indices=torch.from_numpy(query_ends[sampling_rows] - 1).to(device),
        sampling_rows=sampling_rows.tolist(),
    )
