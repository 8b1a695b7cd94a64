"""The one clock seam: a virtual clock for simulation, a wall clock for live runs.

All records in a run carry ``t_ns``: integer nanoseconds since the Unix epoch, but *derived
from the monotonic clock*. Each process takes one anchor pair (``time.time_ns()``,
``time.monotonic_ns()``) when it starts and thereafter reports ``anchor_wall + (monotonic -
anchor_mono)``. So intervals are monotonic (no NTP steps inside a run) and timestamps from
the load generator, the profiler process and the emulator (same host) line up to within the
anchor skew between processes (microseconds; measured in docs/profiler.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Clock", "WallClock", "VirtualClock", "now_ns"]

_ANCHOR_WALL_NS = time.time_ns()
_ANCHOR_MONO_NS = time.monotonic_ns()


def now_ns() -> int:
    """Run-clock timestamp: Unix-epoch ns that advance with the monotonic clock."""
    return _ANCHOR_WALL_NS + (time.monotonic_ns() - _ANCHOR_MONO_NS)


class Clock:
    """What the engine model, the simulator and the replay planner ask for the time."""

    def now_s(self) -> float:
        raise NotImplementedError


class WallClock(Clock):
    """Seconds on the run clock. ``late_by`` records how far behind a driver ran its plan."""

    def __init__(self) -> None:
        self._t0_ns = now_ns()
        self.max_lateness_s = 0.0

    @property
    def t0_ns(self) -> int:
        return self._t0_ns

    def now_s(self) -> float:
        return (now_ns() - self._t0_ns) / 1e9

    def late_by(self, planned_s: float) -> float:
        """How late we are against ``planned_s`` (>= 0), remembering the worst case."""
        late = max(0.0, self.now_s() - planned_s)
        if late > self.max_lateness_s:
            self.max_lateness_s = late
        return late


@dataclass
class VirtualClock(Clock):
    """Simulated time: only ``advance_to`` moves it, so tests log ``now`` instead of sleeping."""

    t_s: float = 0.0
    history: list[float] = field(default_factory=list, repr=False)

    def now_s(self) -> float:
        return self.t_s

    def advance_to(self, t_s: float) -> None:
        if t_s < self.t_s:
            raise ValueError(f"virtual clock cannot go back from {self.t_s} to {t_s}")
        self.t_s = t_s
