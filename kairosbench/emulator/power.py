"""Board power from utilisation and SM clock, with the power limit enforced by throttling.

For a step of duration t at SM clock f (s = f·V(f)² relative to the die's reference clock
f_ref, 1980 MHz for GH100: (f / f_ref)^gamma while the voltage scales, linear in f once the
voltage sits at its floor; ``clock_power_scale``)::

    E = t · P_idle(f)                      clocks running, nothing issued (overhead gaps too)
      + t_a · P_compute · s                tensor work, t_a = t_active(f_max) · f_max / f (the
                                           compute time with decode attention's empty tile rows
                                           not counted: see roofline.StepCost)
      + t_m · (P_stream · s + P_hbm)       moving HBM data: SM/L2/fabric side scales with the
                                           clock, the DRAM side does not
    P = E / t

``P_idle(f)`` interpolates linearly between the parked (f_min) and hot (f_max) idle readings,
so a GPU locked low idles low. The clock-scaled terms are why DVFS saves energy on
memory-bound decode (the SMs spin at a lower V·f while HBM sets the pace) and why prefill at
f_max needs more than the board limit: the governor then picks the highest supported clock
at which P ≤ limit (``f_cap``), which is how a real H100 throttles GEMMs to ~1.4 GHz at 700 W
(ANCHORS §3.1). P(f) rises monotonically with f, so a binary search over the supported
clocks finds f_cap.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from kairosbench.emulator.presets import GpuPreset
import numpy as np

from kairosbench.emulator.roofline import DecodeRunCost, StepCost

__all__ = ["PowerModel", "StepPower", "clock_power_scale"]


@dataclass(frozen=True, slots=True)
class StepPower:
    """A step as the GPU ran it."""

    f_eff_mhz: int
    duration_s: float
    power_w: float
    compute_s: float  # tensor/SM busy time
    mem_s: float  # HBM busy time
    kernel_s: float  # GPU busy (not waiting on the CPU): duration - overhead
    capped: bool  # the power limit pulled the clock below the requested one


def clock_power_scale(gpu: GpuPreset, f_mhz: float) -> float:
    """Dynamic power at ``f`` relative to the reference clock: f·V(f)², with V ∝ f^((γ−1)/2)
    above the voltage floor (so (f/f_ref)^γ there) and V = V_min below it (linear in f)."""
    r = f_mhz / gpu.power_ref_clock_mhz
    v = max(gpu.voltage_floor_frac, r ** ((gpu.power_exponent - 1.0) / 2.0))
    return r * v * v


class PowerModel:
    """Per-GPU constants, precomputed per supported clock for the hot path."""

    __slots__ = ("gpu", "clocks", "_index", "_ratio", "_scale", "_idle", "_pc", "_ps", "_ph")

    def __init__(self, gpu: GpuPreset) -> None:
        self.gpu = gpu
        self.clocks = gpu.supported_sm_clocks_mhz
        self._index = {f: i for i, f in enumerate(self.clocks)}
        fmax, fmin = gpu.f_max_mhz, gpu.f_min_mhz
        self._ratio = [f / fmax for f in self.clocks]  # step time scales with f / f_max
        self._scale = [clock_power_scale(gpu, f) for f in self.clocks]
        span = (fmax - fmin) or 1
        self._idle = [gpu.p_idle_parked_w + (gpu.p_idle_hot_w - gpu.p_idle_parked_w) * (f - fmin) / span for f in self.clocks]
        self._pc, self._ps, self._ph = gpu.p_compute_w, gpu.p_stream_w, gpu.p_hbm_w

    def clock_index(self, f_mhz: int) -> int:
        """Index of a supported clock, or of the highest supported clock below ``f_mhz``."""
        i = self._index.get(f_mhz)
        if i is not None:
            return i
        return max(0, bisect_left(self.clocks, f_mhz) - 1)

    def idle_power_w(self, f_mhz: float) -> float:
        g = self.gpu
        span = (g.f_max_mhz - g.f_min_mhz) or 1
        frac = min(1.0, max(0.0, (f_mhz - g.f_min_mhz) / span))
        return g.p_idle_parked_w + (g.p_idle_hot_w - g.p_idle_parked_w) * frac

    def _at(self, cost: StepCost, i: int) -> tuple[float, float, float]:
        """(duration, power, compute time) of ``cost`` at clock index ``i``."""
        r = self._ratio[i]
        tc = cost.t_cmp_fmax_s / r
        ta = cost.t_active_s / r
        tm = cost.t_mem_s
        t = cost.t_overhead_s + (tm if tm > tc else tc)
        s = self._scale[i]
        energy = t * self._idle[i] + ta * self._pc * s + tm * (self._ps * s + self._ph)
        return t, energy / t, tc

    def power_at(self, cost: StepCost, f_mhz: int) -> float:
        """Unthrottled board power of ``cost`` at a supported clock (W)."""
        return self._at(cost, self.clock_index(f_mhz))[1]

    def run_at(self, run: DecodeRunCost, f_mhz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised ``_at`` over a decode run: (durations, powers, compute times)."""
        i = self.clock_index(f_mhz)
        r = self._ratio[i]
        tc = run.t_cmp_fmax_s / r
        ta = run.t_active_fmax_s / r
        tm = run.t_mem_s
        t = run.t_overhead_s + np.maximum(tm, tc)
        s = self._scale[i]
        energy = t * self._idle[i] + ta * (self._pc * s) + tm * (self._ps * s + self._ph)
        return t, energy / t, tc

    def at_clock(self, cost: StepCost, f_mhz: int, *, capped: bool = False) -> StepPower:
        """``cost`` run at exactly the supported clock ``f_mhz``."""
        i = self.clock_index(f_mhz)
        t, p, tc = self._at(cost, i)
        return StepPower(self.clocks[i], t, p, tc, cost.t_mem_s, t - cost.t_overhead_s, capped)

    def step(self, cost: StepCost, f_req_mhz: int, limit_w: float) -> StepPower:
        """Run ``cost`` at the requested clock, throttled to the highest clock within the limit."""
        hi = self.clock_index(f_req_mhz)
        t, p, tc = self._at(cost, hi)
        capped = False
        if p > limit_w and hi > 0:
            capped = True
            lo, best = 0, 0
            hi -= 1
            while lo <= hi:  # highest index with P <= limit (P rises with f)
                mid = (lo + hi) // 2
                if self._at(cost, mid)[1] <= limit_w:
                    best, lo = mid, mid + 1
                else:
                    hi = mid - 1
            i = best
            t, p, tc = self._at(cost, i)
            f = self.clocks[i]
        else:
            f = self.clocks[hi]
        return StepPower(
            f_eff_mhz=f,
            duration_s=t,
            power_w=p,
            compute_s=tc,
            mem_s=cost.t_mem_s,
            kernel_s=t - cost.t_overhead_s,
            capped=capped,
        )
