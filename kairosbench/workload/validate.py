"""Workload checks: every way a real log can be wrong, each named by file, row/line and field.

The checks run on raw columns (``kairosbench.workload.columns``) and are vectorised with numpy
so validating a 10,000-session file takes well under a second of checking; only rows already
found bad are looked at one by one to phrase the message. ``load_workload`` runs them with a
fail-fast collector; ``validate_file`` collects up to ``max_problems`` and counts the rest.

What is checked, in order: the file reads at all (Parquet magic, JSON per line, UTF-8); schema
version; required columns present; column types; no nulls where none are allowed; whole,
finite, non-negative numbers; known ``token_count_method``; non-empty ids; ``text`` is a JSON
list of messages; session columns equal on every row of a session; turns numbered 0..n-1 in
file order with no duplicate or gap; recorded ``prompt_tokens`` never decreasing (a context
that shrinks cannot be replayed by sending the whole conversation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from kairosbench.errors import WorkloadError
from kairosbench.workload.columns import Columns, Problems, read_columns
from kairosbench.workload.model import TOKEN_COUNT_METHODS
from kairosbench.workload.schema import COLUMNS, SESSION_COLUMNS

__all__ = ["ValidationReport", "validate_file", "check_columns", "DEFAULT_MAX_PROBLEMS"]

DEFAULT_MAX_PROBLEMS = 20
_NON_NEGATIVE = ("arrival_s", "turn_index", "prompt_tokens", "appended_tokens", "output_tokens", "tool_duration_s")


@dataclass(frozen=True)
class ValidationReport:
    """What ``validate_file`` found: the first ``max_problems`` problems and how many in all."""

    path: str
    problems: list[WorkloadError] = field(default_factory=list)
    problem_count: int = 0
    n_sessions: int = 0
    n_turns: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def __rich__(self) -> Group | Text:
        if self.ok:
            return Text(f"OK  {self.path}: {self.n_sessions} sessions, {self.n_turns} turns", style="green")
        # The headline is a line of its own: a table title would wrap to the table's width.
        headline = Text(f"{self.path}: {self.problem_count} problem(s)", style="bold red")
        table = Table()
        table.add_column("where", no_wrap=True)
        table.add_column("field")
        table.add_column("what is wrong")
        for err in self.problems:
            where = f"line {err.line}" if err.line is not None else f"row {err.row}" if err.row is not None else "file"
            table.add_row(where, err.field or "", err.reason)
        parts: list[Table | Text] = [headline, table]
        if self.problem_count > len(self.problems):
            parts.append(Text(f"... and {self.problem_count - len(self.problems)} more (raise --max-problems to see them)"))
        return Group(*parts)


def validate_file(path: str | Path, *, max_problems: int = DEFAULT_MAX_PROBLEMS) -> ValidationReport:
    """Check a workload file without running anything; collect problems instead of raising."""
    problems = Problems(fail_fast=False, limit=max_problems)
    cols = read_columns(path, problems)
    n_sessions = n_turns = 0
    if cols is not None:
        check_columns(cols, problems)
        n_turns = cols.n_rows
        if "session_id" in cols.values:
            n_sessions = int(pd.unique(cols.values["session_id"]).size)
    return ValidationReport(str(path), problems.items, problems.count, n_sessions, n_turns)


def check_columns(cols: Columns, problems: Problems) -> bool:
    """Run every check; normalise dtypes and fill optional defaults. True when buildable."""
    before = problems.count
    if cols.n_rows == 0:
        problems.add(cols.error(None, None, "holds no turns"))
        return False
    for spec in COLUMNS:
        if spec.name in cols.values:
            continue
        if spec.required:
            problems.add(cols.error(None, spec.name, "column is missing (required; see docs/workload-format.md)"))
        else:
            cols.values[spec.name] = np.full(cols.n_rows, spec.default, dtype=object if spec.kind in ("str", "int_list") else np.float64)
            cols.nulls[spec.name] = np.full(cols.n_rows, spec.default is None)
    _check_nulls(cols, problems)
    _check_numbers(cols, problems)
    _check_strings(cols, problems)
    if problems.count == before:  # structure checks need clean columns
        _check_sessions(cols, problems)
        _check_turn_order(cols, problems)
        _check_context_growth(cols, problems)
    return problems.count == before


def _show(v: object) -> str:
    """A value as the user wrote it: numpy scalars shown as plain Python values."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


def _check_nulls(cols: Columns, problems: Problems) -> None:
    for spec in COLUMNS:
        if spec.nullable or spec.name not in cols.nulls:
            continue
        for i in _rows(cols.nulls[spec.name]):
            problems.add(cols.error(i, spec.name, "is null (a value is required)"))


