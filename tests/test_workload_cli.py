"""`kairosbench workload validate/stats/generate/import/formats/fit` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kairosbench.cli import main
from kairosbench.errors import UsageError, WorkloadError
from kairosbench.workload.cli import workload
from kairosbench.workload.io import load_workload

FIXTURES = Path(__file__).parent / "fixtures" / "workload"
TRACES = Path(__file__).parents[2] / "shared" / "traces"
needs_traces = pytest.mark.skipif(not (TRACES / "raw").is_dir(), reason="../shared/traces not present")


def _run(*args: str) -> object:
    # A wide terminal: rich wraps table titles at 80 columns, and the fixture path's length
    # depends on where the repository is checked out.
    return CliRunner().invoke(workload, list(args), catch_exceptions=True, env={"COLUMNS": "300"})


def test_validate_ok() -> None:
    result = _run("validate", str(FIXTURES / "good.jsonl"))
    assert result.exit_code == 0
    assert "OK" in result.output and "2 sessions, 5 turns" in result.output


def test_validate_lists_problems_and_fails() -> None:
    result = _run("validate", "--max-problems", "2", str(FIXTURES / "many_problems.jsonl"))
    assert isinstance(result.exception, WorkloadError)
    assert "5 problem(s)" in result.output
    assert "line 1" in result.output and "appended_tokens" in result.output
    assert "and 3 more" in result.output


def test_validate_exit_code_through_the_cli_edge(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["workload", "validate", str(FIXTURES / "negative_duration.jsonl")])
    assert info.value.code == 1
    assert "Error:" in capsys.readouterr().err


def test_generate_then_stats_side_by_side(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.jsonl"
    r1 = _run("generate", "--kind", "swe", "--sessions", "30", "--seed", "1", "-o", str(a))
    r2 = _run("generate", "--kind", "de", "--sessions", "20", "--rate", "0.2", "--seed", "2", "--arrival", "constant", "-o", str(b))
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert "30 sessions" in r1.output
    assert len(load_workload(a).sessions) == 30 and len(load_workload(b).sessions) == 20
    result = _run("stats", str(a), str(b))
    assert result.exit_code == 0, result.output
    for label in ("turns / session", "output / turn", "context at last turn", "inter-arrival", "bash", "schema"):
        assert label in result.output
    lines = result.output.splitlines()
    turns_row = next(i for i, line in enumerate(lines) if "turns / session" in line)
    assert " a " in lines[turns_row] and " b " in lines[turns_row + 1]  # one row per workload, adjacent


def test_stats_json_and_by_kind(tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    assert _run("generate", "--kind", "mixed", "--sessions", "40", "--seed", "3", "-o", str(out)).exit_code == 0
    result = _run("stats", "--json", "--by-kind", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["name"] for d in data] == ["m/de", "m/swe"]
    assert sum(d["sessions"] for d in data) == 40


def test_generate_rejects_bad_flags(tmp_path: Path) -> None:
    result = _run("generate", "--kind", "swe", "--rate", "-1", "-o", str(tmp_path / "x.parquet"))
    assert isinstance(result.exception, UsageError) and "--rate" in str(result.exception)
    assert not (tmp_path / "x.parquet").exists()
    assert _run("generate", "--kind", "chat", "-o", str(tmp_path / "x.parquet")).exit_code == 2  # click choice


def test_stats_on_a_bad_file_names_the_place() -> None:
    result = _run("stats", str(FIXTURES / "out_of_order.jsonl"))
    assert isinstance(result.exception, WorkloadError)
    assert "line 3" in str(result.exception)


def test_import_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("import", "--from", "nope", str(FIXTURES / "good.jsonl"), "-o", str(tmp_path / "x.parquet"))
    assert isinstance(result.exception, UsageError)
    assert "--from must be one of" in str(result.exception)


def test_formats_lists_the_importers() -> None:
    result = _run("formats")
    assert result.exit_code == 0
    assert "mooncake" in result.output and "swe-agent" in result.output


@needs_traces
@pytest.mark.traces
@pytest.mark.parametrize("fmt,rel,sessions", [
    ("mini-swe-agent", "raw/mini_swe_agent", 2),
    ("spider2", "raw/spider2_agent_tc/sf_bq024.json", 1),
])
def test_import_writes_a_valid_workload(fmt: str, rel: str, sessions: int, tmp_path: Path) -> None:
    out = tmp_path / "imported.parquet"
    result = _run("import", "--from", fmt, str(TRACES / rel), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "token counts from estimate" in result.output
    wl = load_workload(out)
    assert len(wl.sessions) == sessions
    assert wl.meta["import"]["format"] == fmt
    assert _run("validate", str(out)).exit_code == 0


@needs_traces
@pytest.mark.traces
def test_fit_command_shows_code_and_refit_agree() -> None:
    result = _run("fit", "--traces", str(TRACES))
    assert result.exit_code == 0, result.output
    assert "turns.median" in result.output and "tool_mix.bash" in result.output
