"""The power profiler as a ``kairosbench run`` service (``--profile SPEC``, engine /metrics).

What it does, in order (see ``kairosbench.replay.services`` for the service contract):

1. **Plan** which telemetry to record (:func:`plan_sources`, pure). ``--profile`` is
   repeatable: ``auto`` (default), ``none``, ``nvml``, ``emulator:URL``, ``prometheus:URL``.
   ``auto`` is the emulator's telemetry for every serving instance that is a kairosbench
   emulator (the ones this run started, and any ``--endpoint`` that answers the emulator's
   telemetry route); for the other endpoints, NVML when this host has GPUs (recorded in the
   manifest: NVML measures *this host's* GPUs, which are the endpoints' only if they run
   here), else no GPU telemetry and a one-line note. Engine metrics: every instance whose
   ``/metrics`` answers (vLLM, SGLang, the emulator) is scraped into ``engine.parquet``; one
   that does not (``transformers serve``, hosted APIs) gets a note.
2. **Start** the sampler process (``kairosbench.profiler.start_profiler``) before the replay;
   where some GPU's idle power is not known from an emulator preset, wait until
   ``--idle-baseline-s`` of telemetry precede the replay (the measured idle lead-in).
3. **Show** total power and each instance's SM clock in the live progress.
4. **Stop** it after the replay on every exit path (normal end, error, Ctrl-C, SIGTERM, a
   cancelled task), off the event loop so an in-process emulator keeps answering the last
   polls; ``power.parquet`` and ``engine.parquet`` are complete and the profiler's summary goes
   into ``manifest.json`` under ``services.profiler``.

Nothing here is an error for a missing GPU, a dead telemetry route or a 404 on /metrics: those
become notes, and the run goes on. Only a misspelt ``--profile`` is (a ``UsageError``, raised
by the config's validation before anything starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kairosbench.clock import now_ns
from kairosbench.errors import TelemetryError, UsageError

__all__ = [
    "PROFILE_KEYWORDS",
    "check_profile_specs",
    "ProfilingPlan",
    "plan_sources",
    "profiler_service",
    "live_power_fields",
    "format_live_power",
]

log = logging.getLogger("kairosbench.replay")

PROFILE_KEYWORDS = ("auto", "none")
_PROBE_TIMEOUT_S = 3.0


def check_profile_specs(specs: Sequence[str]) -> None:
    """Raise ``UsageError`` naming ``--profile`` for a spec that is not auto/none/nvml/emulator:URL/prometheus:URL."""
    from kairosbench.profiler.sources import parse_source

    if isinstance(specs, str) or not isinstance(specs, Sequence):
        raise UsageError(f"--profile must be a list of specs (got {specs!r})")
    if not specs:
        raise UsageError("--profile needs at least one spec: auto, none, nvml, emulator:URL or prometheus:URL")
    for spec in specs:
        if not isinstance(spec, str):
            raise UsageError(f"--profile {spec!r}: expected a string")
        if spec.strip().lower() in PROFILE_KEYWORDS:
            continue
        try:
            parse_source(spec)
        except UsageError as exc:
            raise UsageError(str(exc).replace("--source", "--profile", 1) + " (or auto, none)") from None
    if any(s.strip().lower() == "none" for s in specs) and len(specs) > 1:
        raise UsageError("--profile none cannot be combined with other --profile specs")


@dataclass(frozen=True, slots=True)
class ProfilingPlan:
    """What the profiler will record and why (all of it goes into the manifest)."""

    sources: tuple[str, ...]  # profiler source names: nvml, emulator:URL, prometheus:URL
    engine_endpoints: tuple[str, ...]  # base URLs whose /metrics answered
    notes: tuple[str, ...] = ()  # one line each: what is not recorded and why
    nvml_host: str | None = None  # the host whose GPUs NVML measures, when nvml is a source


def plan_sources(
    specs: Sequence[str],
    *,
    instance_endpoints: Sequence[str],
    emulator_endpoints: Sequence[str],
    local_gpus: bool,
    hostname: str,
) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(sources, notes, nvml_host) for the ``--profile`` specs (pure).

    ``emulator_endpoints``: the instances known to be kairosbench emulators (a subset of
    ``instance_endpoints``); ``local_gpus``: whether NVML sees a GPU on this host.
    """
    sources: list[str] = []
    notes: list[str] = []
    lowered = [s.strip() for s in specs]
    if [s.lower() for s in lowered] == ["none"]:
        return (), ("--profile none: no GPU telemetry recorded",), None
    for spec in lowered:
        if spec.lower() != "auto":
            if spec not in sources:
                sources.append(spec if not spec.lower().startswith("nvml") else "nvml")
            continue
        emulated = [u for u in instance_endpoints if u in set(emulator_endpoints)]
        for url in emulated:
            name = f"emulator:{_root(url)}"  # its telemetry lives at the server root, not under /v1
            if name not in sources:
                sources.append(name)
        others = [u for u in instance_endpoints if u not in set(emulator_endpoints)]
        if others or not instance_endpoints:
            if local_gpus:
                if "nvml" not in sources:
                    sources.append("nvml")
            else:
                what = f"{others[0]} is not a kairosbench emulator" if len(others) == 1 else "the endpoints are not kairosbench emulators"
                notes.append(f"no GPU telemetry: no NVML GPU on this host, and {what} (GPUs on other hosts: --profile prometheus:URL)")
    nvml_host = hostname if "nvml" in sources else None
    return tuple(sources), tuple(notes), nvml_host


