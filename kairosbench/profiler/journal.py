"""Incremental Parquet that survives a kill: an Arrow IPC journal, turned into Parquet at the end.

A Parquet file is readable only once its footer is written, at close; a process killed with
SIGKILL (or an OOM kill, or a power cut of the sampler's container) never writes it, and the
whole file is lost. So while a run is live, each flush appends one record batch to
``<name>.parquet.journal``, an Arrow IPC *stream*: self-delimiting messages that a reader can
take up to the last complete one. Appending costs O(rows flushed), so flushing every second
stays cheap however long the run.

At a clean stop the writer converts the journal into ``<name>.parquet`` (rows sorted by
``t_ns``, zstd, written to a temporary name and renamed, so a reader never sees half a file)
and deletes the journal. If the writer was killed, :func:`recover_run_dir` (called by
``ProfilerHandle.stop()``, by ``kairosbench profile --out DIR --recover``, and safe to call
anytime) does the same conversion from whatever the journal holds: a kill loses at most the
rows of the last flush interval.

The JSON metadata under ``schema.METADATA_KEY`` is written twice: the static part (sources,
GPUs, intervals) in the journal's schema when it is opened, the rest (measured update periods,
counters, CPU use) when it is finalised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kairosbench.profiler.schema import METADATA_KEY

__all__ = ["TableJournal", "JOURNAL_SUFFIX", "read_journal", "finalize_journal", "recover_run_dir", "read_metadata"]

JOURNAL_SUFFIX = ".journal"
MetaDeriver = Callable[[pa.Table], dict[str, Any]]


class TableJournal:
    """Buffers rows in memory; ``flush`` appends them to the journal; ``close`` writes the Parquet."""

    def __init__(self, parquet_path: Path, schema: pa.Schema, meta: dict[str, Any]) -> None:
        self.parquet_path = Path(parquet_path)
        self.journal_path = self.parquet_path.with_name(self.parquet_path.name + JOURNAL_SUFFIX)
        self.schema = schema.with_metadata({METADATA_KEY: json.dumps(meta, default=str).encode()})
        self._file = open(self.journal_path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = pa.ipc.new_stream(self._file, self.schema)
        self._file.flush()
        self._rows: list[dict[str, Any]] = []
        pa.array([0], pa.int64())  # pyarrow imports its pandas shim on first use: pay that now, not in the loop
        self.rows_written = 0
        self.closed = False

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self) -> int:
        """Append buffered rows to the journal as one record batch; returns how many."""
        if not self._rows or self.closed:
            return 0
        batch = pa.RecordBatch.from_pylist(self._rows, schema=self.schema)
        self._writer.write_batch(batch)
        self._file.flush()  # into the kernel: a SIGKILL after this keeps the batch
        n = len(self._rows)
        self.rows_written += n
        self._rows = []
        return n

    def close(self, extra_meta: dict[str, Any] | None = None, derive: MetaDeriver | None = None) -> Path:
        """Flush, then turn the journal into the Parquet file; returns its path."""
        if self.closed:
            return self.parquet_path
        self.flush()
        self._writer.close()
        self._file.close()
        self.closed = True
        return finalize_journal(self.journal_path, self.parquet_path, extra_meta=extra_meta, derive=derive)


def read_journal(journal_path: Path) -> tuple[pa.Table | None, dict[str, Any], bool]:
    """Everything a journal holds: (table or None if even the schema is missing, metadata, truncated?)."""
    batches: list[pa.RecordBatch] = []
    truncated = False
    with open(journal_path, "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError):
            return None, {}, True
        schema = reader.schema
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # the last message was cut short by a kill
                truncated = True
                break
    meta = json.loads(schema.metadata.get(METADATA_KEY, b"{}")) if schema.metadata else {}
    return pa.Table.from_batches(batches, schema=schema), meta, truncated


def finalize_journal(
    journal_path: Path,
    parquet_path: Path,
    *,
    extra_meta: dict[str, Any] | None = None,
    derive: MetaDeriver | None = None,
) -> Path:
    """Write ``parquet_path`` from the journal (sorted by t_ns, metadata merged), then delete the journal."""
    table, meta, truncated = read_journal(journal_path)
    if table is None:
        journal_path.unlink(missing_ok=True)
        return parquet_path
    if table.num_rows and "t_ns" in table.column_names:
        table = table.sort_by([("t_ns", "ascending")])
    if derive is not None:
        meta.update(derive(table))
    if extra_meta:
        meta.update(extra_meta)
    meta["journal_truncated"] = truncated
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, default=str).encode()})
    tmp = parquet_path.with_name(parquet_path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, parquet_path)
    journal_path.unlink(missing_ok=True)
    return parquet_path


def recover_run_dir(run_dir: Path, derivers: dict[str, MetaDeriver] | None = None) -> list[Path]:
    """Finalise every journal left in ``run_dir`` by a writer that did not close; returns the Parquet paths."""
    out = []
    for journal in sorted(Path(run_dir).glob(f"*.parquet{JOURNAL_SUFFIX}")):
        parquet = journal.with_name(journal.name[: -len(JOURNAL_SUFFIX)])
        derive = (derivers or {}).get(parquet.name)
        out.append(finalize_journal(journal, parquet, extra_meta={"recovered": True}, derive=derive))
    return out


def read_metadata(parquet_path: Path) -> dict[str, Any]:
    """The kairosbench JSON metadata of a telemetry Parquet file ({} if none)."""
    schema = pq.read_schema(parquet_path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}
