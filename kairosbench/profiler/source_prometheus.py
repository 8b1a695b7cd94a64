"""The Prometheus source: GPUs on other hosts, read from an existing DCGM exporter.

Multi-host runs should not need anything home-made on every host: DCGM exporter already
publishes these signals. One scrape yields one poll row per (``Hostname``, ``gpu``) label pair.
Metric to column (DCGM field semantics, from the DCGM docs):

==========================================  ==================  ===========================
metric                                      column              note
==========================================  ==================  ===========================
DCGM_FI_DEV_POWER_USAGE_INSTANT             power_w             W
DCGM_FI_DEV_POWER_USAGE                     power_avg_w         W; nvmlDeviceGetPowerUsage,
                                                                a 1 s average on Ampere+
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION        energy_j            mJ in the exporter, /1000
DCGM_FI_DEV_SM_CLOCK / _MEM_CLOCK           sm/mem_clock_mhz    MHz
DCGM_FI_DEV_GPU_UTIL / _MEM_COPY_UTIL       gpu/mem_util_pct    %
DCGM_FI_DEV_FB_USED                         mem_used_mib        MiB
DCGM_FI_DEV_GPU_TEMP                        temp_c              degC
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS          throttle_reasons    NVML bitmask (newer DCGM:
                                                                DCGM_FI_DEV_CLOCKS_EVENT_REASONS)
==========================================  ==================  ===========================

DCGM samples at 1 Hz by default (``dcgm-exporter -c`` sets it), so the default poll here is 1 s;
there is no sample buffer to drain. Rows are stamped with the run-clock midpoint of the scrape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kairosbench.clock import now_ns as run_now_ns
from kairosbench.errors import TelemetryError
from kairosbench.profiler.http_fetch import HttpFetcher
from kairosbench.profiler.promtext import PromSample, parse_prometheus_text
from kairosbench.profiler.schema import KIND_POLL
from kairosbench.profiler.sources import GpuInfo, Row, SourceCounters

__all__ = ["PrometheusSource", "dcgm_rows", "DCGM_COLUMNS"]

# metric name -> (column, scale)
DCGM_COLUMNS: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_POWER_USAGE_INSTANT": ("power_w", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power_avg_w", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", 1e-3),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("mem_clock_mhz", 1.0),
    "DCGM_FI_DEV_GPU_UTIL": ("gpu_util_pct", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("mem_util_pct", 1.0),
    "DCGM_FI_DEV_FB_USED": ("mem_used_mib", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", 1.0),
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": ("throttle_reasons", 1.0),
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": ("throttle_reasons", 1.0),
}


def _is_blank(column: str, value: float) -> bool:
    """DCGM's "no value" sentinels: int64 blank (>= 0x7ffffffffffffff0), fp64 blank (2**47), and
    int32 blank (0x7ffffff0..0x7fffffff) for the 32-bit fields (everything but the energy counter)."""
    if math.isnan(value) or value >= 9.223372036854775e18 or value == 140737488355328.0:
        return True
    return column != "energy_j" and 2147483632 <= value <= 2147483647


def dcgm_rows(samples: list[PromSample], *, default_host: str, t_ns: int) -> list[Row]:
    """Group DCGM samples into one poll row per (Hostname, gpu), sorted (pure)."""
    rows: dict[tuple[str, int], Row] = {}
    for sample in samples:
        mapped = DCGM_COLUMNS.get(sample.name)
        if mapped is None or "gpu" not in sample.labels or _is_blank(mapped[0], sample.value):
            continue
        try:
            gpu = int(sample.labels["gpu"])
        except ValueError:
            continue
        host = sample.labels.get("Hostname") or sample.labels.get("hostname") or default_host
        row = rows.get((host, gpu))
        if row is None:
            row = rows[(host, gpu)] = {"t_ns": t_ns, "host": host, "gpu": gpu, "source": "prometheus", "kind": KIND_POLL}
        column, scale = mapped
        row[column] = int(sample.value) if column == "throttle_reasons" else sample.value * scale
    return [rows[key] for key in sorted(rows)]


class PrometheusSource:
    """Every GPU a DCGM-exporter (or compatible) /metrics endpoint reports."""

    kind = "prometheus"
    default_interval_s = 1.0  # DCGM's default sampling period; set lower only if the exporter's -c is lower
    has_buffer = False

    def __init__(self, url: str, *, now_ns: Callable[[], int] = run_now_ns, fetcher: HttpFetcher | None = None) -> None:
        self.url = url
        self.default_host = urlsplit(url).hostname or url
        self._now_ns = now_ns
        self._fetcher = fetcher or HttpFetcher(timeout_s=5.0)
        self._own_fetcher = fetcher is None
        self._counters = SourceCounters()
        self.warnings = self._counters.warnings
        self._models: dict[tuple[str, int], str] = {}

    async def _scrape(self) -> list[Row]:
        t0 = self._now_ns()
        text = await self._fetcher.get_text(self.url)
        t_ns = (t0 + self._now_ns()) // 2
        parsed = parse_prometheus_text(text)
        if parsed.bad_lines:
            self._counters.count("bad_lines", len(parsed.bad_lines))
            number, why = parsed.bad_lines[0]
            self._counters.warn(f"{self.url}: line {number} is not Prometheus text ({why}); such lines are skipped")
        for s in parsed.samples:
            if s.name in DCGM_COLUMNS and "gpu" in s.labels and "modelName" in s.labels:
                host = s.labels.get("Hostname") or s.labels.get("hostname") or self.default_host
                self._models.setdefault((host, int(s.labels["gpu"])) if s.labels["gpu"].isdigit() else (host, -1), s.labels["modelName"])
        return dcgm_rows(parsed.samples, default_host=self.default_host, t_ns=t_ns)

    async def open(self) -> list[GpuInfo]:
        rows = await self._scrape()
        if not rows:
            raise TelemetryError(
                f"{self.url} serves no DCGM_FI_DEV_* metric with a 'gpu' label: is it a DCGM exporter's /metrics?"
            )
        return [GpuInfo(r["host"], r["gpu"], self.kind, self._models.get((r["host"], r["gpu"]), "")) for r in rows]

    async def poll(self, *, full: bool = False) -> list[Row]:
        try:
            rows = await self._scrape()
        except TelemetryError as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return []
        self._counters.count("polls")
        return rows

    async def drain(self) -> list[Row]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, **self._counters.stats}

    async def close(self) -> None:
        if self._own_fetcher:
            await self._fetcher.close()
