"""Reading untrusted trace files: JSON, JSONL and typed field access that fails with a place.

Real logs are messy, so every importer reads through these helpers and nothing else: a file
that does not decode, a line that does not parse, a missing field or a value of the wrong
type all become a ``WorkloadError`` naming the file, the line (JSONL/CSV) and the field path
(``history[12].timestamp``), never a ``KeyError`` or ``TypeError`` traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kairosbench.errors import WorkloadError

__all__ = [
    "Where",
    "read_json",
    "iter_jsonl",
    "get",
    "opt",
    "as_int",
    "as_float",
    "as_str",
    "as_list",
    "as_dict",
    "parse_time_s",
]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Where:
    """A place in an input file: the path, the line (for JSONL/CSV) and a field path prefix."""

    path: str
    line: int | None = None
    field: str = ""

    def at(self, key: str | int) -> Where:
        """The place of a child field: ``history`` -> ``history[3]`` -> ``history[3].id``."""
        if isinstance(key, int):
            sub = f"{self.field}[{key}]"
        else:
            sub = f"{self.field}.{key}" if self.field else key
        return Where(self.path, self.line, sub)

    def error(self, message: str) -> WorkloadError:
        return WorkloadError(message, path=self.path, line=self.line, field=self.field or None)


def _load_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"not UTF-8 text (byte {exc.start}): is this the right file?", path=str(path)) from exc
    except OSError as exc:
        raise WorkloadError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc


def _loads(text: str, where: Where) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = exc.lineno if where.line is None else where.line
        raise WorkloadError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=where.path, line=line) from exc
    except (RecursionError, ValueError) as exc:  # absurd nesting; ints longer than Python allows
        raise WorkloadError(f"not usable JSON: {exc}", path=where.path, line=where.line) from exc


def read_json(path: Path) -> Any:
    """A whole-file JSON document (``.json`` / ``.traj``)."""
    return _loads(_load_text(path), Where(str(path)))


def iter_jsonl(path: Path) -> Iterator[tuple[Where, Any]]:
    """``(place, object)`` for every non-blank line of a JSONL file, 1-based line numbers."""
    text = _load_text(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = Where(str(path), number)
        yield where, _loads(line, where)


def get(obj: Any, key: str, where: Where) -> tuple[Any, Where]:
    """A required field of a JSON object, with its place."""
    if not isinstance(obj, Mapping):
        raise where.error(f"expected a JSON object, got {_kind(obj)}")
    sub = where.at(key)
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise sub.error("missing field")
    return value, sub


def opt(obj: Any, key: str, where: Where) -> tuple[Any, Where]:
    """An optional field: ``None`` when absent or null."""
    if not isinstance(obj, Mapping):
        raise where.error(f"expected a JSON object, got {_kind(obj)}")
    return obj.get(key), where.at(key)


def as_int(value: Any, where: Where, *, minimum: int | None = 0) -> int:
    """An integer (a float with no fractional part is accepted: some exporters write 512.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"expected an integer, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise where.error(f"expected an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise where.error(f"must be >= {minimum}, got {value}")
    return value


def as_float(value: Any, where: Where, *, minimum: float | None = None) -> float:
    """A finite number; numeric strings are accepted (SWE-agent stores execution_time as text)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise where.error(f"expected a number, got the string {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"expected a number, got {_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise where.error(f"expected a finite number, got {value!r}")
    if minimum is not None and result < minimum:
        raise where.error(f"must be >= {minimum:g}, got {result:g}")
    return result


def as_str(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {_kind(value)}")
    return value


def as_list(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(f"expected a JSON list, got {_kind(value)}")
    return value


def as_dict(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a JSON object, got {_kind(value)}")
    return value


def parse_time_s(value: Any, where: Where) -> float:
    """Seconds since the Unix epoch from an ISO 8601 string or a number of seconds.

    Naive ISO times (OpenHands writes them) are read as UTC; only differences between them
    are ever used, so the zone does not matter as long as one file is consistent.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise where.error(f"not an ISO 8601 time: {value[:40]!r}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return stamp.timestamp()
    return as_float(value, where)


def _kind(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
