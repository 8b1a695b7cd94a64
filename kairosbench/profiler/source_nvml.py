"""The NVML source: every GPU on this host, read with nvidia-ml-py (read-only: no setter is called).

Per poll and GPU, one ``nvmlDeviceGetFieldValues`` call reads the instant power, the 1 s
average and the energy counter together (one driver round trip instead of three), then the
SM clock and the clock-event reasons. The signals that change more slowly or matter less for
power (memory clock, utilisation, memory used, temperature) are read every ``slow_every``-th
poll. Each drain reads the driver's power-sample ring (``NVML_TOTAL_POWER_SAMPLES``) from the
newest timestamp seen; ``NVML_ERROR_NOT_FOUND`` there means no new sample.

A signal the GPU does not support, or that the driver refuses, is dropped after its first
failure with a note, so one missing signal never costs a failing call per poll. Other read
errors are counted and the poll goes on with that value null.

``nvml`` may be any object with pynvml's functions and constants: ``kairosbench.testing.FakeNvml``
replays recorded readings through this exact code.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kairosbench.clock import now_ns as run_now_ns
from kairosbench.profiler.buffer_clock import BufferClock, SampleDeduper, host_clocks
from kairosbench.profiler.nvml_errors import (
    NvmlPermissionDenied,
    NvmlReadFailed,
    NvmlSignalUnsupported,
    NvmlUnavailable,
    is_not_found,
    translate,
)
from kairosbench.profiler.schema import KIND_BUFFER, KIND_POLL
from kairosbench.profiler.sources import GpuInfo, Row, SourceCounters

__all__ = ["NvmlSource"]

_FI_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT (mW)
_FI_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE (mW, 1 s moving average)
_FI_TOTAL_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since driver load)
_SCOPE_GPU = 0  # NVML_POWER_SCOPE_GPU
_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_MIB = 1024 * 1024


def _value(union: Any, value_type: int) -> float:
    return float(getattr(union, _VALUE_ATTR.get(int(value_type), "ullVal")))


@dataclass
class _Gpu:
    index: int
    handle: Any
    info: GpuInfo
    fields: list[tuple[str, tuple[int, int] | int]]  # (column, field id or (id, scope))
    disabled: set[str] = field(default_factory=set)
    dedup: SampleDeduper = field(default_factory=SampleDeduper)
    notes: list[str] = field(default_factory=list)


class NvmlSource:
    """All GPUs NVML sees on this host."""

    kind = "nvml"
    default_interval_s = 0.05  # every NVML signal changes about every 100 ms on an H100 (docs/profiler.md)
    has_buffer = True

    def __init__(
        self,
        nvml: Any = None,
        *,
        host: str | None = None,
        now_ns: Callable[[], int] = run_now_ns,
        clocks: Mapping[str, Callable[[], int]] | None = None,
        slow_every: int = 4,
    ) -> None:
        self._nvml = nvml
        self.host = host or socket.gethostname()
        self._now_ns = now_ns
        self._slow_every = max(1, slow_every)
        self.buffer_clock = BufferClock(clocks if clocks is not None else host_clocks(), now_ns)
        self._gpus: list[_Gpu] = []
        self._polls = 0
        self._closed = False
        self._counters = SourceCounters()
        self.warnings = self._counters.warnings
        self.driver_version = ""

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> list[GpuInfo]:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
                raise NvmlUnavailable("nvidia-ml-py is not installed: pip install nvidia-ml-py") from exc
            self._nvml = pynvml
        nv = self._nvml
        with translate("nvmlInit"):
            nv.nvmlInit()
        with translate("nvmlDeviceGetCount"):
            count = int(nv.nvmlDeviceGetCount())
        if count == 0:
            nv.nvmlShutdown()
            raise NvmlUnavailable("NVML initialised but found no GPU")
        try:
            with translate("nvmlSystemGetDriverVersion"):
                self.driver_version = _text(nv.nvmlSystemGetDriverVersion())
        except (NvmlReadFailed, NvmlSignalUnsupported, NvmlPermissionDenied):
            self.driver_version = ""
        for index in range(count):
            self._gpus.append(self._open_gpu(index))
        self._prime_buffers()
        return [g.info for g in self._gpus]

    def _open_gpu(self, index: int) -> _Gpu:
        nv = self._nvml
        with translate("nvmlDeviceGetHandleByIndex", gpu=index):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        name = uuid = ""
        try:
            with translate("nvmlDeviceGetName", gpu=index):
                name = _text(nv.nvmlDeviceGetName(handle))
            with translate("nvmlDeviceGetUUID", gpu=index):
                uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except (NvmlReadFailed, NvmlSignalUnsupported, NvmlPermissionDenied):
            pass
        fields: list[tuple[str, tuple[int, int] | int]] = [
            ("power_w", (_FI_POWER_INSTANT, _SCOPE_GPU)),
            ("power_avg_w", (_FI_POWER_AVERAGE, _SCOPE_GPU)),
            ("energy_j", _FI_TOTAL_ENERGY),
        ]
        gpu = _Gpu(index, handle, GpuInfo(self.host, index, self.kind, name, uuid), fields)
        # One probe read decides which fields this GPU answers; the rest fall back or go null.
        self._read_fields(gpu)
        gpu.info = GpuInfo(self.host, index, self.kind, name, uuid, tuple(gpu.notes))
        return gpu

    def _prime_buffers(self) -> None:
        """Skip the ring's history from before the profiler started; detect the sample clock."""
        for gpu in self._gpus:
            samples = self._get_samples(gpu, 0)
            if samples:
                newest = max(ts for ts, _ in samples)
                gpu.dedup.last_us = newest
                if self.buffer_clock.clock_name is None:
                    self.buffer_clock.detect(newest)

    async def close(self) -> None:
        if self._nvml is not None and self._gpus and not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
                pass

    # -- reads -------------------------------------------------------------------------------
    async def poll(self) -> list[Row]:
        slow = self._polls % self._slow_every == 0
        self._polls += 1
        rows = []
        for gpu in self._gpus:
            t0 = self._now_ns()
            row: Row = {"host": self.host, "gpu": gpu.index, "source": self.kind, "kind": KIND_POLL}
            row.update(self._read_fields(gpu))
            row["sm_clock_mhz"] = self._read(gpu, "sm_clock_mhz", self._clock_sm)
            row["throttle_reasons"] = self._read(gpu, "throttle_reasons", self._throttle)
            if slow:
                row["mem_clock_mhz"] = self._read(gpu, "mem_clock_mhz", self._clock_mem)
                util = self._read(gpu, "utilization", lambda h: self._nvml.nvmlDeviceGetUtilizationRates(h))
                if util is not None:
                    row["gpu_util_pct"], row["mem_util_pct"] = float(util.gpu), float(util.memory)
                mem = self._read(gpu, "mem_used_mib", lambda h: self._nvml.nvmlDeviceGetMemoryInfo(h))
                if mem is not None:
                    row["mem_used_mib"] = float(mem.used) / _MIB
                row["temp_c"] = self._read(gpu, "temp_c", self._temperature)
            row["t_ns"] = (t0 + self._now_ns()) // 2
            rows.append(row)
        self._counters.count("polls")
        return rows

    async def drain(self) -> list[Row]:
        rows: list[Row] = []
        self.buffer_clock.begin_drain()
        for gpu in self._gpus:
            if "buffer" in gpu.disabled:
                continue
            samples = self._get_samples(gpu, gpu.dedup.last_us or 0)
            if not samples:
                continue
            if self.buffer_clock.clock_name is None:
                self.buffer_clock.detect(max(ts for ts, _ in samples))
                self.buffer_clock.begin_drain()
            fresh = gpu.dedup.accept(samples)
            if fresh:
                self.buffer_clock.record_lag(fresh[-1][0])
            for ts_us, power_w in fresh:
                rows.append({
                    "t_ns": self.buffer_clock.to_run_ns(ts_us), "host": self.host, "gpu": gpu.index,
                    "source": self.kind, "kind": KIND_BUFFER, "power_w": power_w,
                })
        self._counters.count("drains")
        return rows

    def _get_samples(self, gpu: _Gpu, since_us: int) -> list[tuple[int, float]]:
        nv = self._nvml
        try:
            with translate("nvmlDeviceGetSamples(NVML_TOTAL_POWER_SAMPLES)", gpu=gpu.index):
                try:
                    value_type, samples = nv.nvmlDeviceGetSamples(gpu.handle, nv.NVML_TOTAL_POWER_SAMPLES, since_us)
                except Exception as exc:
                    if is_not_found(exc):
                        self._counters.count("buffer_empty_drains")
                        return []
                    raise
        except (NvmlSignalUnsupported, NvmlPermissionDenied) as exc:
            self._disable(gpu, "buffer", exc)
            return []
        except (NvmlReadFailed, NvmlUnavailable) as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return []
        return [(int(s.timeStamp), _value(s.sampleValue, value_type) / 1000.0) for s in samples]

    def _read_fields(self, gpu: _Gpu) -> Row:
        out: Row = {}
        nv = self._nvml
        if gpu.fields:
            try:
                with translate("nvmlDeviceGetFieldValues", gpu=gpu.index):
                    values = nv.nvmlDeviceGetFieldValues(gpu.handle, [fid for _, fid in gpu.fields])
            except (NvmlSignalUnsupported, NvmlPermissionDenied) as exc:
                for column, _ in gpu.fields:
                    self._disable(gpu, column, exc, fallback=True)
                gpu.fields = []
                values = []
            except (NvmlReadFailed, NvmlUnavailable) as exc:
                self._counters.count("read_errors")
                self._counters.warn(str(exc))
                values = []
            unsupported = []
            for (column, _), value in zip(list(gpu.fields), values):
                if int(value.nvmlReturn) == 0:
                    scale = 1000.0  # mW -> W and mJ -> J alike
                    out[column] = _value(value.value, value.valueType) / scale
                elif int(value.nvmlReturn) in (3, 13):  # NOT_SUPPORTED, FUNCTION_NOT_FOUND
                    unsupported.append(column)
                else:
                    self._counters.count("read_errors")
            for column in unsupported:
                self._disable(gpu, column, f"field {column} not supported", fallback=True)
                gpu.fields = [f for f in gpu.fields if f[0] != column]
        # Fallbacks for GPUs/drivers without the fields (pre-Ampere, old drivers).
        if "power_w" in gpu.disabled and "power_usage" not in gpu.disabled:
            out["power_w"] = self._read(gpu, "power_usage", lambda h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        if "energy_j" in gpu.disabled and "energy_call" not in gpu.disabled:
            out["energy_j"] = self._read(gpu, "energy_call", lambda h: nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0)
        return out

    def _read(self, gpu: _Gpu, signal: str, fn: Callable[[Any], Any]) -> Any:
        if signal in gpu.disabled:
            return None
        try:
            with translate(signal, gpu=gpu.index):
                value = fn(gpu.handle)
        except (NvmlSignalUnsupported, NvmlPermissionDenied) as exc:
            self._disable(gpu, signal, exc)
            return None
        except (NvmlReadFailed, NvmlUnavailable) as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return None
        return float(value) if isinstance(value, (int, float)) else value

    def _disable(self, gpu: _Gpu, signal: str, why: object, *, fallback: bool = False) -> None:
        if signal in gpu.disabled:
            return
        gpu.disabled.add(signal)
        note = f"GPU {gpu.index}: {signal} not read ({why})"
        if fallback and signal == "power_w":
            note += "; power_w falls back to nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer)"
        if fallback and signal == "energy_j":
            note += "; energy_j falls back to nvmlDeviceGetTotalEnergyConsumption"
        gpu.notes.append(note)
        if isinstance(why, NvmlPermissionDenied):
            self._counters.warn(str(why))

    def _clock_sm(self, handle: Any) -> int:
        return self._nvml.nvmlDeviceGetClockInfo(handle, self._nvml.NVML_CLOCK_SM)

    def _clock_mem(self, handle: Any) -> int:
        return self._nvml.nvmlDeviceGetClockInfo(handle, self._nvml.NVML_CLOCK_MEM)

    def _temperature(self, handle: Any) -> int:
        return self._nvml.nvmlDeviceGetTemperature(handle, self._nvml.NVML_TEMPERATURE_GPU)

    def _throttle(self, handle: Any) -> int:
        fn = getattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or self._nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(fn(handle))

    def describe(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for gpu in self._gpus:
            for key, value in gpu.dedup.stats().items():
                totals[key] = totals.get(key, 0) + value
        lags = sorted(self.buffer_clock.lags_ms)
        return {
            "driver_version": self.driver_version,
            "buffer_clock": self.buffer_clock.clock_name,
            "buffer_newest_sample_age_ms_median": lags[len(lags) // 2] if lags else None,
            "slow_signals_every_n_polls": self._slow_every,
            **self._counters.stats,
            **totals,
            "gpus": {str(g.index): {"notes": g.notes, **g.dedup.stats()} for g in self._gpus},
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
