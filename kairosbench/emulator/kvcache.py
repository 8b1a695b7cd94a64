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
They must fit a signed 64-bit int and never be -1, which is what Python's ``hash`` returns.

Speed: an agent's context of 100k tokens is 6,250 blocks and every turn touches all of them,
so whole block tables are handled with numpy (reference counts, block hashes) and the LRU
queue deletes lazily (``FreeQueue``); a lookup first checks, vectorised, the blocks the same
agent held last time (``hint``), then falls back to the hash index.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Sequence

import numpy as np

__all__ = ["KVCache", "KVCacheStats", "FreeQueue"]

_NO_HASH = -1  # Python's hash() never returns -1


class KVCacheStats:
    """Counters since start (monotonic)."""

    __slots__ = ("evicted_blocks", "allocated_blocks")

    def __init__(self) -> None:
        self.evicted_blocks = 0
        self.allocated_blocks = 0


class FreeQueue:
    """An LRU queue of block ids with O(1) amortised removal from the middle.

    Entries are appended in chunks (numpy arrays) tagged with each block's generation; taking
    a block out of the queue anywhere just bumps its generation, which turns its entry stale.
    Pops from the head skip stale entries. When stale entries outnumber live ones the queue
    is compacted, so memory stays bounded.
    """

    __slots__ = ("gen", "chunks", "count", "entries", "_n")

    def __init__(self, n: int) -> None:
        self._n = n
        self.gen = np.zeros(n, dtype=np.int64)
        self.chunks: deque[list] = deque()  # [blocks, gens, head offset]
        if n:
            self.chunks.append([np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64), 0])
        self.count = n
        self.entries = n

    def __len__(self) -> int:
        return self.count

    def push(self, blocks: np.ndarray) -> None:
        """Append ``blocks`` (not in the queue) at the tail, in the given order."""
        if not len(blocks):
            return
        gen = self.gen
        gen[blocks] += 1
        self.chunks.append([blocks, gen[blocks], 0])
        self.count += len(blocks)
        self.entries += len(blocks)
        if self.entries > 4 * self._n + 1024:
            self._compact()

    def remove(self, blocks: np.ndarray) -> None:
        """Take ``blocks`` (all in the queue) out of it, wherever they are."""
        if len(blocks):
            self.gen[blocks] += 1
            self.count -= len(blocks)

    def pop(self, n: int) -> np.ndarray:
        """The ``n`` oldest live blocks (caller checked ``n <= len(self)``)."""
        out: list[np.ndarray] = []
        need = n
        gen = self.gen
        chunks = self.chunks
        while need:
            ch = chunks[0]
            blocks, gens, off = ch
            window = min(len(blocks) - off, max(need * 2, 64))
            b = blocks[off : off + window]
            live = b[gen[b] == gens[off : off + window]]
            if len(live) > need:
                # advance just past the need-th live entry
                pos = np.flatnonzero(gen[b] == gens[off : off + window])[need - 1]
                live = live[:need]
                ch[2] = off + pos + 1
            else:
                ch[2] = off + window
            if len(live):
                out.append(live)
                need -= len(live)
            if ch[2] >= len(blocks):
                chunks.popleft()
                self.entries -= len(blocks)
        got = out[0] if len(out) == 1 else np.concatenate(out)
        gen[got] += 1
        self.count -= n
        return got

    def order(self) -> list[int]:
        """Live blocks from head to tail (tests and debugging)."""
        out: list[int] = []
        for blocks, gens, off in self.chunks:
            b = blocks[off:]
            out.extend(b[self.gen[b] == gens[off:]].tolist())
        return out

    def _compact(self) -> None:
        live = np.asarray(self.order(), dtype=np.int64)
        self.chunks.clear()
        if len(live):
            self.chunks.append([live, self.gen[live].copy(), 0])
        self.entries = len(live)


