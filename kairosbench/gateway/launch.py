"""Start and stop a gateway: the public API the run orchestrator and the CLI use.

    async with running_gateway(["http://127.0.0.1:8001", "http://127.0.0.1:8002"], "kairos", run_dir) as url:
        ...  # point the load generator at url (an OpenAI base URL without /v1)

On exit (normal, exception, cancellation from Ctrl-C/SIGTERM handlers) the ``finally`` stops
the control loop *first*, then restores every clock the actuators changed, then stops
serving and closes control.parquet / gateway.parquet. Clock restoration is shielded from a
second cancellation. Clocks left locked by a SIGKILLed gateway are listed in
``<run_dir>/actuator-state.json``; starting a gateway on the same run dir, or
``kairosbench gateway restore --run-dir DIR``, puts them back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from controllers.registry import build_policy
from kairosbench.clock import WallClock
from kairosbench.errors import ActuatorError, UsageError
from kairosbench.gateway.actuator_state import STATE_FILE_NAME, ActuatorStateFile
from kairosbench.gateway.actuators import (
    ACTUATOR_KINDS,
    ClockActuator,
    DryRunActuator,
    EmulatorClockActuator,
    NvmlClockActuator,
    restore_from_state,
)
from kairosbench.gateway.control_log import ControlLog, RequestLog
from kairosbench.gateway.control_loop import ControlLoop, GatewayInstance
from kairosbench.gateway.proxy import GatewayProxy
from kairosbench.gateway.telemetry import EmulatorTelemetry, NvmlReader, detect_telemetry, endpoint_root
from kairosbench.gateway.tracker import AgentTracker
from kairosbench.profiler.http_fetch import HttpFetcher

__all__ = ["running_gateway", "serve_gateway", "GatewayHandle", "GATEWAY_INFO_FILE"]

log = logging.getLogger("kairosbench.gateway")

GATEWAY_INFO_FILE = "gateway.json"


@dataclass
class GatewayHandle:
    """A live gateway: its URL and the objects a host process may want to watch (live progress)."""

    url: str
    tracker: AgentTracker
    control: ControlLoop
    proxy: GatewayProxy
    instances: list[GatewayInstance]
    info: dict[str, Any]

    def live_fields(self) -> dict[str, str]:
        """Short strings for a progress line: clocks now, agents held/pending at the gateway."""
        clocks = []
        for inst in self.instances:
            mhz = inst.actuator.current_mhz
            clocks.append("-" if mhz is None else str(mhz))
        return {
            "clocks MHz": "/".join(clocks),
            "held": str(self.tracker.held_count),
            "pending": str(self.tracker.pending_count),
        }


def _actuator(kind: str, i: int, endpoint: str, telemetry: Any, session: Any, state: ActuatorStateFile, gpu_indices: Sequence[int] | None, allow: bool, nvml: Any) -> ClockActuator:
    if kind == "dry-run":
        return DryRunActuator(endpoint)
    if kind == "nvml":
        assert gpu_indices is not None  # checked by running_gateway
        return NvmlClockActuator(int(gpu_indices[i]), allow_real_clock_changes=allow, state=state, nvml=nvml)
    if isinstance(telemetry, EmulatorTelemetry):
        return EmulatorClockActuator(telemetry.root, session, state)
    if kind == "emulator":
        raise UsageError(f"--actuator emulator: {endpoint} is not a kairosbench emulator (no /kairosbench/gpu)")
    return DryRunActuator(endpoint)


async def _restore_all(actuators: list[ClockActuator]) -> list[str]:
    errors = []
    for act in actuators:
        try:
            await act.restore()
        except ActuatorError as exc:
            errors.append(str(exc))
    return errors


@asynccontextmanager
async def running_gateway(
    endpoints: list[str],
    policy: str,
    run_dir: Path,
    *,
    epoch_s: float = 1.0,
    actuator: str = "auto",
    slo_tok_s: float = 20.0,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[str]:
    """Serve a gateway in front of ``endpoints`` with ``policy``; yields its base URL (http://host:port).

    The public API for the run orchestrator. ``options`` are ``serve_gateway``'s other keywords
    (telemetry, allow_real_clock_changes, gpu_indices, kv_capacity_tokens, idle_timeout_s).
    """
    async with serve_gateway(endpoints, policy, run_dir, epoch_s=epoch_s, actuator=actuator, slo_tok_s=slo_tok_s, host=host, port=port, **options) as handle:
        yield handle.url


@asynccontextmanager
async def serve_gateway(
    endpoints: list[str],
    policy: str,
    run_dir: Path,
    *,
    epoch_s: float = 1.0,
    actuator: str = "auto",
    slo_tok_s: float = 20.0,
    host: str = "127.0.0.1",
    port: int = 0,
    telemetry: str = "auto",
    allow_real_clock_changes: bool = False,
    gpu_indices: Sequence[int] | None = None,
    kv_capacity_tokens: int = 0,
    idle_timeout_s: float | None = 300.0,
    nvml: Any = None,
) -> AsyncIterator[GatewayHandle]:
    """Serve a gateway in front of ``endpoints`` with ``policy``; yields a ``GatewayHandle``.

    ``actuator``: ``auto`` (emulator clock control where the endpoint is a kairosbench emulator,
    dry-run elsewhere), ``emulator``, ``dry-run``, or ``nvml`` (needs ``allow_real_clock_changes``
    and ``gpu_indices``, one local GPU index per endpoint). ``idle_timeout_s``: an agent silent
    in its tool this long is taken as finished (None: never).
    """
    if not endpoints:
        raise UsageError("the gateway needs at least one --endpoint")
    if actuator not in ACTUATOR_KINDS:
        raise UsageError(f"--actuator must be one of {', '.join(ACTUATOR_KINDS)} (got {actuator!r})")
    if epoch_s <= 0:
        raise UsageError(f"--epoch-s must be positive (got {epoch_s})")
    if actuator == "nvml" and not allow_real_clock_changes:
        raise UsageError("--actuator nvml changes real GPU clocks: add --allow-real-clock-changes to opt in (or use --actuator dry-run)")
    if gpu_indices and len(gpu_indices) != len(endpoints):
        raise UsageError(f"give one --gpu-index per --endpoint ({len(endpoints)} endpoints, {len(gpu_indices)} GPU indices)")
    if actuator == "nvml" and not gpu_indices:
        raise UsageError("--actuator nvml needs one --gpu-index per --endpoint (which local GPU serves each endpoint)")
    policy_obj = build_policy(policy)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = ActuatorStateFile(run_dir / STATE_FILE_NAME)
    if state.load():
        for line in await restore_from_state(state.path, nvml=nvml):
            log.warning("restored a clock left by a killed gateway: %s", line)

    clock = WallClock()
    fetcher = HttpFetcher(timeout_s=max(0.2, min(2.0, 0.8 * epoch_s)))
    import aiohttp  # noqa: PLC0415

    control_session = aiohttp.ClientSession(trust_env=False)
    actuators: list[ClockActuator] = []
    instances: list[GatewayInstance] = []
    proxy: GatewayProxy | None = None
    runner: web.AppRunner | None = None
    loop_task: asyncio.Task[None] | None = None
    control_log: ControlLog | None = None
    tracker: AgentTracker | None = None
    request_log: RequestLog | None = None
    try:
        for i, endpoint in enumerate(endpoints):
            source = await detect_telemetry(endpoint, fetcher, kind=telemetry, kv_capacity_tokens=kv_capacity_tokens)
            if gpu_indices and not isinstance(source, EmulatorTelemetry):
                source.nvml = NvmlReader(int(gpu_indices[i]), nvml)  # type: ignore[attr-defined]  # read-only
            act = _actuator(actuator, i, endpoint, source, control_session, state, gpu_indices, allow_real_clock_changes, nvml)
            actuators.append(act)
            instances.append(GatewayInstance(f"i{i}", endpoint, endpoint_root(endpoint), source, act))
        tracker = AgentTracker([g.instance_id for g in instances], policy_obj, slo_tok_s=slo_tok_s, idle_timeout_s=idle_timeout_s)
        meta = {
            "policy": policy_obj.name,
            "endpoints": endpoints,
            "epoch_s": epoch_s,
            "slo_tok_s": slo_tok_s,
            "telemetry": [g.telemetry.kind for g in instances],
            "actuators": [g.actuator.kind for g in instances],
        }
        control_log = ControlLog(run_dir, meta)
        request_log = RequestLog(run_dir, meta)
        proxy = GatewayProxy(tracker, instances, run_clock_s=clock.now_s, request_log=request_log)
        await proxy.start()
        control = ControlLoop(tracker, policy_obj, instances, epoch_s=epoch_s, run_clock_s=clock.now_s, on_release=proxy.dispatch_released, log_=control_log, request_log=request_log)
        await control.step()  # caps and clocks in force before the first request
        runner = web.AppRunner(proxy.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        url = f"http://{host}:{bound}"
        (run_dir / GATEWAY_INFO_FILE).write_text(json.dumps({"url": url, "pid": os.getpid(), **meta}, indent=1))
        log.info("gateway %s: policy %s over %d instance(s), actuators %s", url, policy_obj.name, len(instances), meta["actuators"])
        loop_task = asyncio.create_task(control.run(), name="kairosbench-control-loop")
        yield GatewayHandle(url, tracker, control, proxy, instances, {"url": url, **meta})
    finally:
        if loop_task is not None:
            loop_task.cancel()
            try:
                await loop_task
            except asyncio.CancelledError:
                pass
        restore = asyncio.ensure_future(_restore_all(actuators))
        while not restore.done():
            try:
                await asyncio.shield(restore)
            except asyncio.CancelledError:
                continue  # a second Ctrl-C must not leave clocks locked
        errors = restore.result()
        if proxy is not None:
            await proxy.close()
        if runner is not None:
            await runner.cleanup()
        for jl in (control_log, request_log):
            if jl is not None:
                jl.close({"counters": {k: getattr(tracker.counters, k) for k in tracker.counters.__slots__}} if tracker is not None else None)
        await control_session.close()
        await fetcher.close()
        if errors:
            raise ActuatorError("could not restore every GPU clock: " + "; ".join(errors) + f". Retry with `kairosbench gateway restore --run-dir {run_dir}`")
