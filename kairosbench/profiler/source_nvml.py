"""The NVML source: every GPU on this host, read with nvidia-ml-py (read-only: no setter is called).

**What is read, how often, and why.** Every NVML power signal, the energy counter and the SM
clock change on one ~100 ms hardware tick on an H100, so the source polls every 50 ms (half
the tick). But NVML calls differ in cost by three orders of magnitude: on the measured H100
``nvmlDeviceGetPowerUsage`` costs about 1 µs of CPU, while reading the energy counter costs
about 4 ms (the driver busy-waits). Polling that at 20 Hz alone would take 8 % of a core.
So at open the source times each way of reading each signal (3 reads, thread CPU time) and:

- reads every *cheap* signal (under ``expensive_cpu_us``) at every poll;
- reads an *expensive* one every ``expensive_every``-th poll (default 20: once a second),
  except the instant power on a GPU without a power-sample buffer, which is then the only
  fast power series and is read every poll whatever it costs;
- keeps timing every read, and moves a signal whose *mean* cost climbs over the threshold
  to the sparse rate too (on the measured H100, ``nvmlDeviceGetUtilizationRates`` cost 11 µs
  in a median of three but 559 µs averaged over 100 calls: a few calls are very costly);
- takes the cheaper of two equivalent reads (the energy field or
  ``nvmlDeviceGetTotalEnergyConsumption``; the 1 s-average field or ``nvmlDeviceGetPowerUsage``,
  which on Ampere and newer return the same value, checked at open).

An energy read that is sparser than the counter's updates cannot be dated from its own
changes, so it is sandwiched between two reads of the cheap 1 s-average power, which moves on
the same tick: equal before and after means no tick happened during the read, and the summary
dates the value to the tick where that average value first appeared (see ``energy.py``). If a
tick fell inside the read, the energy is read again.

Each drain reads the driver's power-sample ring (``NVML_TOTAL_POWER_SAMPLES``) from the newest
timestamp seen; ``NVML_ERROR_NOT_FOUND`` there means no new sample. A signal the GPU does not
support, or that the driver refuses, is dropped after its first failure with a note. Other
read errors are counted and the poll goes on with that value null.

``nvml`` may be any object with pynvml's functions and constants: ``kairosbench.testing.FakeNvml``
replays recorded readings through this exact code.
"""

from __future__ import annotations

import socket
import statistics
import time
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

FI_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT (mW)
FI_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE (mW, 1 s moving average)
FI_TOTAL_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since driver load)
_SCOPE_GPU = 0  # NVML_POWER_SCOPE_GPU
_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_MIB = 1024 * 1024
_FIELD_IDS: dict[str, tuple[int, int] | int] = {
    "power_w": (FI_POWER_INSTANT, _SCOPE_GPU),
    "power_avg_w": (FI_POWER_AVERAGE, _SCOPE_GPU),
    "energy_j": FI_TOTAL_ENERGY,
}


def _value(union: Any, value_type: int) -> float:
    return float(getattr(union, _VALUE_ATTR.get(int(value_type), "ullVal")))


@dataclass
class _Reader:
    """One way of reading some columns of one GPU, and how often (every ``every`` polls)."""

    name: str  # the NVML call, for notes and errors
    columns: tuple[str, ...]
    read: Callable[[Any], dict[str, Any]]
    every: int = 1
    cpu_us: float = 0.0  # median of the calibration reads at open
    fixed: bool = False  # must stay at its rate (the tick reference; instant power without a buffer)
    calls: int = 0
    total_cpu_us: float = 0.0  # every read's CPU time since open: some calls are costly only now and then

    @property
    def mean_cpu_us(self) -> float:
        return self.total_cpu_us / self.calls if self.calls else self.cpu_us


@dataclass
class _Gpu:
    index: int
    handle: Any
    info: GpuInfo
    readers: list[_Reader] = field(default_factory=list)
    energy: _Reader | None = None  # read sparsely, sandwiched between two tick reads
    tick: _Reader | None = None  # the cheap 1 s-average reader used as the tick reference
    has_buffer: bool = True
    last_tick: float | None = None
    tick_seen: bool = False  # a change of the tick signal was observed: energy reads are datable from now
    energy_dated: bool = False  # an energy read has been taken since then
    dedup: SampleDeduper = field(default_factory=SampleDeduper)
    notes: list[str] = field(default_factory=list)
    costs_us: dict[str, float] = field(default_factory=dict)


