"""The engine model on a virtual clock: scheduling, prefix caching, preemption, timing, power."""

from __future__ import annotations

import pytest

from kairosbench.emulator.engine import Engine, EngineConfig, RequestTooLong, StepOutput
from kairosbench.emulator.presets import GPU_PRESETS, MODEL_PRESETS, cache_layout
from kairosbench.emulator.request import EngineRequest, RequestState


def _hashes(key: object, n_tokens: int, bs: int = 16) -> list[int]:
    return [hash((key, i)) for i in range(n_tokens // bs)]


def _drain(eng: Engine, until: float = 1e9) -> list[StepOutput]:
    outs: list[StepOutput] = []
    while True:
        t = eng.next_event_time()
        if t is None or t > until:
            return outs
        outs += eng.step_until(t)


def test_single_request_produces_exactly_max_tokens_at_step_ends() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b")
    req = EngineRequest("a", 100, 5, _hashes("a", 105))
    eng.add_request(req, 0.0)
    outs = _drain(eng)
    token_times = [o.t_end for o in outs for r in o.tokens if r is req]
    assert len(token_times) == 5
    assert token_times == sorted(token_times)
    assert req.state is RequestState.FINISHED and req.num_output == 5
    assert req.first_token_s == token_times[0] and req.finish_s == token_times[-1]
    assert eng.kv.num_used == 0  # all blocks back in the free queue
    assert eng.idle and eng.next_event_time() is None


def test_simultaneous_arrivals_share_the_first_step() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b")
    a, b = EngineRequest("a", 50, 3, _hashes("a", 53)), EngineRequest("b", 60, 3, _hashes("b", 63))
    eng.add_request(a, 1.0)
    eng.add_request(b, 1.0)
    first = eng.step_until(eng.next_event_time() or 0.0)
    assert first == []  # planning happens at t=1.0; the step ends later
    outs = _drain(eng)
    assert outs[0].t_start == 1.0 and outs[0].num_scheduled == 2


def test_prefix_cache_hits_next_turn_of_the_same_stream() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b")
    stream = _hashes("agent", 4000)
    t1 = EngineRequest("t1", 1000, 200, stream, stream_key="agent")
    eng.add_request(t1, 0.0)
    _drain(eng)
    # next turn: previous prompt + reply + 300 new tokens
    t2 = EngineRequest("t2", 1500, 50, stream, stream_key="agent")
    eng.add_request(t2, 10.0)
    _drain(eng)
    # everything computed before (1199 tokens -> 74 full blocks) is a hit
    assert t2.cached_tokens == (1199 // 16) * 16
    assert eng.stats.prefix_hits_tokens == t2.cached_tokens
    assert eng.stats.recomputed_tokens == 0


def test_chunked_prefill_respects_token_budget() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b", EngineConfig(max_num_batched_tokens=512))
    req = EngineRequest("long", 2000, 2, _hashes("long", 2002))
    eng.add_request(req, 0.0)
    outs = _drain(eng)
    assert [o.prefill_tokens for o in outs[:4]] == [512, 512, 512, 464]
    assert outs[3].tokens == [req]  # the first token comes with the last prefill chunk


def test_preemption_recompute_newest_first_when_kv_runs_out() -> None:
    # 40 blocks = 640 tokens: three requests that each grow to ~300 tokens cannot all stay.
    eng = Engine("h100-sxm", "llama-3.1-8b", EngineConfig(kv_capacity_tokens=640))
    reqs = [EngineRequest(i, 100, 200, _hashes(i, 300)) for i in range(3)]
    for r in reqs:
        eng.add_request(r, 0.0)
    outs = _drain(eng)
    first_victim = next(o.preempted[0] for o in outs if o.preempted)
    assert first_victim is reqs[2]  # newest running request goes first
    assert eng.stats.preemptions >= 1
    assert eng.stats.preempt_recompute_tokens > 0
    assert all(r.state is RequestState.FINISHED and r.num_output == 200 for r in reqs)
    eng.kv.check_invariants()
    assert eng.kv.num_used == 0


def test_evicted_context_counts_as_reprefill() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b", EngineConfig(kv_capacity_tokens=1024))
    a_stream = _hashes("a", 4000)
    eng.add_request(EngineRequest("a1", 600, 10, a_stream, stream_key="a"), 0.0)
    _drain(eng)
    # another agent fills the cache and evicts a's idle blocks
    eng.add_request(EngineRequest("b1", 900, 10, _hashes("b", 910), stream_key="b"), 5.0)
    _drain(eng)
    a2 = EngineRequest("a2", 700, 10, a_stream, stream_key="a")
    eng.add_request(a2, 10.0)
    _drain(eng)
    assert a2.cached_tokens < 600
    assert eng.stats.evicted_reprefill_tokens == a2.recomputed_tokens > 0


def test_request_longer_than_the_pool_is_refused() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b", EngineConfig(kv_capacity_tokens=1024))
    with pytest.raises(RequestTooLong, match="maximum context length is 1024"):
        eng.add_request(EngineRequest("x", 1000, 100, ()), 0.0)


def test_abort_frees_blocks_at_step_end() -> None:
    eng = Engine("h100-sxm", "llama-3.1-8b")
    req = EngineRequest("a", 500, 100, _hashes("a", 600))
    eng.add_request(req, 0.0)
    outs = eng.step_until(0.0)  # plans the first step
    assert outs == [] and req.in_flight
    eng.abort(req, 0.001)
    _drain(eng)
    assert req.state is RequestState.ABORTED and eng.kv.num_used == 0
    assert eng.stats.aborted_requests == 1


def test_kv_layout_arithmetic_matches_the_documented_formula() -> None:
    gpu, model = GPU_PRESETS["h100-sxm"], MODEL_PRESETS["qwen3-coder-30b-a3b-fp8"]
    lay = cache_layout(gpu, model)
    assert model.kv_bytes_per_token == 48 * 4 * 128 * 2 * 2 == 98304
    pool = gpu.memory_bytes * 0.9 - model.weight_bytes - model.reserve_bytes
    assert lay.num_gpu_blocks == int(pool // (16 * 98304))
    assert lay.kv_capacity_tokens == lay.num_gpu_blocks * 16


def test_locked_clock_slows_prefill_but_not_small_decode() -> None:
    def run(clock: int | None) -> tuple[float, float]:
        eng = Engine("h100-sxm", "llama-3.1-8b")
        if clock:
            eng.set_clock(clock, 0.0)
        req = EngineRequest("a", 8000, 50, _hashes("a", 8050))
        eng.add_request(req, 1.0)
        outs = _drain(eng)
        prefill = sum(o.t_end - o.t_start for o in outs if o.prefill_tokens)
        decode = [o.t_end - o.t_start for o in outs if not o.prefill_tokens]
        return prefill, sum(decode) / len(decode)

    p_hi, d_hi = run(None)
    p_lo, d_lo = run(990)
    assert p_lo > 1.3 * p_hi  # compute-bound: ~1/f (the power cap already held f_max back)
    assert d_lo < 1.1 * d_hi  # memory-bound decode barely moves


def test_energy_counter_never_goes_back() -> None:
    """NVML's energy counter is monotonic; the emulator's reading must be too (the profiler
    treats a drop as a counter wrap or reset)."""
    from kairosbench.emulator.gpu import EmulatedGpu
    from kairosbench.emulator.presets import GPU_PRESETS

    gpu = EmulatedGpu(GPU_PRESETS["h100-sxm"])
    last = -1
    t = 0.0
    for i in range(3000):
        t += 0.013 + (i % 7) * 0.003
        gpu.fill_idle(t)
        mj = int(gpu.reading(t).energy_j * 1000.0)
        assert mj >= last
        last = mj
