"""One ``kairosbench run`` from its config: services up, endpoints probed, replay, summary, manifest.

``run_from_config(config, workload=..., services=[...], stop=...)`` is the programmatic entry
point (the CLI is a thin shell around it; tests and other drivers call it directly).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console

from kairosbench.clock import now_ns
from kairosbench.errors import EndpointError, UsageError, WorkloadError
from kairosbench.replay import arrivals as arr
from kairosbench.replay.client import ClientTimeouts, StreamClient
from kairosbench.replay.config import RunConfig
from kairosbench.replay.endpoint import Endpoint, normalize_base_url
from kairosbench.replay.manifest import file_sha256, gpu_info, host_info, iso_from_ns, versions, write_manifest
from kairosbench.replay.metrics import RunSummary, summarize
from kairosbench.replay.progress import LiveStats, LiveView
from kairosbench.replay.prompt import PromptFactory, PromptSettings
from kairosbench.replay.records import read_table
from kairosbench.replay.run_energy import RunEnergy, preset_idle_from_manifest, run_energy
from kairosbench.replay.runner import Replay, ReplayOptions
from kairosbench.replay.services import RunContext, ServiceFactory
from kairosbench.replay.tokens import EmulatorTokenModel, HFTokenModel, RemoteTokenModel, TokenModel, WordsTokenModel
from kairosbench.workload.model import Workload

__all__ = ["RunOutcome", "run_from_config", "default_workload_path", "BUNDLED_TIME_SCALE", "make_run_dir", "select_token_model"]

log = logging.getLogger("kairosbench.replay")

# The bundled default workload is replayed compressed so `kairosbench run` ends in minutes.
BUNDLED_WORKLOAD = "mixed-small.parquet"
BUNDLED_TIME_SCALE = 0.5


@dataclass
class RunOutcome:
    run_dir: Path
    status: str  # completed | interrupted | failed
    summary: RunSummary | None
    manifest: dict[str, Any]


def default_workload_path() -> Path:
    """``workloads/mixed-small.parquet`` next to the package (a source checkout / editable install)."""
    return Path(__file__).resolve().parents[2] / "workloads" / BUNDLED_WORKLOAD


def _load_workload(path: Path) -> Workload:
    try:
        from kairosbench.workload.io import load_workload
    except ImportError as exc:
        raise UsageError("reading workload files needs kairosbench.workload.io, missing from this install") from exc
    return load_workload(path)


def _workload_hash(path: Path) -> str:
    """The project's workload file hash (sha256 of the bytes), as other tools report it."""
    try:
        from kairosbench.workload.io import workload_hash
    except ImportError:
        return file_sha256(path)
    return workload_hash(path)


def make_run_dir(config: RunConfig, default_name: str) -> Path:
    """``--out DIR`` as given, else ``<runs_dir>/<UTC timestamp>-<name>`` (suffixed if taken)."""
    if config.out:
        run_dir = Path(config.out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"--out {run_dir}: directory exists and is not empty; pick a new one")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (config.name or default_name))
    base = Path(config.runs_dir) / f"{stamp}-{name}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


async def _is_emulator(client: StreamClient, base_url: str) -> bool:
    try:
        info = await client.get_json(f"{base_url}/kairosbench/engine", timeout_s=5.0)
    except EndpointError:
        return False
    return isinstance(info, dict) and "kv_capacity_tokens" in info


async def _discover_model(client: StreamClient, base_url: str) -> str:
    try:
        data = await client.get_json(f"{base_url}/v1/models", timeout_s=15.0)
    except EndpointError as exc:
        raise EndpointError(f"{exc}. Is the server up? Pass --model to skip model discovery.") from None
    models = data.get("data") if isinstance(data, dict) else None
    if not models or not isinstance(models[0], dict) or "id" not in models[0]:
        raise EndpointError(f"{base_url}/v1/models listed no model; pass --model NAME")
    return str(models[0]["id"])


async def select_token_model(config: RunConfig, client: StreamClient, base_url: str, model: str, *, emulated: bool) -> TokenModel:
    """The tokenizer for one endpoint (see ``kairosbench.replay.tokens``)."""
    choice = config.tokenizer
    if choice == "emulator" or (choice == "auto" and (emulated or await _is_emulator(client, base_url))):
        return EmulatorTokenModel()
    if choice == "words":
        return WordsTokenModel()
    if choice in ("remote", "auto"):
        remote = RemoteTokenModel(base_url, model, client.post_json)
        try:
            await remote.setup()
            return remote
        except EndpointError as exc:
            if choice == "remote":
                raise
            log.warning("%s: no usable /tokenize route (%s); estimating 1 token per word, corrected by usage", base_url, exc)
            return WordsTokenModel()
    return await asyncio.to_thread(HFTokenModel, choice)