class KVCache:
    """Block pool + prefix-cache index + LRU free queue."""

    __slots__ = ("num_blocks", "block_size", "enable_prefix_caching", "ref_cnt", "bhash", "_free", "cached", "stats")

    def __init__(self, num_blocks: int, block_size: int = 16, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_cnt = np.zeros(num_blocks, dtype=np.int32)
        self.bhash = np.full(num_blocks, _NO_HASH, dtype=np.int64)  # block -> hash it is cached under
        self._free = FreeQueue(num_blocks)
        self.cached: dict[int, int] = {}  # hash -> block; invariant: bhash[cached[h]] == h
        self.stats = KVCacheStats()

    # ---- readings -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks an allocation may take now (never-used, freed, or cached at ref 0)."""
        return self._free.count

    @property
    def num_used(self) -> int:
        return self.num_blocks - self._free.count

    @property
    def usage(self) -> float:
        """vLLM ``kv_cache_usage_perc`` (0..1)."""
        return 1.0 - self._free.count / self.num_blocks

    @property
    def num_cached(self) -> int:
        return len(self.cached)

    def free_order(self) -> list[int]:
        """The free queue head (evicted first) to tail. For tests and debugging."""
        return self._free.order()

    def block_hash(self, block: int) -> int | None:
        h = int(self.bhash[block])
        return None if h == _NO_HASH else h

    # ---- prefix cache ---------------------------------------------------------------------
    def lookup(self, hashes: Sequence[int], max_blocks: int, hint: Sequence[int] | np.ndarray | None = None) -> list[int]:
        """Blocks of the longest cached prefix of ``hashes[:max_blocks]`` (no side effects).

        ``hint``: blocks that probably hold that prefix (the agent's previous block table); they
        are verified in one vectorised comparison, the rest is looked up hash by hash.
        """
        n = min(max_blocks, len(hashes))
        if not self.enable_prefix_caching or n <= 0:
            return []
        out: list[int] = []
        m = 0
        if hint is not None and len(hint):
            k = min(n, len(hint))
            cand = np.asarray(hint[:k], dtype=np.int64)
            want = np.fromiter(islice(hashes, k), dtype=np.int64, count=k)
            ok = self.bhash[cand] == want
            m = k if bool(ok.all()) else int(ok.argmin())
            out = cand[:m].tolist()
        if m < n:
            rest = list(map(self.cached.get, hashes[m:n] if isinstance(hashes, list) else islice(hashes, m, n)))
            try:
                del rest[rest.index(None) :]
            except ValueError:
                pass
            out.extend(rest)  # type: ignore[arg-type]
        return out

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
        self._free.remove(idx[ref[idx] == 0])
        ref[idx] += 1  # a block table never lists a block twice

    def allocate(self, n: int) -> list[int] | None:
        """``n`` fresh blocks from the LRU head (evicting their cached hashes), or None."""
        if n > self._free.count:
            return None
        if n <= 0:
            return []
        got = self._free.pop(n)
        hs = self.bhash[got]
        hashed = hs != _NO_HASH
        if hashed.any():
            gone = hs[hashed].tolist()
            cached = self.cached
            for h in gone:
                del cached[h]
            self.bhash[got[hashed]] = _NO_HASH
            self.stats.evicted_blocks += len(gone)
        self.ref_cnt[got] = 1
        self.stats.allocated_blocks += n
        return got.tolist()

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
        self._free.push(idx[after == 0])

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Register a now-full block under its hash (first writer wins, as in vLLM)."""
        if not self.enable_prefix_caching or block_hash in self.cached or self.bhash[block_id] != _NO_HASH:
            return  # the same content already lives in another block, or this one is registered
        if block_hash == _NO_HASH or not -(2**63) <= block_hash < 2**63:
            raise ValueError(f"block hashes must be 64-bit ints other than -1 (Python hash() values), got {block_hash}")
        self.cached[block_hash] = block_id
        self.bhash[block_id] = block_hash

    def cache_blocks(self, blocks: Sequence[int], hashes: Sequence[int]) -> None:
        """``cache_block`` for parallel sequences (a request's newly full blocks)."""
        for b, h in zip(blocks, hashes):
            self.cache_block(b, h)

    def reset_prefix_cache(self) -> int:
        """Forget every hash of unreferenced blocks (vLLM ``reset_prefix_cache``). Returns count."""
        idle = np.asarray(self._free.order(), dtype=np.int64)
        if not len(idle):
            return 0
        hs = self.bhash[idle]
        hashed = hs != _NO_HASH
        for h in hs[hashed].tolist():
            del self.cached[h]
        self.bhash[idle[hashed]] = _NO_HASH
        return int(hashed.sum())

    def check_invariants(self) -> None:
        """Raise AssertionError if the pool is inconsistent (property tests call this)."""
        ref = self.ref_cnt
        order = self._free.order()
        assert len(order) == len(set(order)) == self._free.count, "free queue has duplicates or a wrong count"
        assert (ref >= 0).all(), "negative reference count"
        assert len(order) + int(np.count_nonzero(ref > 0)) == self.num_blocks, "block neither free nor owned"
        assert all(ref[b] == 0 for b in order), "a free block is referenced"
        for h, b in self.cached.items():
            assert self.bhash[b] == h, f"cache index points at block {b} with another hash"
        assert int(np.count_nonzero(self.bhash != _NO_HASH)) == len(self.cached)
