"""The gateway: agent tracking, admission, placement and the control loop around a policy.

Public API (imported lazily, so ``import kairosbench.gateway`` stays cheap)::

    running_gateway(endpoints, policy, run_dir, *, epoch_s=1.0, actuator="auto", slo_tok_s=20.0,
                    host="127.0.0.1", port=0, **options)        # async context manager -> URL
    serve_gateway(...)                                         # same, yields a GatewayHandle
    AgentTracker, InstanceTelemetry, Dispatch, Hold            # the pure tracker (also used by kairosbench.sim)

See docs/gateway.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["running_gateway", "serve_gateway", "GatewayHandle", "AgentTracker", "InstanceTelemetry", "Dispatch", "Hold"]

_WHERE = {
    "running_gateway": "kairosbench.gateway.launch",
    "serve_gateway": "kairosbench.gateway.launch",
    "GatewayHandle": "kairosbench.gateway.launch",
    "AgentTracker": "kairosbench.gateway.tracker",
    "InstanceTelemetry": "kairosbench.gateway.tracker",
    "Dispatch": "kairosbench.gateway.tracker",
    "Hold": "kairosbench.gateway.tracker",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'kairosbench.gateway' has no attribute {name!r}")
