"""The policy interface: three small strategies composed into one ``Policy``.

A clock policy, an admission policy and a routing policy are chosen independently by name
(``controllers.registry``) and composed; KAIROS supplies all three.
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
        return Actions(clocks=tuple(self.clock.clocks(snap)), caps=tuple(self.admission.caps(snap)))

    def place(self, agent: AgentView, snap: Snapshot) -> Placement:
        return self.routing.place(agent, snap)
