"""The agent tracker: who is where, with how much context, and who waits. Pure, sans-IO.

The live gateway (``kairosbench.gateway.proxy``) and the cluster simulator
(``kairosbench.sim.cluster``) drive the *same* tracker, so a policy meets the same
mechanics in both. It never sleeps, never reads a clock and never opens a socket: every
call takes ``t_s`` (seconds on the run or virtual clock) and returns decisions.

Agent states (``controllers.AgentPhase``) and their transitions::

    (new) --turn_ready--> PENDING --release/admit--> IN_LLM --turn_finished--> IN_TOOL
                 \\______________________________/     ^                           |
                                                       |   <--turn_ready (room)---/
                                      HELD --release--/    <--turn_ready (no room)-> HELD
    any --agent_done / expire_idle--> DONE (forgotten)

Accounting (what ``AdmissionCap`` is enforced against):

* U_k (``InstanceView.resident_context_tokens``) = context of the agents *active* on k,
  i.e. IN_LLM or IN_TOOL. A HELD agent leaves U_k while it waits (its KV blocks are idle
  cache the engine may evict), which is what lets U_k fall and the holds drain.
* An agent's context is the prompt of its next request as the caller estimates it when the
  turn becomes ready, then ``prompt_tokens + output_tokens`` from the server's usage once
  the turn finishes.

Queues are FIFO: held resident agents per instance, pending (never admitted) agents
globally, head-of-line (a later, smaller agent never overtakes an earlier one: no
starvation of long contexts). Resident agents are released before pending ones, since
they already hold cache. The caller runs ``release(t_s)`` after every completion and every
control epoch and dispatches what it returns.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable

from controllers.base import Policy
from controllers.snapshot import AdmissionCap, AgentPhase, AgentView, InstanceView, Placement, Snapshot

__all__ = ["InstanceTelemetry", "Dispatch", "Hold", "AgentTracker", "TrackerCounters"]


@dataclass(frozen=True, slots=True)
class InstanceTelemetry:
    """The latest reading of one instance (emulator API, vLLM /metrics, NVML), policy-facing units."""

    supported_clocks_mhz: tuple[int, ...] = ()
    sm_clock_mhz: float = 0.0
    locked_clock_mhz: int | None = None
    power_w: float = 0.0
    kv_capacity_tokens: int = 0
    kv_usage_frac: float = 0.0
    num_running: int = 0
    num_waiting: int = 0
    preemptions_total: int = 0
    prefix_queries_tokens: int = 0
    prefix_hits_tokens: int = 0
    recomputed_tokens_total: int = 0
    gpu_util_frac: float | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None
    ok: bool = True


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send the agent's waiting request(s) to ``instance_id`` now."""

    agent_id: str
    instance_id: str
    migrated: bool = False
    waited_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Hold:
    """The request waits at the gateway until a later ``release`` returns a ``Dispatch`` for it."""

    agent_id: str
    instance_id: str | None
    reason: str


@dataclass(slots=True)
class TrackerCounters:
    """Running totals since start (for control.parquet and the run summary)."""

    turns_dispatched: int = 0
    turns_held: int = 0
    agents_admitted: int = 0
    migrations: int = 0
    agents_done: int = 0
    agents_expired: int = 0
    held_s_total: float = 0.0


@dataclass(slots=True)
class _Agent:
    agent_id: str
    arrived_s: float
    phase: AgentPhase = AgentPhase.PENDING
    context_tokens: int = 0
    turn_index: int = 0
    instance_id: str | None = None
    turns_on_instance: int = 0
    inflight: int = 0
    waiters: int = 0
    ready_s: float = 0.0
    last_s: float = 0.0
    window: deque = field(default_factory=deque)  # (output_tokens, llm_s) of recent turns
    rate: float | None = None


