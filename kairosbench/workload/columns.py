"""A workload file's rows as raw columns, read from Parquet or JSONL before any semantic check.

Reading and checking are split so that ``kairosbench workload validate`` can report every
problem in a file while ``load_workload`` stops at the first: both run the same readers and the
same checks, and differ only in the :class:`Problems` collector they pass (``fail_fast``).

Row positions: Parquet rows count from 0 (as ``pandas.read_parquet(f).iloc[row]`` and duckdb's
``rowid`` do); JSONL lines count from 1 (as editors do). Every error names one or the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kairosbench.errors import WorkloadError
from kairosbench.workload.schema import (
    COLUMNS,
    META_SCHEMA_VERSION,
    META_WORKLOAD,
    SCHEMA_VERSION,
    ColumnSpec,
)

__all__ = ["Columns", "Problems", "read_columns", "PARQUET_MAGIC"]

PARQUET_MAGIC = b"PAR1"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class Problems:
    """Collects workload problems: raise the first (``fail_fast``) or keep the ``limit`` first in
    file order and count all."""

    def __init__(self, *, fail_fast: bool, limit: int = 20) -> None:
        self.fail_fast = fail_fast
        self.limit = limit
        self.count = 0
        self._items: list[WorkloadError] = []
        self._seen: set[tuple[object, ...]] = set()

    def add(self, err: WorkloadError) -> None:
        """Record ``err``; a second problem for the same place and field is dropped (the first
        is the cause: a value of the wrong type is not also reported as missing)."""
        if self.fail_fast:
            raise err
        key = (err.path, err.line, err.row, err.field)
        if key in self._seen and (err.line is not None or err.row is not None):
            return
        self._seen.add(key)
        self.count += 1
        self._items.append(err)
        if len(self._items) > 4 * self.limit:  # bounded memory on files where every row is bad
            self._items = self.items

    @property
    def items(self) -> list[WorkloadError]:
        """The first ``limit`` problems in file order (whole-file problems first)."""
        return sorted(self._items, key=_place)[: self.limit]

    def __bool__(self) -> bool:
        return self.count > 0


def _place(err: WorkloadError) -> tuple[int, int]:
    return (err.line if err.line is not None else -1, err.row if err.row is not None else -1)


@dataclass
class Columns:
    """Column values (numpy arrays, object dtype for strings and lists) plus null masks.

    A column absent from the file is absent from ``values``; the checks decide whether that is
    an error (required) or gets its default (optional). ``lines[i]`` is the JSONL line of row i;
    ``lines is None`` for Parquet, where rows are named by their 0-based index.
    """

    path: str
    n_rows: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    lines: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def error(self, i: int | None, field_name: str | None, message: str) -> WorkloadError:
        """A WorkloadError pointing at row/line ``i`` (None: the whole file) and a field."""
        if i is None:
            return WorkloadError(message, path=self.path, field=field_name)
        if self.lines is not None:
            return WorkloadError(message, path=self.path, line=int(self.lines[i]), field=field_name)
        return WorkloadError(message, path=self.path, row=int(i), field=field_name)


def read_columns(path: str | Path, problems: Problems) -> Columns | None:
    """Read a Parquet or JSONL workload into raw columns; None when nothing could be read."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        problems.add(WorkloadError("file does not exist", path=name))
        return None
    if p.is_dir():
        problems.add(WorkloadError("is a directory, expected a .parquet or .jsonl workload file", path=name))
        return None
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head == PARQUET_MAGIC:
        return _read_parquet(p, name, problems)
    if p.suffix.lower() in JSONL_SUFFIXES or (p.suffix.lower() != ".parquet" and _looks_like_jsonl(p)):
        return _read_jsonl(p, name, problems)
    problems.add(WorkloadError(
        "not a Parquet file (it does not start with the PAR1 magic bytes) and not JSONL; "
        "write workloads with `kairosbench workload generate/import` or pandas.DataFrame.to_parquet",
        path=name,
    ))
    return None


def _looks_like_jsonl(p: Path) -> bool:
    with open(p, "rb") as fh:
        start = fh.read(256).lstrip()
    return start.startswith(b"{")


# ----------------------------------------------------------------------------- metadata


def _check_meta(raw: dict[str, Any], cols: Columns, problems: Problems, where: int | None) -> None:
    """Schema version and the workload JSON; a file without them (pandas/duckdb-made) is fine."""
    version = raw.get(META_SCHEMA_VERSION)
    if version is not None and str(version) != SCHEMA_VERSION:
        problems.add(cols.error(where, META_SCHEMA_VERSION,
                                f"schema version {version!r} is not supported (this kairosbench reads "
                                f"version {SCHEMA_VERSION}); upgrade kairosbench or re-import the source"))
    wl_meta = raw.get(META_WORKLOAD)
    if wl_meta is None:
        return
    if isinstance(wl_meta, (str, bytes)):
        try:
            wl_meta = json.loads(wl_meta)
        except ValueError as exc:
            problems.add(cols.error(where, META_WORKLOAD, f"metadata is not valid JSON ({exc})"))
            return
    if not isinstance(wl_meta, dict):
        problems.add(cols.error(where, META_WORKLOAD, f"metadata must be a JSON object, got {type(wl_meta).__name__}"))
        return
    cols.meta = wl_meta


# ----------------------------------------------------------------------------- Parquet


