"""Small order statistics the policies need, without numpy (policies stay dependency-free)."""

from __future__ import annotations

from typing import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values.

    KAIROS's SLO signal is the P5 of per-agent output rates, so with fewer than 20 agents
    on an instance this interpolates between the slowest two, as ``numpy.percentile`` does
    and as the run report computes it.
    """
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0])
    h = (len(xs) - 1) * pct / 100.0
    lo = int(h)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (h - lo))
