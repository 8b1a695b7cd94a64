"""Energy two ways, from the same rows: the counter's difference and the integral of the samples.

**Counter.** NVML's energy counter (mJ since driver load) is the ground truth over long windows,
but it updates only about every 100 ms, so a read returns the value of the last update. The
window therefore runs between *change points*: a new counter value first seen at a row was
produced after the previous row and before this one, so its time is taken as the midpoint of
the two (error at most half a poll period, zero on average, instead of up to a whole period
late). A counter that goes backwards (a wrap, a driver reload, an
exporter or emulator restart) cannot be differenced across that step; the energy of that one
interval is bridged by integrating the power samples over it, and the step is counted.

**Integration.** The trapezoid rule over the finest power series available for the GPU: the
driver's ~20 ms buffer, else the polled instant power, else the 1 s average. It is evaluated
over the counter's window (interpolated at its edges) so the two numbers cover the same time.

Both are pure functions of numpy arrays (t in ns, power in W, energy in J).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CounterEnergy", "trapezoid_j", "counter_energy_j", "disagreement"]


@dataclass(frozen=True, slots=True)
class CounterEnergy:
    """Energy from the counter over ``[t0_ns, t1_ns]``; ``discontinuities`` steps were bridged."""

    energy_j: float
    t0_ns: int
    t1_ns: int
    discontinuities: int
    bridged_j: float  # the part of energy_j that came from integration across discontinuities


def trapezoid_j(t_ns: np.ndarray, power_w: np.ndarray, t0_ns: int | None = None, t1_ns: int | None = None) -> float:
    """Integral of power over time in J, optionally restricted to [t0_ns, t1_ns] (interpolated at the edges).

    NaN samples are dropped. Outside the samples' span nothing is extrapolated.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    keep = ~np.isnan(p)
    t, p = t[keep], p[keep]
    if len(t) < 2:
        return 0.0
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    lo = t[0] if t0_ns is None else max(int(t0_ns), int(t[0]))
    hi = t[-1] if t1_ns is None else min(int(t1_ns), int(t[-1]))
    if hi <= lo:
        return 0.0
    inner = (t > lo) & (t < hi)
    ts = np.concatenate(([lo], t[inner], [hi])).astype(np.float64)
    ps = np.concatenate(([np.interp(lo, t, p)], p[inner], [np.interp(hi, t, p)]))
    return float(np.sum((ps[1:] + ps[:-1]) * np.diff(ts)) / 2.0 / 1e9)


def counter_energy_j(
    t_ns: np.ndarray,
    energy_j: np.ndarray,
    power_t_ns: np.ndarray | None = None,
    power_w: np.ndarray | None = None,
) -> CounterEnergy | None:
    """Energy between the counter's first and last change points; None if it never moved.

    ``power_t_ns``/``power_w`` (any power series) bridge intervals where the counter went back.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    e = np.asarray(energy_j, dtype=np.float64)
    keep = ~np.isnan(e)
    t, e = t[keep], e[keep]
    if len(t) < 2:
        return None
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    changed = np.nonzero(e[1:] != e[:-1])[0] + 1
    if len(changed) >= 2:
        ts, es = (t[changed - 1] + t[changed]) // 2, e[changed]
    elif len(changed) == 1:  # too short (or too slow a source) for two change points: first to last read
        ts, es = t[[0, -1]], e[[0, -1]]
    else:  # the counter never moved: it says nothing about this window
        return None
    steps = np.diff(es)
    backwards = np.nonzero(steps < 0)[0]
    total = float(np.sum(steps[steps >= 0]))
    bridged = 0.0
    if len(backwards) and power_t_ns is not None and power_w is not None:
        for k in backwards:
            bridged += trapezoid_j(power_t_ns, power_w, int(ts[k]), int(ts[k + 1]))
    return CounterEnergy(total + bridged, int(ts[0]), int(ts[-1]), int(len(backwards)), bridged)


def disagreement(counter_j: float | None, integrated_j: float | None, tolerance_frac: float) -> tuple[float | None, bool]:
    """(|integrated - counter| / counter, flagged?) — flagged when above ``tolerance_frac``."""
    if counter_j is None or integrated_j is None or counter_j <= 0:
        return None, False
    frac = abs(integrated_j - counter_j) / counter_j
    return frac, frac > tolerance_frac