class NvmlSource:
    """All GPUs NVML sees on this host."""

    kind = "nvml"
    default_interval_s = 0.05  # half the ~100 ms update tick measured on an H100 (docs/profiler.md)
    has_buffer = True

    def __init__(
        self,
        nvml: Any = None,
        *,
        host: str | None = None,
        now_ns: Callable[[], int] = run_now_ns,
        clocks: Mapping[str, Callable[[], int]] | None = None,
        expensive_cpu_us: float = 200.0,
        expensive_every: int = 20,
        cpu_time_ns: Callable[[], int] = time.thread_time_ns,
    ) -> None:
        self._nvml = nvml
        self.host = host or socket.gethostname()
        self._now_ns = now_ns
        self._expensive_cpu_us = expensive_cpu_us
        self._expensive_every = max(1, expensive_every)
        self._cpu_time_ns = cpu_time_ns
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
        gpu = _Gpu(index, handle, GpuInfo(self.host, index, self.kind, name, uuid))
        self._prime_buffer(gpu)
        self._plan_readers(gpu)
        gpu.info = GpuInfo(self.host, index, self.kind, name, uuid, tuple(gpu.notes))
        return gpu

    def _prime_buffer(self, gpu: _Gpu) -> None:
        """Skip the ring's history from before the profiler started; detect the sample clock."""
        samples = self._get_samples(gpu, 0, priming=True)
        if samples:
            newest = max(ts for ts, _ in samples)
            gpu.dedup.last_us = newest
            if self.buffer_clock.clock_name is None:
                self.buffer_clock.detect(newest)

    # -- choosing how to read each signal ------------------------------------------------------
    def _candidates(self, gpu: _Gpu) -> dict[str, _Reader]:
        nv = self._nvml

        def field_reader(column: str) -> _Reader:
            fid = _FIELD_IDS[column]
            return _Reader(f"nvmlDeviceGetFieldValues({column})", (column,), lambda h: self._read_fields(gpu, [(column, fid)]))

        def util(h: Any) -> dict[str, Any]:
            u = nv.nvmlDeviceGetUtilizationRates(h)
            return {"gpu_util_pct": float(u.gpu), "mem_util_pct": float(u.memory)}

        throttle = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return {
            "field_power_w": field_reader("power_w"),
            "field_power_avg_w": field_reader("power_avg_w"),
            "field_energy_j": field_reader("energy_j"),
            "power_usage": _Reader("nvmlDeviceGetPowerUsage", ("power_avg_w",), lambda h: {"power_avg_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0}),
            "energy_call": _Reader("nvmlDeviceGetTotalEnergyConsumption", ("energy_j",), lambda h: {"energy_j": nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0}),
            "sm_clock": _Reader("nvmlDeviceGetClockInfo(SM)", ("sm_clock_mhz",), lambda h: {"sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))}),
            "throttle": _Reader("nvmlDeviceGetCurrentClocksEventReasons", ("throttle_reasons",), lambda h: {"throttle_reasons": int(throttle(h))}),
            "mem_clock": _Reader("nvmlDeviceGetClockInfo(MEM)", ("mem_clock_mhz",), lambda h: {"mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))}),
            "util": _Reader("nvmlDeviceGetUtilizationRates", ("gpu_util_pct", "mem_util_pct"), util),
            "memory": _Reader("nvmlDeviceGetMemoryInfo", ("mem_used_mib",), lambda h: {"mem_used_mib": float(nv.nvmlDeviceGetMemoryInfo(h).used) / _MIB}),
            "temp": _Reader("nvmlDeviceGetTemperature", ("temp_c",), lambda h: {"temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))}),
        }

    def _calibrate(self, gpu: _Gpu, reader: _Reader) -> list[dict[str, Any]] | None:
        """Three timed reads (thread CPU µs, median); None if the GPU does not offer the signal."""
        values, costs = [], []
        for _ in range(3):
            c0 = self._cpu_time_ns()
            try:
                with translate(reader.name, gpu=gpu.index):
                    got = reader.read(gpu.handle)
            except (NvmlSignalUnsupported, NvmlPermissionDenied) as exc:
                self._note(gpu, f"{'/'.join(reader.columns)} not read via {reader.name} ({exc})", warn=isinstance(exc, NvmlPermissionDenied))
                return None
            except (NvmlReadFailed, NvmlUnavailable) as exc:
                self._counters.count("read_errors")
                self._counters.warn(str(exc))
                return None
            costs.append((self._cpu_time_ns() - c0) / 1000.0)
            if not any(v is None for v in got.values()):
                values.append(got)
        if not values:
            self._note(gpu, f"{'/'.join(reader.columns)} not read via {reader.name} (no value returned)")
            return None
        reader.cpu_us = statistics.median(costs)
        gpu.costs_us[reader.name] = round(reader.cpu_us, 1)
        return values

    def _plan_readers(self, gpu: _Gpu) -> None:
        c = self._candidates(gpu)
        ok = {key: self._calibrate(gpu, reader) for key, reader in c.items()}
        expensive = lambda r: r.cpu_us > self._expensive_cpu_us  # noqa: E731

        def use(reader: _Reader, *, always: bool = False) -> _Reader:
            reader.every = self._expensive_every if expensive(reader) and not always else 1
            reader.fixed = always
            gpu.readers.append(reader)
            return reader

        # 1 s average: the field, or nvmlDeviceGetPowerUsage where it returns the same value and costs less.
        avg = None
        if ok["field_power_avg_w"] is not None:
            avg = c["field_power_avg_w"]
            pu = c["power_usage"]
            if ok["power_usage"] is not None and expensive(avg) and pu.cpu_us < avg.cpu_us and self._same_value(gpu, avg, pu):
                avg = pu
                self._note(gpu, "power_avg_w via nvmlDeviceGetPowerUsage (equal to the 1 s-average field here, and cheaper)")
        elif ok["power_usage"] is not None and ok["field_power_w"] is not None:
            avg = c["power_usage"]
            self._note(gpu, "power_avg_w via nvmlDeviceGetPowerUsage (no 1 s-average field; on Ampere and newer it is that average)")
        if avg is not None:
            gpu.tick = use(avg)
            gpu.tick.fixed = gpu.tick.every == 1  # sparse energy reads are dated by its ticks
        # Instant power: the only fast power series where the driver keeps no sample buffer.
        if ok["field_power_w"] is not None:
            use(c["field_power_w"], always=not gpu.has_buffer)
        elif ok["power_usage"] is not None:
            reader = _Reader("nvmlDeviceGetPowerUsage", ("power_w",), lambda h: {"power_w": self._nvml.nvmlDeviceGetPowerUsage(h) / 1000.0})
            reader.cpu_us = c["power_usage"].cpu_us
            use(reader, always=True)
            self._note(gpu, "power_w via nvmlDeviceGetPowerUsage (no instant field): a 1 s average on Ampere and newer, instantaneous before")
        # Energy counter: the cheaper of the field and the function.
        energy_options = [c[k] for k in ("field_energy_j", "energy_call") if ok[k] is not None]
        if energy_options:
            energy = min(energy_options, key=lambda r: r.cpu_us)
            if expensive(energy):
                energy.every = self._expensive_every
                gpu.energy = energy  # read in poll() between two tick reads
                self._note(gpu, f"energy_j read every {self._expensive_every} polls: {energy.name} costs {energy.cpu_us:.0f} µs of CPU")
            else:
                use(energy)
        for key in ("sm_clock", "throttle", "mem_clock", "util", "memory", "temp"):
            if ok[key] is not None:
                use(c[key])
        for reader in gpu.readers:
            if reader.every > 1 and reader is not gpu.energy:
                self._note(gpu, f"{'/'.join(reader.columns)} read every {reader.every} polls: {reader.name} costs {reader.cpu_us:.0f} µs of CPU")

    def _same_value(self, gpu: _Gpu, a: _Reader, b: _Reader) -> bool:
        """Do two readers return the same value (read back to back, 3 tries, 2 must agree)?"""
        agree = 0
        for _ in range(3):
            try:
                va, vb = a.read(gpu.handle), b.read(gpu.handle)
            except Exception:  # noqa: BLE001 - a probe; failure just means "do not alias"
                return False
            column = a.columns[0]
            agree += va.get(column) is not None and va.get(column) == vb.get(column)
        return agree >= 2

    def _note(self, gpu: _Gpu, text: str, *, warn: bool = False) -> None:
        note = f"GPU {gpu.index}: {text}"
        if note not in gpu.notes:
            gpu.notes.append(note)
        if warn:
            self._counters.warn(note)

    # -- reads -------------------------------------------------------------------------------
    async def poll(self, *, full: bool = False) -> list[Row]:
        """One row per GPU; ``full`` reads the sparse signals too (the sampler's first and last poll)."""
        index = self._polls
        self._polls += 1
        rows = []
        for gpu in self._gpus:
            t0 = self._now_ns()
            row: Row = {"host": self.host, "gpu": gpu.index, "source": self.kind, "kind": KIND_POLL}
            tick = None
            if gpu.tick is not None and (full or index % gpu.tick.every == 0):
                row.update(self._run(gpu, gpu.tick))
                tick = row.get("power_avg_w")
                if tick is not None and gpu.last_tick is not None and tick != gpu.last_tick:
                    gpu.tick_seen = True
            if gpu.energy is not None and (
                full or index % gpu.energy.every == 0 or (gpu.tick_seen and not gpu.energy_dated)
            ):  # the extra read: the first one after a tick is seen, so the window starts ~0.1 s in, not 1 s
                row.update(self._read_energy_between_ticks(gpu, tick))
                gpu.energy_dated = gpu.energy_dated or gpu.tick_seen
            if row.get("power_avg_w") is not None:
                gpu.last_tick = row["power_avg_w"]
            for reader in gpu.readers:
                if (full or index % reader.every == 0) and reader is not gpu.tick:
                    row.update(self._run(gpu, reader))
            row["t_ns"] = (t0 + self._now_ns()) // 2
            rows.append(row)
        self._counters.count("polls")
        return rows

    def _read_energy_between_ticks(self, gpu: _Gpu, before: float | None) -> Row:
        """Read the sparse energy counter between two reads of the tick signal (see the module doc)."""
        assert gpu.energy is not None
        if gpu.tick is None or gpu.tick.every != 1:
            return self._run(gpu, gpu.energy)
        if before is None:
            before = self._run(gpu, gpu.tick).get("power_avg_w")
        got = self._run(gpu, gpu.energy)
        after = self._run(gpu, gpu.tick).get("power_avg_w")
        if before != after:  # a tick fell inside the read: the next one is ~100 ms away, read again
            self._counters.count("energy_rereads")
            got = self._run(gpu, gpu.energy)
            after = self._run(gpu, gpu.tick).get("power_avg_w")
        return {**got, "power_avg_w": after}

    def _run(self, gpu: _Gpu, reader: _Reader) -> Row:
        c0 = self._cpu_time_ns()
        try:
            with translate(reader.name, gpu=gpu.index):
                got = reader.read(gpu.handle)
            self._account(gpu, reader, (self._cpu_time_ns() - c0) / 1000.0)
            return got
        except (NvmlSignalUnsupported, NvmlPermissionDenied) as exc:
            gpu.readers = [r for r in gpu.readers if r is not reader]
            if reader is gpu.energy:
                gpu.energy = None
            self._note(gpu, f"{'/'.join(reader.columns)} no longer read ({exc})", warn=isinstance(exc, NvmlPermissionDenied))
        except (NvmlReadFailed, NvmlUnavailable) as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
        return {}

    def _account(self, gpu: _Gpu, reader: _Reader, cpu_us: float) -> None:
        """Count a read's CPU; a signal read every poll whose mean cost is too high becomes sparse."""
        reader.calls += 1
        reader.total_cpu_us += cpu_us
        if reader.every == 1 and not reader.fixed and reader.calls >= 20 and reader.mean_cpu_us > self._expensive_cpu_us:
            reader.every = self._expensive_every
            self._note(gpu, f"{'/'.join(reader.columns)} read every {reader.every} polls from poll {self._polls}: "
                            f"{reader.name} cost {reader.mean_cpu_us:.0f} µs of CPU on average over {reader.calls} reads")

    def _read_fields(self, gpu: _Gpu, fields: list[tuple[str, tuple[int, int] | int]]) -> Row:
        """One nvmlDeviceGetFieldValues call; a field's own error is raised like a call's."""
        values = self._nvml.nvmlDeviceGetFieldValues(gpu.handle, [fid for _, fid in fields])
        out: Row = {}
        for (column, _), value in zip(fields, values):
            code = int(value.nvmlReturn)
            if code == 0:
                out[column] = _value(value.value, value.valueType) / 1000.0  # mW -> W, mJ -> J
            else:
                raise self._nvml.NVMLError(code)
        return out

    async def drain(self) -> list[Row]:
        rows: list[Row] = []
        self.buffer_clock.begin_drain()
        for gpu in self._gpus:
            if not gpu.has_buffer:
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

    def _get_samples(self, gpu: _Gpu, since_us: int, *, priming: bool = False) -> list[tuple[int, float]]:
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
            gpu.has_buffer = False
            self._note(gpu, f"no power-sample buffer ({exc})", warn=isinstance(exc, NvmlPermissionDenied))
            return []
        except (NvmlReadFailed, NvmlUnavailable) as exc:
            self._counters.count("read_errors")
            self._counters.warn(str(exc))
            return []
        return [(int(s.timeStamp), _value(s.sampleValue, value_type) / 1000.0) for s in samples]

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
            "expensive_cpu_us": self._expensive_cpu_us,
            **self._counters.stats,
            **totals,
            "gpus": {
                str(g.index): {
                    "notes": g.notes,
                    "read_cpu_us": g.costs_us,
                    "readers": [{"call": r.name, "columns": list(r.columns), "every_n_polls": r.every,
                                 "reads": r.calls, "mean_cpu_us": round(r.mean_cpu_us, 1)}
                                for r in ([g.energy] if g.energy else []) + g.readers],
                    **g.dedup.stats(),
                }
                for g in self._gpus
            },
        }

    async def close(self) -> None:
        if self._nvml is not None and self._gpus and not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
                pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
