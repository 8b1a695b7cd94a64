"""Test doubles that ship with kairosbench, so users can test their own code without a GPU.

:class:`FakeNvml` stands in for the ``pynvml`` module and replays an :class:`NvmlRecording`:
readings that change on the recorded (hardware) cadence, the driver's power-sample ring with
its own timestamps, and faults (an NVML error code returned by one call during a time window).
It answers through the same ctypes structures as pynvml, so the profiler's NVML source runs
unchanged on it::

    from kairosbench.testing import FakeNvml, NvmlRecording
    from kairosbench.profiler.sampler import SamplerConfig
    from kairosbench.profiler.launch import launch_sampler

    fake = FakeNvml(NvmlRecording.load("tests/fixtures/profiler/h100_recording.json"), loop=True)
    handle = launch_sampler(SamplerConfig(run_dir=tmp, sources=["nvml"], nvml=fake))

Recordings come from a real GPU with :func:`record_nvml` (read-only) or are synthesised with
:meth:`NvmlRecording.synthetic`. Time: the fake's clock starts at ``nvmlInit``; by default it
is the wall clock (``time.time_ns``), which is also the clock its sample timestamps are on;
pass ``clock_ns`` to drive it from a virtual clock. A pickled fake (sent to the sampler
process) drops a custom clock and uses the wall clock there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

__all__ = ["NvmlReading", "RecordedGpu", "NvmlFault", "NvmlRecording", "FakeNvml", "record_nvml", "RECORDING_FORMAT"]

RECORDING_FORMAT = "kairosbench.nvml-recording/1"
_READING_FIELDS = (
    "t_s", "power_instant_mw", "power_average_mw", "energy_mj", "sm_clock_mhz", "mem_clock_mhz",
    "gpu_util_pct", "mem_util_pct", "mem_used_bytes", "mem_total_bytes", "temp_c", "clocks_event_reasons",
)


@dataclass(frozen=True, slots=True)
class NvmlReading:
    """What every read call returned at ``t_s`` (seconds since the recording began); None = unsupported."""

    t_s: float
    power_instant_mw: int | None = None
    power_average_mw: int | None = None
    energy_mj: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    gpu_util_pct: int | None = None
    mem_util_pct: int | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: int | None = None
    clocks_event_reasons: int | None = None


@dataclass(slots=True)
class RecordedGpu:
    name: str
    uuid: str
    readings: list[NvmlReading]  # sorted by t_s; a value holds until the next reading
    samples: list[tuple[int, int]] = field(default_factory=list)  # (µs since the recording began, mW)


@dataclass(frozen=True, slots=True)
class NvmlFault:
    """``call`` (a pynvml function name, or "*") returns NVML error ``code`` while ``from_s <= t < to_s``."""

    call: str
    code: int
    from_s: float = 0.0
    to_s: float = math.inf
    gpu: int | None = None


@dataclass(slots=True)
class NvmlRecording:
    gpus: list[RecordedGpu]
    driver_version: str = "fake"
    faults: list[NvmlFault] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        ends = [g.readings[-1].t_s for g in self.gpus if g.readings]
        ends += [g.samples[-1][0] / 1e6 for g in self.gpus if g.samples]
        return max(ends, default=0.0)

    # -- files -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORDING_FORMAT,
            "driver_version": self.driver_version,
            "reading_columns": list(_READING_FIELDS),
            "gpus": [
                {"name": g.name, "uuid": g.uuid, "readings": [[getattr(r, f) for f in _READING_FIELDS] for r in g.readings],
                 "samples": [list(s) for s in g.samples]}
                for g in self.gpus
            ],
            "faults": [
                {"call": f.call, "code": f.code, "from_s": f.from_s, "to_s": None if math.isinf(f.to_s) else f.to_s, "gpu": f.gpu}
                for f in self.faults
            ],
        }

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")
        return Path(path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NvmlRecording:
        if data.get("format") != RECORDING_FORMAT:
            raise ValueError(f"not a {RECORDING_FORMAT} file (format={data.get('format')!r})")
        columns = data["reading_columns"]
        gpus = [
            RecordedGpu(g["name"], g["uuid"], [NvmlReading(**dict(zip(columns, row))) for row in g["readings"]],
                        [(int(t), int(p)) for t, p in g["samples"]])
            for g in data["gpus"]
        ]
        faults = [NvmlFault(f["call"], f["code"], f["from_s"], math.inf if f["to_s"] is None else f["to_s"], f.get("gpu"))
                  for f in data.get("faults", [])]
        return cls(gpus, data.get("driver_version", "fake"), faults)

    @classmethod
    def load(cls, path: Path | str) -> NvmlRecording:
        return cls.from_json(json.loads(Path(path).read_text()))

    # -- synthetic ---------------------------------------------------------------------------
    @classmethod
    def synthetic(
        cls,
        duration_s: float,
        power_w: Callable[[float], float],
        *,
        gpus: int = 1,
        update_s: float = 0.1,
        sample_s: float = 0.02,
        energy_start_mj: int = 5_000_000_000,
        name: str = "Fake H100",
    ) -> NvmlRecording:
        """A recording that behaves like an H100: fields and counter move every ``update_s``,
        the ring holds a sample every ``sample_s``; the counter is the exact integral of ``power_w``."""
        fine_s = min(sample_s, update_s) / 10
        n_fine = int(round(duration_s / fine_s)) + 1
        ts = [i * fine_s for i in range(n_fine)]
        ps = [power_w(t) for t in ts]
        cumulative_j = [0.0]
        for i in range(1, n_fine):
            cumulative_j.append(cumulative_j[-1] + (ps[i] + ps[i - 1]) / 2 * fine_s)
        per_update = max(1, int(round(update_s / fine_s)))
        per_sample = max(1, int(round(sample_s / fine_s)))
        per_second = int(round(1.0 / fine_s))
        out = []
        for g in range(gpus):
            readings = []
            for i in range(0, n_fine, per_update):
                window = ps[max(0, i - per_second): i + 1]
                readings.append(NvmlReading(
                    t_s=round(ts[i], 9), power_instant_mw=int(ps[i] * 1000), power_average_mw=int(sum(window) / len(window) * 1000),
                    energy_mj=energy_start_mj + int(cumulative_j[i] * 1000), sm_clock_mhz=1980, mem_clock_mhz=2619,
                    gpu_util_pct=100 if ps[i] > 200 else 0, mem_util_pct=10, mem_used_bytes=1 << 30, mem_total_bytes=80 << 30,
                    temp_c=40, clocks_event_reasons=0,
                ))
            samples = [(int(round(ts[i] * 1e6)), int(ps[i] * 1000)) for i in range(0, n_fine, per_sample)]
            out.append(RecordedGpu(f"{name}", f"GPU-fake-{g:04d}", readings, samples))
        return cls(out)


class _Handle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class FakeNvml:
    """A pynvml stand-in replaying a recording. Read-only, like the profiler: it has no setters."""

    _FIELDS = {185: ("power_average_mw", 1), 186: ("power_instant_mw", 1), 83: ("energy_mj", 3)}

    def __init__(
        self,
        recording: NvmlRecording,
        *,
        clock_ns: Callable[[], int] | None = None,
        ring_size: int = 120,
        repeat_seen: int = 0,
        loop: bool = False,
        cpu_cost_s: dict[str, float | tuple[float, int]] | None = None,
    ) -> None:
        self.recording = recording
        self.ring_size = ring_size  # ~2.4 s of 20 ms samples, as on an H100
        self.repeat_seen = repeat_seen  # also return this many already-seen samples (a repeating driver)
        self.loop = loop  # replay the recording again and again (energy keeps counting up)
        # CPU a call burns, like a driver that busy-waits: {"nvmlDeviceGetTotalEnergyConsumption": 0.004,
        # "field:83": 0.004} (a field id's cost is paid by every nvmlDeviceGetFieldValues asking for it);
        # (seconds, n) burns only on every n-th call, like a call that is costly now and then.
        self.cpu_cost_s = dict(cpu_cost_s or {})
        self._cost_calls: dict[str, int] = {}
        self._clock_ns = clock_ns or time.time_ns
        self._t0_ns: int | None = None
        self.calls: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_clock_ns"] = None
        state["_t0_ns"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._clock_ns is None:
            self._clock_ns = time.time_ns

    def __getattr__(self, name: str) -> Any:
        # Constants and error classes come from pynvml itself, so code under test sees real values.
        if name.startswith(("NVML_", "NVMLError", "nvmlClocks")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    # -- time and faults ---------------------------------------------------------------------
    def _elapsed_s(self) -> float:
        if self._t0_ns is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return (self._clock_ns() - self._t0_ns) / 1e9

    def _burn(self, key: str) -> None:
        cost = self.cpu_cost_s.get(key)
        if cost is None:
            return
        seconds, every = cost if isinstance(cost, tuple) else (cost, 1)
        n = self._cost_calls[key] = self._cost_calls.get(key, 0) + 1
        if n % every:
            return
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def _enter(self, call: str, gpu: int | None = None) -> float:
        self.calls[call] = self.calls.get(call, 0) + 1
        self._burn(call)
        elapsed = self._elapsed_s()
        for fault in self.recording.faults:
            if fault.call in (call, "*") and (fault.gpu is None or fault.gpu == gpu) and fault.from_s <= elapsed < fault.to_s:
                raise pynvml.NVMLError(fault.code)
        return elapsed

    def _cycle(self, elapsed: float) -> tuple[int, float]:
        period = self.recording.duration_s
        if not self.loop or period <= 0 or elapsed <= period:
            return 0, elapsed
        k = int(elapsed // period)
        return k, elapsed - k * period

    def _reading(self, gpu: int, elapsed: float) -> tuple[NvmlReading, int]:
        """The reading in force at ``elapsed``, and the energy (mJ) added by earlier loops."""
        readings = self.recording.gpus[gpu].readings
        k, t = self._cycle(elapsed)
        lo, hi = 0, len(readings) - 1
        while lo < hi:  # last reading with t_s <= t
            mid = (lo + hi + 1) // 2
            if readings[mid].t_s <= t:
                lo = mid
            else:
                hi = mid - 1
        first, last = readings[0].energy_mj, readings[-1].energy_mj
        extra = k * (last - first) if (k and first is not None and last is not None) else 0
        return readings[lo], extra

    def _get(self, gpu: int, call: str, *attrs: str) -> list[int]:
        """One call's values (one fault check, one CPU cost, one count however many fields it fills)."""
        reading, _ = self._reading(gpu, self._enter(call, gpu))
        values = [getattr(reading, attr) for attr in attrs]
        if any(v is None for v in values):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return values

    # -- pynvml API --------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._t0_ns = self._clock_ns()
        self._enter("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.recording.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.recording.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.recording.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._enter("nvmlDeviceGetName", handle.index)
        return self.recording.gpus[handle.index].name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._enter("nvmlDeviceGetUUID", handle.index)
        return self.recording.gpus[handle.index].uuid

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: Sequence[Any]) -> Any:
        elapsed = self._enter("nvmlDeviceGetFieldValues", handle.index)
        reading, extra_mj = self._reading(handle.index, elapsed)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        now_us = self._clock_ns() // 1000
        for i, fid in enumerate(field_ids):
            field_id, scope = fid if isinstance(fid, tuple) else (fid, 0)
            self._burn(f"field:{field_id}")
            v = values[i]
            v.fieldId, v.scopeId, v.timestamp = field_id, scope, now_us
            attr, value_type = self._FIELDS.get(field_id, (None, 1))
            value = getattr(reading, attr) if attr else None
            if value is None:
                v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            if attr == "energy_mj":
                value = (value + extra_mj) % (1 << 64)
            v.nvmlReturn, v.valueType = pynvml.NVML_SUCCESS, value_type
            if value_type == 3:
                v.value.ullVal = value
            else:
                v.value.uiVal = value
        return values

    def nvmlDeviceGetSamples(self, handle: _Handle, sampling_type: int, last_seen_us: int) -> tuple[int, list[Any]]:
        elapsed = self._enter("nvmlDeviceGetSamples", handle.index)
        if sampling_type != pynvml.NVML_TOTAL_POWER_SAMPLES:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        assert self._t0_ns is not None
        base_us = self._t0_ns // 1000
        samples = self.recording.gpus[handle.index].samples
        period_us = int(self.recording.duration_s * 1e6)
        if self.loop:  # one cycle is [0, duration): a sample at exactly the end is the next cycle's first
            samples = [s for s in samples if s[0] < period_us]
        k, t = self._cycle(elapsed)
        now_us = int(t * 1e6)
        ring: list[tuple[int, int]] = []
        for cycle in (k - 1, k) if k else (0,):
            cut = now_us if cycle == k else period_us
            ring.extend((base_us + cycle * period_us + ts, mw) for ts, mw in samples if ts <= cut)
        ring = ring[-self.ring_size:]
        fresh = [s for s in ring if s[0] > last_seen_us]
        if not fresh:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        if self.repeat_seen and last_seen_us:
            seen = [s for s in ring if s[0] <= last_seen_us][-self.repeat_seen:]
            fresh = seen + fresh
        out = []
        for ts, mw in fresh:
            sample = pynvml.c_nvmlSample_t()
            sample.timeStamp = ts
            sample.sampleValue.uiVal = mw
            out.append(sample)
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, out

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        attr = "sm_clock_mhz" if clock_type == pynvml.NVML_CLOCK_SM else "mem_clock_mhz"
        return self._get(handle.index, "nvmlDeviceGetClockInfo", attr)[0]

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        util = pynvml.c_nvmlUtilization_t()
        util.gpu, util.memory = self._get(handle.index, "nvmlDeviceGetUtilizationRates", "gpu_util_pct", "mem_util_pct")
        return util

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        memory = pynvml.c_nvmlMemory_t()
        memory.used, memory.total = self._get(handle.index, "nvmlDeviceGetMemoryInfo", "mem_used_bytes", "mem_total_bytes")
        memory.free = memory.total - memory.used
        return memory

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._get(handle.index, "nvmlDeviceGetTemperature", "temp_c")[0]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        return self._get(handle.index, "nvmlDeviceGetCurrentClocksEventReasons", "clocks_event_reasons")[0]

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._get(handle.index, "nvmlDeviceGetPowerUsage", "power_average_mw")[0]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        reading, extra = self._reading(handle.index, self._enter("nvmlDeviceGetTotalEnergyConsumption", handle.index))
        if reading.energy_mj is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return reading.energy_mj + extra


