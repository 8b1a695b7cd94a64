"""Admission baselines: none, and a CONCUR-style AIMD agent-concurrency controller (no DVFS).

CONCUR (Chen et al., arXiv 2601.22705; ANCHORS.md §2.3) admits, pauses and resumes whole
agents on top of an unmodified engine, steering the number of active agents like TCP steers
its window: grow additively while KV utilisation is low, cut multiplicatively when
utilisation is high and the prefix-cache hit rate falls (the mark of "middle-phase
thrashing"). Composed with ``clock=max`` it separates the concurrency knob from the clock
knob: whatever KAIROS gains beyond AIMD+max comes from its clock control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controllers.snapshot import AdmissionCap, AgentPhase, Snapshot

__all__ = ["NoAdmission", "AimdParams", "AimdAdmission"]


class NoAdmission:
    """Every agent goes straight to its instance: the engine's own scheduler is the only limit."""

    name = "none"

    def caps(self, snap: Snapshot) -> list[AdmissionCap]:
        return [AdmissionCap(i.instance_id) for i in snap.instances]


@dataclass(frozen=True, slots=True)
class AimdParams:
    """AIMD on active agents per instance. Paper values for CONCUR's constants are not public in
    the sources we read; these are ours, chosen as TCP's (halve on congestion, +1 per round).

    Congestion in an epoch = KV usage ≥ ``kv_high`` and either the prefix hit rate (tokens,
    over the epoch) fell by more than ``hit_drop`` below its moving average, or the engine
    preempted. Growth only while KV usage < ``kv_low`` and the window actually binds (the
    instance is full of agents or agents wait), so an idle window cannot inflate without
    limit (TCP's congestion-window validation, RFC 7661).
    """

    initial_agents: int = 8
    min_agents: int = 1
    max_agents: int = 4096
    additive_step: int = 1  # agents added per epoch of headroom
    decrease_factor: float = 0.5  # window × this on congestion
    kv_low: float = 0.8  # grow only below this KV usage (0..1)
    kv_high: float = 0.95  # congestion needs at least this KV usage
    hit_drop: float = 0.05  # hit-rate fall (absolute, 0..1) that counts as thrashing
    hit_ewma: float = 0.3  # weight of the newest epoch in the hit-rate average

    def __post_init__(self) -> None:
        if not 1 <= self.min_agents <= self.initial_agents <= self.max_agents:
            raise ValueError("need 1 <= min_agents <= initial_agents <= max_agents")
        if not 0 < self.decrease_factor < 1 or self.additive_step < 1:
            raise ValueError("need 0 < decrease_factor < 1 and additive_step >= 1")
        if not 0 <= self.kv_low <= self.kv_high <= 1 or not 0 < self.hit_ewma <= 1:
            raise ValueError("need 0 <= kv_low <= kv_high <= 1 and 0 < hit_ewma <= 1")


@dataclass
class _AimdState:
    window: int
    queries: int = 0
    hits: int = 0
    preemptions: int = 0
    hit_avg: float | None = None
    seen: bool = field(default=False)


class AimdAdmission:
    """Per-instance AIMD window on active agents, expressed as ``AdmissionCap.max_agents``."""

    name = "aimd"

    def __init__(self, params: AimdParams = AimdParams()) -> None:
        self.params = params
        self._state: dict[str, _AimdState] = {}
        self.last_notes: dict[str, str] = {}

    def window(self, instance_id: str) -> int | None:
        """The current window of ``instance_id`` (None before its first epoch)."""
        st = self._state.get(instance_id)
        return st.window if st else None

    def caps(self, snap: Snapshot) -> list[AdmissionCap]:
        p = self.params
        pending = sum(1 for a in snap.agents if a.phase is AgentPhase.PENDING)
        caps, notes = [], {}
        for inst in snap.instances:
            st = self._state.setdefault(inst.instance_id, _AimdState(window=p.initial_agents))
            d_q = inst.prefix_queries_tokens - st.queries
            d_h = inst.prefix_hits_tokens - st.hits
            d_pre = inst.preemptions_total - st.preemptions
            first = not st.seen
            st.queries, st.hits, st.preemptions, st.seen = inst.prefix_queries_tokens, inst.prefix_hits_tokens, inst.preemptions_total, True
            hit = d_h / d_q if d_q > 0 and not first else None
            thrashing = False
            if hit is not None and st.hit_avg is not None and hit < st.hit_avg - p.hit_drop:
                thrashing = True
            if not first and d_pre > 0:
                thrashing = True
            congested = inst.kv_usage_frac >= p.kv_high and thrashing
            binds = inst.resident_agents + inst.held_agents >= st.window or pending > 0
            if congested:
                st.window = max(p.min_agents, math.floor(st.window * p.decrease_factor))
                why = f"cut to {st.window}: kv {inst.kv_usage_frac:.2f}, hit {hit if hit is None else round(hit, 3)}, +{max(d_pre, 0)} preemptions"
            elif inst.kv_usage_frac < p.kv_low and binds:
                st.window = min(p.max_agents, st.window + p.additive_step)
                why = f"grow to {st.window}: kv {inst.kv_usage_frac:.2f}"
            else:
                why = f"hold {st.window}: kv {inst.kv_usage_frac:.2f}"
            if hit is not None:
                st.hit_avg = hit if st.hit_avg is None else (1 - p.hit_ewma) * st.hit_avg + p.hit_ewma * hit
            caps.append(AdmissionCap(inst.instance_id, max_agents=st.window))
            notes[inst.instance_id] = why
        self.last_notes = notes
        return caps