class AgentTracker:
    """Per-agent and per-instance state, admission queues and placement, driven by calls."""

    def __init__(
        self,
        instance_ids: Iterable[str],
        policy: Policy,
        *,
        rate_window_turns: int = 8,
        idle_timeout_s: float | None = None,
        slo_tok_s: float = 20.0,
    ) -> None:
        self.instance_ids: tuple[str, ...] = tuple(instance_ids)
        if not self.instance_ids:
            raise ValueError("the tracker needs at least one instance")
        self.policy = policy
        self.rate_window_turns = max(1, rate_window_turns)
        self.idle_timeout_s = idle_timeout_s
        self.slo_tok_s = slo_tok_s
        self.counters = TrackerCounters()
        self._agents: dict[str, _Agent] = {}
        self._views: dict[str, AgentView] = {}
        self._telemetry: dict[str, InstanceTelemetry] = {k: InstanceTelemetry() for k in self.instance_ids}
        self._caps: dict[str, AdmissionCap] = {k: AdmissionCap(k) for k in self.instance_ids}
        self._active_ctx = dict.fromkeys(self.instance_ids, 0)
        self._active_n = dict.fromkeys(self.instance_ids, 0)
        self._held_ctx = dict.fromkeys(self.instance_ids, 0)
        self._held: dict[str, OrderedDict[str, None]] = {k: OrderedDict() for k in self.instance_ids}
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._epoch = 0
        self._now_s = 0.0  # latest t_s any call brought: placement snapshots are stamped with it

    # ------------------------------------------------------------------ inputs from the driver

    def update_telemetry(self, instance_id: str, telemetry: InstanceTelemetry) -> None:
        self._telemetry[instance_id] = telemetry

    def set_caps(self, caps: Iterable[AdmissionCap]) -> None:
        """Caps from ``policy.decide``; instances not named keep theirs. Call ``release`` after."""
        for cap in caps:
            if cap.instance_id in self._caps:
                self._caps[cap.instance_id] = cap

    def turn_ready(self, agent_id: str, t_s: float, context_tokens: int) -> Dispatch | Hold:
        """An agent's next request arrived carrying about ``context_tokens`` prompt tokens."""
        self._now_s = max(self._now_s, t_s)
        a = self._agents.get(agent_id)
        if a is None:
            a = self._agents[agent_id] = _Agent(agent_id, arrived_s=t_s, ready_s=t_s, last_s=t_s)
        a.last_s = t_s
        if a.inflight > 0 and a.instance_id is not None:
            # A second concurrent request of an agent in the engine: it cannot be half held.
            a.inflight += 1
            self._set_context(a, max(a.context_tokens, context_tokens))
            self.counters.turns_dispatched += 1
            return Dispatch(agent_id, a.instance_id, reason="concurrent request of an agent in the LLM")
        if a.phase in (AgentPhase.HELD, AgentPhase.PENDING) and a.waiters > 0:
            a.waiters += 1
            return Hold(agent_id, a.instance_id, "another request of this agent is already waiting")
        a.ready_s = t_s
        a.waiters = 1
        self._set_context(a, context_tokens)
        if a.phase is AgentPhase.IN_TOOL and a.instance_id is not None:
            return self._resident_ready(a, t_s)
        # New, or a returning agent we had forgotten: admission through the pending queue.
        self._leave(a)
        a.phase = AgentPhase.PENDING
        self._touch(a)
        if not self._pending:
            target = self._place(a)
            if self._can_admit(target.instance_id, a):
                return self._dispatch(a, target.instance_id, t_s, migrated=False, reason=target.reason, admitted=True)
        self._pending[agent_id] = None
        self.counters.turns_held += 1
        return Hold(agent_id, None, "pending: no instance admits it yet")

    def turn_finished(
        self,
        agent_id: str,
        t_s: float,
        *,
        ok: bool,
        prompt_tokens: int | None = None,
        output_tokens: int = 0,
    ) -> None:
        """A request of ``agent_id`` ended (``ok``: it completed). Call ``release`` afterwards."""
        self._now_s = max(self._now_s, t_s)
        a = self._agents.get(agent_id)
        if a is None or a.phase is AgentPhase.DONE:
            return
        a.last_s = t_s
        a.inflight = max(0, a.inflight - 1)
        if ok:
            context = (prompt_tokens if prompt_tokens is not None else a.context_tokens) + max(0, output_tokens)
            self._set_context(a, context)
            a.window.append((max(0, output_tokens), max(0.0, t_s - a.ready_s)))
            while len(a.window) > self.rate_window_turns:
                a.window.popleft()
            llm_s = sum(w[1] for w in a.window)
            a.rate = sum(w[0] for w in a.window) / llm_s if llm_s > 0 else a.rate
        if a.inflight == 0:
            if ok:
                a.turn_index += 1
                a.turns_on_instance += 1
            a.phase = AgentPhase.IN_TOOL
        self._touch(a)

    def agent_done(self, agent_id: str, t_s: float) -> None:
        """The agent finished (or left): forget it and free its context. Call ``release`` after."""
        a = self._agents.get(agent_id)
        if a is None:
            return
        self._now_s = max(self._now_s, t_s)
        self._forget(a)
        self.counters.agents_done += 1

    def withdraw(self, agent_id: str, t_s: float) -> None:
        """A waiting request was abandoned (client gone, gateway stopping): undo its ``turn_ready``.

        A held resident agent goes back to its tool (active on its instance again, as before
        the request); a pending agent that never ran is forgotten. Call ``release`` after.
        """
        self._now_s = max(self._now_s, t_s)
        a = self._agents.get(agent_id)
        if a is None or a.phase not in (AgentPhase.HELD, AgentPhase.PENDING) or a.waiters == 0:
            return
        a.waiters -= 1
        if a.waiters > 0:
            return
        if a.phase is AgentPhase.HELD and a.instance_id is not None:
            self._leave(a)
            a.phase = AgentPhase.IN_TOOL
            self._active_ctx[a.instance_id] += a.context_tokens
            self._active_n[a.instance_id] += 1
            self._touch(a)
        else:
            self._forget(a)

    def expire_idle(self, t_s: float) -> list[str]:
        """Agents in their tool for longer than ``idle_timeout_s``: treated as done (live gateway only).

        The OpenAI protocol has no "session ended" message; a client that can tell us sends
        ``X-Kairosbench-Final`` or calls the gateway's agent DELETE route instead.
        """
        if self.idle_timeout_s is None:
            return []
        gone = [a.agent_id for a in self._agents.values() if a.phase is AgentPhase.IN_TOOL and t_s - a.last_s > self.idle_timeout_s]
        for agent_id in gone:
            self._forget(self._agents[agent_id])
            self.counters.agents_expired += 1
        return gone

    def release(self, t_s: float) -> list[Dispatch]:
        """Dispatch every waiting agent the caps now allow: held residents first, then pending, FIFO."""
        self._now_s = max(self._now_s, t_s)
        out: list[Dispatch] = []
        for k in self.instance_ids:
            queue = self._held[k]
            while queue:
                agent_id = next(iter(queue))
                a = self._agents[agent_id]
                if not self._can_go(k, a):
                    break
                out.append(self._dispatch(a, k, t_s, migrated=False, reason="released: cap allows", admitted=False))
        while self._pending:
            agent_id = next(iter(self._pending))
            a = self._agents[agent_id]
            target = self._place(a)
            if not self._can_admit(target.instance_id, a):
                break
            out.append(self._dispatch(a, target.instance_id, t_s, migrated=False, reason=target.reason, admitted=True))
        return out

    # ------------------------------------------------------------------ outputs for the policy

    def snapshot(self, t_s: float, epoch: int | None = None) -> Snapshot:
        """What the policy sees: instances (telemetry + U_k + caps) and every live agent."""
        if epoch is not None:
            self._epoch = epoch
        return Snapshot(
            t_s=t_s,
            epoch=self._epoch,
            instances=tuple(self.instance_view(k) for k in self.instance_ids),
            agents=tuple(self._views.values()),
            slo_tok_s=self.slo_tok_s,
        )

    def instance_view(self, k: str) -> InstanceView:
        tel = self._telemetry[k]
        return InstanceView(
            instance_id=k,
            supported_clocks_mhz=tel.supported_clocks_mhz or (0,),
            sm_clock_mhz=tel.sm_clock_mhz,
            locked_clock_mhz=tel.locked_clock_mhz,
            power_w=tel.power_w,
            kv_capacity_tokens=tel.kv_capacity_tokens,
            kv_usage_frac=tel.kv_usage_frac,
            resident_context_tokens=self._active_ctx[k],
            resident_agents=self._active_n[k],
            num_running=tel.num_running,
            num_waiting=tel.num_waiting,
            preemptions_total=tel.preemptions_total,
            prefix_queries_tokens=tel.prefix_queries_tokens,
            prefix_hits_tokens=tel.prefix_hits_tokens,
            cap=self._caps[k],
            recomputed_tokens_total=tel.recomputed_tokens_total,
            gpu_util_frac=tel.gpu_util_frac,
            power_limit_w=tel.power_limit_w,
            held_agents=len(self._held[k]),
            held_context_tokens=self._held_ctx[k],
            telemetry_ok=tel.ok,
        )

    def agent(self, agent_id: str) -> AgentView | None:
        return self._views.get(agent_id)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def held_count(self) -> int:
        return sum(len(q) for q in self._held.values())

    @property
    def live_agents(self) -> int:
        return len(self._agents)

    def cap(self, instance_id: str) -> AdmissionCap:
        return self._caps[instance_id]

    def telemetry(self, instance_id: str) -> InstanceTelemetry:
        return self._telemetry[instance_id]

    # ------------------------------------------------------------------ mechanics

    def _resident_ready(self, a: _Agent, t_s: float) -> Dispatch | Hold:
        assert a.instance_id is not None
        here = a.instance_id
        placement = self._place(a)
        if placement.instance_id != here and self._can_admit(placement.instance_id, a):
            return self._dispatch(a, placement.instance_id, t_s, migrated=True, reason=placement.reason, admitted=False)
        if not self._held[here] and self._can_go(here, a):
            return self._dispatch(a, here, t_s, migrated=False, reason="sticky", admitted=False)
        # Hold: the agent leaves U_k while it waits.
        self._leave(a)
        a.phase = AgentPhase.HELD
        a.instance_id = here
        self._held[here][a.agent_id] = None
        self._held_ctx[here] += a.context_tokens
        self._touch(a)
        self.counters.turns_held += 1
        cap = self._caps[here]
        return Hold(a.agent_id, here, f"held: U_k {self._active_ctx[here]} + {a.context_tokens} over cap {cap.hold_above_tokens}, agents {self._active_n[here]}/{cap.max_agents}")

    def _forget(self, a: _Agent) -> None:
        self._leave(a)
        a.phase = AgentPhase.DONE
        del self._agents[a.agent_id]
        self._views.pop(a.agent_id, None)

    def _place(self, a: _Agent) -> Placement:
        placement = self.policy.place(self._views[a.agent_id], self.snapshot_for_placement())
        if placement.instance_id not in self._caps:
            raise ValueError(f"policy {self.policy.name!r} placed agent {a.agent_id} on unknown instance {placement.instance_id!r}")
        return placement

    def snapshot_for_placement(self) -> Snapshot:
        """A snapshot as of the last epoch's telemetry with current U_k (placement happens between epochs)."""
        return self.snapshot(self._now_s, None)

    def _can_go(self, k: str, a: _Agent) -> bool:
        """May a resident agent's turn go out on k, counted with its current context?"""
        counted = a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL) and a.instance_id == k
        n_other = self._active_n[k] - (1 if counted else 0)
        if n_other == 0:
            return True
        u_other = self._active_ctx[k] - (a.context_tokens if counted else 0)
        cap = self._caps[k]
        if cap.hold_above_tokens is not None and u_other + a.context_tokens > cap.hold_above_tokens:
            return False
        if cap.max_agents is not None and n_other + 1 > cap.max_agents:
            return False
        return True

    def _can_admit(self, k: str, a: _Agent) -> bool:
        """May an agent new to k start there? γ rule on U_k, plus the β rule for its own context."""
        counted = a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL) and a.instance_id == k
        if counted:
            return self._can_go(k, a)
        n = self._active_n[k]
        if n == 0:
            return True
        cap = self._caps[k]
        if cap.admit_below_tokens is not None and self._active_ctx[k] >= cap.admit_below_tokens:
            return False
        return self._can_go(k, a)

    def _dispatch(self, a: _Agent, k: str, t_s: float, *, migrated: bool, reason: str, admitted: bool) -> Dispatch:
        self._leave(a)
        if a.instance_id != k:
            a.turns_on_instance = 0
        a.instance_id = k
        a.phase = AgentPhase.IN_LLM
        a.inflight = max(1, a.waiters)
        a.waiters = 0
        self._active_ctx[k] += a.context_tokens
        self._active_n[k] += 1
        waited = max(0.0, t_s - a.ready_s)
        self.counters.turns_dispatched += 1
        self.counters.held_s_total += waited
        if admitted:
            self.counters.agents_admitted += 1
        if migrated:
            self.counters.migrations += 1
        self._touch(a)
        return Dispatch(a.agent_id, k, migrated=migrated, waited_s=waited, reason=reason)

    def _leave(self, a: _Agent) -> None:
        """Remove the agent from whatever aggregate or queue it is counted in."""
        k = a.instance_id
        if a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL) and k is not None:
            self._active_ctx[k] -= a.context_tokens
            self._active_n[k] -= 1
        elif a.phase is AgentPhase.HELD and k is not None and a.agent_id in self._held[k]:
            del self._held[k][a.agent_id]
            self._held_ctx[k] -= a.context_tokens
        elif a.phase is AgentPhase.PENDING:
            self._pending.pop(a.agent_id, None)

    def _set_context(self, a: _Agent, tokens: int) -> None:
        tokens = max(0, int(tokens))
        delta = tokens - a.context_tokens
        if delta and a.instance_id is not None:
            if a.phase in (AgentPhase.IN_LLM, AgentPhase.IN_TOOL):
                self._active_ctx[a.instance_id] += delta
            elif a.phase is AgentPhase.HELD and a.agent_id in self._held[a.instance_id]:
                self._held_ctx[a.instance_id] += delta
        a.context_tokens = tokens
        self._touch(a)

    def _touch(self, a: _Agent) -> None:
        self._views[a.agent_id] = AgentView(
            agent_id=a.agent_id,
            phase=a.phase,
            context_tokens=a.context_tokens,
            turn_index=a.turn_index,
            instance_id=a.instance_id,
            turns_on_instance=a.turns_on_instance,
            output_tok_s=a.rate,
            arrived_s=a.arrived_s,
        )
