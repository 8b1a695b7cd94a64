"""Start and stop the profiler from another program (the run orchestrator, the ``profile`` command).

    handle = start_profiler(run_dir, ["nvml"], engine_endpoints=["http://127.0.0.1:8000"])
    ...                                   # the run
    summary = handle.stop()               # idempotent; also ``with start_profiler(...) as h:``

The sampler runs in its own process (see ``sampler_main``), so the load generator's event loop
never stalls it and it never stalls the loop. Problems that leave the run without GPU
telemetry (no NVML, no GPU, an emulator that never answers, a sampler that died) become
warnings on the handle and in the summary; the run goes on. Only a malformed source name is
an error (UsageError), because that is a typo the user should fix before anything starts.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import kairosbench
from kairosbench.profiler.journal import read_metadata, recover_run_dir
from kairosbench.profiler.periods import update_periods
from kairosbench.profiler.sampler import ENGINE_FILE, POWER_FILE, SamplerConfig
from kairosbench.profiler.sources import GpuInfo, parse_source
from kairosbench.profiler.summary import DEFAULT_TOLERANCE_FRAC, ProfileSummary, summarize_table

__all__ = ["start_profiler", "detect_sources", "launch_sampler", "ProfilerHandle", "summarize_run_dir", "SUMMARY_FILE"]

SUMMARY_FILE = "power_summary.json"
LOG_FILE = "profiler.log"


def detect_sources() -> list[str]:
    """``["nvml"]`` if NVML initialises and sees at least one GPU, else ``[]``. Never raises."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        return ["nvml"] if count > 0 else []
    except Exception:  # noqa: BLE001 - by contract: any failure means "no NVML here"
        return []


def start_profiler(
    run_dir: Path,
    sources: list[str],
    *,
    engine_endpoints: Sequence[str] = (),
    interval_s: float | None = None,
    engine_interval_s: float = 1.0,
    flush_interval_s: float = 1.0,
    tolerance_frac: float = DEFAULT_TOLERANCE_FRAC,
) -> ProfilerHandle:
    """Start the sampler process writing ``power.parquet`` / ``engine.parquet`` into ``run_dir``.

    ``sources``: ``"nvml"``, ``"emulator:http://127.0.0.1:8001"``, ``"prometheus:http://host:9400/metrics"``.
    ``interval_s``: poll period; None picks each source's own (NVML/emulator 0.05 s, Prometheus 1 s).
    """
    for text in sources:
        parse_source(text)  # typos fail here, before a process starts
    config = SamplerConfig(
        run_dir=Path(run_dir), sources=list(sources), engine_endpoints=list(engine_endpoints),
        interval_s=interval_s, engine_interval_s=engine_interval_s, flush_interval_s=flush_interval_s,
    )
    return launch_sampler(config, tolerance_frac=tolerance_frac)


