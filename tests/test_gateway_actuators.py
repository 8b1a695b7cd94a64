"""Actuators: idempotent, read-before-write, write-ahead state, opt-in NVML, dry run, restore after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from kairosbench.errors import ActuatorError, UsageError
from kairosbench.gateway.actuator_state import ActuatorStateFile
from kairosbench.gateway.actuators import DryRunActuator, EmulatorClockActuator, NvmlClockActuator, restore_from_state
from kairosbench.gateway.loopback import running_loopback
from kairosbench.gateway.telemetry import emulator_telemetry, metrics_telemetry


class FakeNvml:
    """The three pynvml calls the NVML actuator makes, recording them (a fake, not a mock)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.locked: tuple[int, int] | None = None

    def nvmlInit(self) -> None:
        self.calls.append(("init",))

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return f"gpu{i}"

    def nvmlDeviceSetGpuLockedClocks(self, h: str, lo: int, hi: int) -> None:
        self.calls.append(("lock", h, lo, hi))
        self.locked = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h: str) -> None:
        self.calls.append(("reset", h))
        self.locked = None


async def test_emulator_actuator_is_idempotent_and_restores_the_original(tmp_path: Path) -> None:
    state = ActuatorStateFile(tmp_path / "actuator-state.json")
    async with running_loopback(1) as (urls, (gpu,)), aiohttp.ClientSession() as s:
        gpu.locked_clock_mhz = 1200  # someone had locked it before us
        act = EmulatorClockActuator(urls[0], s, state)
        assert await act.apply(900) is True
        assert gpu.locked_clock_mhz == 900
        entry = state.load()[0]
        assert (entry.kind, entry.original_locked_mhz, entry.applied_mhz) == ("emulator", 1200, 900)
        changes = gpu.clock_changes
        assert await act.apply(900) is False and gpu.clock_changes == changes  # no request at all
        assert await act.apply(None) is True and gpu.locked_clock_mhz is None
        await act.restore()
        assert gpu.locked_clock_mhz == 1200 and state.load() == [] and not state.path.exists()
        await act.restore()  # twice is harmless


async def test_emulator_actuator_reports_refusals(tmp_path: Path) -> None:
    async with running_loopback(1) as (urls, _), aiohttp.ClientSession() as s:
        act = EmulatorClockActuator(urls[0], s, None)
        with pytest.raises(ActuatorError, match="unsupported SM clock 901"):
            await act.apply(901)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(ActuatorError, match="failed"):
            await EmulatorClockActuator(urls[0], s, None, timeout_s=1).apply(900)


async def test_restore_from_state_after_a_kill(tmp_path: Path) -> None:
    state = ActuatorStateFile(tmp_path / "actuator-state.json")
    async with running_loopback(2) as (urls, gpus), aiohttp.ClientSession() as s:
        for url in urls:
            await EmulatorClockActuator(url, s, state).apply(810)  # ... and then the gateway "dies"
        assert [g.locked_clock_mhz for g in gpus] == [810, 810]
        assert len(json.loads(state.path.read_text())["entries"]) == 2
        done = await restore_from_state(state.path)
        assert len(done) == 2 and "810 MHz" in done[0]
        assert [g.locked_clock_mhz for g in gpus] == [None, None] and not state.path.exists()


async def test_nvml_actuator_needs_explicit_opt_in(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--allow-real-clock-changes"):
        NvmlClockActuator(0, nvml=FakeNvml())
    nvml = FakeNvml()
    state = ActuatorStateFile(tmp_path / "s.json")
    act = NvmlClockActuator(0, allow_real_clock_changes=True, state=state, nvml=nvml)
    assert await act.apply(900) and await act.apply(900) is False
    assert nvml.locked == (900, 900) and state.load()[0].kind == "nvml"
    await act.restore()
    assert nvml.locked is None and ("reset", "gpu0") in nvml.calls and not state.path.exists()
    # A kill between lock and restore: the state file lets `gateway restore` reset it.
    await act.apply(1005)
    assert await restore_from_state(state.path, nvml=nvml) and nvml.locked is None


async def test_dry_run_changes_nothing_but_tracks_what_it_would_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = ActuatorStateFile(tmp_path / "s.json")
    act = DryRunActuator("http://gpu-box:8000", state)
    caplog.set_level("INFO", logger="kairosbench.gateway")
    assert await act.apply(900) and act.current_mhz == 900 and await act.apply(900) is False
    assert "would lock SM clock at 900 MHz" in caplog.text
    assert not state.path.exists()  # nothing real changed: nothing to restore after a kill
    await act.restore()


def test_telemetry_mapping_from_emulator_and_metrics() -> None:
    t = emulator_telemetry(
        {"sm_clock_mhz": 1410, "locked_clock_mhz": 1410, "power_w": 400.0, "gpu_util_pct": 50.0, "power_limit_w": 700.0, "energy_mj": 5000, "supported_sm_clocks_mhz": [345, 1410, 1980]},
        {"kv_capacity_tokens": 1600, "num_gpu_blocks": 100, "kv_used_blocks": 25, "num_running": 3, "num_waiting": 1, "preemptions_total": 2, "prefix_queries_tokens": 10, "prefix_hits_tokens": 5, "recomputed_tokens_total": 7},
    )
    assert (t.kv_capacity_tokens, t.kv_usage_frac, t.gpu_util_frac, t.energy_j, t.supported_clocks_mhz) == (1600, 0.25, 0.5, 5.0, (345, 1410, 1980))
    text = "\n".join(
        [
            'vllm:cache_config_info{block_size="16",num_gpu_blocks="2000",engine="0"} 1.0',
            'vllm:kv_cache_usage_perc{engine="0"} 0.42',
            'vllm:num_requests_running{engine="0"} 7',
            'vllm:num_requests_waiting{engine="0"} 2',
            'vllm:num_preemptions_total{engine="0"} 11',
            'vllm:prefix_cache_queries_total{engine="0"} 1000',
            'vllm:prefix_cache_hits_total{engine="0"} 900',
        ]
    )
    m = metrics_telemetry(text)
    assert (m.kv_capacity_tokens, m.kv_usage_frac, m.num_running, m.num_waiting, m.preemptions_total, m.prefix_hits_tokens) == (32000, 0.42, 7, 2, 11, 900)
    assert metrics_telemetry(text, kv_capacity_tokens=5).kv_capacity_tokens == 5
