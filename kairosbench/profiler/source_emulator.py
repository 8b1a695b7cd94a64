"""The emulator source: one emulated GPU per instance, read over its telemetry HTTP API.

The emulator (``kairosbench emulate``) serves, per instance:

- ``GET /kairosbench/gpu``: the current NVML-like readings (instant power on a 100 ms grid, the
  1 s average, the energy counter in mJ, clocks, utilisation, memory, temperature, throttle
  reasons);
- ``GET /kairosbench/gpu/samples?since_us=N``: its 20 ms power-sample buffer, samples newer
  than N, with ``t_us`` on the run clock.

So it lands in the same columns as NVML, polled and drained at the same rates. ``host`` is the
instance's ``host:port``, which keeps GPUs of different instances apart.

Unlike NVML, the emulator says when its values were produced: ``t_ns`` in the payload is the
100 ms grid point they are frozen at (on the run clock, same host). Poll rows carry that time,
not the read time, and a poll that finds the same grid point as the previous one adds nothing
and is dropped; so energy-counter changes are dated exactly (``schema.VALUE_TIMED_SOURCES``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kairosbench.clock import now_ns as run_now_ns
from kairosbench.errors import TelemetryError
from kairosbench.profiler.buffer_clock import BufferClock, SampleDeduper, host_clocks
from kairosbench.profiler.http_fetch import HttpFetcher
from kairosbench.profiler.schema import KIND_BUFFER, KIND_POLL
from kairosbench.profiler.sources import GpuInfo, Row, SourceCounters

__all__ = ["EmulatorSource", "emulator_row"]

_FLOAT_FIELDS = ("power_w", "power_avg_w", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_util_pct", "mem_used_mib", "temp_c")


def emulator_row(payload: dict[str, Any], *, host: str, t_ns: int) -> Row:
    """Map a ``GET /kairosbench/gpu`` payload onto the telemetry columns (pure)."""
    row: Row = {"t_ns": t_ns, "host": host, "gpu": int(payload.get("gpu", 0)), "source": "emulator", "kind": KIND_POLL}
    for key in _FLOAT_FIELDS:
        value = payload.get(key)
        row[key] = float(value) if isinstance(value, (int, float)) else None
    energy_mj = payload.get("energy_mj")
    row["energy_j"] = float(energy_mj) / 1000.0 if isinstance(energy_mj, (int, float)) else None
    throttle = payload.get("throttle_reasons")
    row["throttle_reasons"] = int(throttle) if isinstance(throttle, int) else None
    return row


class EmulatorSource:
    """One emulator instance's GPU."""

    kind = "emulator"
    default_interval_s = 0.05  # the emulator's instant power moves on a 100 ms grid, as on an H100
    has_buffer = True

    def __init__(
        self,
        base_url: str,
        *,
        now_ns: Callable[[], int] = run_now_ns,
        fetcher: HttpFetcher | None = None,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self._now_ns = now_ns
        self._fetcher = fetcher or HttpFetcher()
        self._own_fetcher = fetcher is None
        self._connect_timeout_s = connect_timeout_s
        # t_us is documented to be on the run clock; detection double-checks and records it.
        self.buffer_clock = BufferClock({"run clock": now_ns} | host_clocks(), now_ns)
        self._dedup = SampleDeduper()
        self._counters = SourceCounters()
        self.warnings = self._counters.warnings
        self._gpu = 0
        self._last_value_t_ns: int | None = None

    async def open(self) -> list[GpuInfo]:
        deadline = time.monotonic() + self._connect_timeout_s
        while True:  # the emulator may still be starting when the profiler does
            try:
                payload = await self._fetcher.get_json(f"{self.base_url}/kairosbench/gpu")
                break
            except TelemetryError as exc:
                if time.monotonic() >= deadline:
                    raise TelemetryError(f"emulator at {self.base_url} gave no telemetry within {self._connect_timeout_s:g} s: {exc}") from exc
                await asyncio.sleep(0.2)
        if not isinstance(payload, dict) or "power_w" not in payload:
            raise TelemetryError(f"{self.base_url}/kairosbench/gpu is not the emulator's telemetry API (no power_w)")
        self._gpu = int(payload.get("gpu", 0))
        await self._prime()
        return [GpuInfo(self.host, self._gpu, self.kind, str(payload.get("name", "emulated GPU")))]

    async def _prime(self) -> None:
        samples = await self._fetch_samples(0)
        if samples:
            newest = max(ts for ts, _ in samples)
            self._dedup.last_us = newest
            self.buffer_clock.detect(newest)

    async def poll(self, *, full: bool = False) -> list[Row]:
        t0 = self._now_ns()
        try:
            payload = await self._fetcher.get_json(f"{self.base_url}/kairosbench/gpu")
        except TelemetryError as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return []
        if not isinstance(payload, dict):
            return []
        self._counters.count("polls")
        value_t_ns = payload.get("t_ns")
        if isinstance(value_t_ns, int):
            if value_t_ns == self._last_value_t_ns:
                self._counters.count("polls_same_grid_point")
                return []
            self._last_value_t_ns = value_t_ns
            return [emulator_row(payload, host=self.host, t_ns=value_t_ns)]
        return [emulator_row(payload, host=self.host, t_ns=(t0 + self._now_ns()) // 2)]

    async def _fetch_samples(self, since_us: int) -> list[tuple[int, float]]:
        try:
            payload = await self._fetcher.get_json(f"{self.base_url}/kairosbench/gpu/samples?since_us={since_us}")
        except TelemetryError as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return []
        samples = payload.get("samples", []) if isinstance(payload, dict) else []
        return [(int(s["t_us"]), float(s["power_w"])) for s in samples if "t_us" in s and "power_w" in s]

    async def drain(self) -> list[Row]:
        samples = await self._fetch_samples(self._dedup.last_us or 0)
        self._counters.count("drains")
        if not samples:
            return []
        if self.buffer_clock.clock_name is None:
            self.buffer_clock.detect(max(ts for ts, _ in samples))
        self.buffer_clock.begin_drain()
        fresh = self._dedup.accept(samples)
        if fresh:
            self.buffer_clock.record_lag(fresh[-1][0])
        return [
            {"t_ns": self.buffer_clock.to_run_ns(ts), "host": self.host, "gpu": self._gpu, "source": self.kind,
             "kind": KIND_BUFFER, "power_w": w}
            for ts, w in fresh
        ]

    def describe(self) -> dict[str, Any]:
        lags = sorted(self.buffer_clock.lags_ms)
        return {
            "url": self.base_url,
            "buffer_clock": self.buffer_clock.clock_name,
            "buffer_newest_sample_age_ms_median": lags[len(lags) // 2] if lags else None,
            **self._counters.stats,
            **self._dedup.stats(),
        }

    async def close(self) -> None:
        if self._own_fetcher:
            await self._fetcher.close()
