"""Importers: real agent and serving traces in, ``Workload`` out.

One registry maps a format name to its reader. ``import_source`` finds the files (a file, or
every matching file under a directory), picks the token counter, runs the reader, puts the
sessions on one time axis (seconds from the first arrival) and writes what it decided into
``Workload.meta["import"]``: the source files with their sha256, how many turns each
token-count method gave, and the format's own counters (clamps, splits, skipped sessions,
turns whose tool duration was not recorded). ``docs/importers.md`` documents every format.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairosbench.errors import UsageError, WorkloadError
from kairosbench.workload.importers import (
    azure,
    mini_swe_agent,
    mooncake,
    openai_chat,
    openhands,
    spider2,
    swe_agent,
    terminal_bench,
)
from kairosbench.workload.importers._turns import ImportLog
from kairosbench.workload.model import Session, Workload
from kairosbench.workload.tokencount import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    EstimateCounter,
    TokenCounter,
    make_counter,
)

__all__ = ["FORMATS", "import_source", "source_files"]

Reader = Callable[[Sequence[Path], TokenCounter, ImportLog], list[Session]]


@dataclass(frozen=True, slots=True)
class _Format:
    description: str
    patterns: tuple[str, ...]  # files a directory SRC contributes
    read: Reader
    counts_text: bool  # False: the format records token counts only; --tokenizer has no use
    absolute_times: bool  # True: arrivals are clock times, shifted so the first one is 0 s
    replayable: bool = True


_REGISTRY: dict[str, _Format] = {
    "mooncake": _Format(
        "Mooncake JSONL (timestamp, input_length, output_length, hash_ids): sessions from the block-hash chain",
        ("*.jsonl",), mooncake.read, counts_text=False, absolute_times=False,
    ),
    "azure": _Format(
        "Azure LLM inference CSV (TIMESTAMP, ContextTokens, GeneratedTokens): one single-turn session per request",
        ("*.csv",), azure.read, counts_text=False, absolute_times=True,
    ),
    "swe-agent": _Format(
        "SWE-agent .traj trajectories: one session per file, one turn per model call",
        ("*.traj",), swe_agent.read, counts_text=True, absolute_times=False,
    ),
    "mini-swe-agent": _Format(
        "mini-swe-agent .traj.json message lists: one session per file",
        ("*.traj.json",), mini_swe_agent.read, counts_text=True, absolute_times=False,
    ),
    "openhands": _Format(
        "OpenHands output.jsonl sessions and event-list .json files: usage from metrics.token_usages",
        ("*.jsonl", "*.json"), openhands.read, counts_text=True, absolute_times=True,
    ),
    "spider2": _Format(
        "Spider 2.0 agent rollouts (JSON list with conversation): data-engineering sessions",
        ("*.json",), spider2.read, counts_text=True, absolute_times=False,
    ),
    "terminal-bench": _Format(
        "Terminal-Bench trial summary CSV: statistics-only sessions of token totals (not replayable)",
        ("*.csv",), terminal_bench.read, counts_text=False, absolute_times=True, replayable=False,
    ),
    "openai-chat": _Format(
        "OpenAI chat-completions request log (JSONL of {messages, timestamp, usage, response})",
        ("*.jsonl",), openai_chat.read, counts_text=True, absolute_times=True,
    ),
}  # fmt: skip

FORMATS: dict[str, str] = {name: spec.description for name, spec in _REGISTRY.items()}


def _spec(fmt: str) -> _Format:
    try:
        return _REGISTRY[fmt]
    except KeyError:
        raise UsageError(f"unknown import format {fmt!r}; choose one of: {', '.join(FORMATS)}") from None


def source_files(fmt: str, src: str | Path) -> list[Path]:
    """The files an import of ``src`` reads: ``src`` itself, or its matching files, sorted."""
    spec = _spec(fmt)
    path = Path(src)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise WorkloadError("no such file or directory", path=str(path))
    found = {
        p
        for pattern in spec.patterns
        for p in path.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    }
    if not found:
        patterns = " or ".join(spec.patterns)
        raise WorkloadError(f"no {patterns} files for format {fmt!r} in this directory", path=str(path))
    return sorted(found)


def import_source(
    fmt: str,
    src: Path,
    *,
    tokenizer: str | None = None,
    progress: Callable[[int, int, Path], None] | None = None,
) -> Workload:
    """Read ``src`` (a file or a directory) in format ``fmt`` into a workload.

    ``tokenizer``: a Hugging Face tokenizer directory (or ``tokenizer.json``) for traces with
    text but no recorded usage; without it those are estimated (flagged ``estimate``).
    ``progress(files_done, files_total, next_file)`` is called before each file is read, so a
    caller can show progress over a directory of thousands of trajectories.
    Raises ``UsageError`` for an unknown format or tokenizer, ``WorkloadError`` (file, line,
    field) for bad input.
    """
    spec = _spec(fmt)
    files = source_files(fmt, src)
    log = ImportLog()
    counter: TokenCounter = make_counter(tokenizer) if spec.counts_text else EstimateCounter()
    if tokenizer and not spec.counts_text:
        log.note(f"--tokenizer ignored: {fmt} traces record token counts, not text")
    sessions: list[Session] = []
    for done, path in enumerate(files):  # every reader treats its files independently
        if progress is not None:
            progress(done, len(files), path)
        sessions.extend(spec.read([path], counter, log))
    if not sessions:
        raise WorkloadError(f"no sessions with an LLM call found in {len(files)} file(s)", path=str(src))
    _place_arrivals(sessions, spec.absolute_times, log)
    _unique_ids(sessions, log)
    sessions.sort(key=lambda s: s.arrival_s)  # stable: file order among equal arrivals
    return Workload(sessions=sessions, meta={"import": _meta(fmt, spec, files, sessions, counter, log)})


def _place_arrivals(sessions: list[Session], absolute: bool, log: ImportLog) -> None:
    """Clock times -> seconds from the first arrival; unknown start times -> 0 s."""
    known = [s.arrival_s for s in sessions if math.isfinite(s.arrival_s)]
    origin = min(known) if (absolute and known) else 0.0
    for session in sessions:
        if math.isfinite(session.arrival_s):
            session.arrival_s -= origin
        else:
            session.arrival_s = 0.0
            log.add("sessions_without_start_time_placed_at_0s")


def _unique_ids(sessions: list[Session], log: ImportLog) -> None:
    """Session ids must be unique in a workload; repeats (same task in two files) get ``#n``."""
    seen: Counter[str] = Counter()
    for session in sessions:
        seen[session.session_id] += 1
        if seen[session.session_id] > 1:
            session.session_id = f"{session.session_id}#{seen[session.session_id]}"
            log.add("session_ids_made_unique")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _meta(
    fmt: str, spec: _Format, files: list[Path], sessions: list[Session], counter: TokenCounter, log: ImportLog
) -> dict[str, Any]:
    methods = Counter(t.token_count_method for s in sessions for t in s.turns)
    token_counts: dict[str, Any] = {"turns_by_method": dict(sorted(methods.items()))}
    if methods.get("tokenizer"):
        token_counts["tokenizer"] = str(getattr(counter, "path", ""))
    if methods.get("estimate"):
        token_counts["estimate"] = f"ceil(characters / {CHARS_PER_TOKEN:g}) + {MESSAGE_OVERHEAD_TOKENS} per message"
    return {
        "format": fmt,
        "description": spec.description,
        "replayable": spec.replayable,
        "sources": [{"file": str(p), "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files],
        "sessions": len(sessions),
        "turns": sum(len(s.turns) for s in sessions),
        "token_counts": token_counts,
        **log.as_meta(),
    }
