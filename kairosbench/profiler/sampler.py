"""The sampling loop: poll, drain, scrape and flush on their own periods, in the sampler process.

Each periodic job (poll a source, drain its sample buffer, scrape an engine endpoint, flush
the journals, report live values) is an asyncio task that keeps a drift-free schedule
(``next += period``; a job that overran skips its missed ticks instead of bursting). Jobs
never raise: a failed read is counted and the run goes on. At stop, every source is polled and
drained once more (so the file reaches the stop time), the journals are flushed and turned
into Parquet with the measured update periods and the loop's CPU use in their metadata.

:class:`Sampler` also exposes the single steps (``poll_source``, ``drain_source``,
``scrape_engine``, ``flush``), which is how the tests drive it on a virtual clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kairosbench import __version__
from kairosbench.clock import now_ns as run_now_ns
from kairosbench.errors import KairosbenchError
from kairosbench.profiler.engine_scraper import EngineScraper
from kairosbench.profiler.http_fetch import HttpFetcher
from kairosbench.profiler.journal import TableJournal
from kairosbench.profiler.periods import update_periods
from kairosbench.profiler.schema import ENGINE_SCHEMA, POWER_SCHEMA, SCHEMA_VERSION
from kairosbench.profiler.sources import GpuInfo, Row, TelemetrySource, parse_source

__all__ = ["SamplerConfig", "Sampler", "build_source", "POWER_FILE", "ENGINE_FILE"]

log = logging.getLogger("kairosbench.profiler")

POWER_FILE = "power.parquet"
ENGINE_FILE = "engine.parquet"


@dataclass
class SamplerConfig:
    """Everything the sampler process needs; pickled to it on start."""

    run_dir: Path
    sources: list[str] = field(default_factory=list)
    engine_endpoints: list[str] = field(default_factory=list)
    interval_s: float | None = None  # poll period; None = each source's own default
    drain_interval_s: float = 0.5  # the H100 ring holds ~2.4 s of 20 ms samples: 4x margin
    flush_interval_s: float = 1.0  # a kill loses at most this much
    engine_interval_s: float = 1.0
    expensive_every: int = 20  # NVML: a read costing more CPU than expensive_cpu_us happens every Nth poll
    expensive_cpu_us: float = 200.0
    live_interval_s: float = 1.0
    nvml: Any = None  # a pynvml-like object (kairosbench.testing.FakeNvml); None = pynvml


def build_source(spec_text: str, config: SamplerConfig, *, now_ns: Callable[[], int], fetcher: HttpFetcher) -> TelemetrySource:
    """The source object for a source name (``nvml``, ``emulator:URL``, ``prometheus:URL``)."""
    spec = parse_source(spec_text)
    if spec.kind == "nvml":
        from kairosbench.profiler.source_nvml import NvmlSource

        return NvmlSource(config.nvml, now_ns=now_ns, expensive_every=config.expensive_every, expensive_cpu_us=config.expensive_cpu_us)
    if spec.kind == "emulator":
        from kairosbench.profiler.source_emulator import EmulatorSource

        return EmulatorSource(spec.url or "", now_ns=now_ns, fetcher=fetcher)
    from kairosbench.profiler.source_prometheus import PrometheusSource

    return PrometheusSource(spec.url or "", now_ns=now_ns, fetcher=fetcher)


class Sampler:
    """Owns the sources, the engine scrapers and the two journals of one run."""

    def __init__(
        self,
        config: SamplerConfig,
        *,
        now_ns: Callable[[], int] = run_now_ns,
        sources: list[tuple[str, TelemetrySource]] | None = None,
        emit: Callable[[dict[str, Any]], None] = lambda message: None,
    ) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self._now_ns = now_ns
        self._emit = emit
        self._fetcher = HttpFetcher()
        self._pending_sources = sources if sources is not None else [
            (text, build_source(text, config, now_ns=now_ns, fetcher=self._fetcher)) for text in config.sources
        ]
        self.sources: list[tuple[str, TelemetrySource]] = []
        self.scrapers = [EngineScraper(e, now_ns=now_ns, fetcher=self._fetcher) for e in config.engine_endpoints]
        self.gpus: list[GpuInfo] = []
        self.warnings: list[str] = []
        self.power: TableJournal | None = None
        self.engine: TableJournal | None = None
        self.latest: dict[str, Row] = {}
        self.job_errors = 0
        self.late_ticks = 0
        self._loop_cpu0 = self._loop_wall0 = 0.0
        self._loop_cpu1 = self._loop_wall1 = 0.0
        self.started_ns = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> list[GpuInfo]:
        """Open every source; one that cannot be used becomes a warning, not a failure."""
        self.started_ns = self._now_ns()
        for text, source in self._pending_sources:
            try:
                gpus = await source.open()
            except KairosbenchError as exc:
                self.warnings.append(f"source {text}: {exc}; continuing without it")
                await _quietly(source.close())
                continue
            except Exception as exc:  # noqa: BLE001 - a broken source must not take the run down
                log.error("source %s failed to open:\n%s", text, traceback.format_exc())
                self.warnings.append(f"source {text}: {exc.__class__.__name__}: {exc} (see profiler.log); continuing without it")
                await _quietly(source.close())
                continue
            self.sources.append((text, source))
            self.gpus.extend(gpus)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta = self._static_meta()
        if self.sources:
            self.power = TableJournal(self.run_dir / POWER_FILE, POWER_SCHEMA, meta)
        if self.scrapers:
            self.engine = TableJournal(self.run_dir / ENGINE_FILE, ENGINE_SCHEMA, meta)
        return self.gpus

    def _static_meta(self) -> dict[str, Any]:
        c = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "kairosbench_version": __version__,
            "hostname": socket.gethostname(),
            "started_t_ns": self.started_ns,
            "sources": [text for text, _ in self.sources],
            "engine_endpoints": [s.url for s in self.scrapers],
            "gpus": [asdict(g) for g in self.gpus],
            "poll_interval_s": {text: self.poll_period(s) for text, s in self.sources},
            "drain_interval_s": c.drain_interval_s,
            "flush_interval_s": c.flush_interval_s,
            "engine_interval_s": c.engine_interval_s,
            "clock": "t_ns is kairosbench.clock.now_ns(): Unix-epoch ns advancing with CLOCK_MONOTONIC",
        }

    def poll_period(self, source: TelemetrySource) -> float:
        return self.config.interval_s if self.config.interval_s else source.default_interval_s

    # -- single steps ------------------------------------------------------------------------
    async def poll_source(self, source: TelemetrySource, *, full: bool = False) -> None:
        rows = await source.poll(full=full)
        for row in rows:
            # Live view: newest value of every signal, including those read only every few polls.
            key = f"{row['host']}/{row['gpu']}/{row['source']}"
            self.latest[key] = {**self.latest.get(key, {}), **{k: v for k, v in row.items() if v is not None}}
        if self.power is not None:
            self.power.append(rows)

    async def drain_source(self, source: TelemetrySource) -> None:
        rows = await source.drain()
        if self.power is not None:
            self.power.append(rows)

    async def scrape_engine(self, scraper: EngineScraper) -> None:
        row = await scraper.scrape()
        if row is not None and self.engine is not None:
            self.engine.append([row])

    async def flush(self) -> None:
        for journal in (self.power, self.engine):
            if journal is not None:
                journal.flush()

    async def report_live(self) -> None:
        self._emit({"type": "live", "t_ns": self._now_ns(), "gpus": list(self.latest.values())})

    # -- the loop ----------------------------------------------------------------------------
    def _jobs(self) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        jobs: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        for _, source in self.sources:
            jobs.append((self.poll_period(source), functools.partial(self.poll_source, source)))
            if source.has_buffer:
                jobs.append((self.config.drain_interval_s, functools.partial(self.drain_source, source)))
        for scraper in self.scrapers:
            jobs.append((self.config.engine_interval_s, functools.partial(self.scrape_engine, scraper)))
        jobs.append((self.config.flush_interval_s, self.flush))
        jobs.append((self.config.live_interval_s, self.report_live))
        return jobs

    async def _every(self, period_s: float, job: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed read must never stop the sampler
                self.job_errors += 1
                log.error("profiler job failed:\n%s", traceback.format_exc())
            next_t += period_s
            now = loop.time()
            if next_t < now:
                self.late_ticks += int((now - next_t) / period_s) + 1
                next_t = now + period_s
            await asyncio.sleep(next_t - now)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set, then take one last reading of everything."""
        self._loop_cpu0, self._loop_wall0 = time.process_time(), time.monotonic()
        tasks = [asyncio.create_task(self._every(period, job)) for period, job in self._jobs()]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, source in self.sources:
                await _quietly(self.poll_source(source, full=True))
                if source.has_buffer:
                    await _quietly(self.drain_source(source))
            await self.flush()
            self._loop_cpu1, self._loop_wall1 = time.process_time(), time.monotonic()

    async def close(self) -> dict[str, Any]:
        """Close the sources and write the Parquet files; returns the run's statistics."""
        for _, source in self.sources:
            await _quietly(source.close())
        for scraper in self.scrapers:
            await _quietly(scraper.close())
        await self._fetcher.close()
        stats = self.stats()
        if self.power is not None:
            self.power.close(extra_meta=stats, derive=update_periods)
        if self.engine is not None:
            self.engine.close(extra_meta={"engine": [s.describe() for s in self.scrapers]})
        return stats

    def stats(self) -> dict[str, Any]:
        wall = self._loop_wall1 - self._loop_wall0
        cpu = self._loop_cpu1 - self._loop_cpu0
        times = os.times()
        for _, source in self.sources:
            for warning in source.warnings:
                if warning not in self.warnings:
                    self.warnings.append(warning)
        for scraper in self.scrapers:
            self.warnings.extend(w for w in scraper.warnings if w not in self.warnings)
        return {
            "stopped_t_ns": self._now_ns(),
            "sources_detail": {text: source.describe() for text, source in self.sources},
            "profiler_cpu": {
                "loop_wall_s": wall,
                "loop_cpu_s": cpu,
                "loop_cpu_pct_of_one_core": (100.0 * cpu / wall) if wall > 0 else None,
                "process_cpu_s": times.user + times.system,
            },
            "job_errors": self.job_errors,
            "late_ticks": self.late_ticks,
            "warnings": self.warnings,
        }


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # noqa: BLE001 - best effort on the way out; logged for the record
        log.error("profiler shutdown step failed:\n%s", traceback.format_exc())
