"""The emulator source against the live emulator (kairosbench.emulator.launch), in-process and
through the sampler process, plus the engine scraper on its vLLM-named /metrics."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kairosbench.emulator.launch import running_emulator
from kairosbench.profiler import start_profiler
from kairosbench.profiler.cli import profile
from kairosbench.profiler.journal import read_metadata
from kairosbench.profiler.launch import summarize_run_dir
from kairosbench.profiler.sampler import Sampler, SamplerConfig
from kairosbench.profiler.source_emulator import EmulatorSource, emulator_row

pytestmark = pytest.mark.timeout(120)


async def test_two_emulated_gpus_land_in_one_schema_with_their_buffers(tmp_path: Path) -> None:
    async with running_emulator(2) as urls:
        config = SamplerConfig(run_dir=tmp_path, sources=[f"emulator:{u}" for u in urls], engine_endpoints=[urls[0]], engine_interval_s=0.2)
        sampler = Sampler(config)
        gpus = await sampler.open()
        assert [g.host for g in gpus] == [u.removeprefix("http://") for u in urls]
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        await sampler.run(stop)
        await sampler.close()
    table = pq.read_table(tmp_path / "power.parquet").to_pandas()
    assert set(table.host) == {u.removeprefix("http://") for u in urls}
    assert set(table.source) == {"emulator"}
    for _, rows in table.groupby("host"):
        buffer = rows[rows.kind == "buffer"]
        assert len(buffer) >= 40  # 20 ms samples over ~1.5 s
        assert np.median(np.diff(buffer.t_ns)) == 20_000_000
        poll = rows[rows.kind == "poll"]
        assert poll.energy_j.notna().all() and poll.sm_clock_mhz.notna().all()
        assert np.all(np.diff(poll.t_ns) % 100_000_000 == 0)  # one row per 100 ms grid point
    meta = read_metadata(tmp_path / "power.parquet")
    assert meta["sources_detail"][f"emulator:{urls[0]}"]["buffer_clock"] == "run clock"
    for g in summarize_run_dir(tmp_path).gpus:
        assert g.integrated_from == "buffer"
        # The emulator dates its values, so the counter's window is exact: the two agree closely.
        assert g.disagreement_frac is not None and g.disagreement_frac < 0.005
        assert g.avg_power_w is not None and 50 < g.avg_power_w < 700
    engine = pq.read_table(tmp_path / "engine.parquet").to_pandas()
    assert len(engine) >= 5 and set(engine.engine) == {"vllm"}
    assert engine.kv_usage_frac.notna().all() and engine.num_running.notna().all()


def test_emulator_payload_maps_onto_the_columns() -> None:
    row = emulator_row({"gpu": 3, "power_w": 410.5, "power_avg_w": 400, "energy_mj": 123456, "sm_clock_mhz": 1980,
                        "throttle_reasons": 4, "temp_c": 51.0}, host="127.0.0.1:9", t_ns=7)
    assert row["gpu"] == 3 and row["energy_j"] == 123.456 and row["power_avg_w"] == 400.0
    assert row["throttle_reasons"] == 4 and row["mem_used_mib"] is None and row["kind"] == "poll"


async def test_an_emulator_that_never_answers_is_a_warning(tmp_path: Path) -> None:
    source = EmulatorSource("http://127.0.0.1:9", connect_timeout_s=0.3)
    sampler = Sampler(SamplerConfig(run_dir=tmp_path), sources=[("emulator:http://127.0.0.1:9", source)])
    assert await sampler.open() == []
    assert any("gave no telemetry" in w for w in sampler.warnings)
    await sampler.close()


async def test_start_profiler_process_against_the_emulator(tmp_path: Path) -> None:
    async with running_emulator(1) as urls:
        handle = await asyncio.to_thread(start_profiler, tmp_path, [f"emulator:{urls[0]}"], engine_endpoints=[urls[0]])
        assert handle.alive and len(handle.gpus) == 1
        await asyncio.sleep(1.5)
        summary = await asyncio.to_thread(handle.stop)
    (g,) = summary.gpus
    assert g.source == "emulator" and g.energy_counter_j and g.energy_integrated_j
    assert (tmp_path / "engine.parquet").exists() and (tmp_path / "power_summary.json").exists()
    assert summary.profiler["files"] == ["power.parquet", "engine.parquet"]


async def test_profile_command_runs_a_command_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_emulator(1) as urls:
        args = ["--out", str(tmp_path), "--source", f"emulator:{urls[0]}", "--", sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"]
        code = await asyncio.to_thread(_run_profile, args)
    assert code == 3  # the command's exit code
    err = capsys.readouterr().err
    host = urls[0].removeprefix("http://")
    assert "GPU energy and power" in err and f"profiling 1 GPU(s): {host}/0" in err
    assert "profiler CPU:" in err


async def test_profile_command_for_a_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_emulator(1) as urls:
        code = await asyncio.to_thread(_run_profile, ["--out", str(tmp_path), "--source", f"emulator:{urls[0]}", "--duration", "1"])
    assert code == 0
    assert "GPU energy and power" in capsys.readouterr().err
    assert summarize_run_dir(tmp_path).gpus[0].duration_s >= 0.9


def _run_profile(args: list[str]) -> int:
    # Non-standalone click returns the code a command exits with (click.exceptions.Exit).
    return int(profile.main(args=args, prog_name="kairosbench profile", standalone_mode=False) or 0)
