"""Run summary metrics (pure) and the rich views, tested as strings."""

from __future__ import annotations

from io import StringIO

import pyarrow as pa
import pytest
from rich.console import Console

from kairosbench.replay.metrics import summarize
from kairosbench.replay.progress import LiveStats, LiveView
from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, schema_of


def table(columns, rows: list[dict]) -> pa.Table:
    data = {c.name: [r.get(c.name) for r in rows] for c in columns}
    return pa.Table.from_pydict(data, schema=schema_of(columns, "t"))


def req(status: str = "ok", **kw) -> dict:
    base = dict(session_id="a", status=status, ttft_s=0.1, itl_p50_s=0.01, itl_p99_s=0.05, tpot_s=0.01, e2e_s=1.0, sched_lag_s=0.001, prompt_tokens=100, prompt_tokens_expected=100, output_tokens=10, output_tokens_expected=10)
    base.update(kw)
    return base


def ses(sid: str, tok_s: float, status: str = "completed", requests: int = 3) -> dict:
    return dict(session_id=sid, output_tok_s=tok_s, status=status, requests=requests)


def test_kairos_metrics() -> None:
    sessions = [ses("a", 50), ses("b", 30), ses("c", 10), ses("d", 25, "abandoned"), ses("e", 0, "unfinished", requests=0)]
    requests = [req(), req(prompt_tokens=103), req("http", output_tokens=None, prompt_tokens=None), req("stall", output_tokens=4, prompt_tokens=None)]
    s = summarize(table(REQUEST_COLUMNS, requests), table(SESSION_COLUMNS, sessions), duration_s=60.0, slo_tok_s=20.0)
    assert (s.sessions, s.sessions_completed, s.sessions_abandoned, s.sessions_unfinished) == (5, 3, 1, 1)
    # population: sessions that sent a request (a, b, c, d); d is abandoned so it misses the SLO
    assert s.slo_attainment == pytest.approx(2 / 4)
    assert s.goodput_jobs_per_s == pytest.approx(2 / 60)
    assert s.job_throughput_per_s == pytest.approx(3 / 60)
    assert s.p5_agent_tok_s == pytest.approx(10 + 0.15 * 15)  # numpy linear between 10 and 25
    assert s.errors_by_kind == {"http": 1, "stall": 1}
    assert s.requests == 4 and s.requests_ok == 2
    assert s.prompt_exact_fraction == 0.5 and s.prompt_mismatch_max_tokens == 3
    assert s.output_tokens == 24


def test_empty_run() -> None:
    s = summarize(table(REQUEST_COLUMNS, []), table(SESSION_COLUMNS, []), duration_s=1.0)
    assert s.requests == 0 and s.p5_agent_tok_s is None and s.slo_attainment is None


def render(obj, width: int = 110) -> str:
    buf = StringIO()
    Console(file=buf, width=width, color_system=None).print(obj)
    return buf.getvalue()


def test_summary_table_renders() -> None:
    s = summarize(table(REQUEST_COLUMNS, [req()]), table(SESSION_COLUMNS, [ses("a", 42)]), duration_s=10.0, slo_tok_s=35)
    out = render(s)
    assert "SLO attainment (≥ 35 tok/s)" in out and "100.0 %" in out
    assert "per-agent throughput P5" in out and "42.0" in out


def test_live_view_shows_counters_and_service_fields() -> None:
    stats = LiveStats(sessions_total=16)
    stats.arrived, stats.active, stats.completed, stats.abandoned = 5, 3, 1, 1
    for ttft in (0.010, 0.020, 0.030):
        stats.record_request(True, 100, ttft)
    stats.record_request(False, 0, None)
    stats.extra_fields.append(lambda: {"power": "312 W", "SM clock": "1410 MHz"})
    stats.extra_fields.append(lambda: 1 / 0)  # a broken service field must not break the view
    out = render(LiveView(stats))
    assert "5 of 16 / 3 / 2 (1 abandoned)" in out
    assert "20.0 ms" in out  # median TTFT
    assert "312 W" in out and "1410 MHz" in out and "(field error)" in out
    assert "errors" in out
