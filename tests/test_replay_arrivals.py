"""Arrival processes are pure generators: list them, no clock involved."""

from __future__ import annotations

import itertools
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.replay import arrivals
from kairosbench.workload.model import Session, Turn


def sessions(arrival_s: list[float]) -> list[Session]:
    return [Session(f"s{i}", "swe", a, [Turn(10, 5)]) for i, a in enumerate(arrival_s)]


def test_recorded_shifts_to_zero_and_scales() -> None:
    out = list(arrivals.recorded(sessions([100.0, 103.0, 108.0]), time_scale=0.5))
    assert [a.at_s for a in out] == [0.0, 1.5, 4.0]
    assert [a.session_id for a in out] == ["s0", "s1", "s2"]


def test_recorded_sorts_by_arrival() -> None:
    out = list(arrivals.recorded(sessions([5.0, 1.0, 3.0])))
    assert [a.session_id for a in out] == ["s1", "s2", "s0"]


def test_poisson_mean_gap_and_determinism() -> None:
    ss = sessions([0.0] * 10)
    a = list(itertools.islice(arrivals.poisson(ss, rate_per_s=4.0, seed=7, cycle=True), 4000))
    b = list(itertools.islice(arrivals.poisson(ss, rate_per_s=4.0, seed=7, cycle=True), 4000))
    assert [x.at_s for x in a] == [x.at_s for x in b]
    gaps = [y.at_s - x.at_s for x, y in zip(a, a[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.08)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)  # exponential: sd = mean


def test_cycling_gives_fresh_ids() -> None:
    ids = [a.session_id for a in itertools.islice(arrivals.closed_loop(sessions([0, 1]), cycle=True), 5)]
    assert ids == ["s0", "s1", "s0~r1", "s1~r1", "s0~r2"]
    assert [a.at_s for a in arrivals.closed_loop(sessions([0, 1]))] == [None, None]


def test_no_cycle_stops_after_one_pass() -> None:
    assert len(list(arrivals.poisson(sessions([0, 1, 2]), rate_per_s=1.0))) == 3


def test_bad_rate() -> None:
    with pytest.raises(ValueError):
        next(arrivals.poisson(sessions([0]), rate_per_s=0))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=30), st.floats(min_value=0.01, max_value=10))
def test_recorded_is_monotone_and_starts_at_zero(times: list[float], scale: float) -> None:
    out = [a.at_s for a in arrivals.recorded(sessions(times), time_scale=scale)]
    assert out[0] == 0.0
    assert all(x <= y for x, y in zip(out, out[1:]))