def record_nvml(duration_s: float, *, interval_s: float = 0.02, drain_s: float = 0.5, nvml: Any = None) -> NvmlRecording:
    """Record every GPU's readings (every ``interval_s``) and its power-sample ring, read-only.

    Use it on a real machine to make a fixture for :class:`FakeNvml`. Each reading holds what
    the calls returned at that moment; the replay then changes values exactly when they changed
    on the hardware (to within ``interval_s``).
    """
    nv = nvml or pynvml
    nv.nvmlInit()
    try:
        count = nv.nvmlDeviceGetCount()
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        driver = nv.nvmlSystemGetDriverVersion()
        gpus = [RecordedGpu(_text(nv.nvmlDeviceGetName(h)), _text(nv.nvmlDeviceGetUUID(h)), []) for h in handles]
        # The ring's timestamps are on a host clock we do not assume here: each GPU's newest
        # sample at the start becomes time 0 of its sample list.
        base_us = []
        for h in handles:
            try:
                _, primed = nv.nvmlDeviceGetSamples(h, nv.NVML_TOTAL_POWER_SAMPLES, 0)
                base_us.append(max(int(s.timeStamp) for s in primed))
            except pynvml.NVMLError:
                base_us.append(0)
        last_us = list(base_us)
        t0_ns = time.time_ns()
        fields = [(186, 0), (185, 0), 83]

        def drain() -> None:
            for i, h in enumerate(handles):
                try:
                    _, samples = nv.nvmlDeviceGetSamples(h, nv.NVML_TOTAL_POWER_SAMPLES, last_us[i])
                except pynvml.NVMLError:
                    continue
                for s in sorted(samples, key=lambda s: s.timeStamp):
                    if s.timeStamp > last_us[i]:
                        gpus[i].samples.append((int(s.timeStamp) - base_us[i], int(s.sampleValue.uiVal)))
                        last_us[i] = int(s.timeStamp)

        next_drain = drain_s
        while (elapsed := (time.time_ns() - t0_ns) / 1e9) <= duration_s:
            for i, h in enumerate(handles):
                values = nv.nvmlDeviceGetFieldValues(h, fields)
                got = [int(getattr(v.value, "ullVal" if v.valueType == 3 else "uiVal")) if v.nvmlReturn == 0 else None for v in values]
                util = _try(lambda: nv.nvmlDeviceGetUtilizationRates(h))
                mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
                gpus[i].readings.append(NvmlReading(
                    t_s=round(elapsed, 6), power_instant_mw=got[0], power_average_mw=got[1], energy_mj=got[2],
                    sm_clock_mhz=_try(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                    mem_clock_mhz=_try(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                    gpu_util_pct=util.gpu if util else None, mem_util_pct=util.memory if util else None,
                    mem_used_bytes=mem.used if mem else None, mem_total_bytes=mem.total if mem else None,
                    temp_c=_try(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                    clocks_event_reasons=_try(lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h)),
                ))
            if elapsed >= next_drain:
                next_drain += drain_s
                drain()
            time.sleep(max(0.0, interval_s - ((time.time_ns() - t0_ns) / 1e9 - elapsed)))
        drain()  # the samples up to the last reading
    finally:
        nv.nvmlShutdown()
    return NvmlRecording(gpus, _text(driver))


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except pynvml.NVMLError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
