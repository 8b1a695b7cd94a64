"""Power-sample buffers: keep each hardware sample exactly once, and put it on the run clock.

NVML's ``nvmlDeviceGetSamples`` returns the driver's ring of ~20 ms power samples, each with a
timestamp in CPU microseconds. Which CPU clock is not documented, so :class:`BufferClock`
finds out at run time: at the first drain it compares the newest sample's timestamp with
every host clock and takes the one the sample is just behind (0 to a few seconds old). It
then maps each timestamp onto the run clock with an offset re-measured at every drain
(``run_now - that_clock_now``, bracketed by two run-clock reads), so a step or slew of the
wall clock during a run moves samples by at most what it moved the clock since the last drain.
The clock found on a real H100 is recorded in docs/profiler.md; it is also written to the
file metadata of every run (``buffer_clock``).

:class:`SampleDeduper` keeps samples newer than the newest seen, drops repeats, and counts gaps
(spacings above 1.5x the median) separately inside one drain (the hardware skipped) and
across drains (we may have drained too late and lost samples off the ring).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

__all__ = ["host_clocks", "BufferClock", "SampleDeduper"]

ClockFn = Callable[[], int]


def host_clocks() -> dict[str, ClockFn]:
    """The host clocks a sample timestamp may be on, in order of preference for ties (ns)."""
    clocks: dict[str, ClockFn] = {"CLOCK_REALTIME": time.time_ns, "CLOCK_MONOTONIC": time.monotonic_ns}
    for name in ("CLOCK_BOOTTIME", "CLOCK_MONOTONIC_RAW"):
        clock_id = getattr(time, name, None)
        if clock_id is not None:
            clocks[name] = functools.partial(time.clock_gettime_ns, clock_id)
    return clocks


class BufferClock:
    """Maps a source's sample timestamps (µs on an unknown host clock) onto the run clock."""

    def __init__(self, candidates: Mapping[str, ClockFn], now_ns: ClockFn, *, max_lag_s: float = 10.0) -> None:
        self._candidates = dict(candidates)
        self._now_ns = now_ns
        self._max_lag_ns = int(max_lag_s * 1e9)
        self.clock_name: str | None = None  # detected clock, or "unknown (aligned to the first drain)"
        self._clock: ClockFn | None = None
        self._fixed_offset_ns: int | None = None
        self._offset_ns = 0
        self.lags_ms: deque[float] = deque(maxlen=2048)  # read time minus newest sample, per drain

    def detect(self, newest_ts_us: int) -> str:
        """Pick the clock the newest sample is just behind; fall back to aligning with now."""
        ts_ns = newest_ts_us * 1000
        best: tuple[int, str] | None = None
        for name, clock in self._candidates.items():
            lag = clock() - ts_ns
            if -50_000_000 <= lag <= self._max_lag_ns and (best is None or abs(lag) < best[0]):
                best = (abs(lag), name)
        if best is None:
            self.clock_name = "unknown (aligned to the first drain)"
            self._fixed_offset_ns = self._now_ns() - ts_ns
        else:
            self.clock_name = best[1]
            self._clock = self._candidates[best[1]]
        return self.clock_name

    def begin_drain(self) -> None:
        """Re-measure the offset between the sample clock and the run clock (call once per drain)."""
        if self._clock is None:
            return
        before = self._now_ns()
        other = self._clock()
        after = self._now_ns()
        self._offset_ns = (before + after) // 2 - other

    def to_run_ns(self, ts_us: int) -> int:
        offset = self._fixed_offset_ns if self._fixed_offset_ns is not None else self._offset_ns
        return ts_us * 1000 + offset

    def record_lag(self, newest_ts_us: int) -> None:
        self.lags_ms.append((self._now_ns() - self.to_run_ns(newest_ts_us)) / 1e6)


class SampleDeduper:
    """Accepts each buffer sample once, however the drains overlap, and counts gaps."""

    def __init__(self, *, gap_factor: float = 1.5) -> None:
        self.last_us: int | None = None
        self.gap_factor = gap_factor
        self.accepted = 0
        self.duplicates = 0
        self.gaps_within_drain = 0
        self.gaps_across_drains = 0
        self.missing_within_drain = 0  # estimated samples the hardware skipped
        self.missing_across_drains = 0  # estimated samples lost between drains
        self._spacings: deque[int] = deque(maxlen=256)

    @property
    def median_spacing_us(self) -> float | None:
        return statistics.median(self._spacings) if self._spacings else None

    def accept(self, samples: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
        """Return the samples newer than any seen before, sorted, each timestamp once."""
        fresh: list[tuple[int, float]] = []
        seen_now: set[int] = set()
        for ts, value in sorted(samples, key=lambda s: s[0]):
            if (self.last_us is not None and ts <= self.last_us) or ts in seen_now:
                self.duplicates += 1
                continue
            seen_now.add(ts)
            fresh.append((ts, value))
        if not fresh:
            return fresh
        spacings = [b[0] - a[0] for a, b in zip(fresh, fresh[1:])]
        self._spacings.extend(spacings)
        median = self.median_spacing_us
        if median:
            for gap in spacings:
                if gap > self.gap_factor * median:
                    self.gaps_within_drain += 1
                    self.missing_within_drain += max(0, round(gap / median) - 1)
            if self.last_us is not None:
                gap = fresh[0][0] - self.last_us
                if gap > self.gap_factor * median:
                    self.gaps_across_drains += 1
                    self.missing_across_drains += max(0, round(gap / median) - 1)
        self.last_us = fresh[-1][0]
        self.accepted += len(fresh)
        return fresh

    def stats(self) -> dict[str, int]:
        return {
            "buffer_samples": self.accepted,
            "buffer_duplicates_dropped": self.duplicates,
            "buffer_gaps_within_drain": self.gaps_within_drain,
            "buffer_gaps_across_drains": self.gaps_across_drains,
            "buffer_missing_within_drain_est": self.missing_within_drain,
            "buffer_missing_across_drains_est": self.missing_across_drains,
        }
