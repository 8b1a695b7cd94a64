"""The run's profiler wiring, piece by piece: source planning, spec checks, live fields,
replay-window energy and idle baselines, the summary rows, and stopping on cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from io import StringIO

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from kairosbench.errors import UsageError
from kairosbench.profiler.schema import POWER_SCHEMA
from kairosbench.replay.config import RunConfig
from kairosbench.replay.metrics import RunSummary
from kairosbench.replay.profiling import _stop, check_profile_specs, format_live_power, plan_sources
from kairosbench.replay.progress import LiveStats, LiveView
from kairosbench.replay.run_energy import IdleBaseline, lowest_mean_power_w, run_energy

pytestmark = pytest.mark.timeout(60)

EMU = "http://127.0.0.1:8001"
REAL = "http://gpu7:8000"


# -- planning -------------------------------------------------------------------------------
def plan(specs: list[str], *, instances: list[str], emulators: list[str], gpus: bool) -> tuple:
    return plan_sources(specs, instance_endpoints=instances, emulator_endpoints=emulators, local_gpus=gpus, hostname="h1")


def test_auto_uses_the_emulator_for_emulated_instances_even_with_local_gpus() -> None:
    sources, notes, nvml_host = plan(["auto"], instances=[EMU, "http://127.0.0.1:8002"], emulators=[EMU, "http://127.0.0.1:8002"], gpus=True)
    assert sources == ("emulator:http://127.0.0.1:8001", "emulator:http://127.0.0.1:8002")
    assert notes == () and nvml_host is None


def test_an_emulator_given_with_a_path_is_read_at_its_root() -> None:
    sources, _, _ = plan(["auto"], instances=[f"{EMU}/v1"], emulators=[f"{EMU}/v1"], gpus=False)
    assert sources == (f"emulator:{EMU}",)


def test_auto_falls_back_to_this_hosts_nvml_then_to_a_note() -> None:
    assert plan(["auto"], instances=[REAL], emulators=[], gpus=True) == (("nvml",), (), "h1")
    sources, notes, nvml_host = plan(["auto"], instances=[REAL], emulators=[], gpus=False)
    assert sources == () and nvml_host is None
    assert len(notes) == 1 and "no GPU telemetry" in notes[0] and REAL in notes[0] and "prometheus:URL" in notes[0]


def test_mixed_endpoints_and_explicit_specs() -> None:
    sources, notes, _ = plan(["auto", "prometheus:http://n1:9400/metrics"], instances=[EMU, REAL], emulators=[EMU], gpus=False)
    assert sources == (f"emulator:{EMU}", "prometheus:http://n1:9400/metrics")
    assert len(notes) == 1 and REAL in notes[0]
    assert plan(["nvml", "nvml"], instances=[REAL], emulators=[], gpus=False) == (("nvml",), (), "h1")
    sources, notes, _ = plan(["none"], instances=[EMU], emulators=[EMU], gpus=True)
    assert sources == () and "none" in notes[0]


@pytest.mark.parametrize("specs, fragment", [
    (["nvm"], "--profile 'nvm'"),
    (["emulator"], "needs a URL"),
    (["prometheus:ftp://x"], "not an http(s) URL"),
    (["none", "nvml"], "cannot be combined"),
    ([], "at least one"),
])
def test_bad_profile_specs_name_the_flag(specs: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match="--profile") as info:
        check_profile_specs(specs)
    assert fragment in str(info.value)


def test_config_accepts_a_single_spec_string_and_validates_it() -> None:
    cfg = RunConfig.from_mapping({"profile": "emulator:http://127.0.0.1:9"})
    assert cfg.profile == ["emulator:http://127.0.0.1:9"]
    cfg.validate()
    with pytest.raises(UsageError, match="--profile"):
        RunConfig(profile=["gpu"]).validate()
    with pytest.raises(UsageError, match="--idle-baseline-s"):
        RunConfig(idle_baseline_s=-1).validate()


# -- live fields ----------------------------------------------------------------------------
def test_live_fields_show_total_power_and_each_instance_clock() -> None:
    latest = {
        "127.0.0.1:8001/0/emulator": {"power_w": 310.4, "sm_clock_mhz": 1980.0},
        "127.0.0.1:8002/1/emulator": {"power_w": 76.0, "sm_clock_mhz": 345.0},
    }
    fields = format_live_power(latest)
    assert fields == {"GPU power (total)": "386 W over 2 GPUs", "SM clock": ":8001 1,980 MHz, :8002 345 MHz"}
    assert format_live_power({}) == {"GPU power": "waiting for telemetry"}
    many = {f"node{i}/{i}/nvml": {"power_w": 100.0, "sm_clock_mhz": 900.0 + 15 * i} for i in range(8)}
    assert format_live_power(many)["SM clock"] == "900–1,005 MHz (median 960) over 8 GPUs"


def test_live_view_renders_the_profiler_fields() -> None:
    stats = LiveStats(sessions_total=2)
    stats.extra_fields.append(lambda: format_live_power({"h/0/nvml": {"power_w": 250.0, "sm_clock_mhz": 1410.0}}))
    out = StringIO()
    Console(file=out, width=100, color_system=None).print(LiveView(stats))
    text = out.getvalue()
    assert "GPU power (total)" in text and "250 W" in text and "1,410 MHz" in text


# -- energy over the replay window ----------------------------------------------------------
def power_table(*, p_w, t_end_s: float, counter_scale: float = 1.0, host: str = "h", gpu: int = 0, source: str = "nvml",
                t0_s: float = 0.0) -> pa.Table:
    """Buffer rows every 20 ms at power ``p_w(t)``, poll rows every 100 ms carrying the counter."""
    rows = []
    ts = np.arange(t0_s, t_end_s + 1e-9, 0.02)
    energy, last = 0.0, ts[0]
    for i, t in enumerate(ts):
        energy += p_w(t) * (t - last)
        last = t
        t_ns = int(round(t * 1e9))
        rows.append({"t_ns": t_ns, "host": host, "gpu": gpu, "source": source, "kind": "buffer", "power_w": float(p_w(t))})
        if i % 5 == 0:
            rows.append({"t_ns": t_ns + 1, "host": host, "gpu": gpu, "source": source, "kind": "poll", "power_w": float(p_w(t)),
                         "power_avg_w": float(p_w(t)), "energy_j": 1000.0 + energy * counter_scale, "sm_clock_mhz": 1980.0})
    return pa.Table.from_pylist(rows, schema=POWER_SCHEMA)


def test_constant_power_gives_power_times_window_and_the_idle_lead_in() -> None:
    # 80 W idle for the first 2 s (the lead-in), then 400 W for the replay from 2 s to 12 s
    table = power_table(p_w=lambda t: 80.0 if t < 2.0 else 400.0, t_end_s=13.0)
    e = run_energy(table, t0_ns=2_000_000_000, t1_ns=12_000_000_000, finished_agents=4)
    assert e is not None and len(e.gpus) == 1
    assert e.window_s == pytest.approx(10.0)
    assert e.energy_j == pytest.approx(4000.0, rel=0.01)
    assert e.avg_power_w == pytest.approx(400.0, rel=0.01)
    assert e.disagreement_frac is not None and e.disagreement_frac < 0.01 and not e.flagged
    g = e.gpus[0]
    assert g.idle is not None and g.idle.origin == "measured" and g.idle.power_w == pytest.approx(80.0, rel=0.01)
    assert e.idle_power_w == pytest.approx(80.0, rel=0.01)
    assert e.energy_above_idle_j == pytest.approx(3200.0, rel=0.01)
    assert e.energy_per_agent_kj == pytest.approx(1.0, rel=0.01)
    assert e.energy_above_idle_per_agent_kj == pytest.approx(0.8, rel=0.01)


def test_a_preset_idle_wins_and_the_measured_one_is_kept_as_a_cross_check() -> None:
    table = power_table(p_w=lambda t: 80.0 if t < 2.0 else 400.0, t_end_s=13.0, source="emulator", host="127.0.0.1:9")
    preset = {"127.0.0.1:9/0/emulator": IdleBaseline(76.0, "preset", "emulator preset h100-sxm")}
    e = run_energy(table, t0_ns=2_000_000_000, t1_ns=12_000_000_000, finished_agents=0, preset_idle=preset)
    assert e is not None
    g = e.gpus[0]
    assert g.idle == preset["127.0.0.1:9/0/emulator"] and g.idle_measured_w == pytest.approx(80.0, rel=0.01)
    assert e.idle_origin == "preset"
    assert e.energy_per_agent_kj is None  # nobody finished


def test_no_lead_in_means_no_idle_baseline() -> None:
    table = power_table(p_w=lambda t: 300.0, t_end_s=5.0)
    e = run_energy(table, t0_ns=200_000_000, t1_ns=4_000_000_000, finished_agents=1)
    assert e is not None and e.idle_power_w is None and e.energy_above_idle_j is None and e.idle_origin == ""
    assert e.energy_per_agent_kj == pytest.approx(300.0 * 3.8 / 1000, rel=0.01)


def test_a_counter_that_disagrees_is_flagged_and_shown() -> None:
    table = power_table(p_w=lambda t: 300.0, t_end_s=10.0, counter_scale=1.05)
    e = run_energy(table, t0_ns=1_000_000_000, t1_ns=9_000_000_000, finished_agents=2)
    assert e is not None and e.flagged and e.disagreement_frac == pytest.approx(0.05 / 1.05, rel=0.05)
    out = StringIO()
    Console(file=out, width=140, color_system=None).print(RunSummary(duration_s=8.0, slo_tok_s=20.0, energy=e))
    text = out.getvalue()
    assert "energy per finished agent" in text and "(2 finished)" in text and "! > 2 %" in text


def test_several_gpus_add_up_and_get_a_line_each() -> None:
    a = power_table(p_w=lambda t: 200.0, t_end_s=6.0, host="n1", gpu=0)
    b = power_table(p_w=lambda t: 100.0, t_end_s=6.0, host="n1", gpu=1)
    e = run_energy(pa.concat_tables([a, b]), t0_ns=2_000_000_000, t1_ns=5_000_000_000, finished_agents=3)
    assert e is not None and len(e.gpus) == 2
    assert e.energy_j == pytest.approx(900.0, rel=0.01) and e.idle_power_w == pytest.approx(300.0, rel=0.01)
    assert e.energy_above_idle_j == pytest.approx(0.0, abs=5.0)
    out = StringIO()
    Console(file=out, width=140, color_system=None).print(RunSummary(duration_s=3.0, slo_tok_s=20.0, energy=e))
    text = out.getvalue()
    assert "2 GPUs)" in text and "GPU n1/0" in text and "GPU n1/1" in text


def test_no_telemetry_row() -> None:
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(RunSummary(duration_s=1.0, slo_tok_s=20.0))
    assert "no GPU telemetry" in out.getvalue()
    assert run_energy(pa.Table.from_pylist([], schema=POWER_SCHEMA), t0_ns=0, t1_ns=1, finished_agents=0) is None


@settings(max_examples=40, deadline=None)
@given(p_on=st.floats(50, 900), p_off=st.floats(30, 200), period=st.integers(2, 30), t0=st.floats(1.0, 3.0), span=st.floats(2.0, 8.0))
def test_energy_is_the_integral_of_any_square_wave(p_on: float, p_off: float, period: int, t0: float, span: float) -> None:
    """Counter-based energy (edge-completed) matches the exact integral of the power it counted."""
    def p(t: float) -> float:
        return p_on if int(t / (0.02 * period)) % 2 == 0 else p_off

    table = power_table(p_w=p, t_end_s=t0 + span + 1.0)
    t0_ns, t1_ns = int(t0 * 1e9), int((t0 + span) * 1e9)
    e = run_energy(table, t0_ns=t0_ns, t1_ns=t1_ns, finished_agents=1)
    assert e is not None and e.energy_j is not None
    # what the fake counter accumulated over the window: each 20 ms step at the power at its end
    exact = sum(p(t) * 0.02 for t in np.arange(0.0, t0 + span + 1.0, 0.02) if t0 < t <= t0 + span)
    assert e.energy_j == pytest.approx(exact, rel=0.02, abs=max(p_on, p_off) * 0.1)
    assert e.energy_j == pytest.approx(e.avg_power_w * e.window_s)


def test_lowest_mean_power_needs_a_full_window() -> None:
    t = np.arange(0, 3_000_000_000, 20_000_000)
    p = np.where(t < 1_500_000_000, 120.0, 90.0)
    assert lowest_mean_power_w(t, p, before_ns=900_000_000) is None
    assert lowest_mean_power_w(t, p, before_ns=3_000_000_000) == pytest.approx(90.0, rel=0.01)


# -- stopping survives cancellation ---------------------------------------------------------
class SlowStopHandle:
    """A stand-in for ProfilerHandle whose stop() takes a while, in a worker thread."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def stop(self) -> str:
        time.sleep(0.3)
        self.stopped.set()
        return "summary"


async def test_stop_finishes_even_when_the_run_is_cancelled_meanwhile() -> None:
    handle = SlowStopHandle()
    task = asyncio.create_task(_stop(handle))
    await asyncio.sleep(0.05)
    task.cancel()  # a second Ctrl-C while the profiler writes its files
    summary, cancelled = await task
    assert handle.stopped.is_set() and summary == "summary" and cancelled