def format_live_power(latest: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The live-progress fields from ``ProfilerHandle.latest()`` (pure): total power and SM clocks."""
    if not latest:
        return {"GPU power": "waiting for telemetry"}
    powers = [float(r["power_w"]) for r in latest.values() if r.get("power_w") is not None]
    out: dict[str, str] = {}
    if powers:
        out["GPU power (total)"] = f"{sum(powers):,.0f} W" + (f" over {len(powers)} GPUs" if len(powers) > 1 else "")
    clocks = sorted((key, float(r["sm_clock_mhz"])) for key, r in latest.items() if r.get("sm_clock_mhz") is not None)
    if clocks:
        if len(clocks) <= 4:
            out["SM clock"] = ", ".join(f"{_short_gpu(k)} {c:,.0f} MHz" if len(clocks) > 1 else f"{c:,.0f} MHz" for k, c in clocks)
        else:
            values = sorted(c for _, c in clocks)
            out["SM clock"] = f"{values[0]:,.0f}–{values[-1]:,.0f} MHz (median {values[len(values) // 2]:,.0f}) over {len(values)} GPUs"
    return out


def _short_gpu(key: str) -> str:
    """``127.0.0.1:8001/0/emulator`` -> ``:8001``; ``host/3/nvml`` -> ``host/3``."""
    rest, _source = key.rsplit("/", 1)
    host, gpu = rest.rsplit("/", 1)
    if host.startswith("127.0.0.1:") or host.startswith("localhost:"):
        return host[host.index(":"):]
    return f"{host}/{gpu}"


def live_power_fields(latest: Callable[[], Mapping[str, Mapping[str, Any]]]) -> Callable[[], dict[str, str]]:
    """A ``RunContext.live_fields`` entry reading ``ProfilerHandle.latest`` (about 1 s old)."""
    return lambda: format_live_power(latest())


@dataclass
class _Probe:
    """What the parent found out about the instances before starting the sampler."""

    emulators: list[str] = field(default_factory=list)
    gpu_presets: dict[str, str] = field(default_factory=dict)  # emulator base URL -> GPU preset name
    engines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _probe(instances: Sequence[str], *, want_emulators: bool, want_engines: bool) -> _Probe:
    """GET each instance's emulator telemetry route and /metrics (short timeouts, never raises)."""
    from kairosbench.profiler.engine_scraper import metrics_url
    from kairosbench.profiler.http_fetch import HttpFetcher

    found = _Probe()
    fetcher = HttpFetcher(timeout_s=_PROBE_TIMEOUT_S)

    async def one(url: str) -> None:
        base = url.rstrip("/")
        root = _root(base)
        if want_emulators:
            with contextlib.suppress(TelemetryError):
                gpu = await fetcher.get_json(f"{root}/kairosbench/gpu")
                if isinstance(gpu, dict) and "power_w" in gpu:
                    found.emulators.append(url)
                    with contextlib.suppress(TelemetryError):
                        engine = await fetcher.get_json(f"{root}/kairosbench/engine")
                        if isinstance(engine, dict) and isinstance(engine.get("gpu_preset"), str):
                            found.gpu_presets[url] = engine["gpu_preset"]
        if want_engines:
            target = metrics_url(base)
            try:
                text = await fetcher.get_text(target)
            except TelemetryError as exc:
                found.notes.append(f"no engine metrics from {base}: {_short_reason(exc)}")
                return
            if "# TYPE" not in text and "# HELP" not in text and not any(line and not line.startswith("#") for line in text.splitlines()[:5]):
                found.notes.append(f"no engine metrics from {base}: {target} is empty or not Prometheus text")
                return
            found.engines.append(url)

    try:
        await asyncio.gather(*(one(u) for u in instances))
    finally:
        await fetcher.close()
    order = {u: i for i, u in enumerate(instances)}
    found.emulators.sort(key=order.__getitem__)
    found.engines.sort(key=order.__getitem__)
    return found


def _root(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _short_reason(exc: Exception) -> str:
    """``GET URL answered HTTP 404: b'...'`` -> ``URL answered HTTP 404`` (the body is noise here)."""
    text = str(exc)
    match = re.match(r"GET (\S+) answered (HTTP \d+)", text)
    return f"{match.group(1)} answered {match.group(2)}" if match else text[:160]


def _preset_idle(gpu_preset: str) -> tuple[float, str] | None:
    try:
        from kairosbench.emulator.presets import GPU_PRESETS
    except ImportError:
        return None
    preset = GPU_PRESETS.get(gpu_preset)
    if preset is None:
        return None
    return preset.p_idle_parked_w, f"emulator preset {preset.name}: parked idle (SM clock at {preset.f_min_mhz} MHz, no work)"


async def _stop(handle: Any) -> tuple[Any, bool]:
    """``handle.stop()`` off the loop, finished even if this task is cancelled meanwhile.

    Returns (summary, cancelled); the caller re-raises the cancellation after recording."""
    task = asyncio.ensure_future(asyncio.to_thread(handle.stop))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    return task.result(), cancelled


@contextlib.asynccontextmanager
async def profiler_service(ctx: Any) -> AsyncIterator[None]:
    """Record GPU power and engine metrics for one run (``ctx``: a ``RunContext``)."""
    from kairosbench.profiler.launch import detect_sources, start_profiler

    cfg = ctx.config
    specs = [s.strip() for s in cfg.profile]
    wants_auto = any(s.lower() == "auto" for s in specs)
    info: dict[str, Any] = {"requested": list(cfg.profile), "engine_metrics": cfg.engine_metrics}
    instances = list(ctx.instance_endpoints)
    started_emulator = "emulator" in ctx.manifest
    probe = await _probe(instances, want_emulators=wants_auto or any(s.lower().startswith("emulator:") for s in specs),
                         want_engines=cfg.engine_metrics)
    emulators = instances if started_emulator else probe.emulators
    local_gpus = bool(detect_sources()) if wants_auto and (set(instances) - set(emulators) or not instances) else False
    hostname = socket.gethostname()
    sources, notes, nvml_host = plan_sources(specs, instance_endpoints=instances, emulator_endpoints=emulators,
                                             local_gpus=local_gpus, hostname=hostname)
    plan = ProfilingPlan(sources, tuple(probe.engines) if cfg.engine_metrics else (), tuple(notes) + tuple(probe.notes), nvml_host)
    info.update(sources=list(plan.sources), engine_endpoints=list(plan.engine_endpoints), notes=list(plan.notes))
    if plan.nvml_host is not None:
        info["nvml_scope"] = (f"NVML measures the GPUs of this host ({plan.nvml_host}); they are the endpoints' GPUs only "
                              "if the endpoints run here")
    info["idle_baseline_s"] = cfg.idle_baseline_s
    info["measure_idle"] = cfg.idle_baseline_s > 0
    ctx.manifest["profiler"] = info
    for note in plan.notes:
        log.warning("profiler: %s", note)
    if not plan.sources and not plan.engine_endpoints:
        yield
        return
    handle = await asyncio.to_thread(
        start_profiler, ctx.run_dir, list(plan.sources), engine_endpoints=list(plan.engine_endpoints),
        engine_interval_s=cfg.engine_interval_s, flush_interval_s=min(1.0, cfg.flush_interval_s),
    )
    t_ready = now_ns()
    try:
        info["t_ready_ns"] = t_ready
        info["pid"] = handle.pid
        info["gpus"] = [{"key": f"{g.host}/{g.gpu}/{g.source}", "name": g.name} for g in handle.gpus]
        info["tolerance_frac"] = handle.tolerance_frac
        for warning in handle.warnings:
            if warning not in info["notes"]:
                info["notes"].append(warning)
        info["idle_presets"] = await _idle_presets(handle.gpus, plan.sources, probe.gpu_presets)
        if handle.gpus:
            ctx.live_fields.append(live_power_fields(handle.latest))
        unknown_idle = [g for g in handle.gpus if f"{g.host}/{g.gpu}/{g.source}" not in info["idle_presets"]]
        if unknown_idle and cfg.idle_baseline_s > 0:
            # the measured idle baseline needs telemetry from before the first request
            await asyncio.sleep(max(0.0, cfg.idle_baseline_s - (now_ns() - t_ready) / 1e9))
        yield
    finally:
        summary, cancelled = await _stop(handle)
        info["summary"] = summary.to_dict()
        for warning in summary.warnings:
            if warning not in info["notes"] and "no GPU telemetry was recorded" not in warning:
                info["notes"].append(warning)
        if cancelled:
            raise asyncio.CancelledError


async def _idle_presets(gpus: Sequence[Any], sources: Sequence[str], presets: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Idle baselines known without measuring: emulated GPUs whose preset the emulator names."""
    urls = [s.split(":", 1)[1] for s in sources if s.lower().startswith("emulator:")]
    by_netloc = {urlsplit(u).netloc: u for u in urls}
    known_presets = {urlsplit(u).netloc: name for u, name in presets.items()}
    out: dict[str, dict[str, Any]] = {}
    for g in gpus:
        url = by_netloc.get(g.host) if g.source == "emulator" else None
        if url is None:
            continue
        name = known_presets.get(g.host) or await _ask_preset(url)
        known = _preset_idle(name) if name else None
        if known is not None:
            out[f"{g.host}/{g.gpu}/{g.source}"] = {"power_w": known[0], "detail": known[1]}
    return out


async def _ask_preset(url: str) -> str | None:
    from kairosbench.profiler.http_fetch import HttpFetcher

    fetcher = HttpFetcher(timeout_s=_PROBE_TIMEOUT_S)
    try:
        engine = await fetcher.get_json(f"{_root(url)}/kairosbench/engine")
    except TelemetryError:
        return None
    finally:
        await fetcher.close()
    return engine.get("gpu_preset") if isinstance(engine, dict) and isinstance(engine.get("gpu_preset"), str) else None
