"""Services a run starts before the replay and stops after it: the hook for the emulator, the
gateway and the profiler.

A service is a factory ``(RunContext) -> async context manager``. The orchestrator enters the
services in order before replaying and exits them in reverse order after (on every exit path,
Ctrl-C included). While entered, a service may:

- set ``ctx.endpoints`` (what the load generator drives) and ``ctx.instance_endpoints`` (the
  serving instances themselves) — the emulator sets both; a gateway placed after it reads
  ``instance_endpoints`` and replaces ``endpoints`` with its own URL;
- write files into ``ctx.run_dir`` (the profiler's ``power.parquet``, a gateway's
  ``control.parquet``) and describe itself in ``ctx.manifest[<name>]`` (saved in manifest.json);
- add live-progress fields with ``ctx.live_fields.append(lambda: {"power": "312 W"})``.

Example (the profiler hook, as the profiler's own module would write it)::

    @contextlib.asynccontextmanager
    async def profiler_service(ctx: RunContext):
        handle = start_profiler(ctx.run_dir, [f"emulator:{u}" for u in ctx.instance_endpoints])
        try:
            yield
        finally:
            ctx.manifest["profiler"] = handle.stop().to_dict()

and ``kairosbench.replay.cli.build_services`` is where a flag turns it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Mapping

from kairosbench.errors import UsageError
from kairosbench.replay.config import RunConfig

__all__ = ["RunContext", "ServiceFactory", "emulator_service"]

log = logging.getLogger("kairosbench.replay")


@dataclass
class RunContext:
    """Shared, mutable state of one run while its services are up."""

    config: RunConfig
    run_dir: Path
    endpoints: list[str] = field(default_factory=list)
    instance_endpoints: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    live_fields: list[Callable[[], Mapping[str, str]]] = field(default_factory=list)


ServiceFactory = Callable[[RunContext], AsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def emulator_service(ctx: RunContext) -> AsyncIterator[None]:
    """The embedded default: emulated instances on 127.0.0.1.

    Prefers ``EmulatorProcess`` (a subprocess, so the engine model gets its own core and its
    timing is not disturbed by the load generator); falls back to the in-process
    ``running_emulator`` when that cannot start, or when ``emulator_in_process`` is set.
    """
    cfg = ctx.config
    try:
        from kairosbench.emulator import launch
    except ImportError as exc:
        raise UsageError("the embedded emulator is not available in this install (kairosbench.emulator.launch); pass --endpoint URL") from exc
    info: dict[str, Any] = {"instances": cfg.instances, "gpu": cfg.emulator_gpu, "model": cfg.emulator_model, "seed": cfg.seed}
    proc = None
    urls: list[str] | None = None
    if not cfg.emulator_in_process and hasattr(launch, "EmulatorProcess"):
        proc = launch.EmulatorProcess(cfg.instances, gpu=cfg.emulator_gpu, model=cfg.emulator_model, seed=cfg.seed)
        try:
            urls = await asyncio.to_thread(proc.start)
            info["mode"] = "subprocess"
        except Exception as exc:
            log.warning("emulator subprocess failed to start (%s); running it in-process", exc)
            info["subprocess_error"] = str(exc)[:300]
            await asyncio.to_thread(proc.stop)
            proc = None
    try:
        if urls is not None:
            ctx.endpoints, ctx.instance_endpoints = list(urls), list(urls)
            info["endpoints"] = list(urls)
            ctx.manifest["emulator"] = info
            yield
        else:
            async with launch.running_emulator(cfg.instances, gpu=cfg.emulator_gpu, model=cfg.emulator_model, seed=cfg.seed) as in_urls:
                info["mode"] = "in-process"
                ctx.endpoints, ctx.instance_endpoints = list(in_urls), list(in_urls)
                info["endpoints"] = list(in_urls)
                ctx.manifest["emulator"] = info
                yield
    finally:
        if proc is not None:
            await asyncio.to_thread(proc.stop)