def _read_parquet(p: Path, name: str, problems: Problems) -> Columns | None:
    try:
        table = pq.read_table(p)
    except Exception as exc:  # noqa: BLE001  untrusted bytes: any parser failure is a bad file

        problems.add(WorkloadError(f"cannot read as Parquet ({exc}); the file may be truncated or corrupt", path=name))
        return None
    cols = Columns(path=name, n_rows=table.num_rows)
    raw_meta = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (table.schema.metadata or {}).items()}
    _check_meta(raw_meta, cols, problems, None)
    for spec in COLUMNS:
        if spec.name not in table.column_names:
            continue
        column = table.column(spec.name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if not _arrow_type_ok(spec, column.type):
            problems.add(cols.error(None, spec.name, f"has type {column.type}, expected {_expected(spec)}"))
            continue
        cols.nulls[spec.name] = column.is_null().to_numpy(zero_copy_only=False)
        cols.values[spec.name] = _arrow_values(spec, column)
    return cols


def _expected(spec: ColumnSpec) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "int_list": "a list of integers"}[spec.kind]


def _arrow_type_ok(spec: ColumnSpec, t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True  # an all-null column: the null checks decide
    if spec.kind == "str":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if spec.kind == "int":  # floats are accepted when whole (pandas writes nullable ints as float)
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if spec.kind == "float":
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if spec.kind == "int_list":
        return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
            pa.types.is_integer(t.value_type) or pa.types.is_null(t.value_type))
    raise AssertionError(spec.kind)


def _arrow_values(spec: ColumnSpec, column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(column.type):
        if spec.kind in ("str", "int_list"):
            return np.full(len(column), None, dtype=object)
        return np.zeros(len(column), dtype=np.float64)
    if spec.kind in ("int", "float"):
        filled = column.fill_null(0)
        return filled.to_numpy()
    if spec.kind == "str":
        return column.to_numpy(zero_copy_only=False)
    return np.array(column.to_pylist() + [None], dtype=object)[:-1]  # keep lists as list objects


# ----------------------------------------------------------------------------- JSONL


def _read_jsonl(p: Path, name: str, problems: Problems) -> Columns | None:
    """One turn per line, the Parquet columns as keys; an optional metadata header line first."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    cols = Columns(path=name, n_rows=0)
    try:
        with open(p, encoding="utf-8") as fh:
            first = True
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.strip())
                except json.JSONDecodeError as exc:
                    problems.add(WorkloadError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=name, line=lineno))
                    first = False
                    continue
                except RecursionError:
                    problems.add(WorkloadError("not valid JSON (nested too deeply)", path=name, line=lineno))
                    first = False
                    continue
                if not isinstance(obj, dict):
                    problems.add(WorkloadError(f"expected a JSON object (one turn), got {type(obj).__name__}", path=name, line=lineno))
                    first = False
                    continue
                if first and "session_id" not in obj and (META_SCHEMA_VERSION in obj or META_WORKLOAD in obj):
                    cols.lines = np.array([lineno])
                    _check_meta(obj, cols, problems, 0)
                    cols.lines = None
                    first = False
                    continue
                first = False
                rows.append(obj)
                lines.append(lineno)
    except UnicodeDecodeError as exc:
        problems.add(WorkloadError(f"not UTF-8 text ({exc.reason}); neither Parquet nor JSONL", path=name))
        return None
    cols.n_rows = len(rows)
    cols.lines = np.asarray(lines, dtype=np.int64)
    for spec in COLUMNS:
        if not any(spec.name in r for r in rows):
            continue  # absent everywhere: a missing column, judged by the checks
        _jsonl_column(spec, rows, cols, problems)
    return cols


def _jsonl_column(spec: ColumnSpec, rows: list[dict[str, Any]], cols: Columns, problems: Problems) -> None:
    n = len(rows)
    is_obj = spec.kind in ("str", "int_list")
    values: Any = np.empty(n, dtype=object) if is_obj else np.zeros(n, dtype=np.float64 if spec.kind == "float" else np.int64)
    nulls = np.zeros(n, dtype=bool)
    for i, row in enumerate(rows):
        if spec.name not in row:
            if spec.required:
                problems.add(cols.error(i, spec.name, "missing (every turn line needs it)"))
            elif spec.default is not None:  # an optional key left out takes its default
                values[i] = spec.default
                continue
            nulls[i] = True
            if is_obj:
                values[i] = None
            continue
        v = row[spec.name]
        if v is None:
            nulls[i] = True
            if is_obj:
                values[i] = None
            continue
        ok, converted = _json_value(spec, v)
        if not ok:
            problems.add(cols.error(i, spec.name, f"{json.dumps(v)[:60]} is not {_expected(spec)}"))
            nulls[i] = True
            if is_obj:
                values[i] = None
            continue
        values[i] = converted
    cols.values[spec.name] = values
    cols.nulls[spec.name] = nulls


def _json_value(spec: ColumnSpec, v: Any) -> tuple[bool, Any]:
    if spec.kind == "str":
        return isinstance(v, str), v
    if isinstance(v, bool):
        return False, None
    if spec.kind == "float":
        return isinstance(v, (int, float)), float(v) if isinstance(v, (int, float)) else None
    if spec.kind == "int":
        if isinstance(v, int):
            return (-(2**63) <= v < 2**63), v
        if isinstance(v, float) and v.is_integer():
            return True, int(v)
        return False, None
    if spec.kind == "int_list":
        ok = isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and -(2**63) <= x < 2**63 for x in v)
        return ok, v
    raise AssertionError(spec.kind)

