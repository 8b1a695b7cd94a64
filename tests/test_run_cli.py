"""`kairosbench run` end to end: config file + flags, errors at the edge, the embedded emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from kairosbench.errors import InputError, UsageError
from kairosbench.replay.config import RunConfig, load_config_file
from kairosbench.workload.model import Session, Turn, Workload

pytestmark = pytest.mark.timeout(180)


def kb(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kairosbench.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ready = tmp_path_factory.mktemp("mock") / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "kairosbench.replay.mockserver", "--emulator-like", "--ready-file", str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "mock server did not start"
        time.sleep(0.05)
    try:
        yield json.loads(ready.read_text())["url"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def small_workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kairosbench.workload.io import save_workload

    wl = Workload([Session(f"s{i}", ["swe", "de"][i % 2], 0.5 * i, [Turn(800 if j == 0 else 60, 16, 0.5) for j in range(3)]) for i in range(4)])
    path = tmp_path_factory.mktemp("wl") / "small.parquet"
    save_workload(wl, path)
    return path


def test_config_file_then_flags(mock_url: str, small_workload: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'workload = "{small_workload}"\nendpoint = "{mock_url}"\ntime-scale = 0.01\nmax_sessions = 2\nseed = 5\nslo_tok_s = 35\nprogress = false\n')
    out = tmp_path / "run"
    r = kb("run", "--config", str(cfg), "--seed", "9", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "kairosbench run summary" in r.stdout and "completed" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["config"]
    assert (c["seed"], c["max_sessions"], c["time_scale"], c["slo_tok_s"]) == (9, 2, 0.01, 35)
    assert c["endpoint"] == [mock_url]
    assert manifest["status"] == "completed"
    assert manifest["workload"]["sha256"] and manifest["workload"]["sessions"] == 4
    assert manifest["effective"]["time_scale"] == 0.01
    assert pd.read_parquet(out / "sessions.parquet").shape[0] == 2
    # repeat the run from its own manifest
    again = tmp_path / "again"
    r2 = kb("run", "--config", str(out / "manifest.json"), "--out", str(again))
    assert r2.returncode == 0, r2.stderr
    c2 = json.loads((again / "manifest.json").read_text())["config"]
    assert {k: v for k, v in c2.items() if k != "out"} == {k: v for k, v in c.items() if k != "out"}


def test_api_key_is_sent_but_never_written(mock_url: str, small_workload: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "kairosbench.cli", "run", "-e", mock_url, "-w", str(small_workload), "--out", str(out), "--no-progress", "--time-scale", "0.01", "--max-sessions", "1", "--api-key-env", "KB_TEST_KEY"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "KB_TEST_KEY": "sk-secret-123"},
    )
    assert r.returncode == 0, r.stderr
    for f in out.iterdir():
        if f.is_file():
            assert b"sk-secret-123" not in f.read_bytes(), f.name
    assert "sk-secret-123" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--arrival", "poisson"], 2, "--arrival poisson needs --rate"),
        (["--arrival", "closed"], 2, "--concurrency"),
        (["--rate", "2"], 2, "--rate only applies"),
        (["--time-scale", "0"], 2, "--time-scale must be > 0"),
        (["--endpoint", "localhost:8000"], 2, "expected an http:// or https://"),
        (["--workload", "/nonexistent/w.parquet"], 2, "workload file not found"),
    ],
)
def test_usage_errors_name_the_flag(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    r = kb("run", "--out", str(tmp_path / "r"), "--no-progress", *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_bad_config_files(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("rate = 1\nbogus_key = 3\n")
    with pytest.raises(InputError, match="field 'bogus_key'"):
        load_config_file(bad)
    broken = tmp_path / "c.yaml"
    broken.write_text("rate: [1,\n")
    with pytest.raises(InputError, match="c.yaml"):
        load_config_file(broken)
    r = kb("run", "--config", str(bad))
    assert r.returncode == 1 and "bogus_key" in r.stderr
    ok = tmp_path / "c.yml"
    ok.write_text("arrival: poisson\nrate: 0.5\nduration: 30\n")
    cfg = RunConfig.from_mapping(load_config_file(ok))
    cfg.validate()
    assert (cfg.arrival, cfg.rate, cfg.duration_s) == ("poisson", 0.5, 30)
    with pytest.raises(UsageError):
        RunConfig(arrival="closed").validate()


def test_run_on_the_embedded_emulator(small_workload: Path, tmp_path: Path) -> None:
    pytest.importorskip("kairosbench.emulator.launch")
    out = tmp_path / "run"
    r = kb("run", "--workload", str(small_workload), "--time-scale", "0.05", "--out", str(out), "--no-progress", timeout=150)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["services"]["emulator"]["mode"] in ("subprocess", "in-process")
    assert manifest["endpoints"][0]["tokenizer"]["name"] == "emulator"
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == 12 and (req["status"] == "ok").all()
    # the emulator counts with the same tokenizer: prompt sizes match the trace exactly
    assert (req["prompt_tokens"] == req["prompt_tokens_expected"]).all()
    assert (req["output_tokens"] == req["output_tokens_expected"]).all()
    assert manifest["summary"]["sessions_completed"] == 4
