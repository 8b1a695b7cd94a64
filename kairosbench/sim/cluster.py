"""A cluster of emulated instances run by a policy, in virtual time.

The same three parts as a live run, minus sockets and sleeps:

* engines and agents: ``kairosbench.sim.engine_sim.EngineSimulation`` (the emulator's engine
  model, one per instance; agents replayed by ``kairosbench.replay.flow.agent_flow``);
* admission and placement: the gateway's own ``AgentTracker`` (identical code to the live
  gateway), so a held turn, a pending agent or a migration happens exactly as it would there;
* the policy: ``policy.decide`` every ``epoch_s`` of virtual time on a snapshot built from each
  engine's NVML-like reading and engine counters; clocks applied with the engine's settle
  delay; one control row per instance per epoch, in control.parquet's columns.

Per-agent throughput counts the time a turn waited at the (simulated) gateway as LLM time,
as the load generator does live: holding an agent is not free for its SLO.

    result = simulate_cluster(workload, "kairos", SimConfig(n_instances=4))
    result.summary()      # the run metrics: power, energy per agent, P5 tok/s, SLO, preemptions...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from controllers.base import Policy
from controllers.registry import build_policy
from kairosbench.gateway.control_loop import decision_rows
from kairosbench.gateway.tracker import AgentTracker, Dispatch, Hold, InstanceTelemetry
from kairosbench.replay.flow import TurnResult
from kairosbench.sim.engine_sim import EngineSimulation, RequestRecord, SimAgent, SimConfig, SimResult
from kairosbench.workload.model import Session, Workload

__all__ = ["ClusterSimulation", "ClusterResult", "simulate_cluster", "sweep_static_clocks"]


@dataclass
class ClusterResult:
    """A simulation's records plus what the policy did."""

    policy: str
    sim: SimResult
    control_rows: list[dict[str, Any]]
    counters: dict[str, Any]
    clock_changes: int
    held_s: list[float] = field(default_factory=list)  # per turn that waited at the gateway

    def summary(self, slo_tok_s: float | None = None) -> dict[str, Any]:
        """The run's metrics (units in the names), as ``kairosbench run`` reports them."""
        slo = slo_tok_s if slo_tok_s is not None else self.counters.get("slo_tok_s", 20.0)
        s = dict(self.sim.summary(slo))
        s["policy"] = self.policy
        s["turns_held"] = len(self.held_s)
        s["held_s_p99"] = _pct(sorted(self.held_s), 0.99) if self.held_s else 0.0
        s["migrations"] = self.counters.get("migrations", 0)
        s["clock_changes"] = self.clock_changes
        return s

    def time_at_clock_s(self) -> dict[int, float]:
        """Busy seconds at each effective SM clock (MHz), summed over instances."""
        return dict(sorted(self.sim.time_at_clock_s.items()))


def _count(value: object) -> int:
    """An engine_info counter (typed ``object`` there) as an int."""
    return int(value)  # type: ignore[call-overload]


def _pct(xs: list[float], q: float) -> float:
    k = min(len(xs) - 1, max(0, int(math.floor(q * (len(xs) - 1) + 0.5))))
    return float(xs[k])


