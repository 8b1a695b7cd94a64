"""The pure agent tracker: holds at β, admits at γ, FIFO, liveness, migration, AIMD caps, and its invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controllers import AdmissionCap, AgentPhase
from controllers.registry import build_policy
from kairosbench.gateway.tracker import AgentTracker, Dispatch, Hold, InstanceTelemetry

TEL = InstanceTelemetry(supported_clocks_mhz=(345, 900, 1980), sm_clock_mhz=1980.0, kv_capacity_tokens=10_000)


def tracker(n: int = 1, policy: str = "max", **kw) -> AgentTracker:
    t = AgentTracker([f"i{k}" for k in range(n)], build_policy(policy), **kw)
    for k in range(n):
        t.update_telemetry(f"i{k}", TEL)
    return t


def test_uncapped_dispatch_and_context_from_usage() -> None:
    t = tracker()
    d = t.turn_ready("a", 0.0, 500)
    assert isinstance(d, Dispatch) and d.instance_id == "i0"
    assert t.instance_view("i0").resident_context_tokens == 500
    t.turn_finished("a", 2.0, ok=True, prompt_tokens=510, output_tokens=90)
    view = t.agent("a")
    assert view is not None and view.phase is AgentPhase.IN_TOOL and view.context_tokens == 600 and view.turn_index == 1
    assert view.output_tok_s == 45.0  # 90 tokens over 2 s from ready to finish
    assert t.instance_view("i0").resident_context_tokens == 600  # still resident while in its tool
    t.agent_done("a", 3.0)
    assert t.instance_view("i0").resident_context_tokens == 0 and t.agent("a") is None


def test_hold_above_beta_then_release_in_fifo_order() -> None:
    t = tracker()
    t.set_caps([AdmissionCap("i0", hold_above_tokens=1000)])
    for name in "abc":
        assert isinstance(t.turn_ready(name, 0.0, 300), Dispatch)
        t.turn_finished(name, 1.0, ok=True, prompt_tokens=300, output_tokens=0)
    # a grows to 500: 600 + 500 = 1100 > 1000 -> held, and leaves U_k.
    h = t.turn_ready("a", 2.0, 500)
    assert isinstance(h, Hold) and h.instance_id == "i0"
    assert t.instance_view("i0").resident_context_tokens == 600 and t.instance_view("i0").held_agents == 1
    # b also grows: FIFO behind a even though it would fit on its own; held, it leaves U_k too ...
    assert isinstance(t.turn_ready("b", 2.1, 350), Hold)
    assert t.instance_view("i0").resident_context_tokens == 300
    # ... which makes room for a (300 + 500 ≤ 1000) but then not for b (800 + 350 > 1000).
    released = t.release(2.2)
    assert [d.agent_id for d in released] == ["a"] and abs(released[0].waited_s - 0.2) < 1e-9
    t.agent_done("c", 3.0)  # U_k 500: b fits (850 ≤ 1000)
    assert [d.agent_id for d in t.release(3.0)] == ["b"]
    assert t.instance_view("i0").resident_context_tokens == 850 and t.held_count == 0


def test_admit_below_gamma_and_pending_fifo() -> None:
    t = tracker()
    t.set_caps([AdmissionCap("i0", admit_below_tokens=900, hold_above_tokens=2000)])
    assert isinstance(t.turn_ready("a", 0.0, 950), Dispatch)  # empty instance: always admits (liveness)
    h = t.turn_ready("b", 0.1, 10)
    assert isinstance(h, Hold) and h.instance_id is None and t.pending_count == 1
    assert t.agent("b").phase is AgentPhase.PENDING
    assert isinstance(t.turn_ready("c", 0.2, 10), Hold)
    t.turn_finished("a", 1.0, ok=True, prompt_tokens=800, output_tokens=50)  # U_k 850 < 900
    assert [d.agent_id for d in t.release(1.0)] == ["b", "c"]


def test_lone_agent_over_the_cap_still_runs() -> None:
    t = tracker()
    t.set_caps([AdmissionCap("i0", admit_below_tokens=100, hold_above_tokens=100)])
    assert isinstance(t.turn_ready("big", 0.0, 5000), Dispatch)
    t.turn_finished("big", 1.0, ok=True, prompt_tokens=5000, output_tokens=10)
    assert isinstance(t.turn_ready("big", 2.0, 6000), Dispatch)


def test_max_agents_cap_pauses_new_and_resident_agents() -> None:
    t = tracker()
    t.set_caps([AdmissionCap("i0", max_agents=2)])
    assert isinstance(t.turn_ready("a", 0, 10), Dispatch) and isinstance(t.turn_ready("b", 0, 10), Dispatch)
    assert isinstance(t.turn_ready("c", 0, 10), Hold)
    t.set_caps([AdmissionCap("i0", max_agents=1)])
    t.turn_finished("a", 1, ok=True, prompt_tokens=10, output_tokens=1)
    assert isinstance(t.turn_ready("a", 2, 20), Hold)  # b active: a is paused at its turn boundary
    t.turn_finished("b", 3, ok=True, prompt_tokens=10, output_tokens=1)
    t.agent_done("b", 3)
    assert [d.agent_id for d in t.release(3)] == ["a"]  # residents first; c stays pending (cap 1)
    assert t.pending_count == 1


def test_round_robin_placement_is_sticky() -> None:
    t = tracker(3, "rr")
    placed = [t.turn_ready(f"a{i}", 0, 10).instance_id for i in range(4)]
    assert placed == ["i0", "i1", "i2", "i0"]
    t.turn_finished("a1", 1, ok=True, prompt_tokens=10, output_tokens=5)
    assert t.turn_ready("a1", 2, 20).instance_id == "i1"


def test_kairos_migrates_only_at_turn_boundary_after_8_turns() -> None:
    t = tracker(2, "kairos")
    t.set_caps(build_policy("kairos").decide(t.snapshot(0.0)).caps)
    # a and b on i0 (consolidation), 4000 tokens each; c goes to i1 once i0 is past 50%.
    for name in ("a", "b"):
        assert t.turn_ready(name, 0, 4000).instance_id == "i0"
    assert t.turn_ready("c", 0, 2000).instance_id == "i1"  # active fill 80% >= 50%: spread
    for turn in range(8):
        for name in ("a", "b", "c"):
            d = t.turn_ready(name, turn + 0.5, t.agent(name).context_tokens) if turn else None
            assert d is None or isinstance(d, Dispatch)
            if d is not None:
                assert not d.migrated or turn >= 8
            t.turn_finished(name, turn + 1, ok=True, prompt_tokens=t.agent(name).context_tokens, output_tokens=0)
    # a: 8 turns on i0; total fill 50% (not consolidating); i0 holds 8000 >= 2 x 2000 on i1 -> moves.
    d = t.turn_ready("a", 20, 4000)
    assert isinstance(d, Dispatch) and d.migrated and d.instance_id == "i1"
    assert t.agent("a").turns_on_instance == 0 and t.counters.migrations == 1
    assert t.instance_view("i0").resident_context_tokens == 4000 and t.instance_view("i1").resident_context_tokens == 6000


def test_concurrent_requests_of_one_agent_are_never_half_held() -> None:
    t = tracker()
    t.set_caps([AdmissionCap("i0", hold_above_tokens=100)])
    assert isinstance(t.turn_ready("a", 0, 50), Dispatch)
    assert isinstance(t.turn_ready("a", 0.1, 80), Dispatch)  # second request while the first runs
    t.turn_finished("a", 1, ok=True, prompt_tokens=50, output_tokens=5)
    assert t.agent("a").phase is AgentPhase.IN_LLM
    t.turn_finished("a", 1.5, ok=True, prompt_tokens=80, output_tokens=5)
    assert t.agent("a").phase is AgentPhase.IN_TOOL and t.agent("a").turn_index == 1


def test_idle_agents_expire() -> None:
    t = tracker(idle_timeout_s=10.0)
    t.turn_ready("a", 0, 100)
    t.turn_finished("a", 1, ok=True, prompt_tokens=100, output_tokens=10)
    assert t.expire_idle(5.0) == []
    assert t.expire_idle(12.0) == ["a"]
    assert t.instance_view("i0").resident_context_tokens == 0 and t.counters.agents_expired == 1


def test_failed_turn_keeps_context_and_allows_retry() -> None:
    t = tracker()
    t.turn_ready("a", 0, 100)
    t.turn_finished("a", 1, ok=False)
    assert t.agent("a").phase is AgentPhase.IN_TOOL and t.agent("a").turn_index == 0
    assert isinstance(t.turn_ready("a", 2, 100), Dispatch)


OPS = st.lists(
    st.tuples(st.sampled_from(["ready", "finish", "done", "release", "caps"]), st.integers(0, 5), st.integers(0, 4000)),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(OPS, st.sampled_from(["max", "kairos", "aimd(initial_agents=2)", "clock=max,admission=kairos,routing=least-loaded"]))
def test_accounting_invariants_hold_for_any_sequence(ops, spec: str) -> None:
    policy = build_policy(spec)
    t = AgentTracker(["i0", "i1"], policy)
    for k in ("i0", "i1"):
        t.update_telemetry(k, TEL)
    now = 0.0
    for op, who, tokens in ops:
        now += 0.5
        name = f"a{who}"
        view = t.agent(name)
        if op == "ready" and (view is None or view.phase is AgentPhase.IN_TOOL):
            t.turn_ready(name, now, tokens)
        elif op == "finish" and view is not None and view.phase is AgentPhase.IN_LLM:
            t.turn_finished(name, now, ok=tokens % 7 != 0, prompt_tokens=tokens, output_tokens=tokens % 50)
        elif op == "done" and view is not None and view.phase is not AgentPhase.IN_LLM:
            t.agent_done(name, now)
        elif op == "release":
            t.release(now)
        elif op == "caps":
            t.set_caps(policy.decide(t.snapshot(now)).caps)
        snap = t.snapshot(now)
        for inst in snap.instances:
            active = [a for a in snap.agents if a.instance_id == inst.instance_id and a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL)]
            held = [a for a in snap.agents if a.instance_id == inst.instance_id and a.phase is AgentPhase.HELD]
            assert inst.resident_context_tokens == sum(a.context_tokens for a in active)
            assert inst.resident_agents == len(active)
            assert inst.held_agents == len(held) and inst.held_context_tokens == sum(a.context_tokens for a in held)
        assert t.pending_count == sum(1 for a in snap.agents if a.phase is AgentPhase.PENDING)
    # Liveness: once every active agent is gone, whatever waits can be released.
    for a in list(t.snapshot(now).agents):
        if a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL):
            t.agent_done(a.agent_id, now)
    t.set_caps(policy.decide(t.snapshot(now)).caps)
    waiting = t.pending_count + t.held_count
    released = t.release(now)
    assert waiting == 0 or released


def test_public_api_is_exported() -> None:
    import kairosbench.gateway as gw

    for name in gw.__all__:
        assert getattr(gw, name) is not None
    assert gw.AgentTracker is AgentTracker


def test_kairos_caps_admit_new_agents_only_below_gamma() -> None:
    t = tracker(1, "kairos")  # U_max 10,000: γ·U_max 9,000, β·U_max 9,500
    t.set_caps(build_policy("kairos").decide(t.snapshot(0.0)).caps)
    assert isinstance(t.turn_ready("a", 0, 8_900), Dispatch)  # empty instance
    assert isinstance(t.turn_ready("b", 0, 50), Dispatch)  # U_k 8,900 < 9,000 (and 8,950 <= 9,500)
    t.turn_finished("b", 1, ok=True, prompt_tokens=50, output_tokens=100)  # U_k 9,050 >= γ·U_max
    h = t.turn_ready("c", 2, 10)
    assert isinstance(h, Hold) and t.pending_count == 1
    t.agent_done("b", 3)  # U_k 8,900 < γ·U_max again
    assert [d.agent_id for d in t.release(3)] == ["c"]
