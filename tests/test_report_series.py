"""Time-series shaping for reports: totals over GPUs, reductions that keep what matters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.report.series import (
    Series,
    bin_means,
    drop_repeats,
    ecdf,
    median_spacing_s,
    steps,
    sum_on_grid,
    time_at_value_s,
    window_means,
)

finite = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)


def _series(draw_values: list[float], dt: float = 0.02) -> Series:
    return Series.of(np.arange(len(draw_values)) * dt, np.array(draw_values))


def test_series_of_sorts_and_drops_nan() -> None:
    s = Series.of(np.array([2.0, 0.0, 1.0, 3.0]), np.array([20.0, 0.0, np.nan, 30.0]))
    assert s.t_s.tolist() == [0.0, 2.0, 3.0]
    assert s.values.tolist() == [0.0, 20.0, 30.0]


def test_sum_on_grid_adds_gpus_only_where_all_have_samples() -> None:
    a = Series.of(np.arange(0, 10, 0.02), np.full(500, 100.0))
    b = Series.of(np.arange(2, 12, 0.1), np.full(100, 50.0))
    total = sum_on_grid([a, b])
    assert total.t_s[0] == pytest.approx(2.0)
    assert total.t_s[-1] <= 10.0
    assert median_spacing_s(total.t_s) == pytest.approx(0.02)
    assert np.allclose(total.values, 150.0)


def test_sum_on_grid_without_overlap_is_empty() -> None:
    a = Series.of(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    b = Series.of(np.array([2.0, 3.0]), np.array([1.0, 1.0]))
    assert len(sum_on_grid([a, b])) == 0
    assert len(sum_on_grid([])) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=400), st.integers(min_value=1, max_value=50))
def test_bin_means_keep_the_mean_and_the_budget(values: list[float], max_points: int) -> None:
    s = _series(values)
    reduced, width = bin_means(s, max_points)
    assert len(reduced) <= max(max_points, len(s))
    if width is None:
        assert len(reduced) == len(s)
    else:
        assert len(reduced) <= max_points
        assert reduced.values.min() >= min(values) - 1e-9
        assert reduced.values.max() <= max(values) + 1e-9
    assert np.all(np.diff(reduced.t_s) > 0)


def test_bin_means_of_a_constant_is_that_constant() -> None:
    s = Series.of(np.linspace(0, 100, 10_001), np.full(10_001, 321.0))
    reduced, width = bin_means(s, 100)
    assert width == pytest.approx(1.0)
    assert len(reduced) == 100
    assert np.allclose(reduced.values, 321.0)


def test_window_means_are_per_window() -> None:
    t = np.arange(0, 3, 0.5)  # two samples per second
    s = Series.of(t, np.array([1.0, 3.0, 10.0, 20.0, 5.0, 5.0]))
    means = window_means(s, 1.0)
    assert means.values.tolist() == [2.0, 15.0, 5.0]
    with pytest.raises(ValueError):
        window_means(s, 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([345.0, 900.0, 1980.0]), min_size=1, max_size=200))
def test_drop_repeats_draws_the_same_steps(values: list[float]) -> None:
    s = _series(values, dt=0.05)
    reduced = drop_repeats(s)
    # the value in force at every original sample time is unchanged
    idx = np.searchsorted(reduced.t_s, s.t_s, side="right") - 1
    assert np.array_equal(reduced.values[idx], s.values)
    assert reduced.t_s[0] == s.t_s[0] and reduced.t_s[-1] == s.t_s[-1]


def test_steps_holds_values_on_a_grid_when_there_are_too_many_changes() -> None:
    values = np.tile([900.0, 1980.0], 5000)
    s = Series.of(np.arange(len(values)) * 0.05, values)
    shown = steps(s, 200)
    assert len(shown) == 200
    assert set(shown.values.tolist()) <= {900.0, 1980.0}
    few = Series.of(np.arange(6.0), np.array([1.0, 1, 2, 2, 2, 3]))
    assert steps(few, 200).values.tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=300), st.integers(min_value=2, max_value=50))
def test_ecdf_is_a_cdf(values: list[float], max_points: int) -> None:
    x, y = ecdf(np.array(values))
    assert len(x) == len(values)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) > 0)
    assert y[-1] == pytest.approx(1.0)
    xs, ys = ecdf(np.array(values), max_points)
    assert len(xs) <= max(max_points, len(values)) and xs[0] == x[0] and xs[-1] == x[-1] and ys[-1] == pytest.approx(1.0)


def test_ecdf_ignores_nan_and_handles_empty() -> None:
    x, y = ecdf(np.array([np.nan, 2.0, 1.0]))
    assert x.tolist() == [1.0, 2.0] and y.tolist() == [0.5, 1.0]
    assert len(ecdf(np.array([]))[0]) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([345.0, 900.0, 1980.0]), min_size=1, max_size=100), st.floats(min_value=0.1, max_value=50.0))
def test_time_at_value_sums_to_the_window(values: list[float], end_s: float) -> None:
    s = _series(values, dt=0.1)
    spent = time_at_value_s(s, end_s, 0.0)
    covered = end_s - 0.0  # the first sample is at 0, so the whole window is covered
    assert sum(spent.values()) == pytest.approx(covered)
    assert set(spent) <= set(values)


def test_time_at_value_holds_the_value_from_before_the_window() -> None:
    s = Series.of(np.array([-5.0, 2.0]), np.array([345.0, 1980.0]))
    assert time_at_value_s(s, 10.0, 0.0) == {345.0: pytest.approx(2.0), 1980.0: pytest.approx(8.0)}
    assert time_at_value_s(s, 0.0, 0.0) == {}
