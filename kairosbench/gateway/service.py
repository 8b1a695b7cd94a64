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
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from kairosbench.gateway.launch import serve_gateway

__all__ = ["gateway_service", "local_gpu_indices"]


def local_gpu_indices(cfg: Any, endpoints: list[str], notes: list[str], *, gpu_count: Callable[[], int] | None = None) -> list[int] | None:
    """Which local GPU serves each real endpoint, for the policy's clock reads and the actuator.

    ``--gpu-index`` says so explicitly. Without it, the one unambiguous case is guessed: a single
    loopback endpoint on a host with exactly one GPU. The guess is added to ``notes``; a
    dry-run actuator then logs the clocks it would set on that GPU (it never sets them).
    Emulated instances need none: they carry their own telemetry and clock control.
    """
    explicit = list(getattr(cfg, "gpu_index", []) or [])
    if explicit:
        return explicit
    if not getattr(cfg, "endpoint", None) or len(endpoints) != 1:
        return None
    host = (urlsplit(endpoints[0]).hostname or "").lower()
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    count = gpu_count() if gpu_count is not None else _nvml_gpu_count()
    if count != 1:
        return None
    notes.append("gateway: the loopback endpoint is taken to run on this host's only GPU (index 0); pass --gpu-index to say otherwise")
    return [0]


def _nvml_gpu_count() -> int:
    """Number of local NVML GPUs, 0 when NVML is absent (never raises)."""
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library, no permission: no local GPU to map
        return 0


@contextlib.asynccontextmanager
async def gateway_service(ctx: Any) -> AsyncIterator[None]:
    """Start the policy gateway for one run (``ctx`` is a ``kairosbench.replay.services.RunContext``)."""
    cfg = ctx.config
    notes: list[str] = []
    gpu_indices = local_gpu_indices(cfg, list(ctx.instance_endpoints), notes)
    async with serve_gateway(
        list(ctx.instance_endpoints),
        cfg.policy,
        ctx.run_dir,
        epoch_s=getattr(cfg, "epoch_s", 1.0),
        actuator=getattr(cfg, "actuator", "auto"),
        slo_tok_s=cfg.slo_tok_s,
        allow_real_clock_changes=getattr(cfg, "allow_real_clock_changes", False),
        gpu_indices=gpu_indices,
        kv_capacity_tokens=getattr(cfg, "kv_capacity_tokens", None),
    ) as handle:
        ctx.endpoints = [handle.url]
        ctx.live_fields.append(handle.live_fields)
        info = dict(handle.info)
        info["gpu_indices"] = gpu_indices
        info["notes"] = notes
        try:
            yield
        finally:
            c = handle.tracker.counters
            info["counters"] = {k: getattr(c, k) for k in c.__slots__}
            info["actuator_changes"] = [i.actuator.changes for i in handle.instances]
            info["telemetry_errors"] = [i.telemetry.errors for i in handle.instances]
            ctx.manifest["gateway"] = info