def _arrivals(config: RunConfig, workload: Workload, time_scale: float) -> Iterator[arr.Arrival]:
    cycle = config.duration_s is not None or (config.max_sessions is not None and config.max_sessions > len(workload.sessions))
    if config.arrival == "recorded":
        return arr.recorded(workload.sessions, time_scale=time_scale)
    if config.arrival == "poisson":
        assert config.rate is not None
        return arr.poisson(workload.sessions, rate_per_s=config.rate, seed=config.seed, cycle=cycle)
    return arr.closed_loop(workload.sessions, cycle=cycle)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _replay_energy(run_dir: Path, profiler: dict[str, Any] | None, t0_ns: int, t1_ns: int, finished: int) -> RunEnergy | None:
    """GPU energy over the replay window from the profiler's power.parquet (None without one).

    A failure here is a bug in kairosbench, not in the run: it is logged (run.log) and the
    summary goes out without energy rather than losing the run's other results."""
    power = run_dir / "power.parquet"
    if profiler is None or not power.exists():
        return None
    try:
        import pyarrow.parquet as pq

        from kairosbench.profiler.journal import read_metadata

        names = {f"{g['host']}/{g['gpu']}/{g['source']}": g.get("name", "") for g in read_metadata(power).get("gpus", [])}
        return run_energy(
            pq.read_table(power), t0_ns=t0_ns, t1_ns=t1_ns, finished_agents=finished,
            preset_idle=preset_idle_from_manifest(profiler), measure_idle=bool(profiler.get("measure_idle", True)),
            names=names, tolerance_frac=float(profiler.get("tolerance_frac", 0.02)),
        )
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("computing GPU energy from %s failed", power)
        profiler.setdefault("notes", []).append("computing the run's GPU energy failed (traceback in run.log)")
        return None


