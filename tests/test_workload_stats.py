"""Workload statistics: hand-computed values, rendering to text, and the public API."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console

import kairosbench.workload as wl_pkg
from kairosbench.workload.model import Session, Turn, Workload
from kairosbench.workload.stats import Dist, render_stats, workload_stats


def _wl() -> Workload:
    return Workload([
        Session("a", "swe", 0.0, [Turn(100, 10, 2.0, "bash"), Turn(20, 5, 1.0, "edit"), Turn(30, 5, 0.5, "submit")]),
        Session("b", "de", 10.0, [Turn(200, 40, 3.0, "sql", prompt_tokens=210, token_count_method="usage")]),
        Session("c", "swe", 30.0, [Turn(50, 10, 4.0, "bash"), Turn(6, 1, 0.0, None)]),
    ], meta={"name": "hand"})


def test_hand_computed_values() -> None:
    st = workload_stats(_wl())
    assert (st.name, st.sessions, st.turns) == ("hand", 3, 6)
    assert st.agent_kinds == {"de": 1, "swe": 2}
    assert st.token_count_methods == {"generated": 5, "usage": 1}
    assert st.turns_per_session == Dist.of([3, 1, 2])
    assert st.turns_per_session.mean == 2.0 and st.turns_per_session.max == 3
    assert st.first_turn_appended_tokens.p50 == 100
    assert st.appended_tokens.n == 3 and st.appended_tokens.mean == pytest.approx((20 + 30 + 6) / 3)
    # prompts: a: 100, 130, 165; b: 210 (recorded); c: 50, 66
    assert st.prompt_tokens.max == 210 and st.prompt_tokens.n == 6
    assert sorted([st.context_last_turn_tokens.min, st.context_last_turn_tokens.max]) == [67, 250]
    # the last turn's tool never delays anything: a: 2+1, b: 0, c: 4
    assert st.tool_time_per_session_s.max == 4.0 and st.tool_time_per_session_s.min == 0.0
    assert st.tool_duration_s["bash"].n == 2 and st.tool_duration_s["(none)"].n == 1
    assert st.inter_arrival_s.mean == 15.0
    assert st.arrival_rate_per_s == pytest.approx(2 / 30)


def test_by_agent_kind() -> None:
    st = workload_stats(_wl(), agent_kind="swe")
    assert st.sessions == 2 and st.agent_kinds == {"swe": 2}


def test_empty_distributions_render_as_dashes() -> None:
    st = workload_stats(Workload([Session("x", "swe", 0.0, [Turn(5, 1)])]))
    assert st.inter_arrival_s.n == 0
    out = StringIO()
    render_stats([st], Console(file=out, width=140, color_system=None))
    assert "inter-arrival" in out.getvalue() and " - " in out.getvalue()


def test_render_side_by_side() -> None:
    a = workload_stats(_wl(), "first")
    b = workload_stats(_wl(), "second", agent_kind="de")
    out = StringIO()
    render_stats([a, b], Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    for title in ("Workload", "Distributions", "Tool duration by tool"):
        assert title in text
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if "turns / session" in line)
    assert "first" in lines[i] and "second" in lines[i + 1]
    assert "sql" in text and "tokens" in text


def test_public_api_is_what_all_says() -> None:
    for name in wl_pkg.__all__:
        assert getattr(wl_pkg, name) is not None
    assert {"load_workload", "save_workload", "workload_hash", "validate_file", "generate", "workload_stats"} <= set(wl_pkg.__all__)
    with pytest.raises(AttributeError):
        getattr(wl_pkg, "no_such_name")
