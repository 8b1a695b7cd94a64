"""Paged KV-cache block pool with automatic prefix caching, as vLLM V1 keeps it.

Why this shape (ANCHORS §5.2, vLLM ``block_pool.py`` / ``kv_cache_manager.py``):

* The pool has ``num_blocks`` fixed-size blocks. A block is *owned* by every running request
  whose block table lists it (``ref_cnt`` counts them; shared prefix blocks have ref > 1).
* A block whose tokens are all computed gets a **hash** chained over its parent's hash and its
  own token ids, and is registered in ``cached`` (hash -> block). That is what lets the next
  turn of an agent, whose prompt starts with the whole previous conversation, skip prefill.
* When a request finishes or is preempted its blocks are freed **in reverse order** (tail
  first) to the tail of an LRU free queue, *keeping their hash*: they stay reusable until an
  allocation pops them from the head of the queue, which evicts the hash. So under pressure the
  least-recently-used idle agent loses the *end* of its context first, and its next turn must
  re-prefill that suffix: the thrashing loop KAIROS exploits.
* ``usage`` is vLLM's ``kv_cache_usage_perc``: 1 - free/total, where cached-but-unreferenced
  blocks count as free (they are evictable).

Pure data structure: no clocks, no IO. Hashes are opaque ints supplied by the caller (the
server hashes words, the simulator hashes (session, position)); see ``engine.EngineRequest``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence

__all__ = ["KVCache", "KVCacheStats"]


class KVCacheStats:
    """Counters since start (monotonic). Tokens unless named blocks."""

    __slots__ = ("queries_tokens", "hits_tokens", "evicted_blocks", "allocated_blocks")

    def __init__(self) -> None:
        self.queries_tokens = 0
        self.hits_tokens = 0
        self.evicted_blocks = 0
        self.allocated_blocks = 0


class KVCache:
    """Block pool + prefix-cache index + LRU free queue."""

    __slots__ = ("num_blocks", "block_size", "enable_prefix_caching", "ref_cnt", "block_hash", "_free", "cached", "stats")

    def __init__(self, num_blocks: int, block_size: int = 16, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_cnt: list[int] = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        # Insertion order is LRU order: popitem(last=False) is the next block to (re)use.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}
        self.stats = KVCacheStats()

    # ---- readings -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks an allocation may take now (never-used, freed, or cached at ref 0)."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc`` (0..1)."""
        return 1.0 - len(self._free) / self.num_blocks

    @property
    def num_cached(self) -> int:
        return len(self.cached)

    def free_order(self) -> list[int]:
        """The free queue head (evicted first) to tail. For tests and debugging."""
        return list(self._free)

    # ---- prefix cache ---------------------------------------------------------------------
    def lookup(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Blocks of the longest cached prefix of ``hashes[:max_blocks]`` (no side effects)."""
        if not self.enable_prefix_caching:
            return []
        cached = self.cached
        out: list[int] = []
        n = min(max_blocks, len(hashes))
        for i in range(n):
            bid = cached.get(hashes[i])
            if bid is None:
                break
            out.append(bid)
        return out

    def num_evictable(self, blocks: Iterable[int]) -> int:
        """How many of ``blocks`` sit in the free queue (touching them shrinks ``num_free``)."""
        ref = self.ref_cnt
        return sum(1 for b in blocks if ref[b] == 0)

    def touch(self, blocks: Iterable[int]) -> None:
        """Take a reference on cache-hit blocks, pulling idle ones out of the free queue."""
        ref = self.ref_cnt
        free = self._free
        for b in blocks:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1

    def allocate(self, n: int) -> list[int] | None:
        """``n`` fresh blocks from the LRU head (evicting their cached hashes), or None."""
        free = self._free
        if n > len(free):
            return None
        if n <= 0:
            return []
        out: list[int] = []
        ref = self.ref_cnt
        bhash = self.block_hash
        cached = self.cached
        evicted = 0
        for _ in range(n):
            b, _unused = free.popitem(last=False)
            h = bhash[b]
            if h is not None:
                if cached.get(h) == b:
                    del cached[h]
                bhash[b] = None
                evicted += 1
            ref[b] = 1
            out.append(b)
        self.stats.evicted_blocks += evicted
        self.stats.allocated_blocks += n
        return out

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference on each block, tail first; unreferenced blocks become evictable
        at the queue tail with their hash kept."""
        ref = self.ref_cnt
        free = self._free
        for i in range(len(blocks) - 1, -1, -1):
            b = blocks[i]
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                free[b] = None
            elif r < 0:  # pragma: no cover - an invariant breach is a bug, fail loudly
                raise RuntimeError(f"block {b} freed more often than referenced")

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Register a now-full block under its hash (first writer wins, as in vLLM)."""
        if not self.enable_prefix_caching or self.block_hash[block_id] is not None:
            return
        if block_hash in self.cached:
            return  # the same content already lives in another block; this one stays anonymous
        self.cached[block_hash] = block_id
        self.block_hash[block_id] = block_hash

    def reset_prefix_cache(self) -> int:
        """Forget every hash of unreferenced blocks (vLLM ``reset_prefix_cache``). Returns count."""
        n = 0
        for b in list(self._free):
            h = self.block_hash[b]
            if h is not None:
                if self.cached.get(h) == b:
                    del self.cached[h]
                self.block_hash[b] = None
                n += 1
        return n

    def check_invariants(self) -> None:
        """Raise AssertionError if the pool is inconsistent (property tests call this)."""
        free = self._free
        assert len(free) + sum(1 for r in self.ref_cnt if r > 0) == self.num_blocks, "block neither free nor owned"
        for b in free:
            assert self.ref_cnt[b] == 0, f"block {b} is free but referenced"
        for h, b in self.cached.items():
            assert self.block_hash[b] == h, f"cache index points at block {b} with another hash"
        assert all(r >= 0 for r in self.ref_cnt)
