"""A vLLM-V1-like continuous-batching scheduler over the paged KV cache.

Per step (vLLM ``v1/core/sched/scheduler.py``, ANCHORS §5.2):

1. **Running requests first**, in admission order, within a token budget
   (``max_num_batched_tokens``). A decoding request asks for 1 token; one still in (chunked)
   prefill asks for the rest of its prompt, clipped to the budget. When its new blocks do not
   fit, the **newest running request is preempted** (blocks freed tail-first, progress reset
   to 0, prepended to the waiting queue), repeatedly, until it fits or is itself the victim.
2. **Waiting requests** (FCFS) only if nothing was preempted this step, while the budget and
   ``max_num_seqs`` allow: look up the longest cached prefix (at most ``num_tokens - 1``
   tokens, so at least one token is computed), allocate the rest (chunked), else stop.
3. After the step: computed counters advance, newly full blocks are registered in the prefix
   cache, requests whose known tokens are all computed sample one token, and finished ones
   free their blocks (tail-first).

Recompute accounting (not a vLLM metric; the thrashing signal KAIROS names):
``preempt_recompute_tokens`` counts tokens a resumed request computes again that it had
computed before its preemption (minus what its own cached blocks still cover);
``evicted_reprefill_tokens`` counts tokens of an agent's earlier context (same
``stream_key``) that had been computed on this engine but were evicted before its next turn.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
import numpy as np

from kairosbench.emulator.kvcache import KVCache
from kairosbench.emulator.request import EngineRequest, RequestState
from kairosbench.emulator.roofline import StepWork

__all__ = ["Scheduler", "Batch", "SchedulerStats"]

_STREAM_MEMORY = 16384  # agents remembered for re-prefill accounting and lookup hints (LRU)


@dataclass(slots=True)
class SchedulerStats:
    """Monotonic counters (tokens unless named otherwise)."""

    preemptions: int = 0
    preempt_recompute_tokens: int = 0
    evicted_reprefill_tokens: int = 0
    prefix_queries_tokens: int = 0
    prefix_hits_tokens: int = 0
    prompt_tokens: int = 0  # prompt length of requests that produced their first token
    generation_tokens: int = 0
    prefill_tokens_computed: int = 0  # all prompt-side tokens computed (incl. recompute)
    finished_requests: int = 0
    aborted_requests: int = 0
    steps: int = 0

    @property
    def recomputed_tokens(self) -> int:
        return self.preempt_recompute_tokens + self.evicted_reprefill_tokens


@dataclass(slots=True)
class Batch:
    """One step's schedule: parallel lists of requests and their new-token counts."""

    reqs: list[EngineRequest] = field(default_factory=list)
    n_new: list[int] = field(default_factory=list)
    work: StepWork = field(default_factory=StepWork)
    preempted: list[EngineRequest] = field(default_factory=list)