def _check_numbers(cols: Columns, problems: Problems) -> None:
    for spec in COLUMNS:
        if spec.kind not in ("int", "float") or spec.name not in cols.values:
            continue
        v = np.asarray(cols.values[spec.name])
        present = ~cols.nulls[spec.name]
        if v.dtype.kind == "f":
            bad = present & ~np.isfinite(v)
            for i in _rows(bad):
                problems.add(cols.error(i, spec.name, f"is {v[i]} (must be a finite number)"))
            if spec.kind == "int":
                frac = present & np.isfinite(v) & (v != np.floor(v))
                for i in _rows(frac):
                    problems.add(cols.error(i, spec.name, f"is {v[i]} (must be a whole number of tokens/turns)"))
                v = np.where(present & np.isfinite(v), v, 0).astype(np.int64)
            cols.values[spec.name] = v
        elif spec.kind == "int":
            cols.values[spec.name] = v.astype(np.int64)
        else:
            cols.values[spec.name] = v.astype(np.float64)
        if spec.name in _NON_NEGATIVE:
            neg = present & (cols.values[spec.name] < 0)
            what = "duration" if spec.name.endswith("_s") else "count"
            for i in _rows(neg):
                problems.add(cols.error(i, spec.name, f"is negative ({cols.values[spec.name][i]}); a {what} cannot be below 0"))


def _check_strings(cols: Columns, problems: Problems) -> None:
    for name in ("session_id", "agent_kind"):
        if name in cols.values:
            empty = ~cols.nulls[name] & (cols.values[name] == "")
            for i in _rows(empty):
                problems.add(cols.error(i, name, "is empty"))
    if "token_count_method" in cols.values:
        v = cols.values["token_count_method"]
        unknown = ~cols.nulls["token_count_method"] & ~np.isin(v, TOKEN_COUNT_METHODS)
        for i in _rows(unknown):
            problems.add(cols.error(i, "token_count_method", f"{_show(v[i])} is not one of {', '.join(TOKEN_COUNT_METHODS)}"))
    text, nulls = cols.values.get("text"), cols.nulls.get("text")
    if text is not None and nulls is not None:
        for i in _rows(~nulls):
            try:
                parsed = json.loads(text[i])
            except RecursionError:
                problems.add(cols.error(i, "text", "is not JSON (nested too deeply)"))
                continue
            except ValueError as exc:
                problems.add(cols.error(i, "text", f"is not JSON ({exc.args[0] if exc.args else exc}); expected a JSON list of messages"))
                continue
            if not isinstance(parsed, list) or not all(isinstance(m, dict) for m in parsed):
                problems.add(cols.error(i, "text", "must be a JSON list of message objects ({\"role\": ..., \"content\": ...})"))


def _session_codes(cols: Columns) -> np.ndarray:
    codes, _ = pd.factorize(cols.values["session_id"], sort=False)
    return codes


def _check_sessions(cols: Columns, problems: Problems) -> None:
    """Session columns repeat on every row; a disagreement means two sessions share an id."""
    codes = _session_codes(cols)
    _, first = np.unique(codes, return_index=True)
    first_row = first[codes]
    for name in SESSION_COLUMNS:
        if name == "session_id":
            continue
        v = cols.values[name]
        differs = v != v[first_row]
        for i in _rows(differs):
            sid = cols.values["session_id"][i]
            problems.add(cols.error(i, name, f"{_show(v[i])} differs from {_show(v[first_row[i]])} on the first row of session {sid!r}; "
                                             "session columns must repeat unchanged (or the session id is reused)"))


def _check_turn_order(cols: Columns, problems: Problems) -> None:
    """Turns of a session appear in file order as 0, 1, 2, ... (sessions may interleave)."""
    codes = _session_codes(cols)
    ti = cols.values["turn_index"]
    expected = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    bad_sessions = np.unique(codes[ti != expected])
    if bad_sessions.size == 0:
        return
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], bad_sessions)
    ends = np.searchsorted(codes[order], bad_sessions, side="right")
    for s, e in zip(starts, ends):
        rows = order[s:e]
        sid = cols.values["session_id"][rows[0]]
        seen: dict[int, int] = {}
        prev = -1
        for i in rows:
            t = int(ti[i])
            if t in seen:
                where = f"line {cols.lines[seen[t]]}" if cols.lines is not None else f"row {seen[t]}"
                problems.add(cols.error(i, "turn_index", f"duplicated: session {sid!r} already has turn {t} ({where})"))
            elif t < prev:
                problems.add(cols.error(i, "turn_index", f"out of order: turn {t} of session {sid!r} comes after turn {prev}"))
            seen.setdefault(t, i)
            prev = max(prev, t)
        missing = sorted(set(range(len(seen))) - set(seen))
        if missing:
            problems.add(cols.error(rows[0], "turn_index", f"session {sid!r} has no turn {missing[0]}"
                                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; turns are numbered 0..n-1"))


def _check_context_growth(cols: Columns, problems: Problems) -> None:
    """A recorded prompt may not be smaller than the previous turn's: replay only ever appends."""
    codes = _session_codes(cols)
    order = np.lexsort((cols.values["turn_index"], codes))
    pt = cols.values["prompt_tokens"][order]
    known = ~cols.nulls["prompt_tokens"][order]
    same = codes[order][1:] == codes[order][:-1]
    shrinks = same & known[1:] & known[:-1] & (pt[1:] < pt[:-1])
    for k in _rows(shrinks):
        i, prev_i = order[k + 1], order[k]
        problems.add(cols.error(i, "prompt_tokens",
                                f"context shrinks: {pt[k + 1]} tokens after {pt[k]} at turn {cols.values['turn_index'][prev_i]} "
                                f"of session {cols.values['session_id'][i]!r} (a condensed history must be imported as a new session)"))
