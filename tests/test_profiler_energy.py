"""Energy from the counter and from integration: exact cases, wraps, and properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.profiler.energy import counter_energy_j, disagreement, trapezoid_j

S = 1_000_000_000  # ns per second


def test_trapezoid_is_exact_for_linear_power() -> None:
    t = np.array([0, 1, 2, 3]) * S
    p = np.array([100.0, 200.0, 300.0, 400.0])
    assert trapezoid_j(t, p) == 750.0
    # restricted window, interpolated at its edges: from 0.5 s (150 W) to 2.5 s (350 W)
    assert abs(trapezoid_j(t, p, S // 2, 5 * S // 2) - 500.0) < 1e-9


def test_trapezoid_ignores_nan_and_does_not_extrapolate() -> None:
    t = np.array([0, 1, 2]) * S
    p = np.array([100.0, np.nan, 100.0])
    assert trapezoid_j(t, p) == 200.0
    assert trapezoid_j(t, p, -5 * S, 10 * S) == 200.0
    assert trapezoid_j(t[:1], p[:1]) == 0.0


def test_counter_window_runs_between_change_points() -> None:
    # The counter moves every 100 ms (1 J each time, i.e. 10 W); polls every 50 ms see each value twice.
    t = np.arange(0, 41) * (S // 20)
    e = 1000.0 + np.floor(np.arange(0, 41) / 2)
    result = counter_energy_j(t, e)
    assert result is not None
    assert result.energy_j == 19.0
    assert result.discontinuities == 0
    # The first change is seen at 0.1 s and happened after the 0.05 s poll: midpoint 0.075 s.
    assert result.t0_ns == int(0.075 * S)


def test_counter_going_back_is_bridged_by_integrating_power() -> None:
    t = np.arange(0, 11) * (S // 10)
    e = np.array([100.0, 110, 120, 130, 140, 5, 15, 25, 35, 45, 55])  # reset between 0.4 s and 0.5 s
    power_t = np.arange(0, 101) * (S // 100)
    power = np.full(101, 100.0)  # 100 W -> 10 J per 0.1 s
    result = counter_energy_j(t, e, power_t, power)
    assert result is not None and result.discontinuities == 1
    assert abs(result.bridged_j - 10.0) < 1e-9
    # Change points at midpoints: the window is 0.05 s .. 0.95 s, 0.9 s at 100 W.
    assert (result.t0_ns, result.t1_ns) == (S // 20, 19 * S // 20)
    assert abs(result.energy_j - 90.0) < 1e-9


def test_counter_needs_two_readings() -> None:
    assert counter_energy_j(np.array([0]), np.array([1.0])) is None
    assert counter_energy_j(np.array([0, 1]), np.array([np.nan, np.nan])) is None


def test_disagreement_flags_above_tolerance() -> None:
    assert disagreement(100.0, 101.0, 0.02) == (0.01, False)
    frac, flagged = disagreement(100.0, 103.0, 0.02)
    assert flagged and abs(frac - 0.03) < 1e-12
    assert disagreement(None, 5.0, 0.02) == (None, False)


@settings(max_examples=100, deadline=None)
@given(st.floats(1.0, 1000.0), st.integers(2, 400), st.integers(1, 50))
def test_constant_power_integrates_to_power_times_time(power_w: float, n: int, step_ms: int) -> None:
    t = np.arange(n, dtype=np.int64) * step_ms * 1_000_000
    joules = trapezoid_j(t, np.full(n, power_w))
    assert abs(joules - power_w * (n - 1) * step_ms / 1000) <= 1e-9 * max(1.0, joules)


def test_a_counter_wobbling_by_rounding_is_not_a_reset() -> None:
    # A float-computed counter (the emulator's) reads 15200, 15199, 15200 mJ within one update.
    t = np.arange(0, 9) * (S // 20)
    e = np.array([0.0, 7.6, 7.6, 15.2, 15.199, 15.2, 22.8, 22.799, 30.4])
    result = counter_energy_j(t, e, t, np.full(9, 76.0))
    assert result is not None and result.discontinuities == 0 and result.bridged_j == 0.0
    assert abs(result.energy_j - 22.8) < 1e-9