class Scheduler:
    """Queues + KV cache; ``schedule()`` plans a step, ``complete()`` applies its results."""

    def __init__(self, kv: KVCache, *, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.kv = kv
        self.block_size = kv.block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.stats = SchedulerStats()
        # per agent: how far its context got on this engine, and the blocks that held it
        self._stream_seen: OrderedDict[object, tuple[int, np.ndarray]] = OrderedDict()

    # ---- queue edits ----------------------------------------------------------------------
    def add(self, req: EngineRequest) -> None:
        req.state = RequestState.WAITING
        self.waiting.append(req)

    def abort(self, req: EngineRequest) -> bool:
        """Abort now if possible; a request inside the in-flight step is freed by ``complete``.

        Returns True when the request's blocks were released now.
        """
        if req.done:
            return False
        if req.in_flight:
            req.abort_requested = True
            return False
        if req.state == RequestState.WAITING:
            try:
                self.waiting.remove(req)
            except ValueError:
                pass
        else:
            try:
                self.running.remove(req)
            except ValueError:
                pass
        self._release(req, RequestState.ABORTED, "abort")
        self.stats.aborted_requests += 1
        return True

    def forget_stream(self, stream_key: object) -> None:
        """An agent finished: stop remembering how far its context got."""
        self._stream_seen.pop(stream_key, None)

    # ---- the step ---------------------------------------------------------------------------
    def schedule(self) -> Batch:
        bs = self.block_size
        kv = self.kv
        budget = self.max_num_batched_tokens
        batch = Batch()
        reqs, n_new, w = batch.reqs, batch.n_new, batch.work
        running = self.running
        tokens = seqs = sampled = prefill = kv_tokens = 0
        pairs = dpairs = 0.0

        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            c = req.num_computed
            total = req.prompt_len + req.num_output
            n = total - c
            if n > budget:
                n = budget
            if n <= 0:  # pragma: no cover - a running request always has a token to compute
                i += 1
                continue
            need = (c + n + bs - 1) // bs - len(req.blocks)
            if need > 0:
                new = kv.allocate(need)
                while new is None:
                    victim = running.pop()
                    self._preempt(victim)
                    batch.preempted.append(victim)
                    if victim is req:
                        break
                    new = kv.allocate(need)
                if new is None:
                    break  # req preempted itself; it was the last running request
                req.blocks.extend(new)
            reqs.append(req)
            n_new.append(n)
            budget -= n
            tokens += n
            seqs += 1
            kv_tokens += c
            if n == 1:
                dpairs += c + 1
            else:
                pairs += n * (c + (n + 1) * 0.5)
            if c + n == total:
                sampled += 1
            if n > 1 or c < req.prompt_len:
                prefill += n
            i += 1

        if not batch.preempted:
            waiting = self.waiting
            max_seqs = self.max_num_seqs
            st = self.stats
            while waiting and budget > 0 and len(running) < max_seqs:
                req = waiting[0]
                total = req.prompt_len + req.num_output
                max_hit = (total - 1) // bs
                prev = self._stream_seen.get(req.stream_key) if req.stream_key is not None else None
                hint = req.hint_blocks if req.hint_blocks is not None else (prev[1] if prev else None)
                hit = kv.lookup(req.block_hashes, max_hit, hint)
                req.hint_blocks = None
                hit_tokens = len(hit) * bs
                n = total - hit_tokens
                if n > budget:
                    n = budget
                need = (hit_tokens + n + bs - 1) // bs - len(hit)
                if need + kv.num_evictable(hit) > kv.num_free:
                    break
                kv.touch(hit)
                new = kv.allocate(need)
                assert new is not None
                waiting.popleft()
                hit.extend(new)
                req.blocks = hit
                req.num_computed = hit_tokens
                req.num_hashed_blocks = hit_tokens // bs
                req.state = RequestState.RUNNING
                running.append(req)
                # accounting at admission
                st.prefix_queries_tokens += total
                st.prefix_hits_tokens += hit_tokens
                if req.max_computed > 0:  # resumed after preemption
                    lost = req.max_computed - hit_tokens
                    if lost > 0:
                        st.preempt_recompute_tokens += lost
                        req.recomputed_tokens += lost
                    req.max_computed = 0
                else:
                    req.cached_tokens = hit_tokens
                    if prev is not None:
                        seen = prev[0]
                        if seen:
                            expected = min(seen // bs, max_hit) * bs
                            lost = expected - hit_tokens
                            if lost > 0:
                                st.evicted_reprefill_tokens += lost
                                req.recomputed_tokens += lost
                c = hit_tokens
                reqs.append(req)
                n_new.append(n)
                budget -= n
                tokens += n
                seqs += 1
                kv_tokens += c
                if n == 1:
                    dpairs += c + 1
                else:
                    pairs += n * (c + (n + 1) * 0.5)
                if c + n == total:
                    sampled += 1
                prefill += n

        w.tokens, w.seqs, w.sampled, w.prefill_tokens, w.kv_tokens = tokens, seqs, sampled, prefill, kv_tokens
        w.attn_pairs, w.decode_attn_pairs = pairs, dpairs
        for r in reqs:
            r.in_flight = True
        return batch

    def decode_run_length(self, batch: Batch, limit: int) -> int:
        """How many steps, starting with ``batch``, are pure decodes of every running request
        with nothing else able to change: no finish before the last, enough free blocks, no
        admission possible (it just failed, and decoding only consumes blocks). 1 when ``batch``
        is not such a step. The simulator runs that many steps as one (``complete_run``)."""
        reqs = batch.reqs
        w = batch.work
        if limit <= 1 or batch.preempted or w.prefill_tokens or len(reqs) != len(self.running) or w.sampled != len(reqs):
            return 1
        k = min(limit, min(r.max_tokens - r.num_output for r in reqs))
        if k <= 1:
            return 1
        bs = self.block_size
        rho = [r.num_computed % bs for r in reqs]
        free = self.kv.num_free

        def needed(j: int) -> int:  # blocks steps 1..j allocate, beyond what step 0 holds
            return sum((x + j) // bs for x in rho)

        if needed(k - 1) <= free:
            return k
        lo, hi = 0, k - 1  # needed(lo) <= free < needed(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if needed(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo + 1

    def complete_run(self, batch: Batch, k: int, t_end: float) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """Apply ``k`` pure-decode steps of ``batch`` at once (see ``decode_run_length``).

        Blocks are taken from the LRU head in the order single steps would take them (by step,
        then by running order), so evictions match step-by-step execution."""
        if k <= 1:
            return self.complete(batch, t_end)
        bs = self.block_size
        kv = self.kv
        reqs = batch.reqs
        events: list[tuple[int, int]] = []
        for idx, req in enumerate(reqs):
            if req.abort_requested:
                continue
            rho = req.num_computed % bs
            j = bs - rho if rho else bs
            while j < k:
                events.append((j, idx))
                j += bs
        if events:
            events.sort()
            new = kv.allocate(len(events))
            if new is None:  # pragma: no cover - decode_run_length guarantees the blocks
                raise RuntimeError("decode run ran out of KV blocks")
            for (_j, idx), b in zip(events, new):
                reqs[idx].blocks.append(b)
        st = self.stats
        st.steps += k
        got: list[EngineRequest] = []
        done: list[EngineRequest] = []
        for req in reqs:
            req.in_flight = False
            if req.abort_requested:
                done.append(req)
                continue
            c = req.num_computed + k
            req.num_computed = c
            full = min(c // bs, len(req.block_hashes))
            if full > req.num_hashed_blocks:
                blocks, hashes = req.blocks, req.block_hashes
                for j in range(req.num_hashed_blocks, full):
                    kv.cache_block(blocks[j], hashes[j])
                req.num_hashed_blocks = full
            req.num_output += k
            req.last_token_s = t_end
            st.generation_tokens += k
            got.append(req)
            if req.num_output >= req.max_tokens:
                done.append(req)
        self._finish(done, t_end)
        return got, done

    def complete(self, batch: Batch, t_end: float) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """Apply a finished step at ``t_end``: returns (requests that got a token, finished)."""
        bs = self.block_size
        kv = self.kv
        st = self.stats
        st.steps += 1
        st.prefill_tokens_computed += batch.work.prefill_tokens
        got: list[EngineRequest] = []
        done: list[EngineRequest] = []
        for req, n in zip(batch.reqs, batch.n_new):
            req.in_flight = False
            if req.abort_requested:
                done.append(req)
                continue
            c = req.num_computed + n
            req.num_computed = c
            full = c // bs
            hashes = req.block_hashes
            if full > len(hashes):
                full = len(hashes)
            if full > req.num_hashed_blocks:
                blocks = req.blocks
                for j in range(req.num_hashed_blocks, full):
                    kv.cache_block(blocks[j], hashes[j])
                req.num_hashed_blocks = full
            if c >= req.prompt_len + req.num_output:
                if req.num_output == 0:
                    req.first_token_s = t_end
                    st.prompt_tokens += req.prompt_len
                req.num_output += 1
                req.last_token_s = t_end
                st.generation_tokens += 1
                got.append(req)
                if req.num_output >= req.max_tokens:
                    done.append(req)
        self._finish(done, t_end)
        return got, done

    def _finish(self, done: list[EngineRequest], t_end: float) -> None:
        st = self.stats
        if done:
            gone = set()
            for req in done:
                gone.add(id(req))
                if req.abort_requested:
                    self._release(req, RequestState.ABORTED, "abort")
                    st.aborted_requests += 1
                else:
                    req.finish_s = t_end
                    self._release(req, RequestState.FINISHED, req.finish_reason or "length")
                    st.finished_requests += 1
            self.running = [r for r in self.running if id(r) not in gone]

    # ---- helpers ----------------------------------------------------------------------------
    def _remember(self, req: EngineRequest) -> None:
        key = req.stream_key
        if key is None:
            return
        seen = self._stream_seen
        prev = seen.get(key)
        pos = max(req.num_computed, req.max_computed)
        if prev is None or pos >= prev[0]:
            seen[key] = (pos, np.asarray(req.blocks, dtype=np.int32))  # 4 bytes a block, not ~36
            seen.move_to_end(key)
            if len(seen) > _STREAM_MEMORY:
                seen.popitem(last=False)

    def _preempt(self, req: EngineRequest) -> None:
        self.kv.free(req.blocks)
        req.hint_blocks = req.blocks  # where its context is, while nobody evicts it
        req.blocks = []
        req.max_computed = max(req.max_computed, req.num_computed)
        req.num_computed = 0
        req.num_hashed_blocks = 0
        req.preemptions += 1
        req.state = RequestState.WAITING
        self.waiting.appendleft(req)
        self.stats.preemptions += 1

    def _release(self, req: EngineRequest, state: RequestState, reason: str) -> None:
        self._remember(req)
        if req.blocks:
            self.kv.free(req.blocks)
            req.blocks = []
        req.state = state
        req.finish_reason = reason
        req.abort_requested = False
