"""The policy interface: three small strategies composed into one ``Policy``.

A clock policy, an admission policy and a routing policy are chosen independently by name
(``controllers.registry``) and composed; KAIROS supplies all three.

Strategies may keep state between epochs (AIMD keeps its window, KAIROS its SLO-boost
latch), so build a fresh policy per run. A strategy may explain itself: if it has a
``last_notes`` mapping (instance_id -> why), ``ComposedPolicy.decide`` copies it into
``Actions.notes`` after each call, and the gateway writes it to control.parquet.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from controllers.snapshot import Actions, AdmissionCap, AgentView, Placement, SetClock, Snapshot

__all__ = ["ClockPolicy", "AdmissionPolicy", "RoutingPolicy", "Policy", "ComposedPolicy"]


@runtime_checkable
class ClockPolicy(Protocol):
    name: str

    def clocks(self, snap: Snapshot) -> list[SetClock]: ...


@runtime_checkable
class AdmissionPolicy(Protocol):
    name: str

    def caps(self, snap: Snapshot) -> list[AdmissionCap]: ...


@runtime_checkable
class RoutingPolicy(Protocol):
    name: str

    def place(self, agent: AgentView, snap: Snapshot) -> Placement: ...


@runtime_checkable
class Policy(Protocol):
    """What the gateway and the simulator drive."""

    name: str

    def decide(self, snap: Snapshot) -> Actions: ...

    def place(self, agent: AgentView, snap: Snapshot) -> Placement: ...


class ComposedPolicy:
    """A clock, an admission and a routing strategy acting as one policy."""

    def __init__(self, clock: ClockPolicy, admission: AdmissionPolicy, routing: RoutingPolicy, name: str | None = None) -> None:
        self.clock, self.admission, self.routing = clock, admission, routing
        self.name = name or f"{clock.name}+{admission.name}+{routing.name}"

    def decide(self, snap: Snapshot) -> Actions:
        clocks = tuple(self.clock.clocks(snap))
        caps = tuple(self.admission.caps(snap))
        notes: dict[str, str] = {}
        for part in (self.clock, self.admission):
            for instance_id, why in (getattr(part, "last_notes", None) or {}).items():
                notes[instance_id] = f"{notes[instance_id]}; {why}" if instance_id in notes else why
        return Actions(clocks=clocks, caps=caps, notes=notes)

    def place(self, agent: AgentView, snap: Snapshot) -> Placement:
        return self.routing.place(agent, snap)
