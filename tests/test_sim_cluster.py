"""The cluster simulator: policies drive emulated engines through the gateway's tracker, in virtual time."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kairosbench.emulator.engine import EngineConfig
from kairosbench.gateway.tracker import AgentTracker
from kairosbench.sim.cli import sim
from kairosbench.sim.cluster import ClusterSimulation, simulate_cluster, sweep_static_clocks
from kairosbench.sim.engine_sim import SimConfig
from kairosbench.workload.io import save_workload
from kairosbench.workload.model import Session, Turn, Workload
from controllers.registry import build_policy

pytestmark = pytest.mark.timeout(120)
ENGINE = EngineConfig(trace_bin_s=1.0, trace_keep_s=None)


def agents(n: int = 6, turns: int = 10, gap_s: float = 0.5, first: int = 2000, grow: int = 600) -> list[Session]:
    return [Session(f"s{i}", "swe", i * gap_s, [Turn(first if t == 0 else grow, 60, 2.0) for t in range(turns)]) for i in range(n)]


def test_policy_runs_through_the_gateway_tracker_and_logs_every_epoch() -> None:
    s = ClusterSimulation(agents(), build_policy("static:900"), SimConfig(n_instances=2, engine=ENGINE))
    assert isinstance(s.tracker, AgentTracker)
    r = s.run_cluster()
    summary = r.summary()
    assert summary["sessions_completed"] == 6 and summary["policy"] == "static:900"
    rows = pd.DataFrame(r.control_rows)
    epochs = rows["epoch"].nunique()
    assert len(rows) == 2 * epochs and epochs >= math.floor(summary["duration_s"])  # an epoch per virtual second
    assert (rows["target_clock_mhz"] == 900).all() and rows["telemetry"].eq("sim").all()
    assert set(r.time_at_clock_s()) == {900}  # every busy second ran at the locked clock
    assert r.clock_changes == 2  # set once per instance: the actuator path is idempotent


def test_kairos_parks_idle_instances_and_consolidates_light_load() -> None:
    r = simulate_cluster(agents(n=3, gap_s=5.0, first=500, grow=100), "kairos", SimConfig(n_instances=3, engine=ENGINE))
    assert {a.instance for a in r.sim.sessions} == {0}  # all on the lowest-index instance
    rows = pd.DataFrame(r.control_rows)
    idle = rows[rows["instance_id"] != "i0"]
    assert (idle["target_clock_mhz"] == 345).all() and idle["note"].str.startswith("idle").all()
    busy = rows[(rows["instance_id"] == "i0") & (rows["resident_agents"] > 0)]
    assert (busy["target_clock_mhz"] > 345).all()


def test_kairos_lowers_power_against_max_on_light_agentic_load() -> None:
    load = agents(n=4, gap_s=2.0)
    base = simulate_cluster(load, "max", SimConfig(n_instances=2, engine=ENGINE)).summary()
    kairos = simulate_cluster(load, "kairos", SimConfig(n_instances=2, engine=ENGINE)).summary()
    assert kairos["sessions_completed"] == base["sessions_completed"] == 4
    assert kairos["avg_power_w"] < base["avg_power_w"] and kairos["slo_attainment"] == 1.0


def test_holding_under_a_small_kv_pool_never_deadlocks() -> None:
    small = EngineConfig(kv_capacity_tokens=16_000, trace_bin_s=1.0, trace_keep_s=None)
    for spec in ("kairos", "aimd(initial_agents=2)", "clock=max,admission=kairos,routing=least-loaded"):
        r = simulate_cluster(agents(n=12), spec, SimConfig(n_instances=2, engine=small))
        s = r.summary()
        assert s["sessions_completed"] == 12, spec
        assert s["turns_held"] > 0, spec  # contexts outgrow the pool: turns wait at the gateway
        rows = pd.DataFrame(r.control_rows)
        assert rows["resident_context_tokens"].ge(0).all()


def test_gateway_wait_counts_against_the_agent_rate() -> None:
    small = EngineConfig(kv_capacity_tokens=16_000, trace_bin_s=1.0, trace_keep_s=None)
    r = simulate_cluster(agents(n=12), "kairos", SimConfig(n_instances=2, engine=small))
    llm = sum(s.llm_time_s for s in r.sim.sessions)
    in_engine = sum(q.e2e_s for q in r.sim.requests if q.e2e_s is not None)
    assert llm == pytest.approx(in_engine + sum(r.held_s), rel=1e-6)


def test_static_sweep_power_falls_with_clock_at_light_load() -> None:
    results = sweep_static_clocks(agents(n=3, gap_s=3.0), [1980, 1200, 600], SimConfig(n_instances=1, engine=ENGINE))
    powers = [r.summary()["avg_power_w"] for r in results]
    assert powers[0] > powers[1] > powers[2]
    assert [r.policy for r in results] == ["static:1980", "static:1200", "static:600"]


def test_sim_cli_compares_policies_and_writes_records(tmp_path: Path) -> None:
    wl = tmp_path / "w.parquet"
    save_workload(Workload(agents(n=3, gap_s=1.0, turns=4)), wl)
    out = tmp_path / "out"
    res = CliRunner().invoke(sim, ["-w", str(wl), "-n", "2", "-p", "max", "-p", "kairos", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "avg power W" in res.output and "Δ vs max" in res.output and "kairos" in res.output
    assert "Busy time at each effective SM clock" in res.output and "1980: " in res.output
    for name in ("max", "kairos"):
        for f in ("summary.json", "control.parquet", "requests.parquet", "sessions.parquet", "power.parquet"):
            assert (out / name / f).exists()
    assert list(pd.read_csv(out / "summary.csv")["policy"]) == ["max", "kairos"]
    res = CliRunner().invoke(sim, ["sweep", "-w", str(wl), "-n", "1", "--clocks", "1980,900"])
    assert res.exit_code == 0 and "900 MHz" in res.output
    bad = CliRunner().invoke(sim, ["-w", str(wl), "-p", "warp-speed"])
    assert bad.exit_code != 0 and "unknown policy" in str(bad.exception)
