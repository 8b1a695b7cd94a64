"""Incremental Parquet: complete part files while running, one file at the end, readable after a crash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, PartWriter, compact_parts, read_table


def row(i: int) -> tuple:
    values = {c.name: None for c in SESSION_COLUMNS}
    values.update(session_id=f"s{i}", workload_session_id=f"s{i}", agent_kind="swe", endpoint="http://x", t_arrival_ns=i, turns_done=1, turns_total=2, requests=1, output_tokens=10, llm_time_s=0.5, output_tok_s=20.0, status="completed")
    return tuple(values[c.name] for c in SESSION_COLUMNS)


def test_parts_then_compaction(tmp_path: Path) -> None:
    w = PartWriter(tmp_path / "sessions.parquet", SESSION_COLUMNS, flush_rows=3, flush_s=3600)
    for i in range(7):
        w.append(row(i))
        if w.due():
            w.flush()
    parts = sorted((tmp_path / "sessions.parts").glob("*.parquet"))
    assert len(parts) == 2  # 3 + 3 rows flushed, 1 still buffered
    assert pd.read_parquet(tmp_path / "sessions.parts").shape[0] == 6  # readable as a dataset
    assert read_table(tmp_path, "sessions").num_rows == 6
    w.finalize()
    assert not (tmp_path / "sessions.parts").exists()
    table = pq.read_table(tmp_path / "sessions.parquet")
    assert table.column("session_id").to_pylist() == [f"s{i}" for i in range(7)]
    meta = table.schema.metadata
    assert meta[b"kairosbench.table"] == b"sessions"
    assert b"tokens/s" in meta[b"kairosbench.units"]


def test_empty_table_still_written_with_schema(tmp_path: Path) -> None:
    w = PartWriter(tmp_path / "requests.parquet", REQUEST_COLUMNS)
    w.finalize()
    t = pq.read_table(tmp_path / "requests.parquet")
    assert t.num_rows == 0 and t.schema.names == [c.name for c in REQUEST_COLUMNS]


def test_compact_parts_after_a_crash(tmp_path: Path) -> None:
    w = PartWriter(tmp_path / "sessions.parquet", SESSION_COLUMNS, flush_rows=1)
    for i in range(3):
        w.append(row(i))
        w.flush()
    # the process "dies" here: no finalize
    compact_parts(tmp_path / "sessions.parquet")
    assert pq.read_table(tmp_path / "sessions.parquet").num_rows == 3
    assert not (tmp_path / "sessions.parts").exists()


def test_read_table_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path, "requests")


def test_columns_have_units_where_they_are_quantities() -> None:
    for c in REQUEST_COLUMNS + SESSION_COLUMNS:
        if c.name.endswith("_tok_s"):
            assert c.unit == "tokens/s", c.name
        elif c.name.endswith("_s"):
            assert c.unit == "s", c.name
        if c.name.endswith("_ns"):
            assert c.unit == "ns", c.name
        if "tokens" in c.name and not c.name.endswith("_s"):
            assert c.unit == "tokens", c.name
