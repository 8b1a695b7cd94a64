"""The virtual-time driver (kairosbench.sim.engine_sim): agents through agent_flow on engines."""

from __future__ import annotations

import math

import pytest

from kairosbench.emulator.engine import EngineConfig
from kairosbench.replay.flow import FlowOptions
from kairosbench.sim import EngineSimulation, SimConfig, simulate
from kairosbench.sim.engine_sim import SessionStream, SimAgent
from kairosbench.workload.model import Session, Turn, Workload


def _workload(n: int = 6, turns: int = 4, gap_s: float = 2.0) -> Workload:
    sessions = []
    for i in range(n):
        ts = [Turn(appended_tokens=2000 if k == 0 else 300, output_tokens=40 + k, tool_duration_s=1.5) for k in range(turns)]
        sessions.append(Session(f"s{i}", "swe" if i % 2 else "de", i * gap_s, ts))
    return Workload(sessions)


def test_every_session_completes_with_the_trace_token_counts() -> None:
    w = _workload()
    res = simulate(w, SimConfig(gpu="h100-sxm", model="llama-3.1-8b"))
    assert all(s.status == "completed" and s.turns_done == 4 for s in res.sessions)
    by_turn = {(r.session_id, r.turn_index): r for r in res.requests}
    for s in w.sessions:
        for i, (turn, prompt) in enumerate(zip(s.turns, s.prompt_tokens())):
            r = by_turn[(s.session_id, i)]
            assert r.prompt_tokens == prompt and r.output_tokens == turn.output_tokens
            assert r.t_first_token_s is not None and r.t_end_s is not None and r.t_submit_s < r.t_first_token_s <= r.t_end_s
    # tool waits honoured: a turn goes out tool_duration_s after the previous one ended
    r0, r1 = by_turn[("s0", 0)], by_turn[("s0", 1)]
    assert r1.t_submit_s == pytest.approx(r0.t_end_s + 1.5)


def test_later_turns_hit_the_prefix_cache() -> None:
    res = simulate(_workload(), SimConfig(gpu="h100-sxm", model="llama-3.1-8b"))
    later = [r for r in res.requests if r.turn_index > 0]
    # everything but the last partial block of the previous turn and the new 300 tokens is cached
    assert all(r.cached_tokens >= r.prompt_tokens - 300 - 16 - 40 for r in later)
    s = res.summary()
    assert s["prefix_hit_rate"] > 0.5 and s["recomputed_tokens"] == 0


def test_results_are_deterministic_and_macro_steps_change_nothing() -> None:
    w = _workload(n=10)
    a = simulate(w, SimConfig(gpu="h100-nvl"))
    b = simulate(w, SimConfig(gpu="h100-nvl"))
    slow = simulate(w, SimConfig(gpu="h100-nvl", engine=EngineConfig(macro_steps=False)))
    ends = [(r.session_id, r.turn_index, r.t_end_s) for r in a.requests]
    assert ends == [(r.session_id, r.turn_index, r.t_end_s) for r in b.requests]
    for x, y in zip(a.requests, slow.requests):
        assert (x.session_id, x.turn_index) == (y.session_id, y.turn_index)
        assert x.t_end_s == pytest.approx(y.t_end_s, abs=1e-9)
    assert a.summary()["energy_j"] == pytest.approx(slow.summary()["energy_j"], rel=1e-9)


def test_power_series_integrates_to_the_energy_total() -> None:
    res = simulate(_workload(), SimConfig(gpu="h100-sxm", model="llama-3.1-8b", series_bin_s=0.5, duration_s=60.0))
    assert res.t_end_s == 60.0
    series_j = sum(p.power_w * min(0.5, 60.0 - p.t_s) for p in res.power)
    assert series_j == pytest.approx(res.summary()["energy_j"], rel=1e-6)
    assert res.power[-1].energy_j == pytest.approx(res.energy_j_per_instance[0], rel=1e-9)
    idle_tail = [p for p in res.power if p.t_s > 50]
    assert all(p.power_w == pytest.approx(76.0) for p in idle_tail)  # parked after the work


def test_duration_cut_leaves_unfinished_sessions() -> None:
    res = simulate(_workload(n=4, turns=30), SimConfig(gpu="h100-sxm", model="llama-3.1-8b", duration_s=20.0))
    assert {s.status for s in res.sessions} == {"unfinished"}
    assert res.summary()["sessions_completed"] == 0


