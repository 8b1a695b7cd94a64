"""KAIROS on hand-made snapshots: clock rises with context, holds at β/γ, consolidates, migrates rarely, boosts on SLO miss."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers import AgentPhase, InstanceView, Snapshot
from controllers.testing import H100_NVL_CLOCKS_MHZ, agent, instance
from controllers.testing import snapshot as snap
from controllers.kairos import KairosAdmission, KairosClock, KairosParams, KairosPolicy, KairosRouter, kairos_level_frac

H100_NVL = H100_NVL_CLOCKS_MHZ
CAP = 100_000


def inst(k: int, ctx: int = 0, agents: int = 0, *, cap: int = CAP, clocks: tuple[int, ...] = H100_NVL, sm: float | None = None, **kw) -> InstanceView:
    return instance(k, ctx, agents, capacity_tokens=cap, clocks_mhz=clocks, sm_clock_mhz=sm, **kw)


def clock_of(policy: KairosClock, s: Snapshot, k: int = 0) -> int:
    return {c.instance_id: c.sm_clock_mhz for c in policy.clocks(s)}[f"i{k}"]


def test_clock_rises_monotonically_as_context_fills() -> None:
    policy = KairosClock()
    clocks = []
    for frac in [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.74, 0.75, 0.9, 1.0]:
        s = snap(inst(0, int(frac * CAP), 4), agents=(agent("a", 0),))
        clocks.append(clock_of(policy, s))
    assert clocks == sorted(clocks)
    assert clocks[0] == 900  # 0.54 x 1680 = 907 -> nearest 15 MHz step, the paper's sweet spot
    assert clocks[-1] > clocks[0]
    # α = 0.75 switches to the protective high clock (0.9 x 1680 = 1512)
    assert clocks[clocks.index(clocks[9])] == 1515 and clocks[8] < clocks[9]


@given(st.floats(0, 1.5), st.floats(0, 1.5))
def test_level_fraction_is_monotone(u1: float, u2: float) -> None:
    p = KairosParams()
    lo, hi = sorted((u1, u2))
    assert kairos_level_frac(lo, p) <= kairos_level_frac(hi, p)


def test_slo_boost_to_max_and_latch() -> None:
    policy = KairosClock()
    slow = (agent("a", 0, rate=50.0), agent("b", 0, rate=12.0), agent("c", 0, rate=60.0))
    assert clock_of(policy, snap(inst(0, 10_000, 3), agents=slow)) == 1680
    assert "SLO boost" in policy.last_notes["i0"]
    # Just above τ: the latch holds the boost until P5 ≥ τ·1.1.
    just = (agent("a", 0, rate=21.0), agent("b", 0, rate=21.0))
    assert clock_of(policy, snap(inst(0, 10_000, 2), agents=just)) == 1680
    fine = (agent("a", 0, rate=30.0), agent("b", 0, rate=30.0))
    assert clock_of(policy, snap(inst(0, 10_000, 2), agents=fine)) == 900


def test_slo_threshold_follows_snapshot_or_parameter() -> None:
    agents = (agent("a", 0, rate=30.0),)
    assert clock_of(KairosClock(), snap(inst(0, 10_000, 1), agents=agents, slo_tok_s=35.0)) == 1680
    assert clock_of(KairosClock(KairosParams(tau_tok_s=25.0)), snap(inst(0, 10_000, 1), agents=agents, slo_tok_s=35.0)) == 900


def test_idle_instance_parks_at_lowest_clock() -> None:
    s = snap(inst(0, 20_000, 2), inst(1, 0, 0), agents=(agent("a", 0), agent("b", 0)))
    clocks = {c.instance_id: c.sm_clock_mhz for c in KairosClock().clocks(s)}
    assert clocks["i1"] == 210 and clocks["i0"] == 1005  # U/Umax 0.2: band 1 of 4 below α, 0.60 x 1680


def test_admission_caps_are_gamma_and_beta_of_capacity() -> None:
    caps = KairosAdmission().caps(snap(inst(0, 0, 0), inst(1, 0, 0, cap=0)))
    assert caps[0].admit_below_tokens == 90_000 and caps[0].hold_above_tokens == 95_000
    assert caps[1].admit_below_tokens is None and caps[1].hold_above_tokens is None


def test_router_consolidates_below_half_full() -> None:
    router = KairosRouter()
    new = agent("n", None, 2000, rate=None, phase=AgentPhase.PENDING, turns=0)
    s = snap(inst(0, 30_000, 3), inst(1, 0, 0), inst(2, 0, 0))
    assert router.place(new, s).instance_id == "i0"
    # Instance 0 has no room (U + ctx ≥ γ·U_max) -> next lowest index, though still consolidating.
    s = snap(inst(0, 45_000, 3, cap=50_000), inst(1, 0, 0), inst(2, 0, 0))
    assert router.place(new, s).instance_id == "i1"


def test_router_spreads_to_least_loaded_above_half() -> None:
    router = KairosRouter()
    new = agent("n", None, 2000, rate=None, phase=AgentPhase.PENDING, turns=0)
    s = snap(inst(0, 60_000, 6), inst(1, 0, 0), inst(2, 0, 0))
    p = router.place(new, s)
    assert p.instance_id == "i1" and "spread" in p.reason


def test_router_is_sticky_and_migrates_only_at_turn_boundary_after_8_turns() -> None:
    router = KairosRouter()
    s = snap(inst(0, 80_000, 8), inst(1, 20_000, 2))
    # In the LLM: never moves.
    assert router.place(agent("a", 0, 5000, phase=AgentPhase.IN_LLM, turns=20), s).migrate is False
    # At a turn boundary but only 7 turns on the instance: stays.
    assert router.place(agent("a", 0, 5000, turns=7), s).instance_id == "i0"
    # 8 turns, 80k ≥ 2 x 20k: moves to the least-loaded instance.
    p = router.place(agent("a", 0, 5000, turns=8), s)
    assert p.migrate and p.instance_id == "i1"
    # Ratio under 2: stays.
    s2 = snap(inst(0, 80_000, 8), inst(1, 45_000, 4))
    assert router.place(agent("a", 0, 5000, turns=30), s2).migrate is False


def test_router_does_not_undo_consolidation() -> None:
    # 40% full in total: consolidating, so no reassignment to the idle instance.
    s = snap(inst(0, 40_000, 8), inst(1, 0, 0))
    assert router_place(s, turns=30).migrate is False


def router_place(s: Snapshot, turns: int):
    return KairosRouter().place(agent("a", 0, 5000, turns=turns), s)


def test_policy_decide_composes_clock_caps_and_notes() -> None:
    policy = KairosPolicy()
    actions = policy.decide(snap(inst(0, 50_000, 4), agents=(agent("a", 0),)))
    assert [c.sm_clock_mhz for c in actions.clocks] == [1110]  # U/Umax 0.5: band 2 of 4 below α, 0.66 x 1680 = 1109
    assert actions.caps[0].admit_below_tokens == 90_000
    assert "U/Umax 0.50" in actions.notes["i0"]


@pytest.mark.parametrize("kwargs", [dict(alpha=0), dict(beta=0.8, gamma=0.9), dict(level_fracs=(0.7, 0.5)), dict(protective_frac=0.5), dict(migrate_ratio=0.5)])
def test_params_reject_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        KairosParams(**kwargs)
