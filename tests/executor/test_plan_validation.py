"""Every kind of bad plan is refused with a precise code, and nothing of it is applied; what a
step reports of the engine's idle time before it."""

from __future__ import annotations

import time

import pytest
import torch

from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import TableUpdate, Work, pack_table_updates, pack_work
from svc_common.wire import pack_u32

NUM_DEVICE_BLOCKS, NUM_HOST_BLOCKS, BLOCK_SIZE = 16, 8, 4


@pytest.fixture(scope="module")
def engine() -> Engine:
    config = ExecutorConfig(
        model="tiny",
        device="cpu",
        block_size=BLOCK_SIZE,
        num_device_blocks=NUM_DEVICE_BLOCKS,
        num_host_blocks=NUM_HOST_BLOCKS,
    )
    return Engine(config)


@pytest.fixture
def live(engine: Engine) -> Engine:
    """Request 1 has computed 3 tokens in block 2 and sampled one; request 2 is registered."""
    engine.reset()
    result = engine.step(
        pb.StepPlan(
            step_id=1,
            new_requests=[pb.NewRequest(request_id=1), pb.NewRequest(request_id=2)],
            block_table_updates=pack_table_updates([TableUpdate(request_id=1, appended_block_ids=[2])]),
            work=pack_work([Work(request_id=1, token_ids=[5, 6, 7], sample=True)]),
        )
    )
    assert not result.HasField("error")
    return engine


def _work(request_id: int, start: int, tokens: list[int], **kwargs: bool) -> Work:
    return Work(request_id=request_id, start_position=start, token_ids=tokens, **kwargs)


def _table(request_id: int, keep: int, blocks: list[int]) -> TableUpdate:
    return TableUpdate(request_id=request_id, num_kept_blocks=keep, appended_block_ids=blocks)


def _map(src: list[int], dst: list[int]) -> pb.BlockMap:
    return pb.BlockMap(src_block_ids=pack_u32(src), dst_block_ids=pack_u32(dst))


