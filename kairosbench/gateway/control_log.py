"""control.parquet (every decision with its inputs) and gateway.parquet (every proxied request).

Both are written incrementally through the profiler's kill-safe journal: each flush appends an
Arrow IPC record batch to ``<name>.parquet.journal``; a clean stop turns it into Parquet, and
after a SIGKILL ``kairosbench profile --recover DIR`` (or ``recover_run_dir``) does. One row
per instance per control epoch in control.parquet; one row per request in gateway.parquet.

Units are in the column names (``_mhz``, ``_w``, ``_j``, ``_s``, ``_ns``, ``_tokens``,
``_frac`` 0..1); the full column list is in docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from kairosbench.profiler.journal import TableJournal

__all__ = ["CONTROL_SCHEMA", "GATEWAY_SCHEMA", "ControlLog", "RequestLog"]

CONTROL_SCHEMA = pa.schema(
    [
        ("t_ns", pa.int64()),  # run clock when the epoch's decision was taken
        ("epoch", pa.int64()),
        ("policy", pa.string()),
        ("instance_id", pa.string()),
        ("endpoint", pa.string()),
        ("telemetry", pa.string()),  # emulator | metrics | none | sim
        ("telemetry_ok", pa.bool_()),
        # inputs
        ("sm_clock_mhz", pa.float64()),  # effective clock read this epoch
        ("locked_clock_mhz", pa.int64()),  # lock in force when read (null: unlocked)
        ("power_w", pa.float64()),
        ("energy_j", pa.float64()),
        ("gpu_util_frac", pa.float64()),
        ("kv_capacity_tokens", pa.int64()),  # U_max
        ("kv_usage_frac", pa.float64()),  # engine's own KV usage
        ("resident_context_tokens", pa.int64()),  # U_k (active agents)
        ("context_frac", pa.float64()),  # U_k / U_max
        ("resident_agents", pa.int64()),
        ("held_agents", pa.int64()),
        ("held_context_tokens", pa.int64()),
        ("pending_agents", pa.int64()),  # gateway-wide, not yet admitted anywhere
        ("num_running", pa.int64()),
        ("num_waiting", pa.int64()),
        ("preemptions_total", pa.int64()),
        ("recomputed_tokens_total", pa.int64()),
        ("prefix_queries_tokens", pa.int64()),
        ("prefix_hits_tokens", pa.int64()),
        ("agents_with_rate", pa.int64()),
        ("p5_agent_tok_s", pa.float64()),  # P5 per-agent output rate among this instance's agents
        # decisions
        ("clock_action", pa.string()),  # lock | reset | keep (policy named no clock) | none (no clock table)
        ("target_clock_mhz", pa.int64()),
        ("clock_changed", pa.bool_()),  # the actuator changed something this epoch
        ("actuator", pa.string()),
        ("actuator_error", pa.string()),
        ("cap_admit_below_tokens", pa.int64()),
        ("cap_hold_above_tokens", pa.int64()),
        ("cap_max_agents", pa.int64()),
        ("note", pa.string()),  # the policy's reason
        ("decide_s", pa.float64()),  # time inside policy.decide (all instances)
        ("migrations_total", pa.int64()),
        ("turns_held_total", pa.int64()),
        ("released", pa.int64()),  # agents released from the queues after this epoch's caps
    ]
)

GATEWAY_SCHEMA = pa.schema(
    [
        ("t_arrive_ns", pa.int64()),
        ("t_dispatch_ns", pa.int64()),
        ("t_first_byte_ns", pa.int64()),
        ("t_end_ns", pa.int64()),
        ("agent_id", pa.string()),
        ("agent_source", pa.string()),  # header | user | anonymous
        ("turn_header", pa.string()),  # X-Kairosbench-Turn as sent
        ("instance_id", pa.string()),
        ("migrated", pa.bool_()),
        ("held", pa.bool_()),
        ("waited_s", pa.float64()),  # time held at the gateway
        ("context_estimate_tokens", pa.int64()),  # what admission counted before usage was known
        ("prompt_tokens", pa.int64()),  # server usage (null if none seen)
        ("output_tokens", pa.int64()),  # server usage, else streamed chunk count
        ("http_status", pa.int64()),
        ("ok", pa.bool_()),
        ("error", pa.string()),
    ]
)


class _Log:
    """Rows buffered in the event loop; written to the journal off the loop.

    ``append`` only extends a list (microseconds, safe on the request path). ``flush_async``
    swaps the list out and converts + appends it to the journal in a worker thread, so a
    flush of a thousand rows never stalls streaming. The journal is touched under a thread
    lock, so ``close`` waits for a flush still running in its thread (a cancelled
    ``flush_async`` does not stop the thread it started).
    """

    schema: pa.Schema
    name: str

    def __init__(self, run_dir: Path, meta: dict[str, Any]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / self.name
        self.journal = TableJournal(self.path, self.schema, meta)
        self._rows: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._journal_lock = threading.Lock()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._journal_lock:
            self.journal.append(rows)
            self.journal.flush()

    def flush(self) -> None:
        """Synchronous flush (simulator, shutdown)."""
        rows, self._rows = self._rows, []
        if rows:
            self._write(rows)

    async def flush_async(self) -> None:
        if not self._rows:
            return
        async with self._lock:
            rows, self._rows = self._rows, []
            if rows:
                await asyncio.to_thread(self._write, rows)

    def close(self, extra_meta: dict[str, Any] | None = None) -> Path:
        self.flush()
        with self._journal_lock:
            return self.journal.close(extra_meta)


class ControlLog(_Log):
    """control.parquet: flushed every epoch, so a kill loses at most one epoch."""

    schema = CONTROL_SCHEMA
    name = "control.parquet"


class RequestLog(_Log):
    """gateway.parquet: flushed at every epoch by the control loop."""

    schema = GATEWAY_SCHEMA
    name = "gateway.parquet"