def test_sticky_and_round_robin_placement() -> None:
    w = _workload(n=4)
    sticky = simulate(w, SimConfig(gpu="h100-sxm", model="llama-3.1-8b", n_instances=2))
    for s in w.sessions:
        assert len({r.instance for r in sticky.requests if r.session_id == s.session_id}) == 1
    rr = simulate(w, SimConfig(gpu="h100-sxm", model="llama-3.1-8b", n_instances=2, placement="round-robin"))
    assert any(len({r.instance for r in rr.requests if r.session_id == s.session_id}) == 2 for s in w.sessions)
    # moving between instances loses the prefix cache
    assert rr.summary()["prefix_hit_rate"] < sticky.summary()["prefix_hit_rate"]


def test_static_clock_per_instance() -> None:
    res = simulate(_workload(), SimConfig(gpu="h100-sxm", model="llama-3.1-8b", n_instances=2, clock_mhz=[990, None]))
    assert set(res.time_at_clock_s) >= {990}
    assert res.summary()["mean_sm_clock_mhz"] > 990


class _Gate(EngineSimulation):
    """A toy policy layer: hold every turn until t = 10 s, then release; log epochs."""

    def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.epochs: list[float] = []
        self.held_max = 0

    def may_dispatch(self, agent: SimAgent, instance: int, t: float) -> bool:
        return t >= 10.0

    def on_epoch(self, t: float) -> None:
        self.epochs.append(t)
        self.held_max = max(self.held_max, len(self.held))


def test_policy_hooks_hold_and_release_agents() -> None:
    sim = _Gate(_workload(n=3), SimConfig(gpu="h100-sxm", model="llama-3.1-8b", epoch_s=1.0))
    res = sim.run()
    assert sim.epochs[:3] == [1.0, 2.0, 3.0]
    assert sim.held_max == 3
    first = min(r.t_submit_s for r in res.requests)
    assert first == pytest.approx(10.0)
    assert all(s.status == "completed" for s in res.sessions)


def test_too_long_context_abandons_the_session() -> None:
    w = Workload([Session("big", "swe", 0.0, [Turn(appended_tokens=5000, output_tokens=10)])])
    res = simulate(w, SimConfig(gpu="h100-sxm", model="llama-3.1-8b", engine=EngineConfig(kv_capacity_tokens=4096, trace_keep_s=None, macro_steps=True)))
    assert res.sessions[0].status == "abandoned"
    assert res.requests[0].status == "too_long"


def test_session_stream_rehashes_after_the_context_shrinks() -> None:
    st = SessionStream("a", "swe", 16)
    h1 = list(st.prepare(640, 640, 100))
    st.finished(640, 100)
    h2 = st.prepare(1000, 260, 10)  # carries all 740 tokens: same leading hashes
    assert h2[: len(h1)] == h1
    st.finished(1000, 10)
    h3 = st.prepare(500, 100, 10)  # condensed to 400 carried tokens: new content from block 25 on
    assert h3[:25] == h1[:25] and h3[25] != h1[25]


def test_time_scale_compresses_arrivals_and_tools() -> None:
    w = _workload(n=2)
    res = simulate(w, SimConfig(gpu="h100-sxm", model="llama-3.1-8b", flow=FlowOptions(time_scale=0.1)))
    by = {(r.session_id, r.turn_index): r for r in res.requests}
    assert by[("s1", 0)].t_submit_s == pytest.approx(0.2)
    assert by[("s0", 1)].t_submit_s == pytest.approx(by[("s0", 0)].t_end_s + 0.15)
    assert not math.isinf(res.summary()["energy_per_completed_agent_kj"])


def test_frames_have_one_row_per_record_with_units() -> None:
    res = simulate(_workload(n=3), SimConfig(gpu="h100-sxm", model="llama-3.1-8b", duration_s=40.0))
    f = res.frames()
    assert len(f["requests"]) == len(res.requests) and {"ttft_s", "e2e_s", "cached_tokens", "recomputed_tokens"} <= set(f["requests"].columns)
    assert len(f["sessions"]) == 3 and "output_tok_s" in f["sessions"].columns
    assert {"power_w", "energy_j", "sm_clock_mhz", "busy_frac"} <= set(f["power"].columns)
