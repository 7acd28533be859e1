"""BlockManager: paired resource calls, the [device prefix][host segment] layout, the invariant."""

from __future__ import annotations

import random

import pytest

from scheduler_svc.block_manager import BlockManager, BlockPool


def test_pool_allocate_free_pairs() -> None:
    pool = BlockPool(4)
    assert pool.can_allocate(4) and not pool.can_allocate(5)
    first = pool.allocate(3)
    assert first == [0, 1, 2] and pool.num_free == 1
    assert not pool.can_allocate(2)
    pool.free(first)
    assert pool.num_free == 4
    # First freed, first reused: the never-used block 3 comes before the returned ones.
    assert pool.allocate(2) == [3, 0]


def test_pool_allocate_beyond_free_is_an_assertion() -> None:
    pool = BlockPool(2)
    with pytest.raises(AssertionError):
        pool.allocate(3)


def test_grow_allocates_only_missing_blocks() -> None:
    blocks = BlockManager(num_device_blocks=8, num_host_blocks=4, block_size=4)
    assert blocks.num_blocks_to_grow(1, 5) == 2
    assert blocks.grow(1, 5) == [0, 1]
    assert blocks.num_blocks_to_grow(1, 8) == 0 and blocks.grow(1, 8) == []
    assert blocks.grow(1, 9) == [2]
    assert blocks.can_grow(1, 32) and not blocks.can_grow(1, 33)
    assert blocks.device.num_free == 5
    blocks.free(1)
    assert blocks.device.num_free == 8 and 1 not in blocks.layouts


def test_swap_out_takes_the_back_of_the_device_prefix_into_the_front_of_the_host_segment() -> None:
    blocks = BlockManager(num_device_blocks=8, num_host_blocks=8, block_size=4)
    blocks.grow(1, 16)  # device [0, 1, 2, 3]
    first = blocks.swap_out(1, 1)
    assert first == [(3, 0)]
    second = blocks.swap_out(1, 2)
    assert second == [(1, 1), (2, 2)]  # logical order: block 1 then block 2
    layout = blocks.layout(1)
    assert layout.device == [0]
    # Logical blocks 1 and 2 now precede logical block 3 in the host segment.
    assert layout.host == [1, 2, 0]
    assert blocks.device.num_free == 7 and blocks.host.num_free == 5
    blocks.check_invariants()


def test_swap_in_returns_the_whole_host_segment_after_the_device_prefix() -> None:
    blocks = BlockManager(num_device_blocks=8, num_host_blocks=8, block_size=4)
    blocks.grow(1, 12)  # device [0, 1, 2]
    blocks.swap_out(1, 2)  # device [0], host [0, 1]
    host_segment = list(blocks.layout(1).host)
    assert blocks.can_swap_in(1)
    pairs = blocks.swap_in(1)
    assert [src for src, _ in pairs] == host_segment
    layout = blocks.layout(1)
    assert layout.host == [] and layout.device == [0] + [dst for _, dst in pairs]
    assert layout.num_blocks == 3
    blocks.check_invariants()


def test_can_swap_in_needs_room_for_the_whole_segment() -> None:
    blocks = BlockManager(num_device_blocks=4, num_host_blocks=4, block_size=4)
    blocks.grow(1, 12)
    blocks.swap_out(1, 3)
    blocks.grow(2, 8)  # two of the freed device blocks go to request 2
    assert not blocks.can_swap_in(1)
    blocks.free(2)
    assert blocks.can_swap_in(1)


def test_drop_after_frees_the_device_tail_and_the_host_segment() -> None:
    blocks = BlockManager(num_device_blocks=8, num_host_blocks=8, block_size=4)
    blocks.grow(1, 20)  # 5 device blocks
    blocks.swap_out(1, 1)
    assert blocks.drop_after(1, 2) == 3  # device blocks 2, 3 and the one host block
    layout = blocks.layout(1)
    assert layout.device == [0, 1] and layout.host == []
    assert blocks.device.num_free == 6 and blocks.host.num_free == 8
    blocks.check_invariants()