BAD_PLANS = {
    "work for an unknown request": ("NOT_FOUND", pb.StepPlan(work=pack_work([_work(99, 0, [1])]))),
    "forget an unknown request": ("NOT_FOUND", pb.StepPlan(forget_request_ids=[99])),
    "table update of an unknown request": (
        "NOT_FOUND",
        pb.StepPlan(block_table_updates=pack_table_updates([_table(99, 0, [1])])),
    ),
    "register a known request": ("ALREADY_EXISTS", pb.StepPlan(new_requests=[pb.NewRequest(request_id=1)])),
    "device block out of range": (
        "OUT_OF_RANGE",
        pb.StepPlan(block_table_updates=pack_table_updates([_table(2, 0, [NUM_DEVICE_BLOCKS])])),
    ),
    "swap-out to a host block out of range": (
        "OUT_OF_RANGE",
        pb.StepPlan(swap_out=_map([2], [NUM_HOST_BLOCKS])),
    ),
    "swap-in from a host block out of range": (
        "OUT_OF_RANGE",
        pb.StepPlan(swap_in=_map([NUM_HOST_BLOCKS], [0])),
    ),
    "block map of unequal lengths": ("INVALID_ARGUMENT", pb.StepPlan(swap_in=_map([0, 1], [3]))),
    "block map writing one block twice": ("INVALID_ARGUMENT", pb.StepPlan(swap_out=_map([2, 3], [0, 0]))),
    "packed ids of a bad length": (
        "INVALID_ARGUMENT",
        pb.StepPlan(swap_in=pb.BlockMap(src_block_ids=b"\x01\x00\x00", dst_block_ids=b"\x01\x00\x00")),
    ),
    "context blocks not on the device": (
        "FAILED_PRECONDITION",
        pb.StepPlan(work=pack_work([_work(1, 3, [1, 2])])),
    ),
    "context past the table after a truncation": (
        "FAILED_PRECONDITION",
        pb.StepPlan(
            block_table_updates=pack_table_updates([_table(1, 0, [])]), work=pack_work([_work(1, 3, [1])])
        ),
    ),
    "token outside the vocabulary": ("INVALID_ARGUMENT", pb.StepPlan(work=pack_work([_work(1, 3, [258])]))),
    "no tokens": ("INVALID_ARGUMENT", pb.StepPlan(work=pack_work([_work(1, 3, [])]))),
    "request twice in one batch": (
        "INVALID_ARGUMENT",
        pb.StepPlan(work=pack_work([_work(1, 3, [1]), _work(1, 3, [1])])),
    ),
    "table repeating a block": (
        "INVALID_ARGUMENT",
        pb.StepPlan(block_table_updates=pack_table_updates([_table(2, 0, [4, 4])])),
    ),
    "keeping more blocks than the table has": (
        "INVALID_ARGUMENT",
        pb.StepPlan(block_table_updates=pack_table_updates([_table(1, 2, [])])),
    ),
    "two requests writing one block": (
        "INVALID_ARGUMENT",
        pb.StepPlan(
            block_table_updates=pack_table_updates([_table(2, 0, [2])]),
            work=pack_work([_work(1, 3, [1]), _work(2, 0, [1])]),
        ),
    ),
    "last sampled token before any sample": (
        "FAILED_PRECONDITION",
        pb.StepPlan(
            block_table_updates=pack_table_updates([_table(2, 0, [5])]),
            work=pack_work([Work(request_id=2, use_last_sampled=True)]),
        ),
    ),
    "logits without sampling": (
        "INVALID_ARGUMENT",
        pb.StepPlan(work=pack_work([_work(1, 3, [1], return_logits=True)])),
    ),
    "negative temperature": (
        "INVALID_ARGUMENT",
        pb.StepPlan(new_requests=[pb.NewRequest(request_id=3, sampling=pb.RequestSampling(temperature=-1))]),
    ),
    "top_p above one": (
        "INVALID_ARGUMENT",
        pb.StepPlan(new_requests=[pb.NewRequest(request_id=3, sampling=pb.RequestSampling(top_p=1.5))]),
    ),
    "device copy reading a block another copy writes": (
        "INVALID_ARGUMENT",
        pb.StepPlan(device_copies=_map([2, 5], [5, 6])),
    ),
    "device copy onto a swap-in destination": (
        "INVALID_ARGUMENT",
        pb.StepPlan(swap_in=_map([1], [6]), device_copies=_map([2], [6])),
    ),
    "device copy out of range": ("OUT_OF_RANGE", pb.StepPlan(device_copies=_map([2], [NUM_DEVICE_BLOCKS]))),
    "packed work whose per-request fields differ in length": (
        "INVALID_ARGUMENT",
        pb.StepPlan(
            work=pb.WorkBatch(request_ids=[1, 2], start_positions=[3], num_tokens=[1, 1], sample=[True])
        ),
    ),
    "token counts that do not add up to the packed tokens": (
        "INVALID_ARGUMENT",
        pb.StepPlan(
            work=pb.WorkBatch(request_ids=[1], start_positions=[3], num_tokens=[2], token_ids=pack_u32([1]))
        ),
    ),
    "table block counts that do not add up to the packed blocks": (
        "INVALID_ARGUMENT",
        pb.StepPlan(
            block_table_updates=pb.BlockTableUpdates(
                request_ids=[2],
                num_kept_blocks=[0],
                num_appended_blocks=[2],
                appended_block_ids=pack_u32([5]),
            )
        ),
    ),
    "a later request's token outside the vocabulary": (
        "INVALID_ARGUMENT",
        pb.StepPlan(
            block_table_updates=pack_table_updates([_table(2, 0, [5])]),
            work=pack_work([_work(1, 3, [1]), _work(2, 0, [4, 258])]),
        ),
    ),
    "position past the maximum length": (
        "OUT_OF_RANGE",
        pb.StepPlan(
            block_table_updates=pack_table_updates([_table(2, 0, list(range(3, 16)))]),
            work=pack_work([_work(2, 2047, [1, 1])]),
        ),
    ),
}


