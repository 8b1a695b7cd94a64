"""Property tests for the paged KV allocator and the scheduler that drives it (hypothesis).

Invariants: no block is owned by two requests unless it is the same cached prefix block at the
same position; usage never exceeds capacity; every freed block is accounted for (after all
requests end, every block is back in the free queue).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairosbench.emulator.engine import Engine, EngineConfig
from kairosbench.emulator.kvcache import KVCache
from kairosbench.emulator.request import EngineRequest, RequestState

# ---- the allocator alone, against a reference model --------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 6)),
        st.tuples(st.just("free"), st.integers(0, 50)),
        st.tuples(st.just("hit"), st.integers(0, 50)),
        st.tuples(st.just("cache"), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_allocator_matches_a_reference_model(seq: list[tuple[str, int]]) -> None:
    kv = KVCache(12, 4)
    owners: list[list[int]] = []  # block tables of live "requests"
    next_hash = 1000
    for op, arg in seq:
        if op == "alloc":
            before = kv.num_free
            got = kv.allocate(arg)
            if arg > before:
                assert got is None
            else:
                assert got is not None and len(got) == arg and len(set(got)) == arg
                owners.append(got)
        elif op == "free" and owners:
            table = owners.pop(arg % len(owners))
            kv.free(table)
        elif op == "hit" and owners:
            # another request takes a reference on the cached prefix of an existing table
            table = owners[arg % len(owners)]
            hashes = [kv.block_hash(b) for b in table]
            prefix = []
            for h in hashes:
                if h is None:
                    break
                prefix.append(h)
            blocks = kv.lookup(prefix, len(prefix))
            assert blocks == table[: len(blocks)]
            kv.touch(blocks)
            owners.append(list(blocks))
        elif op == "cache" and owners:
            table = owners[arg % len(owners)]
            for b in table:
                if kv.block_hash(b) is None:
                    kv.cache_block(b, next_hash)
                    next_hash += 1
        kv.check_invariants()
        refs = Counter(b for t in owners for b in t)
        assert all(kv.ref_cnt[b] == n for b, n in refs.items())
        assert kv.num_used == len(refs) <= kv.num_blocks
    for t in owners:
        kv.free(t)
    kv.check_invariants()
    assert kv.num_free == kv.num_blocks


def test_freed_blocks_go_to_the_tail_in_reverse_and_keep_their_hash() -> None:
    kv = KVCache(6, 4)
    a = kv.allocate(3)
    assert a == [0, 1, 2]
    for i, b in enumerate(a):
        kv.cache_block(b, 100 + i)
    kv.free(a)
    assert kv.free_order() == [3, 4, 5, 2, 1, 0]  # never-used first, then a's tail first
    assert kv.lookup([100, 101, 102], 3) == [0, 1, 2]  # still reusable
    kv.allocate(4)  # evicts block 2 (a's tail) after the three never-used ones
    assert kv.lookup([100, 101, 102], 3) == [0, 1]
    assert kv.stats.evicted_blocks == 1


# ---- the scheduler over the allocator: random agents with shared prefixes ----------------------

request_specs = st.lists(
    st.tuples(
        st.integers(0, 3),  # which "agent" (shared prefix family)
        st.integers(1, 300),  # prompt length
        st.integers(1, 60),  # output length
        st.integers(0, 5),  # arrival step
    ),
    min_size=1,
    max_size=14,
)


def _check_ownership(eng: Engine) -> None:
    kv = eng.kv
    kv.check_invariants()
    assert kv.num_used <= kv.num_blocks
    seen: dict[int, tuple[int, int]] = {}
    counts: Counter[int] = Counter()
    for r in eng.scheduler.running:
        for pos, b in enumerate(r.blocks):
            counts[b] += 1
            if b in seen:
                # shared only as the same cached prefix block at the same position
                assert kv.block_hash(b) is not None, f"block {b} owned twice without being a cached prefix"
                assert seen[b][1] == pos
            seen[b] = (id(r), pos)
    for b, n in counts.items():
        assert kv.ref_cnt[b] == n
    for r in eng.scheduler.waiting:
        assert r.blocks == [] and r.num_computed == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_specs, st.integers(8, 40), st.sampled_from([32, 64, 4096]), st.booleans())
def test_scheduler_keeps_block_ownership_consistent(specs, capacity_blocks, budget, macro) -> None:  # type: ignore[no-untyped-def]
    cfg = EngineConfig(kv_capacity_tokens=capacity_blocks * 16, max_num_batched_tokens=budget, max_num_seqs=8, macro_steps=macro)
    eng = Engine("h100-sxm", "llama-3.1-8b", cfg)
    streams = {k: [hash(("agent", k, i)) for i in range(200)] for k in range(4)}
    reqs = []
    pending = sorted(enumerate(specs), key=lambda x: x[1][3])
    t = 0.0
    step = 0
    while pending or eng.has_work:
        while pending and pending[0][1][3] <= step:
            i, (agent, prompt, out, _) = pending.pop(0)
            prompt = min(prompt, eng.max_model_len - out)
            if prompt < 1:
                continue
            r = EngineRequest(i, prompt, out, streams[agent], stream_key=agent)
            eng.add_request(r, t)
            reqs.append(r)
        nxt = eng.next_event_time()
        if nxt is None:
            step += 1
            continue
        t = nxt
        eng.step_until(t)
        _check_ownership(eng)
        step += 1
        assert step < 100_000
    assert all(r.state is RequestState.FINISHED and r.num_output == r.max_tokens for r in reqs)
    eng.kv.check_invariants()
    assert eng.kv.num_free == eng.kv.num_blocks  # every freed block accounted for
    st_ = eng.stats
    assert st_.prefix_hits_tokens <= st_.prefix_queries_tokens
    assert st_.generation_tokens == sum(r.max_tokens for r in reqs)
