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
    """AIMD on active agents per instance. CONCUR's constants are not public in the sources we
    read; these are ours, TCP-like (halve on congestion, +1 per round).

    Per epoch, from counter deltas: the prefix hit rate (hit tokens / query tokens), new
    preemptions, new recomputed tokens (context re-prefilled after eviction). The instance is

    * **thrashing** when it preempted, or its hit rate fell more than ``hit_drop`` below its
      *healthy* level (a moving average over epochs that were not thrashing, so a collapse
      is remembered as a collapse rather than becoming the new normal);
    * **under memory pressure** when KV usage ≥ ``kv_high`` or it re-prefilled evicted context.

    Both together cut the window (× ``decrease_factor``, at most once per ``cooldown_epochs``,
    since a cut takes several turns to show). Growth (+``additive_step``) only while KV usage
    < ``kv_low``, nothing thrashes, and the window binds (the instance is full of agents or
    agents wait), so an idle window cannot inflate without limit (TCP's congestion-window
    validation, RFC 7661).
    """

    initial_agents: int = 8
    min_agents: int = 1
    max_agents: int = 4096
    additive_step: int = 1  # agents added per epoch of headroom
    decrease_factor: float = 0.5  # window × this on congestion
    kv_low: float = 0.8  # grow only below this KV usage (0..1)
    kv_high: float = 0.95  # congestion needs at least this KV usage
    hit_drop: float = 0.05  # hit-rate fall (absolute, 0..1) that counts as thrashing
    hit_ewma: float = 0.3  # weight of the newest epoch in the healthy hit-rate average
    cooldown_epochs: int = 3  # epochs after a cut before the next cut

    def __post_init__(self) -> None:
        if not 1 <= self.min_agents <= self.initial_agents <= self.max_agents:
            raise ValueError("need 1 <= min_agents <= initial_agents <= max_agents")
        if not 0 < self.decrease_factor < 1 or self.additive_step < 1:
            raise ValueError("need 0 < decrease_factor < 1 and additive_step >= 1")
        if not 0 <= self.kv_low <= self.kv_high <= 1 or not 0 < self.hit_ewma <= 1 or self.cooldown_epochs < 0:
            raise ValueError("need 0 <= kv_low <= kv_high <= 1, 0 < hit_ewma <= 1 and cooldown_epochs >= 0")


@dataclass
class _AimdState:
    window: int
    queries: int = 0
    hits: int = 0
    preemptions: int = 0
    recomputed: int = 0
    hit_avg: float | None = None  # healthy hit rate
    since_cut: int = 1 << 30
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
            d_rec = inst.recomputed_tokens_total - st.recomputed
            first = not st.seen
            st.queries, st.hits, st.preemptions, st.recomputed, st.seen = (
                inst.prefix_queries_tokens,
                inst.prefix_hits_tokens,
                inst.preemptions_total,
                inst.recomputed_tokens_total,
                True,
            )
            st.since_cut += 1
            hit = d_h / d_q if d_q > 0 and not first else None
            fell = hit is not None and st.hit_avg is not None and hit < st.hit_avg - p.hit_drop
            thrashing = not first and (d_pre > 0 or fell)
            pressure = inst.kv_usage_frac >= p.kv_high or (not first and d_rec > 0)
            binds = inst.resident_agents + inst.held_agents >= st.window or pending > 0
            hit_s = "n/a" if hit is None else f"{hit:.2f}"
            if thrashing and pressure and st.since_cut > p.cooldown_epochs:
                st.window = max(p.min_agents, math.floor(st.window * p.decrease_factor))
                st.since_cut = 0
                why = f"cut to {st.window}: kv {inst.kv_usage_frac:.2f}, hit {hit_s} (healthy {st.hit_avg or 0:.2f}), +{max(d_pre, 0)} preemptions, +{max(d_rec, 0)} recomputed"
            elif not thrashing and inst.kv_usage_frac < p.kv_low and binds:
                st.window = min(p.max_agents, st.window + p.additive_step)
                why = f"grow to {st.window}: kv {inst.kv_usage_frac:.2f}, hit {hit_s}"
            else:
                why = f"hold {st.window}: kv {inst.kv_usage_frac:.2f}, hit {hit_s}"
            if hit is not None and not thrashing:
                st.hit_avg = hit if st.hit_avg is None else (1 - p.hit_ewma) * st.hit_avg + p.hit_ewma * hit
            caps.append(AdmissionCap(inst.instance_id, max_agents=st.window))
            notes[inst.instance_id] = why
        self.last_notes = notes
        return caps
