"""Clock arithmetic shared by the clock policies: snapping targets to what the GPU supports.

A GPU accepts only the clocks it lists (H100 SXM: 345-1980 MHz in 15 MHz steps; NVML
refuses anything else), so every policy computes a target in MHz or as a fraction of the
maximum and snaps it here. Fractions, not MHz, keep a policy portable across GPUs whose
maximum clocks differ (H100 NVL as configured by KAIROS: 1680 MHz; H100 SXM: 1980 MHz).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence

__all__ = ["snap_nearest", "snap_up", "clock_at_frac"]


def snap_nearest(supported_mhz: Sequence[int], target_mhz: float) -> int:
    """The supported clock nearest ``target_mhz`` (ties go to the higher clock, the safe side)."""
    if not supported_mhz:
        raise ValueError("an instance must list at least one supported clock")
    i = bisect_left(supported_mhz, target_mhz)
    if i == 0:
        return supported_mhz[0]
    if i == len(supported_mhz):
        return supported_mhz[-1]
    lo, hi = supported_mhz[i - 1], supported_mhz[i]
    return lo if target_mhz - lo < hi - target_mhz else hi


def snap_up(supported_mhz: Sequence[int], target_mhz: float) -> int:
    """The lowest supported clock ≥ ``target_mhz`` (the maximum if none is): for "at least" targets."""
    if not supported_mhz:
        raise ValueError("an instance must list at least one supported clock")
    i = bisect_left(supported_mhz, target_mhz - 1e-9)
    return supported_mhz[min(i, len(supported_mhz) - 1)]


def clock_at_frac(supported_mhz: Sequence[int], frac: float) -> int:
    """The supported clock nearest ``frac`` × the maximum supported clock."""
    return snap_nearest(supported_mhz, frac * supported_mhz[-1])
