"""One Locust test, as one process that runs users sees it: the workload, endpoint, plan and records.

``open_run`` is called from Locust's ``test_start`` in every process that runs users (the
local runner, or each worker, with the options the master sent). It loads the workload,
discovers the model, picks the tokenizer, builds the prompt factory (shared by the process's
users, as the aiohttp driver shares one per endpoint), writes ``manifest.json`` with status
``running`` and starts the flusher. ``LocustRun.close`` runs from ``test_stop``, after Locust
has stopped every user (their sessions recorded as ``unfinished``, in-flight requests as
``cancelled``): it compacts the Parquet parts, computes the run summary
(``kairosbench.replay.summarize``) and rewrites the manifest.

Records are crash-safe as in ``kairosbench run``: rows are flushed every
``--flush-interval-s`` as complete Parquet parts (the Python-to-Arrow conversion on the hub,
the file write in gevent's thread pool, where pyarrow releases the GIL). The final compaction
runs on the hub, without yielding (see ``LocustRun.close``).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import math
import os
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Callable

import gevent
import gevent.event
from locust.env import Environment

from kairosbench.clock import WallClock, now_ns
from kairosbench.errors import UsageError, WorkloadError
from kairosbench.locust import events as kb_events
from kairosbench.locust.client import GeventStreamClient
from kairosbench.locust.endpoint_setup import discover_model, select_token_model
from kairosbench.locust.plan import PlannedSession, SessionPlan
from kairosbench.locust.records import SessionRecord, TurnRecord
from kairosbench.locust.settings import AgentSettings
from kairosbench.locust.tally import AgentTally
from kairosbench.replay.client import ClientTimeouts
from kairosbench.replay.endpoint import Endpoint, normalize_base_url
from kairosbench.replay.manifest import host_info, iso_from_ns, versions, write_manifest
from kairosbench.replay.prompt import PromptFactory, PromptSettings
from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, PartWriter, read_table
from kairosbench.workload.io import load_workload, workload_hash
from kairosbench.workload.model import Workload

__all__ = ["ProcessSlot", "LocustRun", "TurnFailed", "open_run", "default_workload_path", "utc_stamp"]

log = logging.getLogger("kairosbench.locust")

TTFT_REQUEST_TYPE = "TTFT"
CHAT_REQUEST_TYPE = "chat"


class TurnFailed(Exception):
    """A turn's request failed; its message (``<status>: <cause>``) groups Locust's Failures tab."""


@dataclass(frozen=True)
class ProcessSlot:
    """This process among those running users: ``local`` (0 of 1) or ``worker`` i of W."""

    role: str
    index: int
    count: int

    @property
    def worker_index(self) -> int | None:
        return self.index if self.role == "worker" else None


def default_workload_path() -> Path:
    """``workloads/mixed-small.parquet`` of the source checkout (as ``kairosbench run``)."""
    return Path(__file__).resolve().parents[2] / "workloads" / "mixed-small.parquet"


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _load_workload(settings: AgentSettings) -> tuple[Workload, Path]:
    path = Path(settings.workload) if settings.workload else default_workload_path()
    if not path.exists():
        hint = "" if settings.workload else " (the bundled workloads live in the source checkout's workloads/ folder)"
        raise UsageError(f"--workload {path}: file not found{hint}")
    workload = load_workload(path)
    if not workload.sessions:
        raise WorkloadError("the workload has no sessions", path=str(path))
    return workload, path


def _fresh_dir(run_dir: Path, explicit: bool) -> Path:
    if run_dir.exists() and any(run_dir.iterdir()):
        if explicit:
            raise UsageError(f"--out {run_dir}: directory exists and is not empty; pick a new one")
        n = 2
        while run_dir.with_name(f"{run_dir.name}-{n}").exists():
            n += 1
        run_dir = run_dir.with_name(f"{run_dir.name}-{n}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@dataclass
class LocustRun:
    """What the users of one process share during one test (built by ``open_run``)."""

    environment: Environment
    settings: AgentSettings
    slot: ProcessSlot
    run_dir: Path
    endpoint: Endpoint
    factory: PromptFactory
    plan: SessionPlan
    tally: AgentTally
    manifest: dict[str, Any]
    headers: dict[str, str]
    on_plan_done: Callable[[], None] = lambda: None
    clock: WallClock = field(default_factory=WallClock)
    active: int = 0
    sessions_started: int = 0
    max_sched_lag_s: float = 0.0
    closed: bool = False
    _finished: bool = False
    _done_signalled: bool = False
    _flusher: gevent.Greenlet | None = None
    _writing: gevent.event.Event = field(default_factory=gevent.event.Event)

    def __post_init__(self) -> None:
        s = self.settings
        self.requests = PartWriter(self.run_dir / "requests.parquet", REQUEST_COLUMNS, flush_s=s.flush_interval_s)
        self.sessions = PartWriter(self.run_dir / "sessions.parquet", SESSION_COLUMNS, flush_s=s.flush_interval_s)
        self.requests.warm_up()
        self.timeouts = ClientTimeouts(s.connect_timeout_s, s.first_token_timeout_s, s.idle_timeout_s, s.total_timeout_s)
        self._writing.set()  # set: no part write in flight
        self._flusher = gevent.spawn(self._flush_loop)

    # -- what users call -------------------------------------------------------------------
    def new_client(self) -> GeventStreamClient:
        return GeventStreamClient(self.timeouts, headers=self.headers)

    def next_session(self) -> PlannedSession | None:
        """The next session for a free user; None (and maybe the end of the test) when none is left."""
        planned = self.plan.next() if not self.closed else None
        if planned is None:
            self._check_done()
            return None
        self.active += 1
        self.sessions_started += 1
        self.tally.session_started(planned.session.agent_kind)
        return planned

    def record_turn(self, rec: TurnRecord) -> None:
        """One request: its row, the Agents tally, Locust's statistics, the ``turn`` hook."""
        self.requests.append(rec.row)
        lag_s = rec.row[9]
        if lag_s > self.max_sched_lag_s:
            self.max_sched_lag_s = lag_s
        self.tally.turn(rec.agent_kind, status=rec.status, output_tokens=rec.output_tokens, usage_prompt_tokens=rec.usage_prompt_tokens, expected_prompt_tokens=rec.prompt_tokens_expected)
        env = self.environment
        if rec.status != "cancelled":  # cut by the end of the test: in the Parquet, not a failure
            name = f"{rec.agent_kind} turn"
            env.events.request.fire(
                request_type=CHAT_REQUEST_TYPE,
                name=name,
                response_time=rec.e2e_s * 1000.0,
                response_length=rec.output_tokens,
                exception=None if rec.ok else TurnFailed(f"{rec.status}: {rec.error}"),
                context={"session_id": rec.session_id, "turn_index": rec.turn_index, "attempt": rec.attempt},
                start_time=rec.t_start_ns / 1e9,
                url=self.endpoint.chat_url,
                response=None,
            )
            if rec.ok and rec.ttft_s is not None and env.runner is not None:
                # its own row in the Statistics table, outside Total (see docs/locust.md, "Charts")
                ttft_ms: Any = rec.ttft_s * 1000.0  # float ms, as Locust's own clients log (typed int there)
                env.runner.stats.get(name, TTFT_REQUEST_TYPE).log(ttft_ms, rec.prompt_tokens_sent)
        kb_events.turn.fire(record=rec, environment=env)

    def record_session(self, rec: SessionRecord) -> None:
        self.sessions.append(rec.row)
        self.active -= 1
        self.tally.session_finished(rec.agent_kind, status=rec.status, requests=rec.requests, output_tok_s=rec.output_tok_s, slo_tok_s=self.settings.slo_tok_s)
        kb_events.session.fire(record=rec, environment=self.environment)
        self._check_done()

    def _check_done(self) -> None:
        if self.plan.exhausted and self.active == 0 and not self._done_signalled and not self.closed:
            self._done_signalled = True
            log.info("every planned session of this process has ended (--max-sessions %s)", self.settings.max_sessions)
            self.on_plan_done()

    # -- records ---------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        period = min(0.5, self.settings.flush_interval_s / 2)
        pool = gevent.get_hub().threadpool
        while True:
            gevent.sleep(period)
            for writer in (self.requests, self.sessions):
                if writer.due():
                    table = writer.to_table(writer.swap())
                    if table.num_rows:
                        self._writing.clear()
                        try:
                            pool.apply(writer.write_part, (table,))
                        finally:
                            self._writing.set()

    def close(self, status: str = "completed") -> None:
        """Compact the records, summarise, rewrite the manifest. Idempotent, and re-entrant.

        Locust runs a second shutdown if a second SIGTERM arrives while the first is under
        way (a process manager signalling the whole group, and ``kairosbench locust``
        forwarding its own), and that one ends the process with ``sys.exit``. So the only
        wait here is for a part write already in the thread pool; everything after it runs
        without yielding to another greenlet, in whichever call gets there first: the
        records are complete once any ``close`` call has passed that point.
        """
        self.closed = True
        if self._flusher is not None:
            self._flusher.kill(block=False)  # it only ever waits in sleep or the write below
            self._flusher = None
        self._writing.wait()
        if self._finished:
            return
        self._finished = True
        gc.unfreeze()
        t_end = now_ns()
        try:
            self.requests.finalize()
            self.sessions.finalize()
            self._summarise(t_end)
        except Exception as exc:  # noqa: BLE001 - keep the manifest honest even if a file write failed
            log.exception("finishing the kairosbench run directory %s failed", self.run_dir)
            self.manifest["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            status = "failed"
        finally:
            self.manifest.update(
                status=status,
                t_end_ns=t_end,
                end=iso_from_ns(t_end),
                endpoint=dict(self.endpoint.describe(), tokenizer=self.factory.model.describe()),
                replay={"sessions_started": self.sessions_started, "max_sched_lag_s": self.max_sched_lag_s},
            )
            write_manifest(self.run_dir, _clean(self.manifest))

    def _summarise(self, t_end_ns: int) -> None:
        from rich.console import Console

        from kairosbench.replay.metrics import summarize

        duration_s = (t_end_ns - self.clock.t0_ns) / 1e9
        summary = summarize(read_table(self.run_dir, "requests"), read_table(self.run_dir, "sessions"), duration_s=duration_s, slo_tok_s=self.settings.slo_tok_s)
        self.manifest["summary"] = summary.to_dict()
        buf = StringIO()
        Console(file=buf, width=100, color_system=None).print(summary)
        log.info("kairosbench records in %s\n%s", self.run_dir, buf.getvalue().rstrip())


def open_run(environment: Environment, settings: AgentSettings, slot: ProcessSlot, run_dir: Path, tally: AgentTally, *, explicit_dir: bool) -> LocustRun:
    """Set up one test in this process (see the module docstring). Raises ``KairosbenchError``."""
    host = environment.host
    if not host:
        raise UsageError("no endpoint: pass --host http://HOST:PORT (or let `kairosbench locust` start an emulator)")
    workload, workload_path = _load_workload(settings)
    api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base_url = normalize_base_url(host)
    probe = GeventStreamClient(ClientTimeouts(connect_s=settings.connect_timeout_s), headers=headers)
    try:
        model = settings.model or discover_model(probe, base_url)
        token_model = select_token_model(settings.tokenizer, probe, base_url, model)
    finally:
        probe.close()
    endpoint = Endpoint(base_url, model, eos_control="ignore_eos" if settings.eos_control == "auto" else settings.eos_control, auto_eos=settings.eos_control == "auto")
    factory = PromptFactory(token_model, PromptSettings(system_prompt_tokens=settings.system_prompt_tokens, seed=settings.seed))
    plan = SessionPlan(workload.sessions, process_index=slot.index, process_count=slot.count, max_sessions=settings.max_sessions)
    run_dir = _fresh_dir(run_dir, explicit_dir)
    t0 = now_ns()
    from locust import __version__ as locust_version

    manifest: dict[str, Any] = {
        "status": "running",
        "driver": "locust",
        "run_dir": str(run_dir),
        "t_start_ns": t0,
        "start": iso_from_ns(t0),
        "config": settings.to_dict(),
        "effective": {"time_scale": settings.time_scale, "arrival": "closed (one session per Locust user)", "seed": settings.seed, "slo_tok_s": settings.slo_tok_s},
        "locust": {"version": locust_version, "role": slot.role, "process_index": slot.index, "process_count": slot.count, "plan_share": plan.share(), "late_joiner": plan.late_joiner},
        "workload": {"path": str(workload_path), "sha256": workload_hash(workload_path), "sessions": len(workload.sessions), "turns": workload.n_turns, "meta": workload.meta},
        "endpoint": dict(endpoint.describe(), tokenizer=token_model.describe()),
        "versions": versions(),
        "host": host_info(),
    }
    write_manifest(run_dir, _clean(manifest))
    # The workload and the prompt factory live as long as the test: move them out of the
    # cyclic GC's reach, or every full collection walks them and stalls all users at once
    # (measured: p99 scheduling lag 85 ms at 1,000 users without this; docs/locust.md).
    gc.collect()
    gc.freeze()
    log.info("kairosbench: %s sessions from %s against %s (model %s, tokenizer %s); records in %s", len(workload.sessions), workload_path, base_url, model, token_model.name, run_dir)
    return LocustRun(environment, settings, slot, run_dir, endpoint, factory, plan, tally, manifest, headers)