def launch_sampler(config: SamplerConfig, *, tolerance_frac: float = DEFAULT_TOLERANCE_FRAC, ready_timeout_s: float = 60.0) -> ProfilerHandle:
    """Start the sampler process for a full :class:`SamplerConfig` (tests pass a FakeNvml here)."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = ProfilerHandle(run_dir, tolerance_frac=tolerance_frac)
    if not config.sources and not config.engine_endpoints:
        handle.warnings.append("no telemetry source: profiling without GPU telemetry")
        return handle
    env = dict(os.environ)
    package_root = str(Path(kairosbench.__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    with open(run_dir / LOG_FILE, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kairosbench.profiler.sampler_main"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env, start_new_session=True,
        )
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(config))
    proc.stdin.flush()
    handle._attach(proc)
    if not handle._ready.wait(ready_timeout_s):
        handle.warnings.append(f"the profiler did not start within {ready_timeout_s:g} s (see {run_dir / LOG_FILE})")
    return handle


class ProfilerHandle:
    """A running profiler. ``stop()`` ends it and returns the :class:`ProfileSummary`."""

    def __init__(self, run_dir: Path, *, tolerance_frac: float = DEFAULT_TOLERANCE_FRAC) -> None:
        self.run_dir = Path(run_dir)
        self.tolerance_frac = tolerance_frac
        self.gpus: list[GpuInfo] = []
        self.warnings: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._latest: dict[str, dict[str, Any]] = {}
        self._done_stats: dict[str, Any] | None = None
        self._summary: ProfileSummary | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest poll row per GPU (key ``host/gpu/source``), for live displays; about 1 s old."""
        with self._lock:
            return dict(self._latest)

    def _attach(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._reader = threading.Thread(target=self._read_messages, name="profiler-reader", daemon=True)
        self._reader.start()

    def _read_messages(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            kind = message.get("type")
            if kind == "ready":
                self.gpus = [GpuInfo(**{**g, "notes": tuple(g.get("notes", ()))}) for g in message.get("gpus", [])]
                self.warnings.extend(message.get("warnings", []))
                self._ready.set()
            elif kind == "live":
                with self._lock:
                    self._latest = {f"{g['host']}/{g['gpu']}/{g['source']}": g for g in message.get("gpus", [])}
            elif kind == "done":
                self._done_stats = message.get("stats", {})
        self._ready.set()  # the process ended (maybe before it was ready)

    def stop(self, timeout_s: float = 120.0) -> ProfileSummary:
        """Stop sampling, make sure the Parquet files are complete, and summarise. Idempotent."""
        if self._summary is not None:
            return self._summary
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.close()  # EOF: the sampler takes its last readings and writes Parquet
                except OSError:
                    pass
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.warnings.append(f"the profiler did not finish within {timeout_s:g} s and was killed")
                    proc.kill()
                    proc.wait()
            if self._reader is not None:
                self._reader.join(5.0)
            if proc.returncode not in (0, None):
                self.warnings.append(f"the profiler process exited with code {proc.returncode}; files recovered up to its last flush (see {self.run_dir / LOG_FILE})")
        recovered = recover_run_dir(self.run_dir, {POWER_FILE: update_periods})
        self._summary = summarize_run_dir(
            self.run_dir, tolerance_frac=self.tolerance_frac, warnings=self.warnings,
            extra={"recovered_files": [p.name for p in recovered]} if recovered else None,
        )
        self._summary.write(self.run_dir / SUMMARY_FILE)
        return self._summary

    def __enter__(self) -> ProfilerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def summarize_run_dir(
    run_dir: Path,
    *,
    tolerance_frac: float = DEFAULT_TOLERANCE_FRAC,
    warnings: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> ProfileSummary:
    """The summary of whatever ``power.parquet`` in ``run_dir`` holds (empty if there is none)."""
    run_dir = Path(run_dir)
    power = run_dir / POWER_FILE
    all_warnings = list(dict.fromkeys(warnings))
    profiler: dict[str, Any] = dict(extra or {})
    if not power.exists():
        if not any("GPU telemetry" in w for w in all_warnings):
            all_warnings.append("no GPU telemetry was recorded")
        return ProfileSummary(str(run_dir), (), tolerance_frac, tuple(all_warnings), profiler)
    meta = read_metadata(power)
    for warning in meta.get("warnings", []):
        if warning not in all_warnings:
            all_warnings.append(warning)
    names = {f"{g['host']}/{g['gpu']}/{g['source']}": g.get("name", "") for g in meta.get("gpus", [])}
    profiler.update({k: meta[k] for k in ("profiler_cpu", "recovered", "journal_truncated") if k in meta})
    profiler["files"] = [p.name for p in (power, run_dir / ENGINE_FILE) if p.exists()]
    gpus = summarize_table(pq.read_table(power), tolerance_frac=tolerance_frac, names=names)
    for g in gpus:
        if g.flagged and g.disagreement_frac is not None:
            all_warnings.append(
                f"GPU {g.host}/{g.gpu}: integrated energy differs from the counter by {g.disagreement_frac * 100:.2f}% "
                f"(> {tolerance_frac * 100:g}%)"
            )
    return ProfileSummary(str(run_dir), gpus, tolerance_frac, tuple(all_warnings), profiler)