def test_host_blocks_freed_by_swap_in_wait_for_end_of_iteration() -> None:
    blocks = BlockManager(num_device_blocks=8, num_host_blocks=2, block_size=4)
    blocks.grow(1, 8)
    blocks.swap_out(1, 2)
    assert blocks.host.num_free == 0
    blocks.swap_in(1)
    # The executor reads these host blocks in this iteration after any swap-out: not reusable yet.
    assert blocks.host.num_free == 0 and not blocks.can_swap_out(1)
    blocks.check_invariants()  # pending blocks are neither lost nor owned
    blocks.end_iteration()
    assert blocks.host.num_free == 2 and blocks.can_swap_out(2)
    blocks.check_invariants()


def test_check_invariants_catches_a_doubly_owned_device_block() -> None:
    blocks = BlockManager(num_device_blocks=4, num_host_blocks=2, block_size=4)
    blocks.grow(1, 4)
    blocks.grow(2, 4)
    blocks.check_invariants()
    blocks.layout(2).device = list(blocks.layout(1).device)  # both own block 0; block 1 is lost
    with pytest.raises(AssertionError, match="device pool"):
        blocks.check_invariants()


def test_check_invariants_catches_a_block_both_free_and_owned() -> None:
    blocks = BlockManager(num_device_blocks=4, num_host_blocks=2, block_size=4)
    blocks.grow(1, 8)
    blocks.swap_out(1, 1)
    blocks.host.free([blocks.layout(1).host[0]])  # freed while still owned
    with pytest.raises(AssertionError, match="host pool"):
        blocks.check_invariants()


def test_random_operations_keep_the_invariant() -> None:
    rng = random.Random(1234)
    blocks = BlockManager(num_device_blocks=24, num_host_blocks=12, block_size=4)
    counts = dict.fromkeys(("grow", "swap_out", "swap_in", "drop", "free", "end"), 0)
    for _ in range(3000):
        rid = rng.randrange(6)
        layout = blocks.layout(rid)
        op = rng.choice(list(counts))
        if op == "grow" and not layout.host:
            target = len(layout.device) * 4 + rng.randint(1, 12)
            if blocks.can_grow(rid, target):
                new = blocks.grow(rid, target)
                assert len(layout.device) == blocks.blocks_for(target) and len(new) <= 3
                counts[op] += 1
        elif op == "swap_out" and layout.device:
            n = rng.randint(1, len(layout.device))
            if blocks.can_swap_out(n):
                before_device, before_host = list(layout.device), list(layout.host)
                pairs = blocks.swap_out(rid, n)
                assert [d for d, _ in pairs] == before_device[-n:]
                assert layout.host == [h for _, h in pairs] + before_host
                counts[op] += 1
        elif op == "swap_in" and layout.host and blocks.can_swap_in(rid):
            total = layout.num_blocks
            pairs = blocks.swap_in(rid)
            assert (
                not layout.host
                and layout.num_blocks == total
                and layout.device[-len(pairs) :] == [d for _, d in pairs]
            )
            counts[op] += 1
        elif op == "drop":
            keep = rng.randint(0, len(layout.device))
            dropped = blocks.drop_after(rid, keep)
            assert len(layout.device) == keep and not layout.host and dropped >= 0
            counts[op] += 1
        elif op == "free":
            blocks.free(rid)
            counts[op] += 1
        elif op == "end":
            blocks.end_iteration()
            counts[op] += 1
        blocks.check_invariants()
    assert all(n > 20 for n in counts.values()), counts
    for rid in list(blocks.layouts):
        blocks.free(rid)
    blocks.end_iteration()
    blocks.check_invariants()
    assert blocks.device.num_free == 24 and blocks.host.num_free == 12
