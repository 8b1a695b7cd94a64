"""`kairosbench run` with the profiler, end to end on loopback: the embedded emulator's power and
engine metrics land in the run directory, `--profile none` writes no power file, SIGINT still
leaves readable Parquet, an error path stops the profiler too, and `auto` without a GPU notes
and goes on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pandas as pd
import pytest

from kairosbench.errors import EndpointError
from kairosbench.profiler.launch import detect_sources
from kairosbench.replay.cli import build_services
from kairosbench.replay.config import RunConfig
from kairosbench.replay.mockserver import MockBehavior, MockServer
from kairosbench.replay.orchestrate import run_from_config
from kairosbench.replay.run_energy import energy_from_run_dir
from kairosbench.workload.model import Session, Turn, Workload

pytestmark = pytest.mark.timeout(120)

BUNDLED = Path(__file__).resolve().parents[1] / "workloads" / "mixed-small.parquet"


def kb(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kairosbench.cli", *args], capture_output=True, text=True, timeout=timeout)


def tiny_workload(n: int = 2, turns: int = 3) -> Workload:
    return Workload([Session(f"a{i}", "swe", 0.1 * i, [Turn(400 if j == 0 else 40, 24, 0.3) for j in range(turns)]) for i in range(n)])


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled workload not built")
def test_default_run_records_power_engine_metrics_and_energy_per_agent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = kb("run", "--max-sessions", "2", "--time-scale", "0.05", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "energy per finished agent" in r.stdout and "(2 finished)" in r.stdout and "idle baseline (preset)" in r.stdout
    power = pd.read_parquet(out / "power.parquet")
    engine = pd.read_parquet(out / "engine.parquet")
    assert len(power) > 0 and set(power["source"]) == {"emulator"} and {"poll", "buffer"} <= set(power["kind"])
    assert len(engine) > 0 and set(engine["engine"]) == {"vllm"} and engine["generation_tokens"].max() > 0
    manifest = json.loads((out / "manifest.json").read_text())
    prof = manifest["services"]["profiler"]
    assert prof["requested"] == ["auto"] and prof["sources"] == [f"emulator:{manifest['services']['emulator']['endpoints'][0]}"]
    assert prof["summary"]["gpus"][0]["energy_j"] > 0 and "power.parquet" in prof["summary"]["profiler"]["files"]
    assert list(prof["idle_presets"].values())[0]["power_w"] == 76.0  # the h100-sxm preset's parked idle
    energy = manifest["summary"]["energy"]
    assert energy["finished_agents"] == 2 and energy["energy_per_agent_kj"] > 0
    assert energy["disagreement_frac"] < 0.02 and not energy["flagged"]
    assert energy["energy_above_idle_j"] < energy["energy_j"]
    # the summary is recomputable from the run directory alone
    again = energy_from_run_dir(out)
    assert again is not None and again.energy_j == pytest.approx(energy["energy_j"])
    # replay requests fall inside the profiled span, on the same clock
    req = pd.read_parquet(out / "requests.parquet")
    assert power["t_ns"].min() <= req["t_start_ns"].min() and power["t_ns"].max() >= req["t_end_ns"].max()


async def test_profile_none_writes_no_power_file(tmp_path: Path) -> None:
    cfg = RunConfig(profile=["none"], emulator_in_process=True, out=str(tmp_path / "run"), progress=False, time_scale=0.05)
    outcome = await run_from_config(cfg, workload=tiny_workload(n=1, turns=2))
    assert outcome.status == "completed"
    run = tmp_path / "run"
    assert not (run / "power.parquet").exists() and not (run / "power.parquet.journal").exists()
    assert len(pd.read_parquet(run / "engine.parquet")) > 0  # engine metrics are on by default
    prof = outcome.manifest["services"]["profiler"]
    assert prof["sources"] == [] and any("--profile none" in n for n in prof["notes"])
    assert outcome.summary is not None and outcome.summary.energy is None


async def test_auto_recognises_an_emulator_passed_as_endpoint(tmp_path: Path) -> None:
    """An emulator started on its own (`kairosbench emulate`) is profiled through its telemetry
    API, with its preset's idle power, not through NVML."""
    from kairosbench.emulator.launch import running_emulator

    async with running_emulator(1, gpu="h100-nvl") as urls:
        cfg = RunConfig(endpoint=[f"{urls[0]}/v1"], out=str(tmp_path / "run"), progress=False, time_scale=0.05)
        outcome = await run_from_config(cfg, workload=tiny_workload(n=1, turns=2))
    assert outcome.status == "completed"
    prof = outcome.manifest["services"]["profiler"]
    assert prof["sources"] == [f"emulator:{urls[0]}"] and prof["engine_endpoints"] == [f"{urls[0]}/v1"]
    assert [v["power_w"] for v in prof["idle_presets"].values()] == [50.0]  # h100-nvl, KAIROS's idle figure
    energy = outcome.summary.energy if outcome.summary else None
    assert energy is not None and energy.idle_origin == "preset" and energy.energy_per_agent_kj is not None


