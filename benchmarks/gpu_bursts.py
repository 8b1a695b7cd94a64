"""Validate the profiler on a real GPU: bf16 matmul bursts on/off every 200 ms, then analyse.

    PYTHONPATH=. python3 benchmarks/gpu_bursts.py --out $OUT            # on an H100 (read-only)
    PYTHONPATH=. python3 benchmarks/gpu_bursts.py --out /tmp/b --fake   # dry run: FakeNvml, no torch

What it measures (results.json; figures quoted in docs/profiler.md):

1. **Which clock the sample buffer's timestamps are on**: the newest ring sample against
   CLOCK_REALTIME / MONOTONIC / BOOTTIME / MONOTONIC_RAW; and whether NVML field-value
   timestamps mark the value's update or just the query (field reads every 5 ms for 2 s).
2. **Cost of each NVML call** the sampler makes (wall and CPU per call).
3. **A profiled run** through the public API (``start_profiler``): idle, bursts, idle.
   Samples per second captured per signal and their real update periods; buffer gaps within
   and across drains; ring samples present at the end vs captured; the sampler process's CPU
   (its own accounting and /proc from outside); energy by integration vs the counter; how well
   the 20 ms buffer, the ~100 ms instant field and the 1 s average resolve the bursts (phase
   contrast, phase classification, delay against the host's burst schedule, peaks).
4. A short ``record_nvml`` recording during bursts (the FakeNvml test fixture) and a plot.

Read-only: no clock, power-limit or other GPU setting is changed (no nvmlDeviceSet* call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kairosbench.clock import now_ns  # noqa: E402
from kairosbench.profiler.buffer_clock import host_clocks  # noqa: E402
from kairosbench.profiler.journal import read_metadata  # noqa: E402
from kairosbench.profiler.launch import launch_sampler  # noqa: E402
from kairosbench.profiler.sampler import SamplerConfig  # noqa: E402
from kairosbench.testing import FakeNvml, NvmlRecording, record_nvml  # noqa: E402

FI_INSTANT, FI_AVERAGE, FI_ENERGY = 186, 185, 83


# ------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------
class Bursts:
    """bf16 matmuls switched on/off; records each on-phase [start, end) on the run clock."""

    def __init__(self, fake: bool, size: int = 8192) -> None:
        self.fake = fake
        self.phases: list[tuple[int, int]] = []
        if not fake:
            import torch

            self.torch = torch
            self.a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
            self.b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
            for _ in range(3):
                self.a @ self.b
            torch.cuda.synchronize()

    def on(self, until_s: float) -> None:
        if self.fake:
            time.sleep(max(0.0, until_s - time.monotonic()))
            return
        while time.monotonic() < until_s:
            for _ in range(4):
                self.a @ self.b
            self.torch.cuda.synchronize()

    def run(self, duration_s: float, period_s: float) -> None:
        half = period_s / 2
        t = time.monotonic()
        end = t + duration_s
        while t + period_s <= end + 1e-9:
            start_ns = now_ns()
            self.on(t + half)
            self.phases.append((start_ns, now_ns()))
            t += period_s
            time.sleep(max(0.0, t - time.monotonic()))


def fake_recording(period_s: float) -> NvmlRecording:
    return NvmlRecording.synthetic(
        8.0, lambda t: 690.0 if (t % period_s) < period_s / 2 else 130.0, update_s=0.1, sample_s=0.02, name="Fake H100 (dry run)"
    )


# ------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------
def probe_clocks(nv: Any, handle: Any) -> dict[str, Any]:
    """Lag of the newest ring sample behind each host clock, 10 reads 100 ms apart (ms)."""
    lags: dict[str, list[float]] = {name: [] for name in host_clocks()}
    for _ in range(10):
        try:
            _, samples = nv.nvmlDeviceGetSamples(handle, nv.NVML_TOTAL_POWER_SAMPLES, 0)
        except Exception as exc:  # noqa: BLE001
            return {"error": repr(exc)}
        newest_ns = max(int(s.timeStamp) for s in samples) * 1000
        for name, clock in host_clocks().items():
            lags[name].append((clock() - newest_ns) / 1e6)
        time.sleep(0.1)
    return {name: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v)), "max_ms": float(np.max(v))} for name, v in lags.items()}


def probe_fields(nv: Any, handle: Any, duration_s: float = 2.0, every_s: float = 0.005) -> dict[str, Any]:
    """Read the three fields every 5 ms: do their timestamps move with the value or with the read?"""
    rows = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        read_us = time.time_ns() // 1000
        values = nv.nvmlDeviceGetFieldValues(handle, [(FI_INSTANT, 0), (FI_AVERAGE, 0), FI_ENERGY])
        rows.append((read_us, [(int(v.timestamp), int(v.value.ullVal if v.valueType == 3 else v.value.uiVal), int(v.nvmlReturn)) for v in values]))
        time.sleep(every_s)
    out: dict[str, Any] = {"reads": len(rows)}
    for k, name in enumerate(("power_instant", "power_average", "energy")):
        ts = np.array([r[1][k][0] for r in rows], dtype=np.int64)
        vals = np.array([r[1][k][1] for r in rows], dtype=np.int64)
        read = np.array([r[0] for r in rows], dtype=np.int64)
        value_changes = np.nonzero(np.diff(vals))[0] + 1
        ts_changes = np.nonzero(np.diff(ts))[0] + 1
        out[name] = {
            "value_change_period_ms": float(np.median(np.diff(read[value_changes])) / 1e3) if len(value_changes) > 1 else None,
            "timestamp_changes": int(len(ts_changes)),
            "value_changes": int(len(value_changes)),
            "timestamp_minus_read_ms_median": float(np.median(ts - read) / 1e3),
            "timestamp_age_ms_p90": float(np.percentile(read - ts, 90) / 1e3),
        }
    return out


def probe_call_costs(nv: Any, handle: Any, n: int = 100) -> dict[str, dict[str, Any]]:
    """Wall and CPU time per call (µs) for every NVML call the sampler makes."""
    calls = {
        "nvmlDeviceGetFieldValues(3 fields)": lambda: nv.nvmlDeviceGetFieldValues(handle, [(FI_INSTANT, 0), (FI_AVERAGE, 0), FI_ENERGY]),
        "nvmlDeviceGetFieldValues(POWER_INSTANT)": lambda: nv.nvmlDeviceGetFieldValues(handle, [(FI_INSTANT, 0)]),
        "nvmlDeviceGetFieldValues(POWER_AVERAGE)": lambda: nv.nvmlDeviceGetFieldValues(handle, [(FI_AVERAGE, 0)]),
        "nvmlDeviceGetFieldValues(TOTAL_ENERGY)": lambda: nv.nvmlDeviceGetFieldValues(handle, [FI_ENERGY]),
        "nvmlDeviceGetTotalEnergyConsumption": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle),
        "nvmlDeviceGetClockInfo(SM)": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(handle),
        "nvmlDeviceGetClockInfo(MEM)": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_MEM),
        "nvmlDeviceGetUtilizationRates": lambda: nv.nvmlDeviceGetUtilizationRates(handle),
        "nvmlDeviceGetMemoryInfo": lambda: nv.nvmlDeviceGetMemoryInfo(handle),
        "nvmlDeviceGetTemperature": lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetPowerUsage": lambda: nv.nvmlDeviceGetPowerUsage(handle),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, fn in calls.items():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": repr(exc)}
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        out[name] = {"wall_us": (time.perf_counter() - w0) / n * 1e6, "cpu_us": (time.process_time() - c0) / n * 1e6}
    last = [0]

    def samples() -> None:
        try:
            _, got = nv.nvmlDeviceGetSamples(handle, nv.NVML_TOTAL_POWER_SAMPLES, last[0])
            last[0] = max(int(s.timeStamp) for s in got)
        except Exception:  # noqa: BLE001 - NotFound: nothing new
            pass

    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(50):
        last[0] = 0
        samples()  # the whole ring (~120 samples), the worst case of a drain
    out["nvmlDeviceGetSamples(full ring)"] = {"wall_us": (time.perf_counter() - w0) / 50 * 1e6, "cpu_us": (time.process_time() - c0) / 50 * 1e6}
    return out


class DenseEnergy:
    """A reference in this (benchmark) process: the counter and the 1 s average read every 50 ms.

    It costs this process ~8 % of a core (the counter read busy-waits ~4 ms); the profiler reads
    the counter once a second instead and dates each read by the average's ticks. Comparing
    the two over the same window checks that dating on the hardware.
    """

    def __init__(self, nv: Any, handle: Any, period_s: float = 0.05) -> None:
        self.nv, self.handle, self.period_s = nv, handle, period_s
        self.rows: list[tuple[int, float, float, float]] = []  # (run-clock ns, energy J, avg W, instant W)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nv, h = self.nv, self.handle
        next_t = time.monotonic()
        while not self._stop.is_set():
            t0 = now_ns()
            energy = nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
            avg = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            (inst,) = nv.nvmlDeviceGetFieldValues(h, [(FI_INSTANT, 0)])
            self.rows.append(((t0 + now_ns()) // 2, energy, avg, inst.value.uiVal / 1000.0 if inst.nvmlReturn == 0 else np.nan))
            next_t += self.period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def __enter__(self) -> DenseEnergy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def energy_between(self, t0_ns: int, t1_ns: int) -> float | None:
        """Counter energy between two run-clock times, from change points interpolated linearly."""
        if len(self.rows) < 3:
            return None
        t = np.array([r[0] for r in self.rows], dtype=np.int64)
        e = np.array([r[1] for r in self.rows])
        changed = np.nonzero(np.diff(e))[0] + 1
        ct, ce = (t[changed - 1] + t[changed]) / 2, e[changed]
        if len(ct) < 2 or t0_ns < ct[0] or t1_ns > ct[-1]:
            return None
        return float(np.interp(t1_ns, ct, ce) - np.interp(t0_ns, ct, ce))


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, read from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# analysis (pure: arrays in, numbers out)
# ------------------------------------------------------------------------------------------
def square_wave(t_ns: np.ndarray, phases: list[tuple[int, int]]) -> np.ndarray:
    on = np.zeros(len(t_ns), dtype=bool)
    for a, b in phases:
        on |= (t_ns >= a) & (t_ns < b)
    return on.astype(np.float64)


def hold(t_ns: np.ndarray, values: np.ndarray, grid_ns: np.ndarray) -> np.ndarray:
    """Sample-and-hold ``values`` onto ``grid_ns`` (the value last read at or before each point)."""
    idx = np.searchsorted(t_ns, grid_ns, side="right") - 1
    out = values[np.clip(idx, 0, len(values) - 1)].astype(np.float64)
    out[idx < 0] = np.nan
    return out


def burst_resolution(t_ns: np.ndarray, values: np.ndarray, phases: list[tuple[int, int]], period_ns: int) -> dict[str, Any]:
    """How well a power series shows the on/off bursts.

    - delay_ms: the shift of the host's on/off schedule that best correlates with the series;
    - contrast_w: mean over on-phases minus mean over off-phases (after that shift);
    - phases_classified: share of phases whose mean lies on the right side of the midpoint.
    """
    keep = ~np.isnan(values)
    t_ns, values = t_ns[keep], values[keep]
    if len(t_ns) < 4 or not phases:
        return {}
    lo, hi = phases[0][0], phases[-1][1] + period_ns // 2
    grid = np.arange(lo, hi, 2_000_000, dtype=np.int64)  # 2 ms
    series = hold(t_ns, values, grid)
    best = (-2.0, 0)
    for shift_ms in range(0, 1201, 2):
        wave = square_wave(grid - shift_ms * 1_000_000, phases)
        ok = ~np.isnan(series)
        if wave[ok].std() == 0 or series[ok].std() == 0:
            continue
        corr = float(np.corrcoef(series[ok], wave[ok])[0, 1])
        if corr > best[0]:
            best = (corr, shift_ms)
    corr, shift_ms = best
    shift = shift_ms * 1_000_000
    on_means, off_means = [], []
    for a, b in phases:
        a, b = a + shift, b + shift
        sel = (grid >= a) & (grid < b)
        off = (grid >= b) & (grid < b + (b - a))
        if sel.any():
            on_means.append(np.nanmean(series[sel]))
        if off.any():
            off_means.append(np.nanmean(series[off]))
    on_m, off_m = np.array(on_means), np.array(off_means)
    mid = (np.nanmean(on_m) + np.nanmean(off_m)) / 2
    right = int(np.sum(on_m > mid) + np.sum(off_m < mid))
    return {
        "delay_ms": shift_ms,
        "correlation": corr,
        "on_mean_w": float(np.nanmean(on_m)),
        "off_mean_w": float(np.nanmean(off_m)),
        "contrast_w": float(np.nanmean(on_m) - np.nanmean(off_m)),
        "phases_classified": right / (len(on_m) + len(off_m)),
        "peak_w": float(np.max(values)),
        "min_w": float(np.min(values)),
    }


def analyse(run_dir: Path, phases: list[tuple[int, int]], period_s: float, dense: DenseEnergy | None = None) -> dict[str, Any]:
    table = pq.read_table(run_dir / "power.parquet")
    meta = read_metadata(run_dir / "power.parquet")
    t = table["t_ns"].to_numpy()
    kind = np.array(table["kind"].to_pylist())
    gpu0 = table["gpu"].to_numpy() == 0
    poll, buf = gpu0 & (kind == "poll"), gpu0 & (kind == "buffer")
    span_s = (t[gpu0].max() - t[gpu0].min()) / 1e9

    def col(name: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.array(table[name].to_pylist(), dtype=np.float64)[mask]
        return t[mask], v

    captured: dict[str, Any] = {}
    for name in ("power_w", "power_avg_w", "energy_j", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_used_mib", "temp_c", "throttle_reasons"):
        ts, v = col(name, poll)
        ok = ~np.isnan(v)
        changes = int(np.count_nonzero(np.diff(v[ok]))) if ok.sum() > 1 else 0
        captured[name] = {"reads_per_s": float(ok.sum() / span_s), "changes_per_s": changes / span_s,
                          **meta.get("update_periods", {}).get("columns", {}).get(name, {})}
    bt, bv = col("power_w", buf)
    spacing_ms = np.diff(bt) / 1e6
    captured["buffer_power_w"] = {
        "samples_per_s": float(len(bt) / span_s),
        "spacing_ms_median": float(np.median(spacing_ms)) if len(spacing_ms) else None,
        "spacing_ms_p90": float(np.percentile(spacing_ms, 90)) if len(spacing_ms) else None,
        "spacing_ms_max": float(np.max(spacing_ms)) if len(spacing_ms) else None,
        "spacings_over_1p5x_median": int(np.sum(spacing_ms > 1.5 * np.median(spacing_ms))) if len(spacing_ms) else None,
    }
    period_ns = int(period_s * 1e9)
    it, iv = col("power_w", poll)
    instant_from = "profiler"
    if np.count_nonzero(~np.isnan(iv)) / span_s < 10 and dense is not None and dense.rows:
        # The profiler read the instant field sparsely (it was expensive): use the 50 ms reference.
        it = np.array([r[0] for r in dense.rows], dtype=np.int64)
        iv = np.array([r[3] for r in dense.rows])
        instant_from = "reference reads every 50 ms in the benchmark process"
    resolution = {
        "buffer_20ms": burst_resolution(bt, bv, phases, period_ns),
        "instant_field": burst_resolution(it, iv, phases, period_ns) | {"from": instant_from},
        "average_1s_field": burst_resolution(*col("power_avg_w", poll), phases, period_ns),
    }
    # Energy over the counter's window from each power series, for comparison with the counter.
    from kairosbench.profiler.energy import counter_energy_from_polls, trapezoid_j

    et, ev = col("energy_j", poll)
    counter = counter_energy_from_polls(et, ev, col("power_avg_w", poll)[1], bt, bv)
    energy: dict[str, Any] = {}
    if counter is not None:
        energy = {"counter_j": counter.energy_j, "window_s": (counter.t1_ns - counter.t0_ns) / 1e9}
        for label, (ts, v) in {"buffer": (bt, bv), "instant_field": col("power_w", poll), "average_field": col("power_avg_w", poll)}.items():
            integral = trapezoid_j(ts, v, counter.t0_ns, counter.t1_ns)
            energy[f"{label}_integrated_j"] = integral
            energy[f"{label}_vs_counter_pct"] = 100 * (integral - counter.energy_j) / counter.energy_j
    if counter is not None and dense is not None:
        reference = dense.energy_between(counter.t0_ns, counter.t1_ns)
        energy["dense_reference_counter_j"] = reference
        if reference:
            energy["sparse_dated_vs_dense_counter_pct"] = 100 * (counter.energy_j - reference) / reference
    return {"span_s": span_s, "captured": captured, "burst_resolution": resolution, "energy": energy,
            "sources_detail": meta.get("sources_detail"), "profiler_cpu": meta.get("profiler_cpu")}


def ring_check(nv: Any, handle: Any, run_dir: Path) -> dict[str, Any]:
    """After stop: are the ring's samples (up to the profiler's last one) all in power.parquet?"""
    try:
        _, samples = nv.nvmlDeviceGetSamples(handle, nv.NVML_TOTAL_POWER_SAMPLES, 0)
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}
    table = pq.read_table(run_dir / "power.parquet")
    meta = read_metadata(run_dir / "power.parquet")
    clock_name = (meta.get("sources_detail") or {}).get("nvml", {}).get("buffer_clock")
    clock = host_clocks().get(clock_name or "", time.time_ns)
    offset = now_ns() - clock()
    mask = (np.array(table["kind"].to_pylist()) == "buffer") & (table["gpu"].to_numpy() == 0)
    ours = np.sort(table["t_ns"].to_numpy()[mask])
    ring = np.array(sorted(int(s.timeStamp) * 1000 + offset for s in samples), dtype=np.int64)
    ring = ring[(ring >= ours[0]) & (ring <= ours[-1])] if len(ours) else ring[:0]
    idx = np.clip(np.searchsorted(ours, ring), 1, max(1, len(ours) - 1))
    nearest = np.minimum(np.abs(ours[idx] - ring), np.abs(ours[idx - 1] - ring)) if len(ours) > 1 else np.array([])
    return {"ring_samples_in_window": int(len(ring)), "found_within_1ms": int(np.sum(nearest <= 1_000_000)),
            "max_mismatch_us": float(nearest.max() / 1e3) if len(nearest) else None}


# ------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------
def plot(run_dir: Path, phases: list[tuple[int, int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pq.read_table(run_dir / "power.parquet").to_pandas()
    table = table[table.gpu == 0]
    t0 = table.t_ns.min()
    buf = table[table.kind == "buffer"]
    poll = table[table.kind == "poll"]
    mid = phases[len(phases) // 2][0] if phases else t0
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), gridspec_kw={"height_ratios": [3, 2]})
    for ax, (lo, hi) in zip(axes, [(mid - 400_000_000, mid + 1_600_000_000), (table.t_ns.min(), table.t_ns.max())]):
        for a, b in phases:
            if b >= lo and a <= hi:
                ax.axvspan((a - t0) / 1e9, (b - t0) / 1e9, color="0.9", lw=0)
        sel = lambda df: df[(df.t_ns >= lo) & (df.t_ns <= hi)]  # noqa: E731
        b_, p_ = sel(buf), sel(poll)
        ax.plot((b_.t_ns - t0) / 1e9, b_.power_w, ".-", ms=3, lw=0.8, label="driver buffer (~20 ms)")
        ax.step((p_.t_ns - t0) / 1e9, p_.power_w, where="post", lw=1.2, label="instant field (polled 50 ms)")
        ax.step((p_.t_ns - t0) / 1e9, p_.power_avg_w, where="post", lw=1.2, label="1 s average field")
        ax.set_ylabel("power (W)")
    axes[0].set_title(title + " — grey: matmul on (host schedule)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("time since profiler start (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--burst-s", type=float, default=20.0)
    parser.add_argument("--period-s", type=float, default=0.4, help="on+off period (200 ms on, 200 ms off)")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--record-s", type=float, default=3.0, help="length of the FakeNvml fixture recording")
    parser.add_argument("--fake", action="store_true", help="dry run on FakeNvml, no GPU or torch needed")
    parser.add_argument("--load-only", type=float, default=None, metavar="S",
                        help="only run bf16 matmuls for S seconds, unprofiled (a workload for `kairosbench profile -- ...`)")
    args = parser.parse_args()
    if args.load_only is not None:
        Bursts(args.fake).on(time.monotonic() + args.load_only)
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)

    nv: Any
    if args.fake:  # with the energy read as expensive as measured on the H100 (~4 ms of CPU)
        nv = FakeNvml(fake_recording(args.period_s), loop=True, cpu_cost_s={"field:83": 0.004, "nvmlDeviceGetTotalEnergyConsumption": 0.004})
    else:
        import pynvml

        nv = pynvml
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    results: dict[str, Any] = {
        "device": {"name": _text(nv.nvmlDeviceGetName(handle)), "driver": _text(nv.nvmlSystemGetDriverVersion()),
                   "gpus": nv.nvmlDeviceGetCount(), "host_cpus": os.cpu_count(), "python": platform.python_version(),
                   "fake": args.fake},
        "config": vars(args) | {"out": str(out)},
    }
    print("device:", results["device"], flush=True)
    results["clock_probe"] = probe_clocks(nv, handle)
    print("clock probe:", json.dumps(results["clock_probe"]), flush=True)
    results["field_probe"] = probe_fields(nv, handle)
    print("field probe:", json.dumps(results["field_probe"]), flush=True)
    results["call_costs_us"] = probe_call_costs(nv, handle)
    print("call costs:", json.dumps(results["call_costs_us"]), flush=True)

    bursts = Bursts(args.fake)
    config = SamplerConfig(run_dir=run_dir, sources=["nvml"], nvml=nv if args.fake else None)
    handle_p = launch_sampler(config)
    print("profiler:", handle_p.gpus, handle_p.warnings, flush=True)
    with DenseEnergy(nv, handle) as dense:
        cpu_start = proc_cpu_s(handle_p.pid) if handle_p.pid else None
        wall_start = time.monotonic()
        time.sleep(args.idle_s)
        bursts.run(args.burst_s, args.period_s)
        time.sleep(args.idle_s)
        cpu_end = proc_cpu_s(handle_p.pid) if handle_p.pid else None
        wall = time.monotonic() - wall_start
        summary = handle_p.stop()
    results["ring_check"] = ring_check(nv, handle, run_dir)
    results["summary"] = summary.to_dict()
    results["profiler_cpu_from_proc"] = {
        "cpu_s": (cpu_end - cpu_start) if cpu_start is not None and cpu_end is not None else None,
        "wall_s": wall,
        "pct_of_one_core": 100 * (cpu_end - cpu_start) / wall if cpu_start is not None and cpu_end is not None else None,
    }
    results["analysis"] = analyse(run_dir, bursts.phases, args.period_s, dense)
    results["phases"] = len(bursts.phases)

    # A short recording during bursts: the FakeNvml fixture for the tests.
    rec_bursts = Bursts(args.fake) if args.fake else bursts
    worker = threading.Thread(target=lambda: rec_bursts.run(args.record_s + 0.4, args.period_s), daemon=True)
    worker.start()
    recording = record_nvml(args.record_s, interval_s=0.02, nvml=nv if args.fake else None)
    worker.join()
    recording.gpus = recording.gpus[:1]
    recording.save(out / "h100_recording.json")
    if not args.fake:
        nv.nvmlShutdown()

    plot(run_dir, bursts.phases, out / "bursts.png", f"{results['device']['name']}, driver {results['device']['driver']}")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: results[k] for k in ("ring_check", "profiler_cpu_from_proc")}, indent=1))
    print(json.dumps(results["analysis"], indent=1, default=str))
    print(json.dumps(results["summary"]["gpus"], indent=1, default=str))
    return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    sys.exit(main())