class ClusterSimulation(EngineSimulation):
    """``EngineSimulation`` whose placement, holding and clocks come from a policy via the tracker."""

    def __init__(self, workload: Workload | Iterable[Session], policy: Policy, config: SimConfig = SimConfig(), *, slo_tok_s: float = 20.0) -> None:
        if not config.epoch_s:
            config = replace(config, epoch_s=1.0)
        super().__init__(workload, config)
        self.policy = policy
        self.slo_tok_s = slo_tok_s
        self.ids = [f"i{k}" for k in range(len(self.engines))]
        self._index = {iid: k for k, iid in enumerate(self.ids)}
        self.tracker = AgentTracker(self.ids, policy, slo_tok_s=slo_tok_s)
        seen: dict[str, int] = {}
        self._aid: list[str] = []
        for a in self.agents:  # tracker ids must be unique even if session ids repeat
            n = seen.get(a.session_id, 0)
            seen[a.session_id] = n + 1
            self._aid.append(a.session_id if n == 0 else f"{a.session_id}#{n}")
        self._by_aid = {aid: a for aid, a in zip(self._aid, self.agents)}
        self._decision: dict[int, Dispatch | Hold] = {}
        self._released: dict[int, Dispatch] = {}
        self._waiting: set[int] = set()
        self._ready_s: dict[int, float] = {}
        self._done: set[int] = set()
        self._epoch = 0
        self.control_rows: list[dict[str, Any]] = []
        self.clock_changes = 0
        self.held_s: list[float] = []

    # ---- hooks of EngineSimulation ---------------------------------------------------------------
    def place(self, agent: SimAgent, t: float) -> int:
        k = agent.index
        d: Dispatch | Hold | None = self._released.pop(k, None)
        if d is None:
            assert agent.send is not None
            aid = self._aid[k]
            self._ready_s[k] = t
            d = self.tracker.turn_ready(aid, t, agent.send.expected_prompt_tokens)
            if isinstance(d, Hold):
                self._waiting.add(k)
                released = self.tracker.release(t)  # the held agent left U_k: others (or itself) may go
                own = next((x for x in released if x.agent_id == aid), None)
                if own is not None:
                    d = own
                    self._waiting.discard(k)
                self._decision[k] = d
                self._dispatch_released([x for x in released if x.agent_id != aid], t)
        self._decision[k] = d
        if isinstance(d, Dispatch):
            return self._index[d.instance_id]
        return agent.instance if agent.instance is not None else 0

    def may_dispatch(self, agent: SimAgent, instance: int, t: float) -> bool:
        d = self._decision.get(agent.index)
        if isinstance(d, Dispatch):
            held = t - self._ready_s.get(agent.index, t)
            if held > 0:
                self.held_s.append(held)
            return True
        return False

    def retry_held(self, t: float) -> None:
        self._dispatch_released(self.tracker.release(t), t)

    def on_request_done(self, agent: SimAgent, rec: RequestRecord, t: float) -> None:
        # Gateway wait counts as LLM time for the agent's rate (as the load generator measures it).
        agent.llm_time_s += max(0.0, rec.t_submit_s - self._ready_s.get(agent.index, rec.t_submit_s))
        self.tracker.turn_finished(self._aid[agent.index], t, ok=True, prompt_tokens=rec.prompt_tokens, output_tokens=rec.output_tokens)

    def on_epoch(self, t: float) -> None:
        self._decide(t)

    # ---- mechanics ------------------------------------------------------------------------------
    def _advance_agent(self, agent: SimAgent, value: TurnResult | None, t: float) -> None:
        aid = self._aid[agent.index]
        if isinstance(value, TurnResult) and not value.ok:
            self.tracker.turn_finished(aid, t, ok=False)
        super()._advance_agent(agent, value, t)
        if agent.done and agent.index not in self._done:
            self._done.add(agent.index)
            self.tracker.agent_done(aid, t)

    def _dispatch_released(self, released: list[Dispatch], t: float) -> None:
        if not released:
            return
        go = []
        for d in released:
            agent = self._by_aid[d.agent_id]
            self._waiting.discard(agent.index)
            self._released[agent.index] = d
            agent.held_since = None
            go.append(agent)
        gone = {id(a) for a in go}
        self.held = [a for a in self.held if id(a) not in gone]
        for agent in go:
            if agent.send is not None and agent.request is None:
                self._dispatch(agent, t)

    def _telemetry(self, k: int, t: float) -> InstanceTelemetry:
        eng = self.engines[k]
        r = eng.gpu_reading(t)
        info = eng.engine_info()
        return InstanceTelemetry(
            supported_clocks_mhz=tuple(eng.gpu.supported),
            sm_clock_mhz=float(r.sm_clock_mhz),
            locked_clock_mhz=eng.gpu.locked_clock_mhz,
            power_w=r.power_w,
            kv_capacity_tokens=_count(info["kv_capacity_tokens"]),
            kv_usage_frac=eng.kv_usage,
            num_running=eng.num_running,
            num_waiting=eng.num_waiting,
            preemptions_total=_count(info["preemptions_total"]),
            prefix_queries_tokens=_count(info["prefix_queries_tokens"]),
            prefix_hits_tokens=_count(info["prefix_hits_tokens"]),
            recomputed_tokens_total=_count(info["recomputed_tokens_total"]),
            gpu_util_frac=r.gpu_util_pct / 100.0,
            power_limit_w=eng.gpu.power_limit_w,
            energy_j=r.energy_j,
        )

    def _decide(self, t: float, *, immediate: bool = False) -> None:
        for k, iid in enumerate(self.ids):
            self.tracker.update_telemetry(iid, self._telemetry(k, t))
        snap = self.tracker.snapshot(t, self._epoch)
        actions = self.policy.decide(snap)
        self.tracker.set_caps(actions.caps)
        applied: dict[str, tuple[bool, str | None, str]] = {}
        for sc in actions.clocks:
            idx = self._index.get(sc.instance_id)
            if idx is None:
                continue
            eng = self.engines[idx]
            changed = eng.gpu.locked_clock_mhz != sc.sm_clock_mhz
            if changed:
                eng.set_clock(sc.sm_clock_mhz, t, immediate=immediate)
                self.clock_changes += 1
            applied[sc.instance_id] = (changed, None, "sim")
        released = self.tracker.release(t)
        self.control_rows.extend(
            decision_rows(
                snap,
                actions,
                t_ns=int(round(t * 1e9)),
                policy=self.policy.name,
                endpoints={},
                telemetry_kind=dict.fromkeys(self.ids, "sim"),
                pending_agents=self.tracker.pending_count,
                counters=self.tracker.counters,
                applied=applied,
                released=len(released),
                energy_j={iid: self.tracker.telemetry(iid).energy_j for iid in self.ids},
            )
        )
        self._dispatch_released(released, t)
        self._epoch += 1

    def run(self) -> SimResult:  # type: ignore[override]
        # Caps and clocks in force (settled) before the first arrival, as live: the gateway
        # applies its first decision before it starts listening.
        self._decide(0.0, immediate=True)
        return super().run()

    def run_cluster(self) -> ClusterResult:
        sim = self.run()
        c = self.tracker.counters
        counters = {k: getattr(c, k) for k in c.__slots__}
        counters["slo_tok_s"] = self.slo_tok_s
        return ClusterResult(self.policy.name, sim, self.control_rows, counters, self.clock_changes, self.held_s)


def simulate_cluster(workload: Workload | Iterable[Session], policy: str | Policy, config: SimConfig = SimConfig(), *, slo_tok_s: float = 20.0) -> ClusterResult:
    """Simulate ``workload`` on ``config.n_instances`` instances under ``policy`` (a spec or object)."""
    pol = build_policy(policy) if isinstance(policy, str) else policy
    return ClusterSimulation(workload, pol, config, slo_tok_s=slo_tok_s).run_cluster()


def sweep_static_clocks(workload: Workload | Iterable[Session], clocks_mhz: Iterable[int], config: SimConfig = SimConfig(), *, slo_tok_s: float = 20.0) -> list[ClusterResult]:
    """One static-clock simulation per clock (the KAIROS Fig. 4 knee): ``static:<MHz>`` each."""
    sessions = list(workload.sessions if isinstance(workload, Workload) else workload)
    return [simulate_cluster(sessions, f"static:{int(f)}", config, slo_tok_s=slo_tok_s) for f in clocks_mhz]
