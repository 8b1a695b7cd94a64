"""The workload file format: round trips, metadata, hashes, and reading it without kairosbench."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kairosbench.workload import schema
from kairosbench.workload.io import content_hash, load_workload, read_meta, save_workload, workload_hash
from kairosbench.workload.model import Session, Turn, Workload

FIXTURES = Path(__file__).parent / "fixtures" / "workload"
DOC = Path(__file__).parents[1] / "docs" / "workload-format.md"


def _sample() -> Workload:
    return Workload(
        sessions=[
            Session("a", "swe", 0.0, [
                Turn(100, 10, 1.5, "bash", 100, '[{"role": "user", "content": "hi"}]', "ls -la", [1, -2, 3], "usage"),
                Turn(20, 5, 0.0, None, None, None, None, None, "tokenizer"),
            ], source="openhands:x.jsonl"),
            Session("b", "de", 2.25, [Turn(50, 7, 0.3, "sql", 50, None, None, None, "estimate")], source=""),
        ],
        meta={"name": "sample", "seed": 3, "nested": {"k": [1, 2]}},
    )


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_round_trip_keeps_every_field_and_the_metadata(tmp_path: Path, suffix: str) -> None:
    wl = _sample()
    path = tmp_path / f"w{suffix}"
    save_workload(wl, path)
    back = load_workload(path)
    assert back.sessions == wl.sessions
    assert back.meta == wl.meta
    assert read_meta(path) == wl.meta


def test_parquet_and_jsonl_have_the_same_content_hash(tmp_path: Path) -> None:
    save_workload(_sample(), tmp_path / "w.parquet")
    save_workload(_sample(), tmp_path / "w.jsonl")
    assert content_hash(tmp_path / "w.parquet") == content_hash(tmp_path / "w.jsonl")


def test_same_workload_gives_same_bytes_and_hash(tmp_path: Path) -> None:
    save_workload(_sample(), tmp_path / "1.parquet")
    save_workload(_sample(), tmp_path / "2.parquet")
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()
    assert workload_hash(tmp_path / "1.parquet") == workload_hash(tmp_path / "2.parquet")
    assert re.fullmatch(r"[0-9a-f]{64}", workload_hash(tmp_path / "1.parquet"))
    changed = _sample()
    changed.sessions[0].turns[0].output_tokens += 1
    save_workload(changed, tmp_path / "3.parquet")
    assert workload_hash(tmp_path / "3.parquet") != workload_hash(tmp_path / "1.parquet")


def test_parquet_metadata_holds_version_and_workload_json(tmp_path: Path) -> None:
    save_workload(_sample(), tmp_path / "w.parquet")
    md = pq.read_schema(tmp_path / "w.parquet").metadata
    assert md[schema.META_SCHEMA_VERSION.encode()] == schema.SCHEMA_VERSION.encode()
    assert json.loads(md[schema.META_WORKLOAD.encode()])["name"] == "sample"


def test_pandas_and_duckdb_read_it_without_kairosbench(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "w.parquet"
    save_workload(_sample(), path)
    df = pd.read_parquet(path)
    assert list(df.columns) == [c.name for c in schema.COLUMNS]
    assert df.groupby("session_id").size().to_dict() == {"a": 2, "b": 1}
    assert df.loc[0, "prefix_hashes"].tolist() == [1, -2, 3]
    rows = duckdb.sql(f"SELECT agent_kind, sum(output_tokens) FROM '{path}' GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("de", 7), ("swe", 15)]


def test_a_pandas_written_file_loads(tmp_path: Path) -> None:
    """Users write workloads with pandas: nullable ints become floats, optional columns are left out."""
    df = pd.DataFrame({
        "session_id": ["x", "x", "y"],
        "agent_kind": ["swe", "swe", "chat"],
        "arrival_s": [0, 0, 1.5],
        "turn_index": [0, 1, 0],
        "prompt_tokens": [10.0, None, 4.0],
        "appended_tokens": [10, 3, 4],
        "output_tokens": [2, 2, 1],
        "tool_duration_s": [0.5, 0.0, 0.0],
    })
    df.to_parquet(tmp_path / "p.parquet")
    wl = load_workload(tmp_path / "p.parquet")
    assert [s.session_id for s in wl.sessions] == ["x", "y"]
    assert wl.sessions[0].turns[0].prompt_tokens == 10 and wl.sessions[0].turns[1].prompt_tokens is None
    assert wl.sessions[0].turns[0].token_count_method == schema.DEFAULT_TOKEN_COUNT_METHOD
    assert wl.sessions[0].source == ""


def test_sessions_come_back_sorted_by_arrival_and_may_interleave(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    base = {"agent_kind": "swe", "output_tokens": 1, "tool_duration_s": 0.0}
    rows = [
        {"session_id": "late", "arrival_s": 9.0, "turn_index": 0, "appended_tokens": 5, **base},
        {"session_id": "early", "arrival_s": 1.0, "turn_index": 0, "appended_tokens": 5, **base},
        {"session_id": "late", "arrival_s": 9.0, "turn_index": 1, "appended_tokens": 6, **base},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = load_workload(path)
    assert [s.session_id for s in wl.sessions] == ["early", "late"]
    assert [t.appended_tokens for t in wl.sessions[1].turns] == [5, 6]


def test_good_fixture_loads(tmp_path: Path) -> None:
    wl = load_workload(FIXTURES / "good.jsonl")
    assert wl.meta["name"] == "good"
    assert [len(s.turns) for s in wl.sessions] == [3, 2]
    assert wl.sessions[0].prompt_tokens() == [120, 190, 225]
    assert wl.sessions[1].turns[0].token_count_method == "estimate"  # key left out: the default


def test_schema_is_the_arrow_schema_of_written_files(tmp_path: Path) -> None:
    save_workload(_sample(), tmp_path / "w.parquet")
    written = pq.read_schema(tmp_path / "w.parquet").remove_metadata()
    assert written.equals(schema.ARROW_SCHEMA.remove_metadata())
    assert schema.ARROW_SCHEMA.field("prefix_hashes").type == pa.list_(pa.int64())


def test_every_column_is_documented_with_its_unit() -> None:
    text = DOC.read_text()
    for col in schema.COLUMNS:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{col.name}`")), None)
        assert row is not None, f"docs/workload-format.md does not document column {col.name}"
        assert f"| {col.unit} |" in row, f"unit of {col.name} missing from its docs row"
