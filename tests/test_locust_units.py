"""The Locust integration's pure parts: options, session plan, Agents tally, records, launcher.

None of these may pull in gevent or Locust (the test process must never be monkey-patched);
the first test checks that in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.errors import UsageError
from kairosbench.locust.cli import LOCUSTFILE, locust_command, wants_emulator
from kairosbench.locust.plan import SessionPlan
from kairosbench.locust.records import read_run, session_record, turn_record
from kairosbench.locust.settings import OPTIONS, AgentSettings, add_arguments, run_dir_for, settings_from, web_field_names
from kairosbench.locust.tally import TABLE_COLUMNS, AgentTally
from kairosbench.replay.client import StreamOutcome
from kairosbench.replay.flow import SendTurn
from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, PartWriter
from kairosbench.replay.sse import SSEParser
from kairosbench.workload.model import Session, Turn

PURE = ["kairosbench.locust", "kairosbench.locust.settings", "kairosbench.locust.plan", "kairosbench.locust.tally", "kairosbench.locust.records", "kairosbench.locust.cli"]


def test_pure_modules_import_neither_gevent_nor_locust() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in PURE) + "bad = [m for m in ('gevent', 'locust', 'geventhttpclient') if m in sys.modules]\nprint(bad)\nassert not bad, bad\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- options ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_defaults_parse_to_the_documented_settings() -> None:
    s = settings_from(parser().parse_args([]))
    assert s == AgentSettings(workload=None, model=None, out=None, max_sessions=None, first_token_timeout_s=None)
    assert s.time_scale == 1.0 and s.slo_tok_s == 20.0 and s.eos_control == "auto"


def test_flags_and_the_max_tokens_control_alias() -> None:
    ns = parser().parse_args(["--workload", "w.parquet", "--time-scale", "0.1", "--slo-tok-s", "12", "--max-tokens-control", "min_tokens", "--max-sessions", "5", "--idle-timeout-s", "0"])
    s = settings_from(ns)
    assert (s.workload, s.time_scale, s.slo_tok_s, s.eos_control, s.max_sessions, s.idle_timeout_s) == ("w.parquet", 0.1, 12.0, "min_tokens", 5, None)


def test_web_form_strings_are_parsed_and_empty_means_default() -> None:
    s = settings_from({"time_scale": "0.25", "slo_tok_s": "30", "max_sessions": "", "model": " ", "eos_control": "none", "workload": ""})
    assert (s.time_scale, s.slo_tok_s, s.max_sessions, s.model, s.eos_control, s.workload) == (0.25, 30.0, None, None, "none", None)


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"time_scale": "abc"}, "--time-scale"),
        ({"time_scale": "0"}, "--time-scale"),
        ({"slo_tok_s": "-1"}, "--slo-tok-s"),
        ({"slo_tok_s": "inf"}, "--slo-tok-s"),
        ({"max_sessions": "2.5"}, "--max-sessions"),
        ({"max_sessions": "-3"}, "--max-sessions"),
        ({"eos_control": "always"}, "--eos-control"),
        ({"max_retries": "-1"}, "--max-retries"),
    ],
)
def test_bad_values_name_the_flag(values: dict[str, str], flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        settings_from(values)


@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), st.integers(min_value=0, max_value=10**6))
@settings(max_examples=50, deadline=None)
def test_any_valid_number_round_trips_through_the_form(scale: float, n: int) -> None:
    s = settings_from({"time_scale": repr(scale), "max_sessions": str(n)})
    assert s.time_scale == scale
    assert s.max_sessions == (n or None)


def test_every_option_has_a_settings_field_and_an_env_var() -> None:
    names = {f for f in AgentSettings.__dataclass_fields__}
    for spec in OPTIONS:
        assert spec.dest in names
        assert spec.env_var == "KAIROSBENCH_LOCUST_" + spec.dest.upper()
    assert {"workload", "time_scale", "slo_tok_s", "eos_control"} <= set(web_field_names())
    assert "api_key_env" not in web_field_names()


def test_run_dirs_for_tests_and_workers(tmp_path: Path) -> None:
    s = AgentSettings(out=str(tmp_path / "r"))
    assert run_dir_for(s, stamp="X", test_number=1, worker_index=None) == tmp_path / "r"
    assert run_dir_for(s, stamp="X", test_number=3, worker_index=2) == tmp_path / "r-3" / "worker-2"
    assert run_dir_for(AgentSettings(runs_dir="runs"), stamp="20260101-000000", test_number=1, worker_index=None) == Path("runs/20260101-000000-locust")


# -- the plan ----------------------------------------------------------------------------------
def sessions(n: int) -> list[Session]:
    return [Session(f"s{i}", "swe" if i % 2 else "de", float(i), [Turn(10, 5)]) for i in range(n)]


def test_plan_strides_and_cycles_with_round_suffixes() -> None:
    plan = SessionPlan(sessions(3), process_index=1, process_count=2)
    got = [plan.next() for _ in range(4)]
    assert [p.index for p in got if p] == [1, 3, 5, 7]
    assert [p.session_id for p in got if p] == ["s1", "s0~r1", "s2~r1", "s1~r2"]


@given(n=st.integers(1, 9), workers=st.integers(1, 6), cap=st.integers(1, 40))
@settings(max_examples=150, deadline=None)
def test_processes_partition_the_capped_sequence_with_unique_ids(n: int, workers: int, cap: int) -> None:
    plans = [SessionPlan(sessions(n), process_index=p, process_count=workers, max_sessions=cap) for p in range(workers)]
    handed = []
    for plan in plans:
        while (item := plan.next()) is not None:
            handed.append(item)
        assert plan.exhausted and plan.handed_out == plan.share()
    assert sorted(p.index for p in handed) == list(range(cap))
    assert len({p.session_id for p in handed}) == cap
    assert all(p.session.session_id == f"s{p.index % n}" for p in handed)


def test_a_late_worker_gets_distinct_ids_and_no_capped_share() -> None:
    late = SessionPlan(sessions(2), process_index=3, process_count=2)
    first = late.next()
    assert first is not None and first.session_id == "s1~w3"
    capped = SessionPlan(sessions(2), process_index=3, process_count=2, max_sessions=10)
    assert capped.next() is None and capped.share() == 0


# -- the Agents tally ------------------------------------------------------------------------
def test_tally_rows_follow_the_summary_definitions() -> None:
    t = AgentTally()
    for kind, status, tput in (("swe", "completed", 30.0), ("swe", "abandoned", 50.0), ("de", "completed", 10.0), ("de", "unfinished", 25.0)):
        t.session_started(kind)
        t.turn(kind, status="ok", output_tokens=7, usage_prompt_tokens=100, expected_prompt_tokens=100)
        t.session_finished(kind, status=status, requests=1, output_tok_s=tput, slo_tok_s=20.0)
    t.session_started("de")
    t.turn("de", status="http", output_tokens=0, usage_prompt_tokens=None, expected_prompt_tokens=9)
    t.turn("de", status="cancelled", output_tokens=2, usage_prompt_tokens=None, expected_prompt_tokens=9)  # cut by the stop: not a failure
    rows = {r["agent_kind"]: r for r in t.rows()}
    assert list(rows) == ["de", "swe", "All"]
    assert rows["swe"]["slo_attainment_pct"] == 50.0  # the abandoned agent does not meet it
    assert rows["de"]["slo_attainment_pct"] == 50.0 and rows["de"]["running"] == 1 and rows["de"]["turns_failed"] == 1
    assert rows["de"]["unfinished"] == 1 and rows["de"]["output_tokens"] == 16
    assert rows["All"]["agents"] == 5 and rows["All"]["completed"] == 2 and rows["All"]["prompt_exact_pct"] == 100.0
    assert rows["All"]["p50_agent_tok_s"] == 27.5
    assert set(rows["All"]) == {c.key for c in TABLE_COLUMNS}


def test_worker_drains_merge_into_the_same_totals() -> None:
    whole, master = AgentTally(), AgentTally()
    workers = [AgentTally(), AgentTally()]
    for i in range(10):
        for t in (whole, workers[i % 2]):
            t.session_started("swe")
            t.turn("swe", status="ok", output_tokens=i, usage_prompt_tokens=5, expected_prompt_tokens=5 + i % 3)
            t.session_finished("swe", status="completed", requests=1, output_tok_s=float(i * 5), slo_tok_s=20.0)
        if i % 3 == 0:  # reports go out at arbitrary moments
            for w in workers:
                master.merge(w.drain())
    for w in workers:
        master.merge(w.drain())
    assert master.rows() == whole.rows()
    assert workers[0].rows()[-1]["agents"] == 0


# -- records -----------------------------------------------------------------------------------
def test_turn_and_session_rows_fit_the_run_schema(tmp_path: Path) -> None:
    parser = SSEParser(count_words=True)
    t0 = 1_000_000_000
    parser.feed(b'data: {"choices":[{"delta":{"content":"a b"}}]}\n\n', t0 + 50_000_000)
    parser.feed(b'data: {"choices":[{"delta":{"content":" c"},"finish_reason":"length"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":3}}\n\ndata: [DONE]\n\n', t0 + 90_000_000)
    o = StreamOutcome(status="ok", t_start_ns=t0, t_end_ns=t0 + 100_000_000, parser=parser, http_status=200)
    step = SendTurn(turn_index=1, appended_tokens=9, expected_prompt_tokens=40, max_tokens=3, attempt=0, planned_at_s=0.0)
    rec = turn_record(step, o, session_id="a~r1", agent_kind="swe", endpoint_url="http://x", prompt_tokens_sent=40, t_planned_ns=t0 - 2_000_000, eos_control="ignore_eos", now_ns=t0)
    assert rec.ok and rec.output_tokens == 3 and rec.ttft_s == pytest.approx(0.05) and rec.e2e_s == pytest.approx(0.1)
    assert rec.usage_prompt_tokens == 40 and rec.row[9] == pytest.approx(0.002)  # scheduling lag
    cancelled = turn_record(step, StreamOutcome(), session_id="a", agent_kind="swe", endpoint_url="http://x", prompt_tokens_sent=40, t_planned_ns=t0, eos_control="none", now_ns=t0 + 5)
    assert cancelled.status == "cancelled" and cancelled.e2e_ns == 0
    srec = session_record(
        session_id="a~r1", workload_session_id="a", agent_kind="swe", endpoint_url="http://x", t_arrival_ns=t0, t_start_ns=t0, t_finish_ns=t0 + 1,
        turns_done=2, turns_total=2, requests=2, output_tokens=30, llm_time_ns=1_500_000_000, status="completed", error=None,
    )  # fmt: skip
    assert srec.output_tok_s == pytest.approx(20.0)
    run = tmp_path / "run" / "worker-0"
    for name, cols, row in (("requests", REQUEST_COLUMNS, rec.row), ("sessions", SESSION_COLUMNS, srec.row)):
        w = PartWriter(run / f"{name}.parquet", cols)
        w.append(row)
        w.finalize()
    requests, sess = read_run(tmp_path / "run")
    assert requests.num_rows == 1 and sess.num_rows == 1
    assert requests.column("ttft_s")[0].as_py() == pytest.approx(0.05)
    assert isinstance(requests, pa.Table)


def test_read_run_names_a_directory_without_records(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="worker-"):
        read_run(tmp_path)


# -- the launcher ------------------------------------------------------------------------------
def test_launcher_adds_only_missing_defaults() -> None:
    cmd = locust_command(["--headless", "-u", "2"], "http://127.0.0.1:9")
    assert cmd[1:3] == ["-m", "locust"]
    assert ["-f", str(LOCUSTFILE)] == cmd[3:5] and "--host" in cmd and cmd[-3:] == ["--headless", "-u", "2"]
    assert cmd[cmd.index("--web-host") + 1] == "127.0.0.1" and "--master-bind-host" not in cmd
    mine = locust_command(["-f", "my.py", "--web-host=0.0.0.0", "--master"], None)
    assert str(LOCUSTFILE) not in mine and mine.count("--web-host=0.0.0.0") == 1 and "--web-host" not in mine
    assert mine[mine.index("--master-bind-host") + 1] == "127.0.0.1" and "--host" not in mine


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, True),
        (["--headless"], {}, True),
        (["-H", "http://h:1"], {}, False),
        (["-Hhttp://h:1"], {}, False),
        (["--host=http://h:1"], {}, False),
        (["--worker"], {}, False),
        ([], {"LOCUST_HOST": "http://h:1"}, False),
        (["--master"], {}, True),
    ],
)
def test_when_the_launcher_starts_an_emulator(args: list[str], env: dict[str, str], expected: bool) -> None:
    assert wants_emulator(args, env) is expected
