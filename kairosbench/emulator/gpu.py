"""An emulated GPU: clock control with NVML semantics, an idle governor, and NVML-like telemetry.

Telemetry mirrors what the measured H100 gives (ANCHORS §0, §4.2):

* every reading changes on a **100 ms grid**: ``power_w`` is the 20 ms power sample that
  ends on the latest grid point (the "instant" field), ``power_avg_w`` the mean over the
  second before it (``nvmlDeviceGetPowerUsage`` = the 1 s average on Hopper), ``energy_mj``
  the energy counter up to the grid point;
* a **20 ms power-sample buffer** (``nvmlDeviceGetSamples(TOTAL_POWER_SAMPLES)``) that catches
  peaks the 100 ms fields miss;
* throttle reasons with NVML's bit values, OR-ed over the last 100 ms.

Clock control: ``lock_clock`` accepts only supported clocks (``nvmlDeviceSetGpuLockedClocks``
with min = max = f), ``reset_clock`` returns to the default governor, which boosts to f_max
under load, holds the clock high for ``idle_hold_s`` after the last work (128 W "hot" idle on
H100 SXM) and then parks at f_min (76 W). A locked GPU idles at its locked clock. Changes
reach the hardware after ``clock_settle_s`` (ANCHORS §3.4 suggests 10-100 ms).

Time is the caller's: seconds on a model clock (wall-clock driven in the server, virtual in the
simulator). The power timeline is piecewise constant and folded into fixed bins
(``PowerTrace``), which is all the readings and the simulator's time series need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kairosbench.emulator.power import PowerModel, StepPower
from kairosbench.emulator.presets import GpuPreset
from kairosbench.emulator.roofline import DecodeRunCost, StepCost

__all__ = [
    "EmulatedGpu",
    "GpuReading",
    "StepRun",
    "PowerTrace",
    "ClockError",
    "THROTTLE_GPU_IDLE",
    "THROTTLE_APPLICATIONS_CLOCKS_SETTING",
    "THROTTLE_SW_POWER_CAP",
    "THROTTLE_HW_SLOWDOWN",
]

# NVML nvmlClocksEventReason* / nvmlClocksThrottleReason* bit values [doc, nvml.h].
THROTTLE_GPU_IDLE = 0x1
THROTTLE_APPLICATIONS_CLOCKS_SETTING = 0x2
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_HW_SLOWDOWN = 0x8

GRID_S = 0.1  # [measured-here] every NVML power/clock/energy field changes every ~100 ms
AVG_WINDOW_S = 1.0  # [doc] nvmlDeviceGetPowerUsage on Ampere+: 1 s average


@dataclass(slots=True)
class StepRun:
    """A planned run of decode steps, per-step arrays (seconds, W, MHz)."""

    durations: np.ndarray
    powers: np.ndarray
    clocks: np.ndarray
    kernel: np.ndarray
    mem: np.ndarray
    capped: np.ndarray
    credits: np.ndarray

    def keep(self, k: int) -> None:
        for name in ("durations", "powers", "clocks", "kernel", "mem", "capped", "credits"):
            setattr(self, name, getattr(self, name)[:k])

    def aggregate(self) -> StepPower:
        """One StepPower standing for the run (time-weighted power and clock)."""
        d = self.durations
        total = float(d.sum())
        return StepPower(
            f_eff_mhz=int(self.clocks[-1]),
            duration_s=total,
            power_w=float((self.powers * d).sum()) / total,
            compute_s=float(self.kernel.sum()),
            mem_s=float(self.mem.sum()),
            kernel_s=float(self.kernel.sum()),
            capped=bool(self.capped.any()),
        )


class ClockError(ValueError):
    """An unsupported clock was requested (the server answers 400)."""


class PowerTrace:
    """A piecewise-constant power timeline accumulated into fixed-width bins.

    Segments are appended in time order and may extend into the future (a step is recorded
    when it starts; its power is known then). Each bin keeps energy (J), clock·time (MHz·s),
    kernel-busy and memory-busy seconds and OR-ed throttle bits. ``keep_bins`` bounds memory
    (a ring for the live server); None keeps everything (the simulator's series).
    """

    __slots__ = ("bin_s", "keep_bins", "base", "energy", "clock", "busy", "mem", "reasons", "end_s", "total_energy_j", "_trim_at")

    def __init__(self, bin_s: float, keep_bins: int | None = None) -> None:
        self.bin_s = bin_s
        self.keep_bins = keep_bins
        self.base = 0  # absolute index of energy[0]
        self.energy: list[float] = []
        self.clock: list[float] = []
        self.busy: list[float] = []
        self.mem: list[float] = []
        self.reasons: list[int] = []
        self.end_s = 0.0
        self.total_energy_j = 0.0
        self._trim_at = (keep_bins * 2) if keep_bins else None

    def _grow(self, last_index: int) -> None:
        need = last_index - self.base + 1 - len(self.energy)
        if need > 0:
            self.energy.extend([0.0] * need)
            self.clock.extend([0.0] * need)
            self.busy.extend([0.0] * need)
            self.mem.extend([0.0] * need)
            self.reasons.extend([0] * need)

    def add(self, t0: float, t1: float, power_w: float, clock_mhz: float, busy_frac: float, mem_frac: float, reasons: int) -> None:
        if t1 <= t0:
            return
        bw = self.bin_s
        k0 = int(t0 / bw)
        k1 = int(t1 / bw)
        if k1 * bw >= t1:
            k1 -= 1
        self._grow(k1)
        base = self.base
        energy, clock, busy, mem, rs = self.energy, self.clock, self.busy, self.mem, self.reasons
        if k0 == k1:
            dt = t1 - t0
            j = k0 - base
            if j >= 0:
                energy[j] += power_w * dt
                clock[j] += clock_mhz * dt
                busy[j] += busy_frac * dt
                mem[j] += mem_frac * dt
                rs[j] |= reasons
        else:
            for k in range(k0, k1 + 1):
                lo = t0 if k == k0 else k * bw
                hi = t1 if k == k1 else (k + 1) * bw
                dt = hi - lo
                j = k - base
                if j < 0 or dt <= 0:
                    continue
                energy[j] += power_w * dt
                clock[j] += clock_mhz * dt
                busy[j] += busy_frac * dt
                mem[j] += mem_frac * dt
                rs[j] |= reasons
        self.total_energy_j += power_w * (t1 - t0)
        if t1 > self.end_s:
            self.end_s = t1
        if self._trim_at is not None and len(self.energy) > self._trim_at:
            cut = len(self.energy) - self.keep_bins  # type: ignore[operator]
            for arr in (self.energy, self.clock, self.busy, self.mem, self.reasons):
                del arr[:cut]
            self.base += cut

    def energy_before(self, k: int) -> float:
        """Energy (J) of everything before absolute bin ``k`` (exact on bin edges)."""
        j = max(0, k - self.base)
        return self.total_energy_j - sum(self.energy[j:])

    def window(self, k0: int, k1: int) -> tuple[float, float, float, float, int, float]:
        """(energy J, clock MHz·s, busy s, mem s, reasons, seconds covered) over bins [k0, k1)."""
        j0 = max(0, k0 - self.base)
        j1 = max(0, min(len(self.energy), k1 - self.base))
        if j1 <= j0:
            return 0.0, 0.0, 0.0, 0.0, 0, 0.0
        r = 0
        for x in self.reasons[j0:j1]:
            r |= x
        return (sum(self.energy[j0:j1]), sum(self.clock[j0:j1]), sum(self.busy[j0:j1]), sum(self.mem[j0:j1]), r, (j1 - j0) * self.bin_s)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One NVML-like reading at a 100 ms grid point (``t_s`` on the model clock)."""

    t_s: float
    power_w: float
    power_avg_w: float
    energy_j: float
    sm_clock_mhz: int
    gpu_util_pct: float
    mem_util_pct: float
    throttle_reasons: int
    temp_c: float


class EmulatedGpu:
    """One GPU: clock state, power-limit governor, idle governor, power trace."""

    def __init__(self, preset: GpuPreset, *, index: int = 0, trace_bin_s: float = 0.02, keep_s: float | None = 60.0, clock_settle_s: float = 0.05) -> None:
        self.preset = preset
        self.index = index
        self.model = PowerModel(preset)
        self.supported = preset.supported_sm_clocks_mhz
        self._supported_set = frozenset(self.supported)
        self.power_limit_w = preset.power_limit_w
        self.clock_settle_s = clock_settle_s
        self.locked_clock_mhz: int | None = None  # what the user set (NVML reports it at once)
        self._applied_lock: int | None = None  # what the hardware runs at
        self._pending: tuple[float, int | None] | None = None
        self._last_busy_end = -math.inf
        keep = None if keep_s is None else max(1, int(round(keep_s / trace_bin_s)))
        self.trace = PowerTrace(trace_bin_s, keep)
        self.last_step_clock_mhz = preset.f_min_mhz
        self._temp_c = preset.temp_ambient_c
        self._temp_t = 0.0
        self.time_at_clock_s: dict[int, float] = {}
        self._cap_credit_j = 0.0
        # The energy counter a reading reports never goes back, as NVML's doesn't: the trace's
        # energy_before() is a float difference whose rounding can dip by ~1 mJ.
        self._energy_floor_j = 0.0

    # ---- clock control (NVML semantics) -----------------------------------------------------
    def lock_clock(self, f_mhz: int, t_s: float, *, immediate: bool = False) -> None:
        """Lock the SM clock to a supported value from ``t_s + clock_settle_s`` (or at once)."""
        if not isinstance(f_mhz, int) or isinstance(f_mhz, bool) or f_mhz not in self._supported_set:
            raise ClockError(
                f"sm_clock_mhz={f_mhz!r} is not a supported clock of {self.preset.name}; supported: "
                f"{self.supported[0]}..{self.supported[-1]} MHz in steps of {self.supported[1] - self.supported[0]}"
            )
        self.fill_idle(t_s)
        self.locked_clock_mhz = f_mhz
        self._pending = (t_s + (0.0 if immediate else self.clock_settle_s), f_mhz)
        self._settle(t_s)

    def reset_clock(self, t_s: float, *, immediate: bool = False) -> None:
        """Back to the default governor (``nvmlDeviceResetGpuLockedClocks``)."""
        self.fill_idle(t_s)
        self.locked_clock_mhz = None
        self._pending = (t_s + (0.0 if immediate else self.clock_settle_s), None)
        self._settle(t_s)

    def set_power_limit(self, watts: float) -> None:
        p = self.preset
        if not p.power_limit_min_w <= watts <= p.power_limit_w:
            raise ClockError(f"power limit {watts} W outside [{p.power_limit_min_w}, {p.power_limit_w}] W")
        self.power_limit_w = float(watts)

    def _settle(self, t_s: float) -> None:
        if self._pending is not None and t_s >= self._pending[0]:
            self._applied_lock = self._pending[1]
            self._pending = None

    @property
    def change_pending(self) -> bool:
        """A clock change was requested and has not reached the hardware yet."""
        return self._pending is not None

    def requested_clock(self, t_s: float) -> int:
        """The clock the hardware aims for under load at ``t_s`` (before power capping)."""
        self._settle(t_s)
        return self._applied_lock if self._applied_lock is not None else self.preset.f_max_mhz

    # ---- time line ---------------------------------------------------------------------------
    def _governed(self, cost: StepCost, f_req: int) -> StepPower:
        """The power-limit governor. Supported clocks are 15 MHz apart, so the highest clock under
        the limit usually sits a little below it; like the hardware controller, the governor
        dithers between that clock and the next one up, spending the energy the lower clock left
        under the limit on occasional steps above it, so the average settles *at* the limit (and
        single steps peak above it, as the measured H100's instant power does)."""
        limit = self.power_limit_w
        sp = self.model.step(cost, f_req, limit)
        if not sp.capped:
            self._cap_credit_j = 0.0
            return sp
        if sp.f_eff_mhz < f_req:
            hi = self.model.at_clock(cost, self.supported[self.model.clock_index(sp.f_eff_mhz) + 1], capped=True)
            over = (hi.power_w - limit) * hi.duration_s
            if self._cap_credit_j >= over:
                self._cap_credit_j -= over
                return hi
        self._cap_credit_j += (limit - sp.power_w) * sp.duration_s
        return sp

    def run_step(self, cost: StepCost, t0_s: float) -> StepPower:
        """Run a step starting at ``t0_s``: pick the clock, throttle to the limit, record power."""
        self.fill_idle(t0_s)
        f_req = self.requested_clock(t0_s)
        sp = self._governed(cost, f_req)
        reasons = 0
        if sp.capped:
            reasons |= THROTTLE_SW_POWER_CAP
        if self._applied_lock is not None and self._applied_lock < self.preset.f_max_mhz:
            reasons |= THROTTLE_APPLICATIONS_CLOCKS_SETTING
        d = sp.duration_s
        t1 = t0_s + d
        self.trace.add(t0_s, t1, sp.power_w, sp.f_eff_mhz, sp.kernel_s / d, sp.mem_s / d, reasons)
        self._last_busy_end = t1
        self.last_step_clock_mhz = sp.f_eff_mhz
        self.time_at_clock_s[sp.f_eff_mhz] = self.time_at_clock_s.get(sp.f_eff_mhz, 0.0) + d
        return sp

    def run_decode(self, run: DecodeRunCost, t0_s: float, horizon_s: float = math.inf) -> StepRun:
        """Back-to-back decode steps planned together (the simulator's fast path), cut after the
        step that is running at ``horizon_s``; recorded as one trace segment."""
        self.fill_idle(t0_s)
        f_req = self.requested_clock(t0_s)
        dur, pw, tc = self.model.run_at(run, f_req)
        k = len(dur)
        if horizon_s < math.inf:
            ends = t0_s + np.cumsum(dur)
            k = min(k, int(np.searchsorted(ends, horizon_s, side="left")) + 1)
            dur, pw, tc = dur[:k], pw[:k], tc[:k]
        mem = run.t_mem_s[:k]
        if float(pw.max()) <= self.power_limit_w:  # no step reaches the limit: one clock, no dithering
            self._cap_credit_j = 0.0
            sr = StepRun(dur, pw, np.full(k, f_req, dtype=np.int64), dur - run.t_overhead_s, mem, np.zeros(k, dtype=bool), np.zeros(k))
        else:
            sps, credits = [], []
            for j in range(k):
                sps.append(self._governed(run.step(j), f_req))
                credits.append(self._cap_credit_j)
            sr = StepRun(
                np.array([x.duration_s for x in sps]),
                np.array([x.power_w for x in sps]),
                np.array([x.f_eff_mhz for x in sps], dtype=np.int64),
                np.array([x.kernel_s for x in sps]),
                np.array([x.mem_s for x in sps]),
                np.array([x.capped for x in sps], dtype=bool),
                np.array(credits),
            )
        self._record_run(t0_s, sr, len(sr.durations), 1.0)
        return sr

    def truncate_run(self, t0_s: float, run: StepRun, keep: int) -> None:
        """Keep only the first ``keep`` steps of a run recorded by ``run_decode``."""
        self._record_run(t0_s, run, len(run.durations), -1.0)
        self.trace.end_s = t0_s  # the run was the last thing recorded
        self._record_run(t0_s, run, keep, 1.0)
        self._cap_credit_j = float(run.credits[keep - 1])  # as if the dropped steps never ran
        run.keep(keep)

    def _record_run(self, t0_s: float, run: StepRun, k: int, sign: float) -> None:
        d = run.durations[:k]
        total = float(d.sum())
        if total <= 0:
            return
        energy = float((run.powers[:k] * d).sum())
        clocks = run.clocks[:k]
        tac = self.time_at_clock_s
        if clocks[0] == clocks[-1] and (k < 3 or bool((clocks == clocks[0]).all())):
            f = int(clocks[0])
            tac[f] = tac.get(f, 0.0) + sign * total
            clock = f * total
        else:
            for f, x in zip(clocks.tolist(), d.tolist()):
                tac[f] = tac.get(f, 0.0) + sign * x
            clock = float((clocks * d).sum())
        reasons = THROTTLE_SW_POWER_CAP if bool(run.capped[:k].any()) else 0
        if self._applied_lock is not None and self._applied_lock < self.preset.f_max_mhz:
            reasons |= THROTTLE_APPLICATIONS_CLOCKS_SETTING
        t1 = t0_s + total
        kern = float(run.kernel[:k].sum())
        mem = float(run.mem[:k].sum())
        self.trace.add(t0_s, t1, sign * energy / total, sign * clock / total, sign * kern / total, sign * mem / total, reasons if sign > 0 else 0)
        if sign > 0:
            self._last_busy_end = t1
            self.last_step_clock_mhz = int(clocks[-1])

    def idle_clock_at(self, t_s: float) -> int:
        """The SM clock an idle GPU sits at (governor or lock)."""
        if self._applied_lock is not None:
            return self._applied_lock
        if t_s < self._last_busy_end + self.preset.idle_hold_s:
            return self.preset.f_max_mhz
        return self.preset.f_min_mhz

    def fill_idle(self, t_s: float) -> None:
        """Extend the trace with idle power up to ``t_s`` (no-op if already there)."""
        t0 = self.trace.end_s
        if t_s <= t0:
            return
        # A pending lock that settles inside the gap changes the idle clock there.
        if self._pending is not None and t0 < self._pending[0] < t_s:
            mid = self._pending[0]
            self._fill_idle_span(t0, mid)
            self._settle(mid)
            self._fill_idle_span(mid, t_s)
            return
        self._settle(t0)
        self._fill_idle_span(t0, t_s)

    def _fill_idle_span(self, t0: float, t1: float) -> None:
        if t1 <= t0:
            return
        if self._applied_lock is None:
            hot_end = self._last_busy_end + self.preset.idle_hold_s
            if t0 < hot_end:
                cut = min(t1, hot_end)
                self._idle_segment(t0, cut, self.preset.f_max_mhz)
                t0 = cut
            if t0 < t1:
                self._idle_segment(t0, t1, self.preset.f_min_mhz)
        else:
            self._idle_segment(t0, t1, self._applied_lock)

    def _idle_segment(self, t0: float, t1: float, f_mhz: int) -> None:
        reasons = THROTTLE_GPU_IDLE
        if self._applied_lock is not None and self._applied_lock < self.preset.f_max_mhz:
            reasons |= THROTTLE_APPLICATIONS_CLOCKS_SETTING
        self.trace.add(t0, t1, self.model.idle_power_w(f_mhz), f_mhz, 0.0, 0.0, reasons)

    # ---- readings ----------------------------------------------------------------------------
    def energy_j(self, t_s: float | None = None) -> float:
        """Exact energy since start up to the trace end (or ``t_s``, on bin edges)."""
        if t_s is None:
            return self.trace.total_energy_j
        return self.trace.energy_before(int(round(t_s / self.trace.bin_s)))

    def reading(self, t_s: float) -> GpuReading:
        """What NVML would report at ``t_s``: values frozen at the latest 100 ms grid point.

        The caller must have filled the trace up to where it is valid (the engine does, see
        ``Engine.sync``); a reading never looks past the trace end.
        """
        tr = self.trace
        bw = tr.bin_s
        g = min(t_s, tr.end_s)
        per_grid = max(1, int(round(GRID_S / bw)))
        k_grid = (int(g / bw + 1e-9) // per_grid) * per_grid  # first bin after the grid point
        g_s = k_grid * bw
        inst = tr.window(k_grid - 1, k_grid)
        avg_bins = max(1, int(round(AVG_WINDOW_S / bw)))
        avg = tr.window(k_grid - avg_bins, k_grid)
        last = tr.window(k_grid - per_grid, k_grid)
        power_w = inst[0] / inst[5] if inst[5] > 0 else self.model.idle_power_w(self.idle_clock_at(g_s))
        power_avg_w = avg[0] / avg[5] if avg[5] > 0 else power_w
        if inst[5] > 0 and inst[1] > 0:
            clock = self._snap(inst[1] / inst[5])
        else:
            clock = self.idle_clock_at(g_s)
        util = 100.0 * avg[2] / avg[5] if avg[5] > 0 else 0.0
        mem_util = 100.0 * avg[3] / avg[5] if avg[5] > 0 else 0.0
        reasons = last[4] if last[5] > 0 else THROTTLE_GPU_IDLE
        self._update_temp(g_s, power_avg_w)
        energy_j = max(tr.energy_before(k_grid), self._energy_floor_j)
        self._energy_floor_j = energy_j
        return GpuReading(
            t_s=g_s,
            power_w=power_w,
            power_avg_w=power_avg_w,
            energy_j=energy_j,
            sm_clock_mhz=clock,
            gpu_util_pct=util,
            mem_util_pct=mem_util,
            throttle_reasons=reasons,
            temp_c=self._temp_c,
        )

    def samples(self, since_s: float, until_s: float) -> list[tuple[float, float]]:
        """20 ms power samples ``(t_end_s, power_w)`` for complete bins ending in (since, until]."""
        tr = self.trace
        bw = tr.bin_s
        last_k = int(min(until_s, tr.end_s) / bw + 1e-9)  # bins [.., last_k) are complete
        first_k = max(tr.base, int(since_s / bw + 1e-9))
        out: list[tuple[float, float]] = []
        for k in range(first_k, last_k):
            t_end = (k + 1) * bw
            if t_end <= since_s + 1e-9:
                continue
            out.append((t_end, tr.energy[k - tr.base] / bw))
        return out

    def _snap(self, f: float) -> int:
        """Round a time-averaged clock to the supported grid, as NVML reports one clock."""
        s = self.supported
        step = s[1] - s[0] if len(s) > 1 else 1
        i = int(round((f - s[0]) / step))
        return s[min(len(s) - 1, max(0, i))]

    def _update_temp(self, t_s: float, power_w: float) -> None:
        p = self.preset
        dt = t_s - self._temp_t
        if dt <= 0:
            return
        target = p.temp_ambient_c + p.temp_c_per_w * power_w
        self._temp_c += (target - self._temp_c) * (1.0 - math.exp(-dt / p.temp_tau_s))
        self._temp_t = t_s
