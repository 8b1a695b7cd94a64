"""The gateway as a ``kairosbench run`` service: ``--policy NAME`` puts it between the load
generator and the instances (see ``kairosbench.replay.services`` for the service contract).

It reads ``ctx.instance_endpoints`` (the emulator service, or ``--endpoint``s, set them),
replaces ``ctx.endpoints`` with the gateway's own URL, writes control.parquet and
gateway.parquet into the run directory, adds clocks and held/pending agents to the live
progress line, and records itself under ``manifest["gateway"]``. Clocks are restored on
every exit path by ``serve_gateway``'s own ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from kairosbench.gateway.launch import serve_gateway

__all__ = ["gateway_service"]


@contextlib.asynccontextmanager
async def gateway_service(ctx: Any) -> AsyncIterator[None]:
    """Start the policy gateway for one run (``ctx`` is a ``kairosbench.replay.services.RunContext``)."""
    cfg = ctx.config
    async with serve_gateway(
        list(ctx.instance_endpoints),
        cfg.policy,
        ctx.run_dir,
        epoch_s=getattr(cfg, "epoch_s", 1.0),
        actuator=getattr(cfg, "actuator", "auto"),
        slo_tok_s=cfg.slo_tok_s,
        allow_real_clock_changes=getattr(cfg, "allow_real_clock_changes", False),
    ) as handle:
        ctx.endpoints = [handle.url]
        ctx.live_fields.append(handle.live_fields)
        info = dict(handle.info)
        try:
            yield
        finally:
            c = handle.tracker.counters
            info["counters"] = {k: getattr(c, k) for k in c.__slots__}
            info["actuator_changes"] = [i.actuator.changes for i in handle.instances]
            info["telemetry_errors"] = [i.telemetry.errors for i in handle.instances]
            ctx.manifest["gateway"] = info
