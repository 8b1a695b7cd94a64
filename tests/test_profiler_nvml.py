"""The NVML path on CI: FakeNvml replays readings through the real source, sampler and writer.

Time is virtual: one clock drives the fake's hardware and the sampler's timestamps, and the
test calls the sampler's steps (poll every 50 ms, drain every 0.5 s, flush every 1 s) itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pynvml
import pytest

from kairosbench.profiler.journal import read_metadata
from kairosbench.profiler.launch import summarize_run_dir
from kairosbench.profiler.sampler import Sampler, SamplerConfig
from kairosbench.profiler.source_nvml import NvmlSource
from kairosbench.testing import FakeNvml, NvmlFault, NvmlReading, NvmlRecording

FIXTURES = Path(__file__).parent / "fixtures" / "profiler"
T0 = 1_800_000_000_000_000_000


class VClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


def bursts(t: float) -> float:
    return 700.0 if (t % 0.4) < 0.2 else 120.0


async def replay(tmp_path: Path, recording: NvmlRecording, seconds: float, *, drain_every: int = 10, **fake_kw: object) -> tuple[Sampler, NvmlSource, FakeNvml]:
    clock = VClock()
    fake = FakeNvml(recording, clock_ns=clock, **fake_kw)  # type: ignore[arg-type]
    source = NvmlSource(fake, host="h", now_ns=clock, clocks={"CLOCK_REALTIME": clock, "CLOCK_MONOTONIC": lambda: clock() - 10**18})
    sampler = Sampler(SamplerConfig(run_dir=tmp_path), now_ns=clock, sources=[("nvml", source)])
    await sampler.open()
    for step in range(1, int(round(seconds / 0.05)) + 1):
        clock.t += 50_000_000
        await sampler.poll_source(source)
        if step % drain_every == 0:
            await sampler.drain_source(source)
        if step % 20 == 0:
            await sampler.flush()
    await sampler.drain_source(source)
    await sampler.close()
    return sampler, source, fake


def buffer_rows(run_dir: Path, gpu: int = 0) -> np.ndarray:
    table = pq.read_table(run_dir / "power.parquet").to_pandas()
    return table[(table.kind == "buffer") & (table.gpu == gpu)].t_ns.to_numpy()


async def test_every_buffer_sample_lands_once_despite_repeats_and_skips(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(4.0, bursts, gpus=2)
    skipped = {110, 111, 112}  # the hardware skipped 2.20-2.24 s (inside one drain's span)
    for gpu in recording.gpus:
        gpu.samples = [s for i, s in enumerate(gpu.samples) if i not in skipped]
    _, source, _ = await replay(tmp_path, recording, 3.0, repeat_seen=7)
    detail = source.describe()
    for gpu in (0, 1):
        got = buffer_rows(tmp_path, gpu)
        expected_us = [ts for ts, _ in recording.gpus[gpu].samples if 0 < ts <= 3_000_000]
        # Buffer timestamps are the fake's own (realtime µs) mapped onto the run clock: here identical.
        assert list(got) == [T0 + ts * 1000 for ts in expected_us]
    assert detail["buffer_duplicates_dropped"] > 0
    assert detail["buffer_gaps_within_drain"] == 2 and detail["buffer_missing_within_drain_est"] == 6
    assert detail["buffer_gaps_across_drains"] == 0
    assert detail["buffer_clock"] == "CLOCK_REALTIME"


async def test_draining_too_rarely_is_visible_as_gaps_across_drains(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(4.0, bursts)
    _, source, _ = await replay(tmp_path, recording, 3.0, drain_every=20, ring_size=20)
    detail = source.describe()
    assert detail["buffer_gaps_across_drains"] >= 2
    assert detail["buffer_missing_across_drains_est"] >= 2 * 25


async def test_poll_rows_carry_every_signal_on_its_period(tmp_path: Path) -> None:
    await replay(tmp_path, NvmlRecording.synthetic(4.0, bursts), 2.0)
    table = pq.read_table(tmp_path / "power.parquet").to_pandas()
    poll = table[table.kind == "poll"]
    assert len(poll) == 40
    assert poll.power_w.notna().all() and poll.energy_j.notna().all() and poll.sm_clock_mhz.notna().all()
    assert poll.temp_c.notna().all()  # every read is cheap here, so every signal is read every poll
    periods = read_metadata(tmp_path / "power.parquet")["update_periods"]["columns"]
    assert periods["energy_j"]["update_period_s"] == pytest.approx(0.1, abs=1e-6)
    assert periods["power_w"]["poll_period_s"] == pytest.approx(0.05, abs=1e-6)
    assert periods["buffer"]["sample_period_s"] == pytest.approx(0.02, abs=1e-6)


async def test_energy_counter_and_integration_agree_and_a_wrap_is_bridged(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(6.0, lambda t: 300.0 + 100.0 * math.sin(t * 3), energy_start_mj=2**32 - 800_000)
    for gpu in recording.gpus:  # a 32-bit mJ counter that wraps 0.8 kJ in (about 2.7 s)
        gpu.readings = [NvmlReading(**{**{f: getattr(r, f) for f in r.__slots__}, "energy_mj": r.energy_mj % 2**32}) for r in gpu.readings]
    await replay(tmp_path, recording, 5.0)
    (g,) = summarize_run_dir(tmp_path).gpus
    assert g.counter_discontinuities == 1
    assert g.integrated_from == "buffer"
    assert g.disagreement_frac is not None and g.disagreement_frac < 0.005
    # ... and both match the exact integral of the power function over the window.
    t0 = (pq.read_table(tmp_path / "power.parquet").column("t_ns")[0].as_py() - T0) / 1e9
    grid = np.linspace(t0, t0 + g.window_s, 200_001)
    exact_j = float(np.trapezoid(300.0 + 100.0 * np.sin(grid * 3), grid)) if hasattr(np, "trapezoid") else float(np.trapz(300.0 + 100.0 * np.sin(grid * 3), grid))
    assert g.energy_j == pytest.approx(exact_j, rel=0.01)


async def test_errors_mid_run_are_counted_and_sampling_goes_on(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(4.0, bursts)
    recording.faults = [
        NvmlFault("nvmlDeviceGetFieldValues", pynvml.NVML_ERROR_UNKNOWN, 0.5, 0.7),
        NvmlFault("nvmlDeviceGetSamples", pynvml.NVML_ERROR_GPU_IS_LOST, 1.0, 1.6),
    ]
    sampler, source, _ = await replay(tmp_path, recording, 3.0)
    table = pq.read_table(tmp_path / "power.parquet").to_pandas()
    poll = table[table.kind == "poll"]
    t_s = (poll.t_ns - T0) / 1e9
    assert poll.power_w[(t_s > 0.5) & (t_s < 0.7)].isna().all()
    assert poll.power_w[t_s > 0.8].notna().all() and poll.sm_clock_mhz.notna().all()
    assert source.describe()["read_errors"] >= 4
    # Samples during the failed drains were still in the ring at the next one: nothing lost.
    assert source.describe()["buffer_gaps_across_drains"] == 0
    assert any("GPU 0" in w and "nvmlDeviceGetSamples" in w for w in sampler.stats()["warnings"])


async def test_unsupported_signal_is_dropped_after_one_call_with_a_note(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(2.0, bursts)
    recording.faults = [NvmlFault("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_NOT_SUPPORTED)]
    sampler, _, fake = await replay(tmp_path, recording, 1.0)
    assert fake.calls["nvmlDeviceGetTemperature"] == 1
    assert pq.read_table(tmp_path / "power.parquet").column("temp_c").null_count == pq.read_metadata(tmp_path / "power.parquet").num_rows
    (info,) = sampler.gpus
    assert any("temp_c" in note for note in read_metadata(tmp_path / "power.parquet")["sources_detail"]["nvml"]["gpus"]["0"]["notes"])
    del info


async def test_missing_instant_field_falls_back_to_power_usage_and_says_so(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(2.0, bursts)
    for gpu in recording.gpus:
        gpu.readings = [NvmlReading(**{**{f: getattr(r, f) for f in r.__slots__}, "power_instant_mw": None}) for r in gpu.readings]
    sampler, _, _ = await replay(tmp_path, recording, 1.0)
    (info,) = sampler.gpus
    assert any("nvmlDeviceGetPowerUsage" in note for note in info.notes)
    poll = pq.read_table(tmp_path / "power.parquet").to_pandas().query("kind == 'poll'")
    assert poll.power_w.notna().all()
    assert (poll.power_w == poll.power_avg_w).all()


async def test_permission_denied_names_what_is_missing(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(2.0, bursts)
    recording.faults = [NvmlFault("nvmlDeviceGetSamples", pynvml.NVML_ERROR_NO_PERMISSION)]
    sampler, _, _ = await replay(tmp_path, recording, 1.0)
    warnings = sampler.stats()["warnings"]
    assert any("no permission" in w and "/dev/nvidia" in w and "nvmlDeviceGetSamples" in w for w in warnings)
    assert len(buffer_rows(tmp_path)) == 0


async def test_no_nvml_is_a_warning_and_no_file(tmp_path: Path) -> None:
    recording = NvmlRecording.synthetic(1.0, bursts)
    recording.faults = [NvmlFault("nvmlInit", pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)]
    source = NvmlSource(FakeNvml(recording), host="h")
    sampler = Sampler(SamplerConfig(run_dir=tmp_path), sources=[("nvml", source)])
    assert await sampler.open() == []
    assert any("NVML is unavailable" in w and "libnvidia-ml" in w for w in sampler.warnings)
    await sampler.close()
    assert not (tmp_path / "power.parquet").exists()
    assert summarize_run_dir(tmp_path, warnings=sampler.warnings).gpus == ()


@pytest.mark.skipif(not (FIXTURES / "h100_recording.json").exists(), reason="no H100 recording yet")
async def test_recorded_h100_bursts_replay_through_the_sampler(tmp_path: Path) -> None:
    recording = NvmlRecording.load(FIXTURES / "h100_recording.json")
    seconds = round((min(recording.duration_s, 3.0) - 0.1) / 0.05) * 0.05
    await replay(tmp_path, recording, seconds)
    (g,) = summarize_run_dir(tmp_path).gpus
    assert g.integrated_from == "buffer"
    assert g.peak_power_w is not None and g.peak_power_w > 500  # the bursts are in the recording
    # Every hardware sample of the recording (its real, jittery spacing included) lands exactly once.
    expected = [T0 + ts * 1000 for ts, _ in recording.gpus[0].samples if 0 < ts <= round(seconds * 1e6)]
    assert list(buffer_rows(tmp_path)) == expected
    assert g.disagreement_frac is not None and g.disagreement_frac < 0.03


async def test_an_expensive_energy_read_is_sparse_and_dated_by_the_average_power_ticks(tmp_path: Path) -> None:
    # As on the measured H100: the energy counter costs ~4 ms of CPU per read, the rest microseconds.
    recording = NvmlRecording.synthetic(8.0, lambda t: 300.0 + 250.0 * math.sin(t * 2.0))
    costs = {"field:83": 0.002, "nvmlDeviceGetTotalEnergyConsumption": 0.002}
    sampler, source, fake = await replay(tmp_path, recording, 6.0, cpu_cost_s=costs)
    (info,) = sampler.gpus
    assert any("energy_j read every 20 polls" in note for note in info.notes)
    poll = pq.read_table(tmp_path / "power.parquet").to_pandas().query("kind == 'poll'")
    # Polls 0, 20, ..., 100, plus one right after the first observed tick so the window starts early
    # (this test drives the steps itself: no final full poll).
    assert poll.energy_j.notna().sum() == 7
    assert (poll.t_ns[poll.energy_j.notna()].iloc[1] - T0) / 1e9 <= 0.2
    assert poll.power_avg_w.notna().all() and poll.power_w.notna().all()
    (g,) = summarize_run_dir(tmp_path).gpus
    # Dated by the 1 s-average ticks, the sparse counter still agrees with the 20 ms samples...
    assert g.disagreement_frac is not None and g.disagreement_frac < 0.01
    # ...over a window from the first tick (~0.1 s) to the last read at 5 s.
    assert g.window_s > 4.7
    detail = source.describe()["gpus"]["0"]
    assert detail["read_cpu_us"]["nvmlDeviceGetTotalEnergyConsumption"] > 1000
    assert {r["call"]: r["every_n_polls"] for r in detail["readers"]}["nvmlDeviceGetClockInfo(SM)"] == 1


async def test_a_read_that_is_costly_only_now_and_then_becomes_sparse_by_its_mean_cost(tmp_path: Path) -> None:
    # Like nvmlDeviceGetUtilizationRates on the measured H100: cheap in a median of three, 559 µs on average.
    recording = NvmlRecording.synthetic(4.0, bursts)
    sampler, source, fake = await replay(tmp_path, recording, 3.0, cpu_cost_s={"nvmlDeviceGetUtilizationRates": (0.004, 5)})
    readers = {r["call"]: r for r in source.describe()["gpus"]["0"]["readers"]}
    assert readers["nvmlDeviceGetUtilizationRates"]["every_n_polls"] == 20
    assert readers["nvmlDeviceGetUtilizationRates"]["mean_cpu_us"] > 200
    assert readers["nvmlDeviceGetClockInfo(SM)"]["every_n_polls"] == 1
    assert fake.calls["nvmlDeviceGetUtilizationRates"] < 20 + 3 + 60 // 20 + 2  # calibration, 20 polls, then sparse
    assert any("gpu_util_pct/mem_util_pct read every 20 polls from poll" in n for n in source.describe()["gpus"]["0"]["notes"])
