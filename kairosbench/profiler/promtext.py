"""A small parser for the Prometheus text exposition format (what /metrics endpoints serve).

Written here rather than depending on prometheus_client: the profiler needs only samples
(name, labels, value), and a scrape must never die on one odd line. Lines that cannot be
parsed are skipped and reported back with their line numbers, so a caller can warn once.

Handles: comments (``# HELP``/``# TYPE``), labels with escaped ``\\"``, ``\\\\`` and ``\\n``,
optional timestamps, ``NaN``/``+Inf``/``-Inf``, and OpenMetrics' trailing ``# EOF``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PromSample", "ParseResult", "parse_line", "parse_prometheus_text", "format_sample"]

_SPECIAL = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True, slots=True)
class PromSample:
    """One sample line: metric name, its labels, its value, and the optional timestamp (ms)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(slots=True)
class ParseResult:
    samples: list[PromSample] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def _parse_value(text: str) -> float:
    special = _SPECIAL.get(text.lower())
    return special if special is not None else float(text)


def _parse_labels(text: str, start: int) -> tuple[dict[str, str], int]:
    """Parse ``{a="b",...}`` starting at ``text[start] == '{'``; return labels and the index after '}'."""
    labels: dict[str, str] = {}
    i = start + 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            raise ValueError("unterminated label set")
        if text[i] == "}":
            return labels, i + 1
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError("label without '='")
        key = text[i:eq].strip()
        if not key or not (key[0].isalpha() or key[0] == "_"):
            raise ValueError(f"bad label name {key!r}")
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        if i >= n or text[i] != '"':
            raise ValueError(f"label {key!r} value is not quoted")
        i += 1
        chars: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                nxt = text[i + 1]
                chars.append("\n" if nxt == "n" else nxt)
                i += 2
            else:
                chars.append(text[i])
                i += 1
        if i >= n:
            raise ValueError(f"label {key!r} value is not terminated")
        labels[key] = "".join(chars)
        i += 1


def parse_line(line: str) -> PromSample | None:
    """Parse one line; None for blanks and comments; ValueError for a malformed sample."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    brace = line.find("{")
    space = min((p for p in (line.find(" "), line.find("\t")) if p >= 0), default=-1)
    if brace >= 0 and (space < 0 or brace < space):
        name = line[:brace]
        labels, end = _parse_labels(line, brace)
        rest = line[end:].split()
    else:
        if space < 0:
            raise ValueError("no value")
        name = line[:space]
        labels = {}
        rest = line[space:].split()
    if not name or not (name[0].isalpha() or name[0] in "_:"):
        raise ValueError(f"bad metric name {name!r}")
    if not rest or len(rest) > 2:
        raise ValueError("expected a value and an optional timestamp")
    value = _parse_value(rest[0])
    timestamp = int(float(rest[1])) if len(rest) == 2 else None
    return PromSample(name, labels, value, timestamp)


def parse_prometheus_text(text: str) -> ParseResult:
    """Every sample in an exposition; malformed lines are listed in ``bad_lines``, not raised."""
    result = ParseResult()
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            sample = parse_line(line)
        except ValueError as exc:
            result.bad_lines.append((number, str(exc)))
            continue
        if sample is not None:
            result.samples.append(sample)
    return result


def format_sample(sample: PromSample) -> str:
    """The exposition line for a sample (used by the test exporters and the round-trip test)."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    labels = ",".join(f'{k}="{esc(v)}"' for k, v in sample.labels.items())
    value = "NaN" if math.isnan(sample.value) else ("+Inf" if sample.value == math.inf else ("-Inf" if sample.value == -math.inf else repr(sample.value)))
    ts = f" {sample.timestamp_ms}" if sample.timestamp_ms is not None else ""
    return f"{sample.name}{{{labels}}} {value}{ts}" if labels else f"{sample.name} {value}{ts}"
