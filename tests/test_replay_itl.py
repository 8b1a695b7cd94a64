"""Per-token ITL attribution: multi-token chunks are split, not counted as one token."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.replay.itl import itl_summary, weighted_percentile

MS = 1_000_000


def test_one_token_per_chunk_is_plain_gaps() -> None:
    s = itl_summary([0, 10 * MS, 20 * MS, 50 * MS], [1, 1, 1, 1])
    assert s is not None
    assert s.tpot_s == pytest.approx(50e-3 / 3)
    assert s.itl_p50_s == pytest.approx(10e-3)
    assert s.itl_p99_s == pytest.approx(30e-3)


def test_multi_token_chunk_gap_is_spread_over_its_tokens() -> None:
    # speculative decoding: every 40 ms a chunk of 4 tokens -> per-token gap 10 ms
    times = [0, 40 * MS, 80 * MS, 120 * MS]
    s = itl_summary(times, [4, 4, 4, 4])
    assert s is not None
    # 15 gaps: 3 companions of the first chunk (0 s) + 12 of 10 ms
    assert s.tpot_s == pytest.approx(120e-3 / 15)
    assert s.itl_p50_s == pytest.approx(10e-3)
    assert s.itl_p99_s == pytest.approx(10e-3)
    # a per-chunk tool would report 40 ms: four times too slow
    naive = itl_summary(times, [1, 1, 1, 1])
    assert naive is not None and naive.itl_p50_s == pytest.approx(40e-3)


def test_usage_reconciles_assumed_counts() -> None:
    # the stream was counted 1 per chunk, but the server says 8 tokens in 4 chunks
    s = itl_summary([0, 20 * MS, 40 * MS, 60 * MS], [1, 1, 1, 1], output_tokens=8)
    assert s is not None
    assert s.itl_p50_s == pytest.approx(10e-3)
    assert s.tpot_s == pytest.approx(60e-3 / 7)


def test_too_few_tokens() -> None:
    assert itl_summary([], []) is None
    assert itl_summary([5], [1]) is None


def test_weighted_percentile_nearest_rank() -> None:
    assert weighted_percentile([(1.0, 1), (2.0, 1), (3.0, 1), (4.0, 1)], 0.5) == 2.0
    assert weighted_percentile([(1.0, 3), (9.0, 1)], 0.99) == 9.0
    assert weighted_percentile([(1.0, 3), (9.0, 1)], 0.75) == 1.0


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=100 * MS), min_size=1, max_size=40),
    ks=st.lists(st.integers(min_value=1, max_value=5), min_size=41, max_size=41),
)
def test_mean_equals_tpot_and_gaps_sum_to_the_stream(gaps: list[int], ks: list[int]) -> None:
    times = [0]
    for g in gaps:
        times.append(times[-1] + g)
    tokens = ks[: len(times)]
    s = itl_summary(times, tokens)
    assert s is not None
    total = sum(tokens)
    assert s.itl_mean_s == pytest.approx((times[-1] - times[0]) / 1e9 / (total - 1))
    assert min(g / 1e9 / k for g, k in zip(gaps, tokens[1:])) - 1e-12 <= s.itl_p99_s or tokens[0] > 1
    assert 0 <= s.itl_p50_s <= s.itl_p99_s
