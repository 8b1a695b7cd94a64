"""The run directory's tables (requests, sessions) and their crash-safe incremental writer.

Columns are declared once, with unit and meaning, and both the Parquet schema (with the
units in the file's key-value metadata) and docs/replay.md come from these declarations.

Crash safety. A Parquet file is readable only once its footer is written, so one long-lived
``ParquetWriter`` loses *everything* on SIGKILL. Instead, rows are buffered and flushed every
``flush_s`` seconds or ``flush_rows`` rows as a complete small Parquet file,
``<table>.parts/part-NNNNNN.parquet``. On every exit path the runner controls (completion,
Ctrl-C, SIGTERM, an exception) the parts are compacted into ``<table>.parquet`` and removed.
After a SIGKILL or power loss the parts stay, each one readable, losing at most the last flush
interval; ``read_table(run_dir, name)`` reads either form, and ``compact_parts`` finishes the
job later. ``pandas.read_parquet("<table>.parts")`` and duckdb
``read_parquet('<table>.parts/*.parquet')`` read the parts directly too.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from kairosbench.clock import now_ns
from kairosbench.replay.itl import itl_summary
from kairosbench.table_schema import Column

if TYPE_CHECKING:
    from kairosbench.replay.client import StreamOutcome
    from kairosbench.replay.flow import SendTurn

__all__ = [
    "Column",
    "REQUEST_COLUMNS",
    "SESSION_COLUMNS",
    "SCHEMA_VERSION",
    "schema_of",
    "PartWriter",
    "read_table",
    "compact_parts",
    "RequestRow",
    "request_row",
]

SCHEMA_VERSION = "1"




REQUEST_COLUMNS: tuple[Column, ...] = (
    Column("session_id", pa.string(), "", "agent id as sent (X-Kairosbench-Agent, OpenAI user)"),
    Column("agent_kind", pa.string(), "", "swe, de, ... from the workload"),
    Column("turn_index", pa.int32(), "", "0-based turn of the session"),
    Column("attempt", pa.int32(), "", "0 for the first try, +1 per retry"),
    Column("endpoint", pa.string(), "", "base URL the request went to"),
    Column("t_planned_ns", pa.int64(), "ns", "when the plan wanted it sent (run clock, Unix epoch)"),
    Column("t_start_ns", pa.int64(), "ns", "request sent (run clock)"),
    Column("t_first_token_ns", pa.int64(), "ns", "first token-bearing chunk received; null if none"),
    Column("t_end_ns", pa.int64(), "ns", "response complete or failed"),
    Column("sched_lag_s", pa.float64(), "s", "t_start - t_planned: how late it went out"),
    Column("ttft_s", pa.float64(), "s", "time to first token"),
    Column("itl_mean_s", pa.float64(), "s", "mean per-token inter-token latency (= tpot_s)"),
    Column("itl_p50_s", pa.float64(), "s", "median per-token gap (multi-token chunks split, docs)"),
    Column("itl_p99_s", pa.float64(), "s", "99th percentile per-token gap"),
    Column("tpot_s", pa.float64(), "s", "(t_last_token - t_first_token) / (output_tokens - 1)"),
    Column("e2e_s", pa.float64(), "s", "t_end - t_start"),
    Column("prompt_tokens_expected", pa.int64(), "tokens", "prompt size the trace asks for"),
    Column("prompt_tokens_sent", pa.int64(), "tokens", "prompt size as kairosbench counted it"),
    Column("prompt_tokens", pa.int64(), "tokens", "server-reported usage.prompt_tokens; null if not sent"),
    Column("output_tokens_expected", pa.int64(), "tokens", "trace output length (= max_tokens)"),
    Column("output_tokens", pa.int64(), "tokens", "server usage.completion_tokens, else counted"),
    Column("output_tokens_counted", pa.int64(), "tokens", "tokens counted from the stream itself"),
    Column("chunks", pa.int32(), "", "token-bearing SSE events received"),
    Column("finish_reason", pa.string(), "", "stop, length, ... as the server sent it"),
    Column("status", pa.string(), "", "ok | connect | reset | http | stall | timeout | truncated | malformed | error | cancelled | client"),
    Column("error", pa.string(), "", "the cause, for any status but ok"),
    Column("http_status", pa.int32(), "", "HTTP status code; null if no response"),
    Column("eos_control", pa.string(), "", "ignore_eos | min_tokens | none: how output length was held"),
)

SESSION_COLUMNS: tuple[Column, ...] = (
    Column("session_id", pa.string(), "", "agent id as sent"),
    Column("workload_session_id", pa.string(), "", "the workload's id (differs when cycling)"),
    Column("agent_kind", pa.string(), "", "swe, de, ..."),
    Column("endpoint", pa.string(), "", "base URL the session was pinned to"),
    Column("t_arrival_ns", pa.int64(), "ns", "planned arrival (run clock)"),
    Column("t_start_ns", pa.int64(), "ns", "first request sent; null if none"),
    Column("t_finish_ns", pa.int64(), "ns", "last reply received, or when it was abandoned / cut"),
    Column("turns_done", pa.int32(), "", "turns completed"),
    Column("turns_total", pa.int32(), "", "turns in the workload session"),
    Column("requests", pa.int32(), "", "requests sent, retries included"),
    Column("output_tokens", pa.int64(), "tokens", "output tokens received over all requests"),
    Column("llm_time_s", pa.float64(), "s", "sum of request e2e times (time spent waiting on the LLM)"),
    Column("output_tok_s", pa.float64(), "tokens/s", "output_tokens / llm_time_s: the per-agent throughput"),
    Column("status", pa.string(), "", "completed | abandoned | unfinished (cut by duration or stop)"),
    Column("error", pa.string(), "", "why it was abandoned"),
)


def schema_of(columns: Sequence[Column], table: str) -> pa.Schema:
    meta = {
        "kairosbench.table": table,
        "kairosbench.schema_version": SCHEMA_VERSION,
        "kairosbench.units": json.dumps({c.name: c.unit for c in columns if c.unit}),
    }
    return pa.schema([pa.field(c.name, c.type) for c in columns], metadata=meta)


class PartWriter:
    """Buffer rows (tuples in column order); flush them as numbered part files; compact at the end."""

    def __init__(self, path: Path, columns: Sequence[Column], *, flush_rows: int = 5000, flush_s: float = 2.0) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        self.columns = tuple(columns)
        self.schema = schema_of(self.columns, self.name)
        self.parts_dir = self.path.with_name(self.name + ".parts")
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._rows: list[tuple[Any, ...]] = []
        self._next_part = 0
        self._last_flush_ns = now_ns()
        self.rows_written = 0

    def append(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def due(self) -> bool:
        return bool(self._rows) and (len(self._rows) >= self.flush_rows or now_ns() - self._last_flush_ns >= self.flush_s * 1e9)

    def swap(self) -> list[tuple[Any, ...]]:
        """Hand over the buffered rows (cheap: the event loop calls this)."""
        self._last_flush_ns = now_ns()
        rows, self._rows = self._rows, []
        return rows

    def to_table(self, rows: list[tuple[Any, ...]]) -> pa.Table:
        """Rows as a table, in one go (see ``to_table_async`` for the event loop's version)."""
        cols = list(zip(*rows)) if rows else [[] for _ in self.columns]
        arrays = [pa.array(col, type=c.type) for col, c in zip(cols, self.columns)]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    async def to_table_async(self, rows: list[tuple[Any, ...]]) -> pa.Table:
        """Rows as a table, one column per event-loop turn.

        Converting Python objects holds the GIL; done in a thread it would stall the event
        loop for up to a GIL switch interval at every handoff, and in one go on the loop for
        the whole conversion. Column by column, the loop never waits more than one column
        (~0.1 ms for a few thousand rows).
        """
        import asyncio

        cols = list(zip(*rows)) if rows else [[] for _ in self.columns]
        arrays = []
        for col, c in zip(cols, self.columns):
            arrays.append(pa.array(col, type=c.type))
            await asyncio.sleep(0)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def warm_up(self) -> None:
        """Pay pyarrow's first-use costs (imports, writer set-up: ~0.3 s) before a run."""
        pq.write_table(self.to_table([]), pa.BufferOutputStream(), compression="zstd")

    def write_rows(self, rows: list[tuple[Any, ...]]) -> Path | None:
        """Convert and write ``rows`` as one part (thread-safe with respect to ``append``)."""
        return self.write_part(self.to_table(rows)) if rows else None

    def write_part(self, table: pa.Table) -> Path:
        """Write one complete Parquet part (atomically: temp file then rename)."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._next_part += 1
        final = self.parts_dir / f"part-{self._next_part:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        self.rows_written += table.num_rows
        return final

    def flush(self) -> None:
        self.write_rows(self.swap())

    def finalize(self) -> Path:
        """Flush, compact all parts into ``path`` and remove them. Idempotent."""
        self.flush()
        return compact_parts(self.path, self.schema)


def compact_parts(path: Path, schema: pa.Schema | None = None) -> Path:
    """Merge ``<name>.parts/*.parquet`` (and an existing ``<name>.parquet``) into ``path``."""
    path = Path(path)
    parts_dir = path.with_name(path.stem + ".parts")
    parts = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []
    if not parts and path.exists():
        return path
    tables = [pq.read_table(path)] if path.exists() else []
    tables += [pq.read_table(p) for p in parts]
    if tables:
        table = pa.concat_tables(tables, promote_options="default")
        if schema is not None:
            table = table.replace_schema_metadata(schema.metadata)
    elif schema is not None:
        table = schema.empty_table()
    else:
        return path
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    if parts_dir.is_dir():
        shutil.rmtree(parts_dir)
    return path


def read_table(run_dir: str | Path, name: str) -> pa.Table:
    """``<run_dir>/<name>.parquet``, plus any parts a killed run left behind."""
    run_dir = Path(run_dir)
    path = run_dir / f"{name}.parquet"
    parts_dir = run_dir / f"{name}.parts"
    tables = [pq.read_table(path)] if path.exists() else []
    if parts_dir.is_dir():
        tables += [pq.read_table(p) for p in sorted(parts_dir.glob("part-*.parquet"))]
    if not tables:
        raise FileNotFoundError(f"{run_dir}: no {name}.parquet or {name}.parts/")
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One ``requests.parquet`` row plus the numbers its driver keeps tallies of."""

    row: tuple[Any, ...]
    output_tokens: int
    e2e_ns: int
    ttft_s: float | None
    lag_s: float


def request_row(
    step: "SendTurn",
    o: "StreamOutcome",
    *,
    session_id: str,
    agent_kind: str,
    endpoint_url: str,
    prompt_tokens_expected: int,
    prompt_tokens_sent: int,
    t_planned_ns: int,
    eos_control: str,
    now_ns: Callable[[], int],
    stopped_reason: str,
) -> RequestRow:
    """The ``requests.parquet`` row for one streamed request, shared by every driver.

    A request the run stopped before the client ran (status ``pending``) is recorded as
    ``cancelled`` with ``stopped_reason``; times it never reached are filled from ``now_ns()``
    (called only then). Mutates ``o`` accordingly, so the caller sees the recorded outcome.
    """
    if o.status == "pending":
        o.status, o.error = "cancelled", stopped_reason
    if o.t_end_ns == 0:
        o.t_end_ns = now_ns()
    if o.t_start_ns == 0:
        o.t_start_ns = o.t_end_ns
    parser = o.parser
    chunk_ns = parser.chunk_ns if parser is not None else []
    t_first = chunk_ns[0] if chunk_ns else None
    counted = sum(parser.chunk_tokens) if parser is not None else 0
    usage_out = parser.usage_completion_tokens if parser is not None else None
    out_tokens = usage_out if usage_out is not None else counted
    itl = itl_summary(chunk_ns, parser.chunk_tokens, out_tokens) if parser is not None and chunk_ns else None
    lag_s = (o.t_start_ns - t_planned_ns) / 1e9
    e2e_ns = o.t_end_ns - o.t_start_ns
    ttft_s = (t_first - o.t_start_ns) / 1e9 if t_first is not None else None
    row = (
        session_id,
        agent_kind,
        step.turn_index,
        step.attempt,
        endpoint_url,
        t_planned_ns,
        o.t_start_ns,
        t_first,
        o.t_end_ns,
        lag_s,
        ttft_s,
        itl.itl_mean_s if itl else None,
        itl.itl_p50_s if itl else None,
        itl.itl_p99_s if itl else None,
        itl.tpot_s if itl else None,
        e2e_ns / 1e9,
        prompt_tokens_expected,
        prompt_tokens_sent,
        parser.usage_prompt_tokens if parser is not None else None,
        step.max_tokens,
        out_tokens if parser is not None else None,
        counted,
        len(chunk_ns),
        parser.finish_reason if parser is not None else None,
        o.status,
        o.error,
        o.http_status,
        eos_control,
    )
    return RequestRow(row=row, output_tokens=out_tokens, e2e_ns=e2e_ns, ttft_s=ttft_s, lag_s=lag_s)
