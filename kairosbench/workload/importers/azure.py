"""Azure LLM inference traces (CSV ``TIMESTAMP, ContextTokens, GeneratedTokens``).

The Azure public traces (2023 code/conversation samples, the 2024 week-long traces) record
one request per row and no session: every request becomes its own single-turn session
(``appended_tokens = prompt_tokens = ContextTokens``, ``output_tokens = GeneratedTokens``,
no tool), arriving at its timestamp, in seconds from the first request of the import. The
agent kind comes from the file name: ``code`` for the code service, ``chat`` otherwise.

The file is parsed column-wise with pandas (the 2024 traces have millions of rows) and then
checked: a missing column, a value that is not a time or a non-negative integer, and a
timestamp earlier than the row before fail with the CSV line (the header is line 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kairosbench.errors import WorkloadError
from kairosbench.workload.importers._turns import ImportLog
from kairosbench.workload.model import Session, Turn
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["COLUMNS", "read", "read_frame"]

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_frame(path: Path) -> pd.DataFrame:
    """Validated columns ``arrival_s`` (epoch seconds), ``prompt_tokens``, ``output_tokens``, ``line``."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"not UTF-8 text (byte {exc.start}): is this the right file?", path=str(path)) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise WorkloadError(f"not a readable CSV file: {exc}".splitlines()[0], path=str(path)) from exc
    except OSError as exc:
        raise WorkloadError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise WorkloadError(
            f"missing column (the file has {', '.join(map(str, raw.columns)) or 'no columns'}; "
            f"expected {', '.join(COLUMNS)})",
            path=str(path),
            line=1,
            field=missing[0],
        )
    lines = np.arange(len(raw)) + 2
    stamps = pd.to_datetime(raw["TIMESTAMP"].str.strip(), errors="coerce", format="ISO8601")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise WorkloadError(
            f"not a date-time: {raw['TIMESTAMP'].iloc[i][:40]!r}", path=str(path), line=int(lines[i]), field="TIMESTAMP"
        )
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = (stamps - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    out = pd.DataFrame({"arrival_s": seconds, "line": lines})
    for column, name in (("ContextTokens", "prompt_tokens"), ("GeneratedTokens", "output_tokens")):
        numbers = pd.to_numeric(raw[column].str.strip(), errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(numbers) | (numbers < 0) | (numbers != np.floor(numbers))
        if bad.any():
            i = int(np.argmax(bad))
            raise WorkloadError(
                f"expected a non-negative integer token count, got {raw[column].iloc[i][:40]!r}",
                path=str(path),
                line=int(lines[i]),
                field=column,
            )
        out[name] = numbers.astype(np.int64)
    back = np.diff(seconds) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise WorkloadError(
            f"out of order: {raw['TIMESTAMP'].iloc[i]} is before the previous row's {raw['TIMESTAMP'].iloc[i - 1]}; "
            "sort the trace by TIMESTAMP",
            path=str(path),
            line=int(lines[i]),
            field="TIMESTAMP",
        )
    return out


def _agent_kind(path: Path) -> str:
    return "code" if "code" in path.stem.lower() else "chat"


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    """One single-turn session per row of every file (arrival in epoch seconds)."""
    del counter  # recorded token counts only
    sessions: list[Session] = []
    for path in paths:
        frame = read_frame(path)
        kind = _agent_kind(path)
        log.add("requests", len(frame))
        source = f"azure:{path.name}"
        columns = (frame[name].tolist() for name in ("arrival_s", "line", "prompt_tokens", "output_tokens"))
        for arrival, line, prompt, output in zip(*columns):
            turn = Turn(appended_tokens=prompt, output_tokens=output, prompt_tokens=prompt, token_count_method="usage")
            sessions.append(Session(f"{path.stem}:{line}", kind, arrival, [turn], source))
    log.note("no sessions in Azure traces: one single-turn session per request")
    return sessions
