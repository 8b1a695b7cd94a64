"""Incremental Parquet: a killed sampler loses at most its last flush interval."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kairosbench.profiler.journal import TableJournal, read_journal, read_metadata, recover_run_dir
from kairosbench.profiler.launch import SUMMARY_FILE, launch_sampler
from kairosbench.profiler.sampler import SamplerConfig
from kairosbench.profiler.schema import METADATA_KEY, POWER_SCHEMA
from kairosbench.testing import FakeNvml, NvmlRecording


def rows(start: int, n: int) -> list[dict[str, object]]:
    return [{"t_ns": start + i, "host": "h", "gpu": 0, "source": "nvml", "kind": "poll", "power_w": 100.0 + i} for i in range(n)]


def test_clean_close_writes_sorted_parquet_with_metadata_and_removes_the_journal(tmp_path: Path) -> None:
    journal = TableJournal(tmp_path / "power.parquet", POWER_SCHEMA, {"sources": ["nvml"]})
    journal.append(rows(10, 3))
    journal.flush()
    journal.append(rows(0, 3))
    path = journal.close(extra_meta={"done": True})
    table = pq.read_table(path)
    assert table.column("t_ns").to_pylist() == [0, 1, 2, 10, 11, 12]
    assert read_metadata(path) == {"sources": ["nvml"], "done": True, "journal_truncated": False}
    assert not journal.journal_path.exists()
    assert table.schema.field("power_w").metadata == {b"unit": b"W"}


def test_a_journal_cut_mid_batch_keeps_every_complete_batch(tmp_path: Path) -> None:
    journal = TableJournal(tmp_path / "power.parquet", POWER_SCHEMA, {"sources": ["nvml"]})
    for k in range(3):
        journal.append(rows(k * 100, 50))
        journal.flush()
    size = journal.journal_path.stat().st_size
    journal.append(rows(300, 50))
    journal.flush()
    # A kill in the middle of the fourth write: the file ends inside that batch.
    with open(journal.journal_path, "r+b") as f:
        f.truncate(size + (journal.journal_path.stat().st_size - size) // 2)
    table, meta, truncated = read_journal(journal.journal_path)
    assert table is not None and table.num_rows == 150 and truncated
    assert meta == {"sources": ["nvml"]}
    (path,) = recover_run_dir(tmp_path)
    assert pq.read_table(path).num_rows == 150
    assert read_metadata(path)["recovered"] is True and read_metadata(path)["journal_truncated"] is True


def test_a_journal_without_even_a_schema_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "power.parquet.journal").write_bytes(b"\xff\xff")
    assert recover_run_dir(tmp_path) == [tmp_path / "power.parquet"]
    assert not (tmp_path / "power.parquet").exists()
    assert not (tmp_path / "power.parquet.journal").exists()


def _wait_for_batches(path: Path, n_bytes: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= n_bytes:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n_bytes} bytes")


@pytest.mark.timeout(90)
def test_sigkill_of_the_sampler_process_keeps_everything_flushed(tmp_path: Path) -> None:
    fake = FakeNvml(NvmlRecording.synthetic(4.0, lambda t: 650.0 if (t % 0.4) < 0.2 else 110.0), loop=True)
    handle = launch_sampler(SamplerConfig(run_dir=tmp_path, sources=["nvml"], nvml=fake, flush_interval_s=0.25))
    assert handle.alive and handle.gpus and handle.gpus[0].name == "Fake H100"
    journal = tmp_path / "power.parquet.journal"
    _wait_for_batches(journal, 8_000)  # a few flushes of poll and buffer rows
    flushed, _, _ = read_journal(journal)
    assert flushed is not None and flushed.num_rows > 0
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGKILL)
    summary = handle.stop()
    table = pq.read_table(tmp_path / "power.parquet")
    assert table.num_rows >= flushed.num_rows  # everything flushed before the kill is there
    assert read_metadata(tmp_path / "power.parquet")["recovered"] is True
    assert any("exited with code" in w for w in summary.warnings)
    assert summary.gpus and summary.gpus[0].energy_counter_j and summary.gpus[0].energy_integrated_j
    assert (tmp_path / SUMMARY_FILE).exists()
    assert summary is handle.stop()  # idempotent


@pytest.mark.timeout(90)
def test_clean_stop_through_the_context_manager(tmp_path: Path) -> None:
    fake = FakeNvml(NvmlRecording.synthetic(4.0, lambda t: 300.0), loop=True)
    with launch_sampler(SamplerConfig(run_dir=tmp_path, sources=["nvml"], nvml=fake)) as handle:
        key = f"{handle.gpus[0].host}/0/nvml"
        deadline = time.monotonic() + 30
        first_energy = None
        while time.monotonic() < deadline:  # until the live view shows the counter moved by >= 1 s of energy
            row = handle.latest().get(key)
            if row is not None:
                first_energy = first_energy if first_energy is not None else row["energy_j"]
                if row["energy_j"] - first_energy >= 600.0:
                    break
            time.sleep(0.05)
        assert row is not None and row["power_w"] == 300.0
    assert not handle.alive
    assert not (tmp_path / "power.parquet.journal").exists()
    meta = read_metadata(tmp_path / "power.parquet")
    assert meta["profiler_cpu"]["loop_wall_s"] > 0 and "recovered" not in meta
    summary = handle.stop()
    (g,) = summary.gpus
    # Counter reads are dated to +-half a poll (25 ms) at each end of a ~2 s window on a busy CI box.
    assert g.avg_power_w == pytest.approx(300.0, rel=0.05)
    assert g.energy_integrated_j == pytest.approx(300.0 * g.window_s, rel=0.05)
    assert pa.types.is_int64(pq.read_schema(tmp_path / "power.parquet").field("t_ns").type)
    assert METADATA_KEY in pq.read_schema(tmp_path / "power.parquet").metadata
