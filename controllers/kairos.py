"""KAIROS: agent context as the control signal for GPU clocks, admission and placement.

Implements the controller and router of KAIROS (Yuan, Chowdhury, Talati, arXiv 2604.16682,
§6, App. A.1-A.2). No copy of the paper was available; the design and every constant below
come from a **second-hand full-text review** (the JouleServe-WS paper card,
``saisandeshk/jouleserve-ws: review/systems/kairos.md``), cross-checked against a survey.
See docs/policies.md and ANCHORS.md §1.3. Where the review is silent we decided, and say so.

Per instance k, with U_k the context of the agents active there and U_max its KV capacity:

* **Clock** (Eq. 8-9): a discrete level that rises monotonically with U_k/U_max; at or above
  α·U_max a protective high clock; when the P5 per-agent output rate of the agents on k falls
  below τ, the maximum clock; an instance with no agents parks at its lowest clock.
* **Admission** (§6.2.4): a resident agent's next turn waits at the gateway if it would push
  U_k above β·U_max; a pending agent is admitted only while U_k < γ·U_max (γ < β is the
  hysteresis). Nothing is ever preempted inside the engine.
* **Router** (§6.3, Alg. 2-3): while the active instances hold < 50% of their context
  capacity, consolidate (lowest-index instance with room); otherwise least-loaded. Sticky;
  an agent moves only at a turn boundary, after ≥ 8 turns on its instance, when that
  instance holds ≥ 2× the context of the least-loaded one.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.base import ComposedPolicy
from controllers.clocks import clock_at_frac
from controllers.snapshot import AdmissionCap, AgentPhase, AgentView, InstanceView, Placement, SetClock, Snapshot
from controllers.stats import percentile

__all__ = ["KairosParams", "KairosClock", "KairosAdmission", "KairosRouter", "KairosPolicy", "kairos_level_frac"]


@dataclass(frozen=True, slots=True)
class KairosParams:
    """Every KAIROS constant, with the paper's value (via the second-hand review) as default.

    Paper values [2nd: JouleServe card §4-5]: ``alpha``, ``beta``, ``gamma``, ``tau_tok_s``
    (the 20 tok/s P5 SLO; also run at 35 and 45), ``consolidate_below_frac``,
    ``migrate_after_turns``, ``migrate_ratio``.

    Our decisions (the review gives Eq. 8-9's shape, not its table):

    * ``level_fracs``: the clock levels below α, as fractions of the maximum clock, one per
      equal band of U_k/U_max in [0, α). The lowest, 0.54, is KAIROS's measured sweet spot
      (900 of 1680 MHz on H100 NVL, §3.3); below it the paper saw thrashing, so no level goes
      lower while agents are resident. The levels rise to 0.72 at α.
    * ``protective_frac``: the "protective high regime" above α·U_max, 0.9 of max: high
      enough to drain long contexts before KV runs out, below the SLO boost's full clock.
    * ``boost_exit_margin``: the SLO boost is a latch: on when P5 < τ, off only when
      P5 ≥ τ·(1 + margin), so one epoch's noise does not flip the clock every second.
    """

    alpha: float = 0.75  # protective high clock at/above α·U_max [2nd]
    beta: float = 0.95  # hold resident agents' turns that would push U_k above β·U_max [2nd]
    gamma: float = 0.9  # admit pending agents only while U_k < γ·U_max [2nd]
    tau_tok_s: float | None = None  # SLO on P5 per-agent output tok/s; None: the run's --slo (default 20) [2nd]
    level_fracs: tuple[float, ...] = (0.54, 0.60, 0.66, 0.72)  # ours; see class docstring
    protective_frac: float = 0.9  # ours
    boost_exit_margin: float = 0.1  # ours: hysteresis of the SLO boost
    consolidate_below_frac: float = 0.5  # consolidate while active instances < 50% full [2nd]
    migrate_after_turns: int = 8  # an agent may move only after ≥ 8 turns on its instance [2nd]
    migrate_ratio: float = 2.0  # ... when its instance holds ≥ 2x the least-loaded one's context [2nd]
    park_idle: bool = True  # instances with no agents at the lowest clock [2nd]

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1 or not 0 < self.gamma <= self.beta <= 1:
            raise ValueError(f"need 0 < alpha <= 1 and 0 < gamma <= beta <= 1 (got alpha={self.alpha}, beta={self.beta}, gamma={self.gamma})")
        if not self.level_fracs or any(b < a for a, b in zip(self.level_fracs, self.level_fracs[1:])):
            raise ValueError(f"level_fracs must be non-empty and non-decreasing (got {self.level_fracs})")
        if not all(0 < f <= 1 for f in (*self.level_fracs, self.protective_frac)):
            raise ValueError("clock fractions must lie in (0, 1]")
        if self.protective_frac < self.level_fracs[-1]:
            raise ValueError("protective_frac must not be below the highest level (the clock must rise with U_k)")
        if self.migrate_after_turns < 0 or self.migrate_ratio < 1 or not 0 < self.consolidate_below_frac <= 1:
            raise ValueError("need migrate_after_turns >= 0, migrate_ratio >= 1, 0 < consolidate_below_frac <= 1")


def kairos_level_frac(u: float, params: KairosParams) -> float:
    """The clock fraction for context fill ``u`` = U_k/U_max, before the SLO boost (monotone in u)."""
    if u >= params.alpha:
        return params.protective_frac
    n = len(params.level_fracs)
    band = min(n - 1, int(max(0.0, u) / params.alpha * n))
    return params.level_fracs[band]


def _agents_by_instance(snap: Snapshot) -> dict[str, list[AgentView]]:
    by: dict[str, list[AgentView]] = {}
    for a in snap.agents:
        if a.instance_id is not None and a.phase is not AgentPhase.DONE:
            by.setdefault(a.instance_id, []).append(a)
    return by


class KairosClock:
    """The per-instance frequency controller. Keeps one bit of state per instance: the SLO latch."""

    name = "kairos"

    def __init__(self, params: KairosParams = KairosParams()) -> None:
        self.params = params
        self._boosted: dict[str, bool] = {}
        self.last_notes: dict[str, str] = {}

    def clocks(self, snap: Snapshot) -> list[SetClock]:
        p = self.params
        tau = p.tau_tok_s if p.tau_tok_s is not None else snap.slo_tok_s
        by = _agents_by_instance(snap)
        out: list[SetClock] = []
        notes: dict[str, str] = {}
        for inst in snap.instances:
            agents = by.get(inst.instance_id, [])
            if p.park_idle and not agents and inst.resident_agents == 0 and inst.held_agents == 0 and inst.num_running == 0 and inst.num_waiting == 0:
                self._boosted[inst.instance_id] = False
                out.append(SetClock(inst.instance_id, inst.min_clock_mhz))
                notes[inst.instance_id] = "idle: park at lowest clock"
                continue
            p5 = percentile((a.output_tok_s for a in agents if a.output_tok_s is not None), 5)
            boosted = self._boosted.get(inst.instance_id, False)
            if p5 is not None and p5 < tau:
                boosted = True
            elif boosted and (p5 is None or p5 >= tau * (1 + p.boost_exit_margin)):
                boosted = False
            self._boosted[inst.instance_id] = boosted
            u = inst.context_frac
            if boosted:
                mhz, why = inst.max_clock_mhz, f"SLO boost: P5 {p5:.1f} < {tau:g} tok/s" if p5 is not None and p5 < tau else "SLO boost held"
            else:
                frac = kairos_level_frac(u, p)
                mhz = clock_at_frac(inst.supported_clocks_mhz, frac)
                why = f"{'protective' if u >= p.alpha else 'level'} {frac:.2f} at U/Umax {u:.2f}"
            out.append(SetClock(inst.instance_id, mhz))
            notes[inst.instance_id] = why
        self.last_notes = notes
        return out


class KairosAdmission:
    """β/γ admission caps in tokens; stateless. No cap where U_max is unknown (reported in notes)."""

    name = "kairos"

    def __init__(self, params: KairosParams = KairosParams()) -> None:
        self.params = params
        self.last_notes: dict[str, str] = {}

    def caps(self, snap: Snapshot) -> list[AdmissionCap]:
        caps: list[AdmissionCap] = []
        notes: dict[str, str] = {}
        for inst in snap.instances:
            if inst.kv_capacity_tokens <= 0:
                caps.append(AdmissionCap(inst.instance_id))
                notes[inst.instance_id] = "no KV capacity known: admission uncapped"
                continue
            caps.append(
                AdmissionCap(
                    inst.instance_id,
                    admit_below_tokens=int(self.params.gamma * inst.kv_capacity_tokens),
                    hold_above_tokens=int(self.params.beta * inst.kv_capacity_tokens),
                )
            )
        self.last_notes = notes
        return caps


class KairosRouter:
    """Consolidate-then-spread placement with rare, turn-boundary reassignment. Stateless."""

    name = "kairos"

    def __init__(self, params: KairosParams = KairosParams()) -> None:
        self.params = params

    def _consolidating(self, snap: Snapshot) -> bool:
        active = [i for i in snap.instances if i.resident_agents > 0 or i.held_agents > 0]
        cap = sum(i.kv_capacity_tokens for i in active)
        if not active or cap <= 0:
            return True
        used = sum(i.resident_context_tokens + i.held_context_tokens for i in active)
        return used / cap < self.params.consolidate_below_frac

    @staticmethod
    def _least_loaded(instances: tuple[InstanceView, ...] | list[InstanceView]) -> InstanceView:
        return min(instances, key=lambda i: (i.context_frac, i.resident_context_tokens))

    def _has_room(self, inst: InstanceView, agent: AgentView) -> bool:
        if inst.kv_capacity_tokens <= 0:
            return True
        return inst.resident_context_tokens + agent.context_tokens < self.params.gamma * inst.kv_capacity_tokens

    def place(self, agent: AgentView, snap: Snapshot) -> Placement:
        p = self.params
        known = {i.instance_id for i in snap.instances}
        if agent.instance_id is None or agent.instance_id not in known:
            if self._consolidating(snap):
                for inst in snap.instances:
                    if self._has_room(inst, agent):
                        return Placement(inst.instance_id, reason="consolidate: lowest-index instance with room")
                return Placement(self._least_loaded(snap.instances).instance_id, reason="consolidate: none has room, least-loaded")
            return Placement(self._least_loaded(snap.instances).instance_id, reason="spread: least-loaded")
        here = snap.instance(agent.instance_id)
        at_boundary = agent.phase in (AgentPhase.IN_TOOL, AgentPhase.HELD, AgentPhase.PENDING)
        if not at_boundary or agent.turns_on_instance < p.migrate_after_turns or len(snap.instances) < 2 or self._consolidating(snap):
            return Placement(here.instance_id, reason="sticky")
        others = [i for i in snap.instances if i.instance_id != here.instance_id]
        target = self._least_loaded(others)
        # U_k counts active agents; a held agent's own context is outside it, so add it back.
        here_tokens = here.resident_context_tokens + (agent.context_tokens if agent.phase is AgentPhase.HELD else 0)
        if here_tokens >= p.migrate_ratio * target.resident_context_tokens and here_tokens > 0 and self._has_room(target, agent):
            return Placement(
                target.instance_id,
                migrate=True,
                reason=f"reassign after {agent.turns_on_instance} turns: {here_tokens} >= {p.migrate_ratio:g}x {target.resident_context_tokens} tokens",
            )
        return Placement(here.instance_id, reason="sticky")


class KairosPolicy(ComposedPolicy):
    """The full KAIROS policy: its clock controller, admission caps and router with shared parameters."""

    def __init__(self, params: KairosParams = KairosParams(), name: str = "kairos") -> None:
        self.params = params
        super().__init__(KairosClock(params), KairosAdmission(params), KairosRouter(params), name=name)
