"""Sample buffers: each hardware sample kept once however drains overlap; the sample clock found."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.profiler.buffer_clock import BufferClock, SampleDeduper


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=200, unique=True),
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 60)), min_size=1, max_size=30),
)
def test_overlapping_drains_yield_every_sample_once_in_order(timestamps: list[int], windows: list[tuple[int, int]]) -> None:
    ts = sorted(timestamps)
    dedup = SampleDeduper()
    out: list[int] = []
    end = 0
    for start, length in windows:
        # Each drain returns a window of the ring that may overlap what was returned before.
        end = max(end, min(len(ts), start + length))
        lo = max(0, min(start, end - length))
        window = [(t, float(t)) for t in ts[lo:end]]
        out.extend(t for t, _ in dedup.accept(window + window[:3]))  # plus repeats within one drain
    assert out == sorted(set(out))
    assert set(out) <= set(ts)


def test_gaps_inside_a_drain_and_between_drains_are_counted_apart() -> None:
    dedup = SampleDeduper()
    first = [(i * 20_000, 1.0) for i in range(10)]  # 0..180 ms
    skipped = [(200_000, 1.0), (220_000, 1.0), (280_000, 1.0), (300_000, 1.0)]  # the hardware skipped 240, 260
    dedup.accept(first)
    dedup.accept(skipped)
    assert dedup.gaps_within_drain == 1 and dedup.missing_within_drain == 2
    assert dedup.gaps_across_drains == 0
    dedup.accept([(400_000, 1.0), (420_000, 1.0)])  # 320..380 ms were lost between drains
    assert dedup.gaps_across_drains == 1 and dedup.missing_across_drains == 4


class Clocks:
    def __init__(self) -> None:
        self.realtime = 1_700_000_000_000_000_000
        self.mono = 5_000_000_000_000

    def advance_ms(self, ms: int) -> None:
        self.realtime += ms * 1_000_000
        self.mono += ms * 1_000_000


def test_detects_the_clock_the_samples_are_on_and_maps_them() -> None:
    c = Clocks()
    clock = BufferClock({"CLOCK_REALTIME": lambda: c.realtime, "CLOCK_MONOTONIC": lambda: c.mono}, now_ns=lambda: c.realtime + 7)
    newest_us = (c.mono - 15_000_000) // 1000  # 15 ms old, on the monotonic clock
    assert clock.detect(newest_us) == "CLOCK_MONOTONIC"
    c.advance_ms(500)
    clock.begin_drain()
    assert clock.to_run_ns(newest_us) == c.realtime + 7 - 515_000_000


def test_unknown_clock_aligns_the_newest_sample_with_the_first_drain() -> None:
    c = Clocks()
    clock = BufferClock({"CLOCK_REALTIME": lambda: c.realtime}, now_ns=lambda: c.realtime)
    assert clock.detect(123_456).startswith("unknown")
    assert clock.to_run_ns(123_456) == c.realtime
    assert clock.to_run_ns(123_476) == c.realtime + 20_000
