"""Request and session rows in the ``kairosbench run`` schema, built from a finished turn (pure).

A Locust run directory holds the same ``requests.parquet`` / ``sessions.parquet`` (columns,
units and meanings in ``kairosbench.replay.records``) as a ``kairosbench run``, so
``kairosbench.replay.summarize``, duckdb queries and the reports read both alike. The row
arithmetic here mirrors the aiohttp driver's (``kairosbench.replay.runner``): TTFT from the
first token-bearing chunk, output tokens from the server's usage else counted from the
stream, per-token ITL from ``itl_summary``, scheduling lag against the plan.

A distributed test writes one directory per worker (``<out>/worker-<i>``); ``read_run``
reads a single-process directory or all of a distributed run's workers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from kairosbench.replay.client import StreamOutcome
from kairosbench.replay.flow import SendTurn
from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, read_table, request_row

__all__ = ["TurnRecord", "SessionRecord", "turn_record", "session_record", "read_run", "worker_dirs"]


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One request as recorded: its ``requests.parquet`` row plus the numbers Locust reports."""

    row: tuple[Any, ...]
    session_id: str
    agent_kind: str
    turn_index: int
    attempt: int
    status: str  # ok | connect | reset | http | stall | timeout | truncated | malformed | error | cancelled | client
    error: str | None
    t_start_ns: int
    e2e_ns: int
    ttft_s: float | None
    output_tokens: int
    prompt_tokens_sent: int
    prompt_tokens_expected: int
    usage_prompt_tokens: int | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def e2e_s(self) -> float:
        return self.e2e_ns / 1e9


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One agent session as recorded: its ``sessions.parquet`` row plus its outcome."""

    row: tuple[Any, ...]
    session_id: str
    agent_kind: str
    status: str  # completed | abandoned | unfinished
    requests: int
    output_tokens: int
    llm_time_s: float
    output_tok_s: float | None


def turn_record(
    step: SendTurn,
    outcome: StreamOutcome,
    *,
    session_id: str,
    agent_kind: str,
    endpoint_url: str,
    prompt_tokens_sent: int,
    t_planned_ns: int,
    eos_control: str,
    now_ns: int,
) -> TurnRecord:
    """Build the row for ``outcome`` (``now_ns`` fills times a request never reached)."""
    o = outcome
    r = request_row(
        step,
        o,
        session_id=session_id,
        agent_kind=agent_kind,
        endpoint_url=endpoint_url,
        prompt_tokens_expected=step.expected_prompt_tokens,
        prompt_tokens_sent=prompt_tokens_sent,
        t_planned_ns=t_planned_ns,
        eos_control=eos_control,
        now_ns=lambda: now_ns,
        stopped_reason="test stopped before the request was sent",
    )
    assert len(r.row) == len(REQUEST_COLUMNS)
    return TurnRecord(
        row=r.row,
        session_id=session_id,
        agent_kind=agent_kind,
        turn_index=step.turn_index,
        attempt=step.attempt,
        status=o.status,
        error=o.error,
        t_start_ns=o.t_start_ns,
        e2e_ns=r.e2e_ns,
        ttft_s=r.ttft_s,
        output_tokens=r.output_tokens,
        prompt_tokens_sent=prompt_tokens_sent,
        prompt_tokens_expected=step.expected_prompt_tokens,
        usage_prompt_tokens=o.parser.usage_prompt_tokens if o.parser is not None else None,
    )


def session_record(
    *,
    session_id: str,
    workload_session_id: str,
    agent_kind: str,
    endpoint_url: str,
    t_arrival_ns: int,
    t_start_ns: int | None,
    t_finish_ns: int | None,
    turns_done: int,
    turns_total: int,
    requests: int,
    output_tokens: int,
    llm_time_ns: int,
    status: str,
    error: str | None,
) -> SessionRecord:
    """The ``sessions.parquet`` row; throughput is output tokens over the summed request e2e times."""
    llm_s = llm_time_ns / 1e9
    tput = output_tokens / llm_s if llm_s > 0 else None
    row = (
        session_id,
        workload_session_id,
        agent_kind,
        endpoint_url,
        t_arrival_ns,
        t_start_ns,
        t_finish_ns,
        turns_done,
        turns_total,
        requests,
        output_tokens,
        llm_s,
        tput,
        status,
        error,
    )
    assert len(row) == len(SESSION_COLUMNS)
    return SessionRecord(row, session_id, agent_kind, status, requests, output_tokens, llm_s, tput)


def worker_dirs(run_dir: str | Path) -> list[Path]:
    """``<run_dir>/worker-<i>`` directories of a distributed test, by worker index."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("worker-*") if p.is_dir() and p.name[7:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[7:]))


def read_run(run_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """(requests, sessions) of a Locust run: one directory, or every worker's under it."""
    run_dir = Path(run_dir)
    dirs = [run_dir] if (run_dir / "requests.parquet").exists() or (run_dir / "requests.parts").is_dir() else worker_dirs(run_dir)
    if not dirs:
        raise FileNotFoundError(f"{run_dir}: no requests.parquet and no worker-<i>/ directories")
    tables: dict[str, list[pa.Table]] = {"requests": [], "sessions": []}
    for d in dirs:
        for name in tables:
            try:
                tables[name].append(read_table(d, name))
            except FileNotFoundError:
                continue
    out = []
    for name, cols in (("requests", REQUEST_COLUMNS), ("sessions", SESSION_COLUMNS)):
        parts = tables[name]
        if parts:
            out.append(pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0])
        else:
            from kairosbench.replay.records import schema_of

            out.append(schema_of(cols, name).empty_table())
    return out[0], out[1]