@pytest.mark.parametrize("case", BAD_PLANS, ids=list(BAD_PLANS))
def test_bad_plan_is_refused_and_nothing_applied(live: Engine, case: str) -> None:
    code, plan = BAD_PLANS[case]
    plan.step_id = 42
    tables_before = {rid: list(state.block_table) for rid, state in live.requests.items()}
    result = live.step(plan)
    assert result.step_id == 42
    assert result.error.code == code, result.error.message
    assert result.error.message
    assert {rid: state.block_table for rid, state in live.requests.items()} == tables_before
    # The executor keeps serving: request 1 decodes on.
    after = live.step(
        pb.StepPlan(
            step_id=43,
            work=pack_work([Work(request_id=1, start_position=3, use_last_sampled=True, sample=True)]),
        )
    )
    assert not after.HasField("error"), after.error.message


def test_forget_and_register_again_in_one_plan_starts_fresh(live: Engine) -> None:
    result = live.step(
        pb.StepPlan(
            step_id=2,
            forget_request_ids=[1],
            new_requests=[pb.NewRequest(request_id=1)],
            work=pack_work([Work(request_id=1, use_last_sampled=True)]),
        )
    )
    assert result.error.code == "FAILED_PRECONDITION"  # the fresh request has sampled nothing


def test_swap_out_then_in_within_one_plan_reuses_the_freed_block(live: Engine) -> None:
    """Swap-out runs before swap-in: block 2 goes to the host and another block comes into 2."""
    pools = live.pools
    pools.host[:, 5] = 7.0
    before = pools.device[:, 2].clone()
    result = live.step(pb.StepPlan(step_id=3, swap_out=_map([2], [0]), swap_in=_map([5], [2])))
    assert not result.HasField("error")
    assert (pools.host[:, 0] == before).all()
    assert (pools.device[:, 2] == 7.0).all()


def test_device_copies_run_after_the_swaps_and_before_the_forward(live: Engine) -> None:
    """Block 2 (request 1's context) is copied to 7 and request 1 reads it there: the copy is exact,
    and a block a swap-out reads in the same plan is read before a copy overwrites it."""
    pools = live.pools
    pools.device[:, 9] = 3.0
    context = pools.device[:, 2].clone()
    result = live.step(
        pb.StepPlan(
            step_id=4,
            swap_out=_map([9], [1]),
            device_copies=_map([2], [9]),  # 9 is free once swapped out
            block_table_updates=pack_table_updates([_table(1, 0, [9])]),
            work=pack_work([Work(request_id=1, start_position=3, use_last_sampled=True, sample=True)]),
        )
    )
    assert not result.HasField("error"), result.error.message
    assert (pools.host[:, 1] == 3.0).all()
    # Positions 0-2 hold what block 2 held; position 3 is the token just computed.
    assert torch.equal(pools.device[:, 9, :, :3], context[:, :, :3])
    assert torch.equal(pools.device[:, 2], context)


def test_a_refusal_of_a_packed_batch_names_the_request_at_fault(live: Engine) -> None:
    plan = pb.StepPlan(
        step_id=5,
        block_table_updates=pack_table_updates([_table(2, 0, [5])]),
        work=pack_work([_work(1, 3, [1]), _work(2, 0, [4, 258])]),
    )
    assert "request 2: token id 258" in live.step(plan).error.message
    too_long = pb.StepPlan(step_id=6, work=pack_work([_work(1, 3, [1]), _work(2, 0, [1] * 5)]))
    assert "request 2: context of 5 tokens needs 2 device blocks" in live.step(too_long).error.message


def test_idle_time_is_the_gap_since_the_last_step_and_none_after_a_reset(engine: Engine) -> None:
    engine.reset()
    first = engine.step(pb.StepPlan(step_id=1, new_requests=[pb.NewRequest(request_id=1)]))
    assert first.idle_s == 0.0  # nothing came before it
    gap_s = 0.05
    time.sleep(gap_s)
    refused = engine.step(pb.StepPlan(step_id=2, forget_request_ids=[9]))  # a refusal is a step too
    assert refused.HasField("error") and refused.idle_s >= gap_s
    time.sleep(gap_s)
    second = engine.step(pb.StepPlan(step_id=3, forget_request_ids=[1]))
    assert not second.HasField("error") and second.idle_s >= gap_s
    engine.reset()
    assert engine.step(pb.StepPlan(step_id=4)).idle_s == 0.0
