"""Which KV blocks each request owns, on the device and on the host.

A request's context is a run of logical blocks laid out as::

    logical block:  0  1  2  3 | 4  5 | 6  7 ...
                    [ device  ] [host] [ dropped: recomputed when needed ]

Attention only ever reads the device prefix, so a block is usable only when every block before it
is on the device. Swap-out moves blocks from the back of the device prefix to the front of the
host segment; swap-in brings blocks back from the front of the host segment (all of them, or as
many as an iteration's swap budget allows); dropping frees a tail.

Invariant (check_invariants): in the host pool every block is either free or owned by exactly one
request, and free + owned == total. Device blocks are reference counted (prefix_cache.py): with
prefix caching on, requests whose contexts begin alike share their leading full blocks, and freed
full blocks stay cached until memory is needed; free + cached + owned == total, and a block's
refcount is the number of block-table entries naming it.

Prefix caching (enable_prefix_caching): a request that starts computing from nothing takes the
cached blocks of its context's leading full blocks (share_cached_prefix) and computes only the
rest; each block it fills is registered under its chain hash (register_computed). A shared block
is never written: the writer gets a copy first, a device-side block copy in the plan
(prepare_write). Swapping a shared block out copies it to the host and drops this request's
reference; the block stays on the device for the others.

Host blocks freed by a swap-in stay unusable until end_iteration(): the executor runs an
iteration's swap-outs before its swap-ins, so reusing such a block for a swap-out in the same
iteration would overwrite it before it is read.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque

from scheduler_svc.prefix_cache import ROOT_HASH, CachingBlockPool, chain_hash, extend_chain_hashes


class BlockPool:
    """A fixed set of block ids, handed out first-freed-first."""

    def __init__(self, num_blocks: int) -> None:
        self.num_total = num_blocks
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def allocate(self, num_blocks: int) -> list[int]:
        assert self.can_allocate(num_blocks), f"allocate({num_blocks}) with {len(self._free)} free"
        return [self._free.popleft() for _ in range(num_blocks)]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(blocks)

    def free_ids(self) -> list[int]:
        return list(self._free)


@dataclasses.dataclass
class BlockLayout:
    device: list[int] = dataclasses.field(default_factory=list)  # logical blocks [0, len(device))
    host: list[int] = dataclasses.field(default_factory=list)  # the logical blocks right after
    # Leading device blocks the executor's copy of the table still agrees with: the plan builder
    # sends the table as "keep these, append the rest" without comparing lists.
    num_synced: int = 0
    # Chain hashes of the context's leading full blocks (prefix caching), grown as needed.
    chain_hashes: list[int] = dataclasses.field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.device) + len(self.host)


class BlockManager:
    def __init__(
        self,
        num_device_blocks: int,
        num_host_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = False,
    ) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.device = CachingBlockPool(num_device_blocks)
        self.host = BlockPool(num_host_blocks)
        self.layouts: dict[int, BlockLayout] = {}
        self._host_freed_this_iteration: list[int] = []
        # Sources of this iteration's device copies keep a reference until the plan is complete:
        # the executor copies after the swaps, so a source must not be reused within the plan.
        self._copy_sources: list[int] = []

    def layout(self, request_id: int) -> BlockLayout:
        layout = self.layouts.get(request_id)
        if layout is None:
            layout = self.layouts[request_id] = BlockLayout()
        return layout

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # Growing the device prefix (new tokens to compute).
    def num_blocks_to_grow(self, request_id: int, num_tokens: int) -> int:
        """Device blocks to add so that the device prefix covers `num_tokens` positions."""
        return max(self.blocks_for(num_tokens) - len(self.layout(request_id).device), 0)

    def can_grow(self, request_id: int, num_tokens: int) -> bool:
        return self.device.can_allocate(self.num_blocks_to_grow(request_id, num_tokens))

    def grow(self, request_id: int, num_tokens: int) -> list[int]:
        """Append the device blocks the prefix needs to cover `num_tokens` positions."""
        layout = self.layout(request_id)
        assert not layout.host, f"request {request_id} grows while its host segment is out"
        new_blocks = self.device.allocate(max(-(-num_tokens // self.block_size) - len(layout.device), 0))
        layout.device += new_blocks
        return new_blocks

    # Swapping.
    def can_swap_out(self, num_blocks: int) -> bool:
        return self.host.can_allocate(num_blocks)

    def swap_out(
        self, request_id: int, num_blocks: int, evict_rank: float | None = None
    ) -> list[tuple[int, int]]:
        """Move the last `num_blocks` device blocks to the front of the host segment.
        Returns (device block, host block) pairs, in logical order. With prefix caching the
        released device blocks stay cached (with `evict_rank`, see prefix_cache.py): the context
        is then on the host and, until evicted, on the device too (reattach_cached)."""
        layout = self.layout(request_id)
        assert 0 < num_blocks <= len(layout.device), f"swap_out({num_blocks}) of {len(layout.device)}"
        moved = layout.device[-num_blocks:]
        host_blocks = self.host.allocate(num_blocks)
        del layout.device[-num_blocks:]
        layout.num_synced = min(layout.num_synced, len(layout.device))
        layout.host[:0] = host_blocks
        self.device.free(moved, evict_rank)
        return list(zip(moved, host_blocks, strict=True))

    def reattach_cached(self, request_id: int) -> int:
        """Take back, from the front of the host segment, the blocks whose device copy is still
        cached (or shared by another request): they rejoin the device prefix with no copy, and
        their host blocks are freed. Returns the number of blocks taken back. Call it only when
        no swap-out of the request is still to run (its host blocks are written)."""
        layout = self.layout(request_id)
        if not self.enable_prefix_caching or not layout.host:
            return 0
        first = len(layout.device)
        hashes = layout.chain_hashes[first : first + len(layout.host)]
        blocks = self.device.lookup(hashes)
        if not blocks:
            return 0
        self.device.share(blocks)
        layout.device += blocks
        self.host.free(layout.host[: len(blocks)])
        del layout.host[: len(blocks)]
        return len(blocks)

    def can_swap_in(self, request_id: int) -> bool:
        return self.device.can_allocate(len(self.layout(request_id).host))

    def swap_in(self, request_id: int, num_blocks: int | None = None) -> list[tuple[int, int]]:
        """Bring the first `num_blocks` of the host segment (all of it by default) back after the
        device prefix, front first. Returns (host block, device block) pairs, in logical order."""
        layout = self.layout(request_id)
        count = len(layout.host) if num_blocks is None else num_blocks
        assert 0 <= count <= len(layout.host), f"swap_in({count}) of {len(layout.host)}"
        moved = layout.host[:count]
        device_blocks = self.device.allocate(count)
        self._host_freed_this_iteration += moved
        layout.device += device_blocks
        del layout.host[:count]
        return list(zip(moved, device_blocks, strict=True))

    # Dropping.
    def drop_after(
        self, request_id: int, num_device_blocks_kept: int, evict_rank: float | None = None
    ) -> int:
        """Keep the first `num_device_blocks_kept` device blocks; free the rest and the host
        segment. Returns the number of blocks dropped. With prefix caching the freed device
        blocks stay cached, ranked by `evict_rank` if given (see prefix_cache.py)."""
        layout = self.layout(request_id)
        dropped_device = layout.device[num_device_blocks_kept:]
        self.device.free(dropped_device, evict_rank)
        self.host.free(layout.host)
        count = len(dropped_device) + len(layout.host)
        del layout.device[num_device_blocks_kept:]
        layout.num_synced = min(layout.num_synced, len(layout.device))
        layout.host = []
        return count

    def free(self, request_id: int) -> None:
        self.drop_after(request_id, 0)
        del self.layouts[request_id]

    def end_iteration(self) -> None:
        """Host blocks read by this iteration's swap-ins become reusable; the device blocks this
        iteration fills become findable by their content."""
        self.host.free(self._host_freed_this_iteration)
        self._host_freed_this_iteration = []
        self.device.free(self._copy_sources)
        self._copy_sources = []
        self.device.publish()

    # Prefix caching.
    def share_cached_prefix(self, request_id: int, token_ids: list[int]) -> int:
        """Give a request with no blocks the cached blocks of its context's leading full blocks.
        Returns the positions they cover, at most len(token_ids) - 1: the last token is always
        computed (it samples the next one), in the last shared block if the context ends on a
        block boundary (then prepare_write copies that block first)."""
        layout = self.layout(request_id)
        assert not (layout.device or layout.host), (
            f"request {request_id} shares a prefix while holding blocks"
        )
        if not self.enable_prefix_caching or len(token_ids) < 2:
            return 0
        extend_chain_hashes(
            layout.chain_hashes, token_ids, self.block_size, len(token_ids) // self.block_size
        )
        blocks = self.device.lookup(layout.chain_hashes)
        if not blocks:
            return 0
        self.device.share(blocks)
        layout.device = blocks
        layout.num_synced = 0
        return min(len(blocks) * self.block_size, len(token_ids) - 1)

    def register_computed(self, request_id: int, token_ids: list[int], start: int, end: int) -> None:
        """Positions [start, end) of the request are computed by this iteration: name the blocks
        they fill by their chain hash (findable after end_iteration)."""
        first, last = start // self.block_size, end // self.block_size  # blocks [first, last) fill
        if not self.enable_prefix_caching or first >= last:
            return
        layout = self.layouts[request_id]
        extend_chain_hashes(layout.chain_hashes, token_ids, self.block_size, last)
        for index in range(first, min(last, len(layout.device))):
            self.device.register(layout.device[index], layout.chain_hashes[index])

    def register_filled_ahead(self, request_id: int, token_ids: list[int], token_id: int) -> None:
        """A decode planned ahead computes the last position of a device block, whose token
        (`token_id`, now sampled, about to follow `token_ids`) was not known when it was planned:
        name that block by its content and make it findable at once (the plan computing it was
        sent before any plan made from now on). Nothing if the request lost its blocks or its
        length changed meanwhile."""
        layout, block_size = self.layouts.get(request_id), self.block_size
        index, filled = divmod(len(token_ids) + 1, block_size)
        if not self.enable_prefix_caching or layout is None or filled or not 0 < index <= len(layout.device):
            return
        first = (index - 1) * block_size
        extend_chain_hashes(layout.chain_hashes, token_ids, block_size, index - 1)
        if len(layout.chain_hashes) != index - 1:
            return
        parent = layout.chain_hashes[-1] if layout.chain_hashes else ROOT_HASH
        layout.chain_hashes.append(chain_hash(parent, [*token_ids[first:], token_id]))
        self.device.register(layout.device[index - 1], layout.chain_hashes[-1])
        self.device.publish()

    def num_blocks_to_copy(self, request_id: int, start: int) -> int:
        """Shared device blocks the request would write into computing from position `start`."""
        device = self.layout(request_id).device
        return sum(self.device.refcount(b) > 1 for b in device[start // self.block_size :])

    def prepare_write(self, request_id: int, start: int) -> list[tuple[int, int]]:
        """Make the request's device blocks from position `start` on its own to write: a shared
        one is replaced by a fresh copy (needs num_blocks_to_copy free blocks), an unshared named
        one loses its name until it is full again. Returns the (source, copy) device block pairs,
        which the plan copies before the forward."""
        layout = self.layout(request_id)
        copies = []
        for index in range(start // self.block_size, len(layout.device)):
            block = layout.device[index]
            if self.device.refcount(block) > 1:
                (copy,) = self.device.allocate(1)
                self._copy_sources.append(block)  # this request's reference, released at end_iteration
                layout.device[index] = copy
                layout.num_synced = min(layout.num_synced, index)
                copies.append((block, copy))
            elif self.enable_prefix_caching:
                self.device.unpublish(block)
        return copies

    def forget_cached(self) -> None:
        """The device lost its contents: nothing cached may be found again."""
        self.device.forget_all()

    def check_writable(self, request_id: int, start: int, end: int) -> None:
        """A request writing positions [start, end) writes only blocks it alone references."""
        device = self.layouts[request_id].device
        for block in device[start // self.block_size : -(-end // self.block_size)]:
            assert self.device.refcount(block) == 1, (
                f"request {request_id} writes device block {block}, shared by {self.device.refcount(block)}"
            )

    def check_invariants(self) -> None:
        """Host: every block is free or owned by exactly one request, free + owned == total.
        Device: free + cached + owned == total, refcounts match the block tables, no table names a
        block twice (prefix_cache.CachingBlockPool.check)."""
        for rid, layout in self.layouts.items():
            assert len(set(layout.device)) == len(layout.device), f"request {rid}: device blocks repeat"
        references = Counter(b for layout in self.layouts.values() for b in layout.device)
        self.device.check(references + Counter(self._copy_sources))
        host = self.host
        owned = [b for layout in self.layouts.values() for b in layout.host]
        pending = self._host_freed_this_iteration
        everything = host.free_ids() + owned + pending
        assert len(everything) == host.num_total, (
            f"host pool: {host.num_free} free + {len(owned)} owned + {len(pending)} pending != {host.num_total}"
        )
        assert sorted(everything) == list(range(host.num_total)), "host pool: a block is lost or doubly owned"
