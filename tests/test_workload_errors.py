"""Every way a workload file can be wrong gives a WorkloadError naming file, line/row and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kairosbench.errors import WorkloadError
from kairosbench.workload.io import load_workload
from kairosbench.workload.validate import validate_file

FIXTURES = Path(__file__).parent / "fixtures" / "workload"

# fixture -> (line, field, words the message must contain)
JSONL_CASES: dict[str, tuple[int | None, str | None, str]] = {
    "bad_json_line.jsonl": (2, None, "not valid JSON"),
    "not_object.jsonl": (2, None, "expected a JSON object"),
    "missing_field.jsonl": (2, "output_tokens", "missing"),
    "missing_column.jsonl": (None, "tool_duration_s", "column is missing"),
    "wrong_type.jsonl": (2, "appended_tokens", "is not an integer"),
    "fractional_tokens.jsonl": (1, "appended_tokens", "is not an integer"),
    "negative_duration.jsonl": (2, "tool_duration_s", "negative (-3.0)"),
    "negative_tokens.jsonl": (2, "output_tokens", "negative (-25)"),
    "out_of_order.jsonl": (3, "turn_index", "out of order: turn 1 of session 's1' comes after turn 2"),
    "duplicate_turn.jsonl": (3, "turn_index", "duplicated: session 's1' already has turn 1 (line 2)"),
    "missing_turn.jsonl": (1, "turn_index", "has no turn 1"),
    "shrinking_context.jsonl": (3, "prompt_tokens", "context shrinks: 1200 tokens after 5100"),
    "inconsistent_session.jsonl": (2, "arrival_s", "differs from 0.0 on the first row of session 's1'"),
    "unknown_method.jsonl": (1, "token_count_method", "'guess' is not one of"),
    "bad_text.jsonl": (1, "text", "is not JSON"),
    "future_version.jsonl": (1, "kairosbench.schema_version", "schema version '99' is not supported"),
    "null_required.jsonl": (1, "tool_duration_s", "is null"),
    "empty.jsonl": (None, None, "holds no turns"),
}


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_load_fails_fast_naming_the_place(name: str) -> None:
    line, field, words = JSONL_CASES[name]
    path = FIXTURES / name
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(str(path))
    if line is not None:
        assert f"line {line}" in str(err)
    if field is not None:
        assert f"field '{field}'" in str(err)


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_validate_reports_the_same_problem(name: str) -> None:
    line, field, words = JSONL_CASES[name]
    report = validate_file(FIXTURES / name)
    assert not report.ok
    assert any(e.line == line and e.field == field and words in e.reason for e in report.problems), report.problems


@pytest.mark.parametrize("name,words", [
    ("not_parquet.parquet", "not a Parquet file"),
    ("truncated.parquet", "cannot read as Parquet"),
])
def test_files_that_are_not_parquet(name: str, words: str) -> None:
    with pytest.raises(WorkloadError, match=words) as info:
        load_workload(FIXTURES / name)
    assert info.value.path == str(FIXTURES / name)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        load_workload(tmp_path / "nope.parquet")
    with pytest.raises(WorkloadError, match="is a directory"):
        load_workload(tmp_path)


def test_validate_collects_every_problem_up_to_the_limit() -> None:
    report = validate_file(FIXTURES / "many_problems.jsonl", max_problems=3)
    assert report.problem_count == 5  # four negative counts and one bad line
    assert len(report.problems) == 3
    assert [e.line for e in report.problems] == [1, 2, 3]  # listed in file order


def test_validate_ok_on_the_good_fixture() -> None:
    report = validate_file(FIXTURES / "good.jsonl")
    assert report.ok and report.n_sessions == 2 and report.n_turns == 5


# ----------------------------------------------------------------------------- Parquet-specific


def _good_columns() -> dict[str, pa.Array]:
    return {
        "session_id": pa.array(["s1", "s1", "s2"]),
        "agent_kind": pa.array(["swe", "swe", "de"]),
        "arrival_s": pa.array([0.0, 0.0, 3.0]),
        "turn_index": pa.array([0, 1, 0], pa.int32()),
        "prompt_tokens": pa.array([100, 150, None], pa.int64()),
        "appended_tokens": pa.array([100, 30, 40], pa.int64()),
        "output_tokens": pa.array([20, 10, 5], pa.int64()),
        "tool_duration_s": pa.array([1.0, 0.0, 0.0]),
    }


def _write(tmp_path: Path, **changes: pa.Array | None) -> Path:
    cols = _good_columns()
    for k, v in changes.items():
        if v is None:
            cols.pop(k)
        else:
            cols[k] = v
    path = tmp_path / "w.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def test_parquet_good_columns_load(tmp_path: Path) -> None:
    wl = load_workload(_write(tmp_path))
    assert [len(s.turns) for s in wl.sessions] == [2, 1]


@pytest.mark.parametrize("changes,row,field,words", [
    ({"output_tokens": None}, None, "output_tokens", "column is missing"),
    ({"appended_tokens": pa.array(["1", "2", "3"])}, None, "appended_tokens", "has type string, expected an integer"),
    ({"session_id": pa.array([1, 1, 2])}, None, "session_id", "expected a string"),
    ({"tool_duration_s": pa.array([1.0, float("nan"), 0.0])}, 1, "tool_duration_s", "must be a finite number"),
    ({"tool_duration_s": pa.array([1.0, -0.5, 0.0])}, 1, "tool_duration_s", "is negative"),
    ({"prompt_tokens": pa.array([100.0, 150.5, None])}, 1, "prompt_tokens", "whole number"),
    ({"prompt_tokens": pa.array([100, 90, None], pa.int64())}, 1, "prompt_tokens", "context shrinks"),
    ({"agent_kind": pa.array(["swe", None, "de"])}, 1, "agent_kind", "is null"),
    ({"turn_index": pa.array([1, 0, 0], pa.int32())}, 1, "turn_index", "out of order"),
    ({"session_id": pa.array(["s1", "", "s2"])}, 1, "session_id", "is empty"),
])
def test_parquet_errors_name_row_and_field(tmp_path: Path, changes: dict, row: int | None, field: str, words: str) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    err = info.value
    assert (err.row, err.field) == (row, field), str(err)
    assert words in str(err)
    assert err.line is None


def test_all_null_optional_column_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, tool_name=pa.nulls(3), prompt_tokens=pa.nulls(3))
    wl = load_workload(path)
    assert all(t.tool_name is None and t.prompt_tokens is None for s in wl.sessions for t in s.turns)


def test_large_parquet_reports_the_exact_row(tmp_path: Path) -> None:
    n = 50_000
    cols = {
        "session_id": pa.array(np.repeat(np.arange(n // 10).astype(str), 10).tolist()),
        "agent_kind": pa.array(["swe"] * n),
        "arrival_s": pa.array(np.repeat(np.arange(n // 10, dtype=float), 10)),
        "turn_index": pa.array(np.tile(np.arange(10), n // 10).astype(np.int32)),
        "appended_tokens": pa.array(np.ones(n, dtype=np.int64)),
        "output_tokens": pa.array(np.ones(n, dtype=np.int64)),
        "tool_duration_s": pa.array(np.where(np.arange(n) == 43_210, -1.0, 0.5)),
    }
    pq.write_table(pa.table(cols), tmp_path / "big.parquet")
    with pytest.raises(WorkloadError) as info:
        load_workload(tmp_path / "big.parquet")
    assert info.value.row == 43_210 and info.value.field == "tool_duration_s"
