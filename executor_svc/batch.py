"""Flattening one iteration's work into the tensors of a single ragged forward pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from executor_svc.attention.base import BatchLayout
from executor_svc.plan import SequenceStep


@dataclasses.dataclass(frozen=True)
class ForwardBatch:
    input_ids: torch.Tensor  # (N,) token ids of every computed token, sequences back to back
    positions: torch.Tensor  # (N,) absolute position of each
    layout: BatchLayout
    logit_indices: torch.Tensor  # (S,) rows whose next token is sampled
    sampling_steps: list[SequenceStep]  # (S,) the sequences those rows belong to

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


def build_batch(work: list[SequenceStep], block_size: int, device: torch.device) -> ForwardBatch:
    """Token ids, positions, KV slots and sampling rows for `work` (non-empty), in plan order."""
    positions = [np.arange(step.start_position, step.context_len) for step in work]
    slot_blocks = [
        np.asarray(step.block_table)[p // block_size] for step, p in zip(work, positions, strict=True)
    ]
    query_starts = np.concatenate(([0], np.cumsum([len(step.token_ids) for step in work]))).tolist()
    sampling = [i for i, step in enumerate(work) if step.sample]
    flat_positions = np.concatenate(positions)
    layout = BatchLayout(
        block_size=block_size,
        query_starts=query_starts,
        context_lens=[step.context_len for step in work],
        block_tables=[step.block_table for step in work],
        slot_blocks=torch.from_numpy(np.concatenate(slot_blocks)).to(device),
        slot_offsets=torch.from_numpy(flat_positions % block_size).to(device),
    )
    return ForwardBatch(
        input_ids=torch.from_numpy(np.concatenate([step.token_ids for step in work])).to(device),
        positions=torch.from_numpy(flat_positions).to(device),
        layout=layout,
        logit_indices=torch.tensor(
            [query_starts[i + 1] - 1 for i in sampling], dtype=torch.long, device=device
        ),
        sampling_steps=[work[i] for i in sampling],
    )
