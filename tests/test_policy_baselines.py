"""Each baseline on hand-made snapshots: static, util-DVFS, SLO-DVFS, AIMD, round-robin, least-loaded."""

from __future__ import annotations

import dataclasses

import pytest

from controllers import AgentPhase
from controllers.admission_baselines import AimdAdmission, AimdParams, NoAdmission
from controllers.clock_baselines import DefaultClock, SloDvfs, SloDvfsParams, StaticClock, UtilDvfs, predicted_min_clock_mhz
from controllers.clocks import clock_at_frac, snap_nearest, snap_up
from controllers.routing import LeastLoadedRouter, RoundRobinRouter
from controllers.testing import H100_NVL_CLOCKS_MHZ as H100_NVL
from controllers.testing import H100_SXM_CLOCKS_MHZ as H100_SXM
from controllers.testing import agent, instance
from controllers.testing import snapshot as snap



def inst(k: int, ctx: int = 0, agents: int = 0, *, clocks: tuple[int, ...] = H100_NVL, sm: float | None = None, **kw):
    return instance(k, ctx, agents, clocks_mhz=clocks, sm_clock_mhz=sm, **kw)


def clocks(policy, s) -> dict[str, int | None]:
    return {c.instance_id: c.sm_clock_mhz for c in policy.clocks(s)}


def test_snapping() -> None:
    assert snap_nearest(H100_SXM, 900) == 900
    assert snap_nearest(H100_SXM, 810) == 810
    assert snap_nearest(H100_SXM, 907) == 900 and snap_nearest(H100_SXM, 908) == 915
    assert snap_nearest(H100_SXM, 10) == 345 and snap_nearest(H100_SXM, 5000) == 1980
    assert snap_up(H100_SXM, 901) == 915 and snap_up(H100_SXM, 900) == 900 and snap_up(H100_SXM, 9999) == 1980
    assert clock_at_frac(H100_NVL, 1.0) == 1680


def test_static_and_max_and_default() -> None:
    s = snap(inst(0, clocks=H100_SXM), inst(1, clocks=H100_NVL))
    assert clocks(StaticClock(None), s) == {"i0": 1980, "i1": 1680}
    assert clocks(StaticClock(900), s) == {"i0": 900, "i1": 900}
    assert clocks(StaticClock(812), s) == {"i0": 810, "i1": 810}
    assert clocks(DefaultClock(), s) == {"i0": None, "i1": None}
    with pytest.raises(ValueError):
        StaticClock(0)


def test_util_dvfs_is_ondemand() -> None:
    policy = UtilDvfs()
    busy = snap(inst(0, clocks=H100_SXM, gpu_util_frac=0.95))
    assert clocks(policy, busy)["i0"] == 1980
    half = snap(inst(0, clocks=H100_SXM, gpu_util_frac=0.5))
    assert clocks(policy, half)["i0"] == snap_nearest(H100_SXM, 345 + 0.5 * (1980 - 345))
    idle = snap(inst(0, clocks=H100_SXM, gpu_util_frac=0.0))
    assert clocks(policy, idle)["i0"] == 345
    # No utilisation reading: running requests mean busy.
    assert clocks(policy, snap(inst(0, 0, 2, clocks=H100_SXM)))["i0"] == 1980


def test_slo_dvfs_decode_model() -> None:
    # 40 tok/s at 1680 MHz, target 22 (20 + 10%), φ = 0.35:
    # 0.65 + 0.35·1680/f ≤ 40/22 -> f ≥ 0.35·1680/(1.818 - 0.65) = 503.3 MHz
    f = predicted_min_clock_mhz(40.0, 1680.0, 22.0, 0.35)
    assert f == pytest.approx(0.35 * 1680 / (40 / 22 - 0.65))
    assert predicted_min_clock_mhz(10.0, 1680.0, 22.0, 0.35) is None
    policy = SloDvfs()
    s = snap(inst(0, 10_000, 2, sm=1680), agents=(agent("a", 0, rate=40.0), agent("b", 0, rate=40.0)))
    assert clocks(policy, s)["i0"] == snap_up(H100_NVL, f)
    # A higher predicted clock when agents run slower.
    s2 = snap(inst(0, 10_000, 2, sm=1680), agents=(agent("a", 0, rate=25.0), agent("b", 0, rate=25.0)))
    assert clocks(policy, s2)["i0"] > clocks(policy, s)["i0"]


def test_slo_dvfs_max_when_anything_waits_and_min_when_idle() -> None:
    policy = SloDvfs()
    assert clocks(policy, snap(inst(0, 10_000, 2, waiting=3), agents=(agent("a", 0, rate=90.0),)))["i0"] == 1680
    assert clocks(policy, snap(inst(0, 10_000, 2, held_agents=1), agents=(agent("a", 0, rate=90.0),)))["i0"] == 1680
    assert clocks(policy, snap(inst(0, 0, 0)))["i0"] == 210
    assert clocks(policy, snap(inst(0, 1000, 1), agents=(agent("a", 0, rate=None),)))["i0"] == 1680
    with pytest.raises(ValueError):
        SloDvfsParams(clock_bound_frac=0)


