"""The packed batch reads back as it was written, and a batch whose fields disagree is refused."""

from __future__ import annotations

import numpy as np
import pytest

from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import (
    Sampled,
    TableUpdate,
    Work,
    pack_sampled,
    pack_table_updates,
    pack_work,
    unpack_sampled,
    unpack_table_updates,
    unpack_work,
)
from svc_common.wire import pack_u32

WORK = [
    Work(7, 12, [5], sample=True),
    Work(3, 0, [1, 2, 3, 4], sample=False),
    Work(9, 40, [], sample=True, use_last_sampled=True, return_logits=True),
]


def test_work_reads_back_entry_by_entry_through_the_wire() -> None:
    batch = pb.WorkBatch.FromString(pack_work(WORK).SerializeToString())
    assert unpack_work(batch) == WORK
    assert [w.end_position for w in unpack_work(batch)] == [13, 4, 41]


def test_flags_nobody_sets_stay_off_the_wire() -> None:
    batch = pack_work([Work(1, 0, [1], sample=True), Work(2, 0, [2])])
    assert not batch.use_last_sampled and not batch.return_logits
    assert [(w.use_last_sampled, w.return_logits) for w in unpack_work(batch)] == [(False, False)] * 2
    assert unpack_work(pack_work([])) == []


def test_table_updates_read_back_with_each_request_its_own_blocks() -> None:
    updates = [TableUpdate(4, 0, [8, 9, 10]), TableUpdate(2, 3, []), TableUpdate(6, 1, [0])]
    packed = pb.BlockTableUpdates.FromString(pack_table_updates(updates).SerializeToString())
    assert unpack_table_updates(packed) == updates


def test_sampled_tokens_carry_logits_rows_only_where_asked() -> None:
    row = np.arange(5, dtype=np.float32)
    sampled = [Sampled(1, 10, -0.5), Sampled(2, 20, 0.0, row), Sampled(3, 30)]
    packed = pb.SampledTokens.FromString(pack_sampled(sampled).SerializeToString())
    back = unpack_sampled(packed)
    assert [(s.request_id, s.token_id, s.logprob) for s in back] == [
        (1, 10, -0.5),
        (2, 20, 0.0),
        (3, 30, 0.0),
    ]
    assert back[0].logits is None and back[2].logits is None
    assert back[1].logits is not None and back[1].logits.tolist() == row.tolist()


def test_a_batch_whose_fields_disagree_is_refused() -> None:
    short = pack_work(WORK)
    del short.start_positions[-1]
    with pytest.raises(ValueError, match="differ in length"):
        unpack_work(short)
    counted = pack_work(WORK)
    counted.token_ids = pack_u32([1, 2])
    with pytest.raises(ValueError, match="add up to 5"):
        unpack_work(counted)
    tables = pack_table_updates([TableUpdate(1, 0, [1, 2])])
    tables.num_appended_blocks[0] = 3
    with pytest.raises(ValueError, match="disagree"):
        unpack_table_updates(tables)