class FailingService:
    """A service after the profiler that fails on entry, as a broken gateway would."""

    @contextlib.asynccontextmanager
    async def __call__(self, ctx: Any) -> AsyncIterator[None]:
        raise EndpointError("gateway failed to start (test)")
        yield  # pragma: no cover


async def test_an_error_after_start_still_stops_the_profiler_and_keeps_its_files(tmp_path: Path) -> None:
    cfg = RunConfig(emulator_in_process=True, out=str(tmp_path / "run"), progress=False, time_scale=0.05)
    with pytest.raises(EndpointError):
        await run_from_config(cfg, workload=tiny_workload(n=1, turns=1), services=[*build_services(cfg), FailingService()])
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "gateway failed" in manifest["error"]
    assert manifest["services"]["profiler"]["summary"]["gpus"]  # stopped and summarised
    assert len(pd.read_parquet(run / "power.parquet")) > 0 and not (run / "power.parquet.journal").exists()


@pytest.mark.skipif(bool(detect_sources()), reason="this host has an NVML GPU: auto would profile it")
async def test_auto_without_gpu_on_a_plain_endpoint_notes_and_goes_on(tmp_path: Path) -> None:
    async with MockServer(MockBehavior(emulator_like=True)) as url:
        cfg = RunConfig(endpoint=[url], out=str(tmp_path / "run"), progress=False, time_scale=0.01)
        outcome = await run_from_config(cfg, workload=tiny_workload())
    assert outcome.status == "completed" and outcome.summary is not None and outcome.summary.requests_ok == 6
    prof = outcome.manifest["services"]["profiler"]
    assert prof["sources"] == [] and prof["engine_endpoints"] == []
    assert any(n.startswith("no GPU telemetry") and url in n for n in prof["notes"])
    assert any(n.startswith(f"no engine metrics from {url}") and "HTTP 404" in n for n in prof["notes"])
    run = tmp_path / "run"
    assert not (run / "power.parquet").exists() and not (run / "engine.parquet").exists()
    assert outcome.summary.energy is None


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled workload not built")
def test_sigint_mid_run_leaves_readable_power_parquet(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kairosbench.cli", "run", "--out", str(out), "--no-progress", "--flush-interval-s", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        parts = out / "requests.parts"
        while not (parts.exists() and any(parts.glob("part-*.parquet"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no request was flushed within 60 s"
            time.sleep(0.1)
        assert (out / "power.parquet.journal").exists()  # the profiler is writing
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    power = pd.read_parquet(out / "power.parquet")
    assert len(power) > 0 and not (out / "power.parquet.journal").exists()
    assert power["t_ns"].max() >= manifest["replay"]["t_replay_end_ns"] - 1_000_000_000
    assert manifest["services"]["profiler"]["summary"]["gpus"][0]["energy_j"] > 0
    assert "energy per finished agent" in stdout


@pytest.mark.skipif(not BUNDLED.exists(), reason="bundled workload not built")
def test_sigkill_of_the_run_lets_the_sampler_finish_its_files(tmp_path: Path) -> None:
    """The sampler is its own process: when `kairosbench run` dies, its stdin closes and it
    writes complete Parquet files by itself."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kairosbench.cli", "run", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / "power.parquet.journal").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the profiler never started"
            time.sleep(0.1)
        journal = out / "power.parquet.journal"
        size0 = journal.stat().st_size
        while journal.stat().st_size <= size0:  # wait for a flush of rows
            assert proc.poll() is None and time.monotonic() < deadline, "the profiler never flushed"
            time.sleep(0.05)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while (out / "power.parquet.journal").exists() or not (out / "power.parquet").exists():
        assert time.monotonic() < deadline, "the sampler did not finish power.parquet after its parent died"
        time.sleep(0.1)
    assert len(pd.read_parquet(out / "power.parquet")) > 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # the run itself never finished