def test_no_admission_is_uncapped() -> None:
    caps = NoAdmission().caps(snap(inst(0), inst(1)))
    assert all(c.max_agents is None and c.admit_below_tokens is None and c.hold_above_tokens is None for c in caps)


def _aimd_step(policy: AimdAdmission, kv: float, agents: int, *, queries: int, hits: int, preempt: int = 0, pending: int = 0) -> int:
    i = dataclasses.replace(inst(0, int(kv * 100_000), agents), kv_usage_frac=kv, prefix_queries_tokens=queries, prefix_hits_tokens=hits, preemptions_total=preempt)
    waiting = tuple(agent(f"p{n}", None, phase=AgentPhase.PENDING) for n in range(pending))
    cap = policy.caps(snap(i, agents=waiting))[0]
    assert cap.max_agents is not None
    return cap.max_agents


def test_aimd_grows_additively_while_binding_and_kv_low() -> None:
    policy = AimdAdmission(AimdParams(initial_agents=4))
    assert _aimd_step(policy, 0.3, 4, queries=0, hits=0) == 5  # first epoch: binding, kv low
    assert _aimd_step(policy, 0.3, 5, queries=1000, hits=900) == 6
    assert _aimd_step(policy, 0.3, 2, queries=2000, hits=1800) == 6  # not binding: no growth
    assert _aimd_step(policy, 0.3, 2, queries=3000, hits=2700, pending=3) == 7  # agents wait: binding


def test_aimd_cuts_multiplicatively_on_high_kv_and_falling_hits() -> None:
    policy = AimdAdmission(AimdParams(initial_agents=16, cooldown_epochs=0))
    _aimd_step(policy, 0.5, 0, queries=0, hits=0)
    _aimd_step(policy, 0.9, 16, queries=10_000, hits=9_000)  # hit rate 0.9 establishes the average
    assert policy.window("i0") == 16
    # KV high but hit rate steady: hold.
    assert _aimd_step(policy, 0.97, 16, queries=20_000, hits=18_000) == 16
    # KV high and hit rate fell 0.9 -> 0.5: halve.
    assert _aimd_step(policy, 0.97, 16, queries=30_000, hits=23_000) == 8
    # KV high and the engine preempted: halve again.
    assert _aimd_step(policy, 0.97, 8, queries=40_000, hits=32_000, preempt=3) == 4
    for _ in range(5):
        _aimd_step(policy, 0.99, 4, queries=40_000, hits=32_000, preempt=3 + _ + 1)
    assert policy.window("i0") == 1  # floor at min_agents


def test_aimd_remembers_the_healthy_hit_rate_and_cools_down() -> None:
    policy = AimdAdmission(AimdParams(initial_agents=16, cooldown_epochs=2))
    _aimd_step(policy, 0.5, 0, queries=0, hits=0)
    _aimd_step(policy, 0.5, 16, queries=10_000, hits=9_000)  # healthy 0.9
    # The hit rate collapses to 0.1 with KV high: cut; it stays collapsed: no second cut during the cooldown ...
    assert _aimd_step(policy, 0.97, 16, queries=20_000, hits=10_000) == 8
    assert _aimd_step(policy, 0.97, 8, queries=30_000, hits=11_000) == 8
    assert _aimd_step(policy, 0.97, 8, queries=40_000, hits=12_000) == 8
    # ... then, still collapsed (not re-learned as normal), the next cut.
    assert _aimd_step(policy, 0.97, 8, queries=50_000, hits=13_000) == 4


def test_aimd_treats_re_prefill_as_memory_pressure() -> None:
    policy = AimdAdmission(AimdParams(initial_agents=16, cooldown_epochs=0))
    step = lambda kv, q, h, rec: policy.caps(snap(dataclasses.replace(inst(0, 1000, 4), kv_usage_frac=kv, prefix_queries_tokens=q, prefix_hits_tokens=h, recomputed_tokens_total=rec)))[0].max_agents  # noqa: E731 - 4 agents: the window does not bind
    step(0.3, 0, 0, 0)
    step(0.3, 10_000, 9_000, 0)
    assert step(0.3, 20_000, 9_500, 0) == 16  # hit rate fell but no memory pressure: not thrashing KV
    assert step(0.3, 30_000, 10_000, 5_000) == 8  # evicted context re-prefilled: cut


def test_round_robin_then_sticky() -> None:
    router = RoundRobinRouter()
    s = snap(inst(0), inst(1), inst(2))
    new = [agent(f"n{i}", None, phase=AgentPhase.PENDING) for i in range(4)]
    assert [router.place(a, s).instance_id for a in new] == ["i0", "i1", "i2", "i0"]
    assert router.place(agent("old", 2), s).instance_id == "i2"


def test_least_loaded_then_sticky() -> None:
    router = LeastLoadedRouter()
    s = snap(inst(0, 50_000, 5), inst(1, 10_000, 1), inst(2, 30_000, 3))
    assert router.place(agent("n", None, phase=AgentPhase.PENDING), s).instance_id == "i1"
    assert router.place(agent("old", 0), s).instance_id == "i0"