async def run_from_config(
    config: RunConfig,
    *,
    workload: Workload | None = None,
    services: Sequence[ServiceFactory] | None = None,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
) -> RunOutcome:
    """Run one replay. ``workload`` overrides ``config.workload`` (tests, other drivers).

    ``services`` default to what ``kairosbench run`` starts (``kairosbench.replay.cli.build_services``):
    the embedded emulator when ``config.endpoint`` is empty, the profiler, and the gateway with
    ``config.policy``.
    """
    config.validate()
    workload_path: Path | None = None
    if workload is None:
        workload_path = Path(config.workload) if config.workload else default_workload_path()
        if not workload_path.exists():
            hint = " (the bundled workloads live in the source checkout's workloads/ folder)" if not config.workload else ""
            raise UsageError(f"workload file not found: {workload_path}{hint}; pass --workload FILE")
        workload = _load_workload(workload_path)
    if not workload.sessions:
        raise WorkloadError("the workload has no sessions", path=str(workload_path) if workload_path else None)
    time_scale = config.time_scale if config.time_scale is not None else (BUNDLED_TIME_SCALE if config.workload is None and workload_path is not None else 1.0)
    default_name = (workload_path.stem if workload_path else str(workload.meta.get("name", "workload"))) + ("" if config.endpoint else "-emulated")
    run_dir = make_run_dir(config, default_name)
    if services is None:
        from kairosbench.replay.cli import build_services

        services = build_services(config)
    ctx = RunContext(config=config, run_dir=run_dir, endpoints=list(config.endpoint), instance_endpoints=list(config.endpoint))
    total = len(workload.sessions) if config.arrival == "recorded" else None
    if config.max_sessions is not None:
        total = min(total, config.max_sessions) if total is not None else config.max_sessions
    stats = LiveStats(sessions_total=total)
    stats.extra_fields = ctx.live_fields
    log_handler = logging.FileHandler(run_dir / "run.log")
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("kairosbench").addHandler(log_handler)
    t_start = now_ns()
    manifest: dict[str, Any] = {
        "status": "running",
        "run_dir": str(run_dir),
        "t_start_ns": t_start,
        "start": iso_from_ns(t_start),
        "config": config.to_dict(),
        "effective": {"time_scale": time_scale, "arrival": config.arrival, "seed": config.seed, "slo_tok_s": config.slo_tok_s},
        "workload": {
            "path": str(workload_path) if workload_path else None,
            "sha256": _workload_hash(workload_path) if workload_path else None,
            "sessions": len(workload.sessions),
            "turns": workload.n_turns,
            "meta": workload.meta,
        },
        "versions": versions(),
        "host": host_info(),
        "gpu": gpu_info(),
    }
    write_manifest(run_dir, _clean(manifest))
    status = "failed"
    summary: RunSummary | None = None
    result = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            for factory in services:
                await stack.enter_async_context(factory(ctx))
            if not ctx.endpoints:
                raise UsageError("no endpoint to drive: pass --endpoint URL or let the emulator start")
            api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            timeouts = ClientTimeouts(config.connect_timeout_s, config.first_token_timeout_s, config.idle_timeout_s, config.total_timeout_s)
            async with StreamClient(timeouts, headers=headers, strict_sse=config.strict_sse) as client:
                emulated = "emulator" in ctx.manifest
                endpoints: list[Endpoint] = []
                factories: list[PromptFactory] = []
                by_model: dict[str, PromptFactory] = {}
                for url in ctx.endpoints:
                    model = config.model or await _discover_model(client, normalize_base_url(url))
                    ep = Endpoint(
                        url,
                        model,
                        eos_control="ignore_eos" if config.eos_control == "auto" else config.eos_control,
                        extra_body=dict(config.extra_body),
                        auto_eos=config.eos_control == "auto",
                    )
                    tm = await select_token_model(config, client, ep.base_url, model, emulated=emulated)
                    key = tm.name
                    if key not in by_model:
                        pool_settings = PromptSettings(system_prompt_tokens=config.system_prompt_tokens, seed=config.seed)
                        by_model[key] = await asyncio.to_thread(PromptFactory, tm, pool_settings)
                    endpoints.append(ep)
                    factories.append(by_model[key])
                manifest["endpoints"] = [dict(ep.describe(), tokenizer=f.model.describe()) for ep, f in zip(endpoints, factories)]
                write_manifest(run_dir, _clean(manifest))
                options = ReplayOptions(
                    time_scale=time_scale,
                    duration_s=config.duration_s,
                    max_sessions=config.max_sessions,
                    concurrency=config.concurrency,
                    max_retries=config.max_retries,
                    retry_backoff_s=config.retry_backoff_s,
                    prepare_lead_s=config.prepare_lead_s,
                    flush_interval_s=config.flush_interval_s,
                )
                replay = Replay(run_dir, endpoints, factories, client, options, stats=stats, stop=stop)
                live = LiveView(stats, title=f"kairosbench run → {run_dir.name}").live(console) if config.progress else contextlib.nullcontext()
                with live:
                    result = await replay.run(_arrivals(config, workload, time_scale))
                manifest["endpoints"] = [dict(ep.describe(), tokenizer=f.model.describe()) for ep, f in zip(endpoints, factories)]
        status = result.status
        requests = read_table(run_dir, "requests")
        sessions = read_table(run_dir, "sessions")
        summary = summarize(requests, sessions, duration_s=(result.t_end_ns - result.t_start_ns) / 1e9, slo_tok_s=config.slo_tok_s)
        summary.energy = _replay_energy(run_dir, ctx.manifest.get("profiler"), result.t_start_ns, result.t_end_ns, summary.sessions_completed)
        manifest["summary"] = summary.to_dict()
        manifest["replay"] = {
            "stopped_by": result.stopped_by, "sessions_started": result.sessions_started, "max_sched_lag_s": result.max_sched_lag_s,
            "t_replay_start_ns": result.t_start_ns, "t_replay_end_ns": result.t_end_ns,
        }
    except BaseException as exc:
        manifest["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            status = "interrupted"
        raise
    finally:
        t_end = now_ns()
        manifest.update(status=status, t_end_ns=t_end, end=iso_from_ns(t_end), services=ctx.manifest)
        write_manifest(run_dir, _clean(manifest))
        logging.getLogger("kairosbench").removeHandler(log_handler)
        log_handler.close()
    return RunOutcome(run_dir=run_dir, status=status, summary=summary, manifest=manifest)
