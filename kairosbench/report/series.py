"""Time-series shaping for the report (pure numpy): totals over GPUs, bin means, step compression.

A report file must stay small enough to mail and to open offline, yet a 3-hour run holds half
a million 20 ms power samples per GPU. These helpers shrink series without lying about them:

- power is reduced by **bin means** over equal time bins, so the area under the curve (the
  energy) is what the samples say; short peaks are flattened, and the bin width is shown;
- step signals (clocks, caps) are reduced by dropping **repeats**: a value is kept only where
  it changes, so the step shape is exact however long the run;
- distributions are reduced to **quantiles** at evenly spaced probabilities.

All times are seconds (``t_s``) relative to the run's replay start; powers are W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Series",
    "median_spacing_s",
    "sum_on_grid",
    "bin_means",
    "window_means",
    "drop_repeats",
    "steps",
    "ecdf",
    "time_at_value_s",
]


@dataclass(frozen=True, slots=True)
class Series:
    """A sampled signal: ``t_s`` ascending, ``values`` of the same length, NaN-free."""

    t_s: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, t_s: np.ndarray, values: np.ndarray) -> Series:
        """Sorted by time, NaN values dropped (a null in kairosbench files means "not read")."""
        t = np.asarray(t_s, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        keep = ~(np.isnan(t) | np.isnan(v))
        t, v = t[keep], v[keep]
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order])

    def __len__(self) -> int:
        return len(self.t_s)


def median_spacing_s(t_s: np.ndarray) -> float | None:
    """The median gap between consecutive sample times; None with fewer than two samples."""
    t = np.asarray(t_s, dtype=np.float64)
    if len(t) < 2:
        return None
    gaps = np.diff(np.sort(t))
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else None


def sum_on_grid(series: list[Series], step_s: float | None = None) -> Series:
    """The sum of several signals (e.g. every GPU's power) on one common time grid.

    The grid spans only the time *every* series covers (a sum where one GPU has no data yet
    would dip by that GPU's whole power), with ``step_s`` spacing (default: the finest median
    spacing among the inputs, so the 20 ms buffer keeps its resolution). Each series is linearly
    interpolated onto the grid. An empty result when the series do not overlap.
    """
    usable = [s for s in series if len(s) >= 2]
    if not usable:
        return Series(np.array([]), np.array([]))
    if len(usable) == 1 and step_s is None:
        return usable[0]
    lo = max(float(s.t_s[0]) for s in usable)
    hi = min(float(s.t_s[-1]) for s in usable)
    if hi <= lo:
        return Series(np.array([]), np.array([]))
    if step_s is None:
        spacings = [m for m in (median_spacing_s(s.t_s) for s in usable) if m]
        step_s = min(spacings) if spacings else (hi - lo)
    n = int(np.floor((hi - lo) / step_s)) + 1
    grid = lo + np.arange(n) * step_s
    total = np.zeros(n)
    for s in usable:
        total += np.interp(grid, s.t_s, s.values)
    return Series(grid, total)


def bin_means(s: Series, max_points: int) -> tuple[Series, float | None]:
    """At most ``max_points`` points: the mean of each equal-width time bin (empty bins skipped).

    Returns the reduced series and the bin width in seconds (None when nothing was reduced).
    Each point sits at the mean time of the samples in its bin.
    """
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    if len(s) <= max_points:
        return s, None
    lo, hi = float(s.t_s[0]), float(s.t_s[-1])
    width = (hi - lo) / max_points
    idx = np.minimum(((s.t_s - lo) / width).astype(np.int64), max_points - 1)
    counts = np.bincount(idx, minlength=max_points)
    sum_t = np.bincount(idx, weights=s.t_s, minlength=max_points)
    sum_v = np.bincount(idx, weights=s.values, minlength=max_points)
    full = counts > 0
    return Series(sum_t[full] / counts[full], sum_v[full] / counts[full]), width


def window_means(s: Series, width_s: float) -> Series:
    """Means over consecutive windows of ``width_s`` seconds from the first sample (empty windows skipped).

    What a 1 s power meter would show: the energy in each window over its samples' count.
    """
    if width_s <= 0:
        raise ValueError("width_s must be > 0")
    if len(s) == 0:
        return s
    idx = ((s.t_s - float(s.t_s[0])) / width_s).astype(np.int64)
    n = int(idx[-1]) + 1
    counts = np.bincount(idx, minlength=n)
    sum_t = np.bincount(idx, weights=s.t_s, minlength=n)
    sum_v = np.bincount(idx, weights=s.values, minlength=n)
    full = counts > 0
    return Series(sum_t[full] / counts[full], sum_v[full] / counts[full])


def drop_repeats(s: Series) -> Series:
    """Keep the first sample, every sample whose value differs from the previous one, and the last.

    Drawn as a step line (``hv``), the result is identical to the full series.
    """
    if len(s) <= 2:
        return s
    change = np.empty(len(s), dtype=bool)
    change[0] = True
    change[1:] = s.values[1:] != s.values[:-1]
    change[-1] = True
    return Series(s.t_s[change], s.values[change])


def steps(s: Series, max_points: int) -> Series:
    """A step signal for drawing: its change points, or at most ``max_points`` held values.

    When a signal changes more often than ``max_points`` times (a clock under a busy DVFS
    governor over hours), it is read on an even grid instead: each grid point carries the value
    in force then (sample and hold), which is what a step line at that resolution shows.
    """
    changes = drop_repeats(s)
    if len(changes) <= max_points:
        return changes
    grid = np.linspace(float(s.t_s[0]), float(s.t_s[-1]), max_points)
    idx = np.clip(np.searchsorted(s.t_s, grid, side="right") - 1, 0, len(s) - 1)
    return Series(grid, s.values[idx])


def ecdf(values: np.ndarray, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF: sorted values ``x`` and ``P(X <= x)`` in (0, 1].

    With ``max_points``, the quantiles at that many evenly spaced probabilities (the first and
    last value always kept), so a CDF of a million requests draws like the full one.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return x, np.array([])
    y = np.arange(1, n + 1) / n
    if max_points is not None and n > max_points:
        pick = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
        return x[pick], y[pick]
    return x, y


def time_at_value_s(s: Series, t_end_s: float, t_start_s: float | None = None) -> dict[float, float]:
    """Seconds spent at each value of a sampled step signal within ``[t_start_s, t_end_s]``.

    Each sample holds until the next one (the last until ``t_end_s``); the time before the first
    sample in the window takes the last value seen before the window, if any. This is how long
    a GPU sat at each SM clock, read from its polls.
    """
    if len(s) == 0:
        return {}
    lo = float(s.t_s[0]) if t_start_s is None else float(t_start_s)
    hi = float(t_end_s)
    if hi <= lo:
        return {}
    inside = (s.t_s > lo) & (s.t_s < hi)
    before = s.t_s <= lo
    t = s.t_s[inside]
    v = s.values[inside]
    if before.any():
        t = np.concatenate(([lo], t))
        v = np.concatenate(([s.values[before][-1]], v))
    if len(t) == 0:
        return {}
    durations = np.diff(np.concatenate((t, [hi])))
    out: dict[float, float] = {}
    for value, d in zip(v.tolist(), durations.tolist()):
        out[value] = out.get(value, 0.0) + d
    return out
