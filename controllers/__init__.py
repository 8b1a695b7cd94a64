"""The systems under test: pure power/admission/routing policies (KAIROS and baselines).

Nothing here imports the harness's IO: a policy is a snapshot in, actions out.
"""

from controllers.base import AdmissionPolicy, ClockPolicy, ComposedPolicy, Policy, RoutingPolicy
from controllers.snapshot import (
    Actions,
    AdmissionCap,
    AgentPhase,
    AgentView,
    InstanceView,
    Placement,
    SetClock,
    Snapshot,
)

__all__ = [
    "Actions",
    "AdmissionCap",
    "AdmissionPolicy",
    "AgentPhase",
    "AgentView",
    "ClockPolicy",
    "ComposedPolicy",
    "InstanceView",
    "Placement",
    "Policy",
    "RoutingPolicy",
    "SetClock",
    "Snapshot",
]
