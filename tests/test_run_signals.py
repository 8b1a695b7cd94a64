"""`kairosbench run` as a user runs it: a SIGKILL leaves readable Parquet, Ctrl-C an 'interrupted' manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from kairosbench.replay.records import compact_parts, read_table
from kairosbench.workload.model import Session, Turn, Workload

pytestmark = pytest.mark.timeout(120)


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[str]:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "kairosbench.replay.mockserver", "--itl-s", "0.02", "--emulator-like", "--ready-file", str(ready)])
    try:
        _wait_for(ready.exists, 30, "the mock server")
        yield json.loads(ready.read_text())["url"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def workload_file(tmp_path: Path) -> Path:
    from kairosbench.workload.io import save_workload

    wl = Workload([Session(f"s{i}", "swe", 0.2 * i, [Turn(500 if j == 0 else 50, 40, 0.5) for j in range(40)]) for i in range(6)])
    path = tmp_path / "long.parquet"
    save_workload(wl, path)
    return path


def start_run(url: str, workload: Path, out: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "kairosbench.cli", "run", "--endpoint", url, "--workload", str(workload), "--out", str(out), "--no-progress", "--flush-interval-s", "0.2", "--time-scale", "0.1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def parts(out: Path) -> list[Path]:
    return sorted((out / "requests.parts").glob("part-*.parquet"))


def test_sigkill_leaves_readable_parquet(slow_server: str, workload_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_run(slow_server, workload_file, out)
    try:
        _wait_for(lambda: len(parts(out)) >= 2 or proc.poll() is not None, 60, "two flushed parts")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # never finished
    df = pd.read_parquet(out / "requests.parts")
    assert len(df) > 0 and set(df["status"]) <= {"ok"}
    assert read_table(out, "requests").num_rows == len(df)
    compact_parts(out / "requests.parquet")
    assert pd.read_parquet(out / "requests.parquet").shape[0] == len(df)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_finishes_cleanly_as_interrupted(slow_server: str, workload_file: Path, tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    proc = start_run(slow_server, workload_file, out)
    try:
        _wait_for(lambda: len(parts(out)) >= 1 or proc.poll() is not None, 60, "a flushed part")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["replay"]["stopped_by"] == "signal"
    assert not (out / "requests.parts").exists()
    req = pd.read_parquet(out / "requests.parquet")
    assert (req["status"] == "ok").any()
    assert set(req["status"]) <= {"ok", "cancelled"}
    ses = pd.read_parquet(out / "sessions.parquet")
    assert len(ses) == 6 and set(ses["status"]) == {"unfinished"}
    assert manifest["summary"]["requests"] == len(req)
