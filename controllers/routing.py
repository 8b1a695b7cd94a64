"""Routing baselines: round-robin and least-loaded, both sticky.

Both place a *new* agent and then keep it where its context lives: moving an agent costs a
full re-prefill of its context on the new instance, so no sensible baseline moves agents
between turns (KAIROS's router is the one that may, rarely). Round-robin is KAIROS's routing
baseline [2nd]; least-loaded (lowest U_k/U_max) is the usual load-balancer default.
"""

from __future__ import annotations

from controllers.snapshot import AgentView, Placement, Snapshot

__all__ = ["RoundRobinRouter", "LeastLoadedRouter"]


def _sticky(agent: AgentView, snap: Snapshot) -> Placement | None:
    if agent.instance_id is not None and any(i.instance_id == agent.instance_id for i in snap.instances):
        return Placement(agent.instance_id, reason="sticky")
    return None


class RoundRobinRouter:
    """New agents go to instances in turn; keeps one counter."""

    name = "rr"

    def __init__(self) -> None:
        self._next = 0

    def place(self, agent: AgentView, snap: Snapshot) -> Placement:
        sticky = _sticky(agent, snap)
        if sticky is not None:
            return sticky
        inst = snap.instances[self._next % len(snap.instances)]
        self._next += 1
        return Placement(inst.instance_id, reason="round-robin")


class LeastLoadedRouter:
    """New agents go to the instance with the lowest resident context fraction (ties: lowest index)."""

    name = "least-loaded"

    def place(self, agent: AgentView, snap: Snapshot) -> Placement:
        sticky = _sticky(agent, snap)
        if sticky is not None:
            return sticky
        inst = min(snap.instances, key=lambda i: (i.context_frac, i.resident_context_tokens + i.held_context_tokens, i.resident_agents))
        return Placement(inst.instance_id, reason="least-loaded")
