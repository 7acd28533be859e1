"""The Run stream's packed batch (wire version 2): a StepPlan's work and block-table changes and a
StepResult's sampled tokens as structs of arrays, and each entry as a value.

On the wire each is a struct of arrays (entry i of every per-request field belongs to request i)
so that neither side builds or parses a message per request: the scheduler's plan builder extends
the fields from lists, the executor reads them into arrays and tensors. `Work`, `TableUpdate` and
`Sampled` are one entry as a value, for tests, the simulator, benchmarks and hand-built plans:
`pack_*` makes the field from values, `unpack_*` reads it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from infercept.v1 import executor_pb2 as pb
from svc_common.wire import pack_f32, pack_u32, unpack_f32, unpack_u32

# The version of the StepPlan/StepResult wire form (DescribeResponse.wire_version): 1 sent one
# message per request (and left the field unset), 2 packs the batch.
WIRE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Work:
    """One request's work in a plan: compute `token_ids` at start_position, start_position + 1, ...
    (after the executor's last sampled token, if use_last_sampled), then sample if asked."""

    request_id: int
    start_position: int = 0
    token_ids: Sequence[int] = ()
    sample: bool = False
    use_last_sampled: bool = False
    return_logits: bool = False

    @property
    def end_position(self) -> int:
        """One past the last computed position."""
        return self.start_position + len(self.token_ids) + self.use_last_sampled


@dataclasses.dataclass(frozen=True)
class TableUpdate:
    """A request's new device block table: old[:num_kept_blocks] + appended_block_ids."""

    request_id: int
    num_kept_blocks: int = 0
    appended_block_ids: Sequence[int] = ()


@dataclasses.dataclass(frozen=True)
class Sampled:
    """One sampled token, with the logits row it was drawn from if its work asked for it."""

    request_id: int
    token_id: int
    logprob: float = 0.0
    logits: npt.NDArray[np.float32] | None = None


def pack_work(items: Iterable[Work]) -> pb.WorkBatch:
    items = list(items)
    batch = pb.WorkBatch(
        request_ids=[w.request_id for w in items],
        start_positions=[w.start_position for w in items],
        num_tokens=[len(w.token_ids) for w in items],
        token_ids=pack_u32([t for w in items for t in w.token_ids]),
        sample=[w.sample for w in items],
    )
    if any(w.use_last_sampled for w in items):
        batch.use_last_sampled.extend([w.use_last_sampled for w in items])
    if any(w.return_logits for w in items):
        batch.return_logits.extend([w.return_logits for w in items])
    return batch


def unpack_work(batch: pb.WorkBatch) -> list[Work]:
    """The batch's entries (ValueError if its fields disagree in length)."""
    num = len(batch.request_ids)
    use_last = list(batch.use_last_sampled) or [False] * num
    logits = list(batch.return_logits) or [False] * num
    _check_lengths("work", num, batch.start_positions, batch.num_tokens, batch.sample, use_last, logits)
    tokens = unpack_u32(batch.token_ids).tolist()
    ends = np.cumsum(np.asarray(batch.num_tokens, dtype=np.int64)).tolist()
    if num and ends[-1] != len(tokens):
        raise ValueError(f"work: num_tokens add up to {ends[-1]} but token_ids holds {len(tokens)}")
    starts = [0, *ends[:-1]] if num else []
    return [
        Work(rid, start, tokens[begin:end], sample, last, logit)
        for rid, start, begin, end, sample, last, logit in zip(
            batch.request_ids,
            batch.start_positions,
            starts,
            ends,
            batch.sample,
            use_last,
            logits,
            strict=True,
        )
    ]


def pack_table_updates(items: Iterable[TableUpdate]) -> pb.BlockTableUpdates:
    items = list(items)
    return pb.BlockTableUpdates(
        request_ids=[u.request_id for u in items],
        num_kept_blocks=[u.num_kept_blocks for u in items],
        num_appended_blocks=[len(u.appended_block_ids) for u in items],
        appended_block_ids=pack_u32([b for u in items for b in u.appended_block_ids]),
    )


def unpack_table_updates(updates: pb.BlockTableUpdates) -> list[TableUpdate]:
    """The updates' entries (ValueError if their fields disagree in length)."""
    num = len(updates.request_ids)
    _check_lengths("block_table_updates", num, updates.num_kept_blocks, updates.num_appended_blocks)
    blocks = unpack_u32(updates.appended_block_ids).tolist()
    if sum(updates.num_appended_blocks) != len(blocks):
        raise ValueError("block_table_updates: num_appended_blocks disagree with appended_block_ids")
    entries, begin = [], 0
    for rid, kept, count in zip(
        updates.request_ids, updates.num_kept_blocks, updates.num_appended_blocks, strict=True
    ):
        entries.append(TableUpdate(rid, kept, blocks[begin : begin + count]))
        begin += count
    return entries


def pack_sampled(items: Iterable[Sampled]) -> pb.SampledTokens:
    items = list(items)
    sampled = pb.SampledTokens(
        request_ids=[s.request_id for s in items],
        token_ids=[s.token_id for s in items],
        logprobs=[s.logprob for s in items],
    )
    rows = [s.logits for s in items if s.logits is not None]
    if rows:
        sampled.has_logits.extend([s.logits is not None for s in items])
        sampled.logits = pack_f32(np.concatenate(rows))
    return sampled


def unpack_sampled(sampled: pb.SampledTokens) -> list[Sampled]:
    """The sampled tokens, each with its logits row if it has one."""
    num = len(sampled.request_ids)
    has_logits = list(sampled.has_logits) or [False] * num
    _check_lengths("sampled", num, sampled.token_ids, sampled.logprobs, has_logits)
    num_rows = sum(has_logits)
    rows = unpack_f32(sampled.logits).reshape(num_rows, -1) if num_rows else None
    entries, row = [], 0
    for rid, token_id, logprob, has in zip(
        sampled.request_ids, sampled.token_ids, sampled.logprobs, has_logits, strict=True
    ):
        logits = None
        if has:
            assert rows is not None
            logits, row = rows[row], row + 1
        entries.append(Sampled(rid, token_id, logprob, logits))
    return entries


def _check_lengths(name: str, num: int, *fields: Sequence[object]) -> None:
    if any(len(field) != num for field in fields):
        lengths = [num, *(len(field) for field in fields)]
        raise ValueError(f"{name}: its per-request fields differ in length {lengths}")
