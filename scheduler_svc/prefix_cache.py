"""The device block pool with reference counts and a content-addressed cache of freed blocks.

A FULL device block is named by the hash of its token-id chain, ``hash((parent_hash, tokens))``,
so two requests whose contexts begin with the same tokens name their leading blocks alike and
can share them. Every device block is in exactly one of three states::

    free     no reference, no content worth keeping          -> handed out first
    cached   no reference, full, its chain hash published    -> kept in LRU order, evicted only
                                                                when no free block is left
                                                                (ranked ones after the LRU ones)
    owned    referenced by >= 1 request (refcount)           -> shared when refcount > 1

    free + cached + owned == total

A block's hash is registered when the iteration that fills it is planned, and published (made
findable) only at the end of that iteration's planning: a request scheduled in the same iteration
never reads a block another request writes in it. A decode planned ahead whose token (still being
sampled) completes a block has it named when that token arrives, published at once
(BlockManager.register_filled_ahead): the plan that fills it was sent before any that could read
it. A shared block (refcount > 1) is never written: the writer takes a copy first
(BlockManager.prepare_write). With no hash ever registered (prefix
caching off) the pool behaves as a plain first-freed-first free list.

Eviction rank (the priority hook): a block may be released with an `evict_rank` (a policy's
expected return time of the paused context it holds, say). Ranked cached blocks are evicted only
after every unranked (LRU) one, highest rank first, so a policy that knows when a context will be
needed again decides which goes first. The rank is forgotten when the block is owned again.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence

ROOT_HASH = 0  # the parent hash of a context's first block


def chain_hash(parent: int, block_token_ids: Sequence[int]) -> int:
    """The name of a full block holding `block_token_ids` after the chain named `parent`."""
    return hash((parent, tuple(block_token_ids)))


def extend_chain_hashes(
    hashes: list[int], token_ids: Sequence[int], block_size: int, num_blocks: int
) -> None:
    """Append to `hashes` (the chain hashes of the first len(hashes) full blocks of `token_ids`)
    those of the full blocks up to `num_blocks`. Tokens never change once appended, so a list
    kept per request stays valid as its context grows."""
    num_blocks = min(num_blocks, len(token_ids) // block_size)
    parent = hashes[-1] if hashes else ROOT_HASH
    for index in range(len(hashes), num_blocks):
        parent = chain_hash(parent, token_ids[index * block_size : (index + 1) * block_size])
        hashes.append(parent)


class CachingBlockPool:
    """Device blocks: reference counted, freed full blocks kept findable by chain hash (LRU)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_total = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._cached: OrderedDict[int, None] = OrderedDict()  # least recently released first
        # Ranked cached blocks (see the module docstring): block -> rank, and a max-heap of
        # (-rank, release number, block) whose entries go stale when the block leaves the tier.
        self._ranked: dict[int, float] = {}
        self._ranked_heap: list[tuple[float, int, int]] = []
        self._num_releases = 0
        self._refcount = [0] * num_blocks
        self._hash_of: dict[int, int] = {}  # published blocks (owned or cached) -> chain hash
        self._block_of: dict[int, int] = {}  # chain hash -> its published block
        self._pending: list[tuple[int, int]] = []  # (block, hash) registered this iteration
        self.num_evicted = 0  # cached blocks reused for other content, since start

    # ----- the BlockPool interface -----

    @property
    def num_free(self) -> int:
        """Blocks an allocation may take: the free ones and the cached ones (evicted on demand)."""
        return len(self._free) + len(self._cached) + len(self._ranked)

    @property
    def num_cached(self) -> int:
        return len(self._cached) + len(self._ranked)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def allocate(self, num_blocks: int) -> list[int]:
        """`num_blocks` blocks, each with refcount 1: free blocks first, then the least recently
        released cached blocks, then the ranked cached blocks, highest rank first (their hashes
        are dropped: the content is about to change)."""
        assert self.can_allocate(num_blocks), f"allocate({num_blocks}) with {self.num_free} free"
        blocks = []
        for _ in range(num_blocks):
            if self._free:
                block = self._free.popleft()
            else:
                block = self._cached.popitem(last=False)[0] if self._cached else self._pop_ranked()
                self._unpublish(block)
                self.num_evicted += 1
            self._refcount[block] = 1
            blocks.append(block)
        return blocks

    def free(self, blocks: list[int], evict_rank: float | None = None) -> None:
        """Drop one reference to each block. A block left without references becomes cached if
        its hash is published, free otherwise. `blocks` is in logical order: the cached ones are
        released tail first, so a context's tail is evicted before its head (a head serves more
        prompts: everything sharing it). With `evict_rank` the cached ones join the ranked tier
        (see the module docstring), the tail still before the head within the rank."""
        refcount, hash_of, cached = self._refcount, self._hash_of, self._cached
        unnamed = []  # released blocks with no content worth keeping, tail first
        for block in reversed(blocks):
            assert refcount[block] > 0, f"block {block} freed with no reference"
            refcount[block] -= 1
            if refcount[block]:
                continue
            if block not in hash_of:
                unnamed.append(block)
            elif evict_rank is None:
                cached[block] = None
            else:
                self._rank(block, evict_rank)
        self._free.extend(reversed(unnamed))

    def _rank(self, block: int, evict_rank: float) -> None:
        self._ranked[block] = evict_rank
        self._num_releases += 1  # ties: the earlier released goes first (the tail of a context)
        heapq.heappush(self._ranked_heap, (-evict_rank, self._num_releases, block))
        if len(self._ranked_heap) > 2 * len(self._ranked) + 64:  # mostly stale: rebuild, O(n)
            self._ranked_heap = [e for e in self._ranked_heap if self._ranked.get(e[2]) == -e[0]]
            heapq.heapify(self._ranked_heap)

    def _pop_ranked(self) -> int:
        """Take the ranked cached block of the highest rank out of the tier."""
        while True:
            negative_rank, _, block = heapq.heappop(self._ranked_heap)
            if self._ranked.get(block) == -negative_rank:  # else a stale entry
                del self._ranked[block]
                return block

    def free_ids(self) -> list[int]:
        return list(self._free) + list(self._cached) + list(self._ranked)

    # ----- sharing -----

    def refcount(self, block: int) -> int:
        return self._refcount[block]

    def lookup(self, hashes: Sequence[int]) -> list[int]:
        """The published blocks of the longest run of leading `hashes` found."""
        blocks = []
        for chain_hash in hashes:
            block = self._block_of.get(chain_hash)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def share(self, blocks: list[int]) -> None:
        """Add one reference to each published block (a cached one becomes owned again)."""
        for block in blocks:
            assert block in self._hash_of, f"block {block} shared without a published hash"
            if not self._refcount[block]:
                self._uncache(block)
            self._refcount[block] += 1

    def _uncache(self, block: int) -> None:
        """Take a cached block out of its tier (it is about to be owned)."""
        if self._cached.pop(block, False) is False:
            del self._ranked[block]  # its heap entry goes stale

    def register(self, block: int, chain_hash: int) -> None:
        """`block` holds the full chain `chain_hash` once this iteration runs (see publish)."""
        self._pending.append((block, chain_hash))

    def publish(self) -> None:
        """Make this iteration's registered blocks findable. A block whose content another block
        already names stays unnamed (a duplicate, freed plainly when released)."""
        for block, chain_hash in self._pending:
            if self._refcount[block] and block not in self._hash_of and chain_hash not in self._block_of:
                self._hash_of[block] = chain_hash
                self._block_of[chain_hash] = block
        self._pending = []

    def unpublish(self, block: int) -> None:
        """Forget an owned block's name: its owner is about to write into it."""
        assert self._refcount[block], f"block {block} unpublished while not owned"
        self._unpublish(block)

    def forget_all(self) -> None:
        """The device's contents are lost (executor restart): every name goes, cached blocks are free."""
        self._free.extend(self._cached)
        self._free.extend(self._ranked)
        self._cached.clear()
        self._ranked.clear()
        self._ranked_heap = []
        self._hash_of.clear()
        self._block_of.clear()
        self._pending = []

    def _unpublish(self, block: int) -> None:
        chain_hash = self._hash_of.pop(block, None)
        if chain_hash is not None:
            del self._block_of[chain_hash]

    # ----- invariants -----

    def check(self, references: Counter[int]) -> None:
        """free + cached + owned == total; every owned block's refcount is its number of
        `references` (block-table entries); free and cached blocks have none; cached blocks and
        only those with a published hash are findable, each under its own hash."""
        free, cached = set(self._free), set(self._cached) | set(self._ranked)
        assert not set(self._cached) & set(self._ranked), "device pool: a block is cached in both tiers"
        owned = {b for b in range(self.num_total) if self._refcount[b]}
        assert len(free) == len(self._free), "device pool: a block is free twice"
        assert not (free & cached or free & owned or cached & owned), (
            "device pool: a block is in two of free, cached and owned"
        )
        assert len(free) + len(cached) + len(owned) == self.num_total, (
            f"device pool: {len(free)} free + {len(cached)} cached + {len(owned)} owned != {self.num_total}"
        )
        for block in owned | set(references):
            assert self._refcount[block] == references[block], (
                f"device pool: block {block} has refcount {self._refcount[block]} but {references[block]} references"
            )
        assert cached <= set(self._hash_of), "device pool: a cached block has no published hash"
        assert not free & set(self._hash_of), "device pool: a free block still has a published hash"
        for block, chain_hash in self._hash_of.items():
            assert self._block_of[chain_hash] == block, f"device pool: block {block}: hash table disagrees"
        assert len(self._block_of) == len(self._hash_of), "device pool: hash table disagrees"
