"""The Prometheus text parser: real exposition quirks, malformed lines, and a round trip."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.profiler.promtext import PromSample, format_sample, parse_line, parse_prometheus_text

FIXTURES = Path(__file__).parent / "fixtures" / "profiler"


def test_parses_labels_values_and_timestamps() -> None:
    text = (
        "# HELP x help text\n# TYPE x gauge\n"
        'x{a="1",b="two words"} 3.5\n'
        "y 7 1700000000000\n"
        'z{q="a\\"b\\\\c\\nd"} +Inf\n'
        "w NaN\n"
        "# EOF\n"
    )
    result = parse_prometheus_text(text)
    assert result.bad_lines == []
    x, y, z, w = result.samples
    assert (x.name, x.labels, x.value) == ("x", {"a": "1", "b": "two words"}, 3.5)
    assert (y.value, y.timestamp_ms) == (7.0, 1700000000000)
    assert z.labels == {"q": 'a"b\\c\nd'} and z.value == math.inf
    assert math.isnan(w.value)


def test_dcgm_labels_with_spaces_after_commas() -> None:
    sample = parse_line('DCGM_FI_DEV_SM_CLOCK{gpu="0", UUID="GPU-604ac76c", device="nvidia0"} 139')
    assert sample is not None and sample.labels == {"gpu": "0", "UUID": "GPU-604ac76c", "device": "nvidia0"}


def test_malformed_lines_are_reported_with_their_numbers_not_raised() -> None:
    text = 'ok 1\ngarbage line here\nbad{gpu="0" 5\nnovalue{a="b"}\nok2{a="b"} 2\n'
    result = parse_prometheus_text(text)
    assert [s.name for s in result.samples] == ["ok", "ok2"]
    assert [n for n, _ in result.bad_lines] == [2, 3, 4]


def test_fixture_files_parse_cleanly() -> None:
    for name in ("dcgm_scrape_1.txt", "vllm_metrics.txt", "vllm_legacy_metrics.txt", "sglang_metrics.txt"):
        result = parse_prometheus_text((FIXTURES / name).read_text())
        assert result.bad_lines == [], name
        assert result.samples, name


_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)
_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
_values = st.floats(allow_nan=False, allow_infinity=True, width=64)


@settings(max_examples=200, deadline=None)
@given(_names, st.dictionaries(_label_names, st.text(max_size=15), max_size=4), _values, st.none() | st.integers(0, 2**53))
def test_format_then_parse_round_trips(name: str, labels: dict[str, str], value: float, ts: int | None) -> None:
    sample = PromSample(name, labels, value, ts)
    parsed = parse_line(format_sample(sample))
    assert parsed == sample
