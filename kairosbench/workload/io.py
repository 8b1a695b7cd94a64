"""Read and write workloads: Parquet (the format) and JSONL (accepted, and written on request).

``load_workload`` reads either format, runs every check of ``kairosbench.workload.validate``
and stops at the first problem with a ``WorkloadError`` naming file, row/line and field.
``save_workload`` picks the format from the suffix (``.jsonl``/``.ndjson`` → JSONL, anything
else → Parquet).

Determinism: the same workload and metadata give the same file bytes for a given pyarrow
version (zstd level fixed, one row group per 64k rows, no timestamps written), so
``workload_hash`` (sha256 of the bytes) identifies a workload in run manifests.
``content_hash`` hashes the decoded rows and metadata instead, so it also matches across
pyarrow versions; the bundled-workload regeneration test uses both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kairosbench.errors import WorkloadError
from kairosbench.workload.columns import Columns, Problems, read_columns
from kairosbench.workload.model import Session, Turn, Workload
from kairosbench.workload.schema import ARROW_SCHEMA, COLUMNS, META_SCHEMA_VERSION, META_WORKLOAD, SCHEMA_VERSION
from kairosbench.workload.validate import check_columns

__all__ = [
    "load_workload",
    "save_workload",
    "workload_hash",
    "content_hash",
    "workload_to_table",
    "table_to_workload",
    "write_table",
    "read_meta",
    "ROW_GROUP_ROWS",
]

ROW_GROUP_ROWS = 65_536
_ZSTD_LEVEL = 3
JSONL_WRITE_SUFFIXES = (".jsonl", ".ndjson")


def load_workload(path: str | Path) -> Workload:
    """Read a Parquet or JSONL workload; raise ``WorkloadError`` at the first problem."""
    problems = Problems(fail_fast=True)
    cols = read_columns(path, problems)
    assert cols is not None  # fail-fast collectors raise instead of returning None
    check_columns(cols, problems)
    return _build(cols)


def save_workload(wl: Workload, path: str | Path, meta: Mapping[str, Any] | None = None) -> None:
    """Write ``wl`` to ``path``; ``meta`` (default ``wl.meta``) goes into the file's metadata."""
    write_table(workload_to_table(wl), path, wl.meta if meta is None else meta)


def workload_hash(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: what a run manifest records to pin its workload."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: str | Path) -> str:
    """sha256 of the decoded rows and metadata, independent of Parquet encoder version."""
    table = _as_table(path)
    digest = hashlib.sha256()
    digest.update(json.dumps(read_meta(path), sort_keys=True).encode())
    for name in table.column_names:
        digest.update(name.encode())
        digest.update(json.dumps(table.column(name).to_pylist(), default=str).encode())
    return digest.hexdigest()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``kairosbench.workload`` metadata of a file ({} when it has none)."""
    try:  # Parquet: the footer alone, without reading the rows
        raw = (pq.read_schema(path).metadata or {}).get(META_WORKLOAD.encode())
        return dict(json.loads(raw)) if raw else {}
    except Exception:  # noqa: BLE001  not Parquet, or a bad footer: the full reader names the problem
        pass
    problems = Problems(fail_fast=True)
    cols = read_columns(path, problems)
    assert cols is not None
    return dict(cols.meta)


def _as_table(path: str | Path) -> pa.Table:
    return workload_to_table(load_workload(path))


# ----------------------------------------------------------------------------- writing


def workload_to_table(wl: Workload) -> pa.Table:
    """One row per turn, session columns repeated, in the column order of ``schema.COLUMNS``."""
    data: dict[str, list[Any]] = {c.name: [] for c in COLUMNS}
    for s in wl.sessions:
        for i, t in enumerate(s.turns):
            data["session_id"].append(s.session_id)
            data["agent_kind"].append(s.agent_kind)
            data["arrival_s"].append(float(s.arrival_s))
            data["source"].append(s.source)
            data["turn_index"].append(i)
            data["prompt_tokens"].append(t.prompt_tokens)
            data["appended_tokens"].append(t.appended_tokens)
            data["output_tokens"].append(t.output_tokens)
            data["tool_name"].append(t.tool_name)
            data["tool_duration_s"].append(float(t.tool_duration_s))
            data["text"].append(t.text)
            data["output_text"].append(t.output_text)
            data["prefix_hashes"].append(t.prefix_hashes)
            data["token_count_method"].append(t.token_count_method)
    try:
        return pa.Table.from_pydict(data, schema=ARROW_SCHEMA)
    except (pa.ArrowException, OverflowError, TypeError) as exc:
        raise WorkloadError(f"cannot encode workload: {exc}") from exc


def write_table(table: pa.Table, path: str | Path, meta: Mapping[str, Any] | None = None) -> None:
    """Write a schema-conforming table as Parquet or JSONL; atomically (temp file + rename)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(dict(meta or {}), sort_keys=True, separators=(",", ":"), default=_json_default)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        if p.suffix.lower() in JSONL_WRITE_SUFFIXES:
            _write_jsonl(table, tmp, meta_json)
        else:
            table = table.cast(ARROW_SCHEMA).replace_schema_metadata(
                {META_SCHEMA_VERSION: SCHEMA_VERSION, META_WORKLOAD: meta_json})
            pq.write_table(table, tmp, compression="zstd", compression_level=_ZSTD_LEVEL,
                           row_group_size=ROW_GROUP_ROWS, use_dictionary=True, write_statistics=True)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"metadata value {o!r} is not JSON-serialisable")


