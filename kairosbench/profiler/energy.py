"""Energy two ways, from the same rows: the counter's difference and the integral of the samples.

**Counter.** NVML's energy counter (mJ since driver load) is the ground truth over long windows,
but it updates only about every 100 ms, so a read returns the value of the last update. The
window therefore runs between *change points*: a new counter value first seen at a row was
produced after the previous row and before this one, so its time is taken as the midpoint of
the two (error at most half a poll period, zero on average, instead of up to a whole period
late). A counter that goes backwards (a wrap, a driver reload, an
exporter or emulator restart) cannot be differenced across that step; the energy of that one
interval is bridged by integrating the power samples over it, and the step is counted. A drop
of less than ``noise_j`` (1 J) is rounding noise of a counter computed in floating point (the
emulator's wobbles by 1 mJ), not a reset: the counter is held at its running maximum instead.

**Integration.** The trapezoid rule over the finest power series available for the GPU: the
driver's ~20 ms buffer, else the polled instant power, else the 1 s average. It is evaluated
over the counter's window (interpolated at its edges) so the two numbers cover the same time.

**Sparse counter reads.** Where reading the counter is expensive (about 4 ms of CPU on an
H100) the NVML source reads it only once a second. Then every read shows a new value, and
change points say nothing about when each value was produced. But the counter moves on the
same ~100 ms hardware tick as the 1 s-average power, which is cheap and read every poll; so
:func:`date_by_ticks` dates each counter read at the estimated time of the tick that produced
the average value read with it (the midpoint before the row where that value first appeared).

Both are pure functions of numpy arrays (t in ns, power in W, energy in J).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CounterEnergy", "trapezoid_j", "counter_energy_j", "date_by_ticks", "counter_energy_from_polls", "disagreement"]


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


def _hold_small_drops(e: np.ndarray, noise_j: float) -> np.ndarray:
    """Replace readings that dip below the running maximum by less than ``noise_j`` with that maximum."""
    out = e.copy()
    peak = out[0]
    for i in range(1, len(out)):
        if out[i] < peak and peak - out[i] < noise_j:
            out[i] = peak
        else:
            peak = out[i]
    return out


def date_by_ticks(t_ns: np.ndarray, tick_values: np.ndarray) -> np.ndarray:
    """Per row (sorted by time), the estimated time of the tick that produced ``tick_values`` there.

    A value first seen at row i was produced between rows i-1 and i: its tick is dated at their
    midpoint. Rows before the first observed change get -1 (undatable). NaN tick values are
    skipped (the row inherits the tick of the last row that had a value).
    """
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(tick_values, dtype=np.float64)
    out = np.full(len(t), -1, dtype=np.int64)
    last_t = last_v = None
    current = -1
    for i in range(len(t)):
        if np.isnan(v[i]):
            out[i] = current
            continue
        if last_v is not None and v[i] != last_v:
            current = (last_t + t[i]) // 2
        last_t, last_v = int(t[i]), v[i]
        out[i] = current
    return out


def counter_energy_j(
    t_ns: np.ndarray,
    energy_j: np.ndarray,
    power_t_ns: np.ndarray | None = None,
    power_w: np.ndarray | None = None,
    *,
    dated_t_ns: np.ndarray | None = None,
    noise_j: float = 1.0,
    value_timed: bool = False,
    within: tuple[int, int] | None = None,
) -> CounterEnergy | None:
    """Energy between the counter's first and last change points; None if it never moved.

    ``power_t_ns``/``power_w`` (any power series) bridge intervals where the counter went back.
    ``dated_t_ns`` (from :func:`date_by_ticks`, -1 = undatable): when each read's value was
    produced; given, the reads themselves are the window's points instead of change points.
    ``value_timed``: each row's time is when its value was produced (the emulator), so a change
    is dated at its own row. ``within``: use only counter points inside this span (the span the
    power samples cover, so that both energies are over the same window); ignored if fewer than
    two points fall inside.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    e = np.asarray(energy_j, dtype=np.float64)
    keep = ~np.isnan(e)
    if dated_t_ns is not None:
        dated = np.asarray(dated_t_ns, dtype=np.int64)
        keep &= dated >= 0
        t = dated
    t, e = t[keep], e[keep]
    if len(t) < 2:
        return None
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    e = _hold_small_drops(e, noise_j)
    changed = np.nonzero(e[1:] != e[:-1])[0] + 1
    if dated_t_ns is not None:
        first = np.concatenate(([0], changed))  # the first read of each value carries its date
        ts, es = t[first], e[first]
        if len(ts) < 2:
            return None
    elif value_timed:
        first = np.concatenate(([0], changed))
        ts, es = t[first], e[first]
    elif len(changed) >= 2:
        ts, es = (t[changed - 1] + t[changed]) // 2, e[changed]
    elif len(changed) == 1:  # too short (or too slow a source) for two change points: first to last read
        ts, es = t[[0, -1]], e[[0, -1]]
    else:  # the counter never moved: it says nothing about this window
        return None
    if within is not None:
        inside = (ts >= within[0]) & (ts <= within[1])
        if np.count_nonzero(inside) >= 2:
            ts, es = ts[inside], es[inside]
    steps = np.diff(es)
    backwards = np.nonzero(steps < 0)[0]
    total = float(np.sum(steps[steps >= 0]))
    bridged = 0.0
    if len(backwards) and power_t_ns is not None and power_w is not None:
        for k in backwards:
            bridged += trapezoid_j(power_t_ns, power_w, int(ts[k]), int(ts[k + 1]))
    return CounterEnergy(total + bridged, int(ts[0]), int(ts[-1]), int(len(backwards)), bridged)


def counter_energy_from_polls(
    t_ns: np.ndarray,
    energy_j: np.ndarray,
    power_avg_w: np.ndarray,
    power_t_ns: np.ndarray | None = None,
    power_w: np.ndarray | None = None,
    *,
    value_timed: bool = False,
) -> CounterEnergy | None:
    """Counter energy from one GPU's poll rows, choosing how to date the reads, over the span
    the power series covers (if it covers two counter points).

    Reads at least as frequent as the counter's updates: change points. Reads much sparser
    than the 1 s-average power (which moves on the counter's tick): dated by its ticks.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    energy = np.asarray(energy_j, dtype=np.float64)
    avg = np.asarray(power_avg_w, dtype=np.float64)
    n_energy = int(np.count_nonzero(~np.isnan(energy)))
    n_avg = int(np.count_nonzero(~np.isnan(avg)))
    within = None
    if power_t_ns is not None and power_w is not None:
        covered = np.asarray(power_t_ns)[~np.isnan(np.asarray(power_w, dtype=np.float64))]
        if len(covered) >= 2:
            within = (int(covered.min()), int(covered.max()))
    if value_timed:
        return counter_energy_j(t, energy, power_t_ns, power_w, value_timed=True, within=within)
    if n_energy >= 2 and n_avg >= 3 * n_energy:
        order = np.argsort(t, kind="stable")
        t, energy, avg = t[order], energy[order], avg[order]
        return counter_energy_j(t, energy, power_t_ns, power_w, dated_t_ns=date_by_ticks(t, avg), within=within)
    return counter_energy_j(t, energy, power_t_ns, power_w, within=within)


def disagreement(counter_j: float | None, integrated_j: float | None, tolerance_frac: float) -> tuple[float | None, bool]:
    """(|integrated - counter| / counter, flagged?) — flagged when above ``tolerance_frac``."""
    if counter_j is None or integrated_j is None or counter_j <= 0:
        return None, False
    frac = abs(integrated_j - counter_j) / counter_j
    return frac, frac > tolerance_frac
