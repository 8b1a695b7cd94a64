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

from collections import OrderedDict, deque
from itertools import islice, repeat
from typing import Iterable, Sequence

import numpy as np

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
    """Block pool + prefix-cache index + LRU free queue.

    Bulk operations over a request's block table (lookup, touch, free, allocate) run at C
    speed (``map`` over dict methods, numpy reference counts): a 100k-token agent context is
    6,250 blocks, and every turn of every agent touches all of them.
    """

    __slots__ = ("num_blocks", "block_size", "enable_prefix_caching", "ref_cnt", "hash_of", "_free", "cached", "stats")

    def __init__(self, num_blocks: int, block_size: int = 16, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_cnt = np.zeros(num_blocks, dtype=np.int32)
        self.hash_of: dict[int, int] = {}  # block -> its hash, for blocks registered in ``cached``
        # Insertion order is LRU order: the first key is the next block to (re)use.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}  # hash -> block; invariant: hash_of[cached[h]] == h
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

    def block_hash(self, block: int) -> int | None:
        return self.hash_of.get(block)

    # ---- prefix cache ---------------------------------------------------------------------
    def lookup(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Blocks of the longest cached prefix of ``hashes[:max_blocks]`` (no side effects)."""
        n = min(max_blocks, len(hashes))
        if not self.enable_prefix_caching or n <= 0:
            return []
        found = list(map(self.cached.get, islice(hashes, n)))
        try:
            del found[found.index(None) :]
        except ValueError:
            pass
        return found  # type: ignore[return-value]

    def num_evictable(self, blocks: Sequence[int]) -> int:
        """How many of ``blocks`` sit in the free queue (touching them shrinks ``num_free``)."""
        if not blocks:
            return 0
        return int(np.count_nonzero(self.ref_cnt[np.asarray(blocks, dtype=np.int64)] == 0))

    def touch(self, blocks: Sequence[int]) -> None:
        """Take a reference on cache-hit blocks, pulling idle ones out of the free queue."""
        if not blocks:
            return
        idx = np.asarray(blocks, dtype=np.int64)
        ref = self.ref_cnt
        idle = idx[ref[idx] == 0]
        if len(idle):
            deque(map(self._free.__delitem__, idle.tolist()), maxlen=0)
        ref[idx] += 1  # a block table never lists a block twice

    def allocate(self, n: int) -> list[int] | None:
        """``n`` fresh blocks from the LRU head (evicting their cached hashes), or None."""
        free = self._free
        if n > len(free):
            return None
        if n <= 0:
            return []
        if n == 1:  # the decode hot path
            b, _unused = free.popitem(last=False)
            out = [b]
        else:
            out = list(islice(free, n))
            deque(map(free.__delitem__, out), maxlen=0)
        if self.hash_of:
            gone = [h for h in map(self.hash_of.pop, out, repeat(None)) if h is not None]
            if gone:
                deque(map(self.cached.__delitem__, gone), maxlen=0)
                self.stats.evicted_blocks += len(gone)
        if n == 1:
            self.ref_cnt[out[0]] = 1
        else:
            self.ref_cnt[np.asarray(out, dtype=np.int64)] = 1
        self.stats.allocated_blocks += n
        return out

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference on each block, tail first; unreferenced blocks become evictable
        at the queue tail with their hash kept."""
        if not blocks:
            return
        idx = np.asarray(blocks, dtype=np.int64)[::-1]
        ref = self.ref_cnt
        ref[idx] -= 1
        after = ref[idx]
        if after.min() < 0:  # pragma: no cover - an invariant breach is a bug, fail loudly
            raise RuntimeError("a block was freed more often than referenced")
        zero = idx[after == 0]
        if len(zero):
            self._free.update(dict.fromkeys(zero.tolist()))

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Register a now-full block under its hash (first writer wins, as in vLLM)."""
        if not self.enable_prefix_caching or block_id in self.hash_of or block_hash in self.cached:
            return  # already registered, or the same content lives in another block
        self.cached[block_hash] = block_id
        self.hash_of[block_id] = block_hash

    def reset_prefix_cache(self) -> int:
        """Forget every hash of unreferenced blocks (vLLM ``reset_prefix_cache``). Returns count."""
        n = 0
        for b in list(self._free):
            h = self.hash_of.pop(b, None)
            if h is not None:
                del self.cached[h]
                n += 1
        return n

    def check_invariants(self) -> None:
        """Raise AssertionError if the pool is inconsistent (property tests call this)."""
        free = self._free
        ref = self.ref_cnt
        assert (ref >= 0).all(), "negative reference count"
        assert len(free) + int(np.count_nonzero(ref > 0)) == self.num_blocks, "block neither free nor owned"
        for b in free:
            assert ref[b] == 0, f"block {b} is free but referenced"
        for h, b in self.cached.items():
            assert self.hash_of.get(b) == h, f"cache index points at block {b} with another hash"
        assert len(self.hash_of) == len(self.cached)
