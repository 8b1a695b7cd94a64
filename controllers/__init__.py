"""The systems under test: pure power/admission/routing policies (KAIROS and baselines).

Nothing here imports the harness's IO: a policy is a snapshot in, actions out.
"""

from controllers.base import AdmissionPolicy, ClockPolicy, ComposedPolicy, Policy, RoutingPolicy
from controllers.kairos import KairosParams, KairosPolicy
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
    "KairosParams",
    "KairosPolicy",
    "Placement",
    "Policy",
    "RoutingPolicy",
    "SetClock",
    "Snapshot",
    "build_policy",
]


def build_policy(spec: str) -> Policy:
    """A fresh policy for a spec such as ``kairos``, ``static:900`` or ``clock=max,admission=aimd``."""
    from controllers.registry import build_policy as _build

    return _build(spec)