def _write_jsonl(table: pa.Table, path: Path, meta_json: str) -> None:
    header = f'{{"{META_SCHEMA_VERSION}":"{SCHEMA_VERSION}","{META_WORKLOAD}":{meta_json}}}\n'
    names = table.column_names
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header)
        for batch in table.to_batches(max_chunksize=ROW_GROUP_ROWS):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            for row in zip(*columns):
                fh.write(json.dumps(dict(zip(names, row)), separators=(",", ":"), ensure_ascii=False))
                fh.write("\n")


# ----------------------------------------------------------------------------- reading


def table_to_workload(table: pa.Table, meta: Mapping[str, Any] | None = None, *, path: str = "<table>") -> Workload:
    """Check and convert an in-memory table (e.g. the generator's) into a ``Workload``."""
    problems = Problems(fail_fast=True)
    cols = Columns(path=path, n_rows=table.num_rows, meta=dict(meta or {}))
    for spec in COLUMNS:
        if spec.name in table.column_names:
            column = table.column(spec.name)
            cols.nulls[spec.name] = column.is_null().to_numpy(zero_copy_only=False)
            if spec.kind in ("int", "float"):
                cols.values[spec.name] = column.fill_null(0).to_numpy()
            elif spec.kind == "str":
                cols.values[spec.name] = column.to_numpy(zero_copy_only=False)
            else:
                cols.values[spec.name] = np.array(column.to_pylist() + [None], dtype=object)[:-1]
    check_columns(cols, problems)
    return _build(cols)


def _build(cols: Columns) -> Workload:
    """Checked columns → sessions (stable by arrival, then first appearance) of turns."""
    v, nulls = cols.values, cols.nulls
    sid = v["session_id"]
    order: dict[str, list[int]] = {}
    for i, s in enumerate(sid.tolist()):
        order.setdefault(s, []).append(i)
    prompt = v["prompt_tokens"].tolist()
    prompt_null = nulls["prompt_tokens"].tolist()
    appended, output = v["appended_tokens"].tolist(), v["output_tokens"].tolist()
    tool, tool_null = v["tool_name"].tolist(), nulls["tool_name"].tolist()
    duration = v["tool_duration_s"].tolist()
    text, text_null = v["text"].tolist(), nulls["text"].tolist()
    out_text, out_null = v["output_text"].tolist(), nulls["output_text"].tolist()
    hashes, hashes_null = v["prefix_hashes"].tolist(), nulls["prefix_hashes"].tolist()
    method = v["token_count_method"].tolist()
    sessions: list[Session] = []
    for s, rows in order.items():
        turns = [
            Turn(
                appended_tokens=int(appended[i]),
                output_tokens=int(output[i]),
                tool_duration_s=float(duration[i]),
                tool_name=None if tool_null[i] else tool[i],
                prompt_tokens=None if prompt_null[i] else int(prompt[i]),
                text=None if text_null[i] else text[i],
                output_text=None if out_null[i] else out_text[i],
                prefix_hashes=None if hashes_null[i] else [int(x) for x in hashes[i]],
                token_count_method=method[i],
            )
            for i in rows
        ]
        first = rows[0]
        sessions.append(Session(session_id=s, agent_kind=str(v["agent_kind"][first]), arrival_s=float(v["arrival_s"][first]),
                                turns=turns, source=str(v["source"][first])))
    sessions.sort(key=lambda s: s.arrival_s)
    return Workload(sessions=sessions, meta=dict(cols.meta))
