"""GPU energy over a run's replay window, from ``power.parquet`` (pure; the run summary's energy part).

The profiler's own summary (``power_summary.json``) covers the profiler's whole life, which
starts before the replay (sources opening, the idle lead-in) and ends after it. A policy is
judged on the replay, so the run summary re-cuts the same rows to ``[t_replay_start,
t_replay_end]``:

- **Counter vs integral** (flagging disagreement): the profiler's ``summarize_table`` on the
  rows inside the window, i.e. the energy counter's difference between its first and last
  change points inside the window, and the trapezoid integral of the finest power series over
  that same span.
- **Energy over the window** (``energy_j``, the headline, and the basis of energy per finished
  agent): the counter's figure (KAIROS reports energy "from energy-counter differences, not
  from integrating sampled power"), completed at the two ends, between the window's edges and
  the counter's first/last change point (at most one counter period, ~100 ms, each), by the
  integral of the same power series there. Without a counter: the integral over the window.
- **Idle baseline** per GPU: the emulator preset's parked idle power where the GPU is an
  emulated one whose preset is known, else **measured**: the lowest mean power over any 1 s
  span of the finest series *before the replay's first request* (the lead-in the profiler
  service waits for, ``--idle-baseline-s``). Energy above idle is ``energy_j - Σ idle_w ×
  window_s``, given only when every GPU has a baseline.

Everything here is a function of the Parquet table and a few numbers from the manifest, so a
report can recompute it from a run directory alone (:func:`energy_from_run_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "IdleBaseline",
    "GpuRunEnergy",
    "RunEnergy",
    "IDLE_WINDOW_S",
    "gpu_key",
    "finest_series",
    "lowest_mean_power_w",
    "run_energy",
    "preset_idle_from_manifest",
    "energy_from_run_dir",
]

# The span the measured idle baseline averages over: long enough to smooth the 20 ms buffer's
# jitter, short enough to fit the default 2 s lead-in.
IDLE_WINDOW_S = 1.0


def gpu_key(host: str, gpu: int, source: str) -> str:
    """The key ``ProfilerHandle.latest()`` and the manifest use for one GPU: ``host/gpu/source``."""
    return f"{host}/{gpu}/{source}"


@dataclass(frozen=True, slots=True)
class IdleBaseline:
    """A GPU's idle power (W) and where the figure comes from (``preset`` or ``measured``)."""

    power_w: float
    origin: str  # preset | measured
    detail: str  # e.g. "emulator preset h100-sxm, parked idle" or "lowest 1 s mean in the 2.1 s lead-in"


@dataclass(frozen=True, slots=True)
class GpuRunEnergy:
    """One GPU over the replay window (J, W, s)."""

    key: str  # host/gpu/source
    name: str
    energy_j: float | None  # counter, completed at the edges by the integral; else the integral
    energy_counter_j: float | None  # the counter's difference over its own window (inside the replay)
    energy_integrated_j: float | None  # the integral over that same window
    integrated_from: str  # buffer | power_w | power_avg_w
    disagreement_frac: float | None
    flagged: bool
    avg_power_w: float | None  # energy_j / window
    idle: IdleBaseline | None
    idle_measured_w: float | None  # the measured lead-in figure, also where a preset was used (a cross-check)
    energy_above_idle_j: float | None


@dataclass(frozen=True, slots=True)
class RunEnergy:
    """All GPUs over the replay window, and the KAIROS energy metric (J, W, s, kJ)."""

    window_s: float
    tolerance_frac: float
    finished_agents: int  # sessions with status completed
    energy_j: float | None
    energy_counter_j: float | None  # sum over GPUs, only when every GPU has a counter
    energy_integrated_j: float | None  # sum of the same-window integrals
    disagreement_frac: float | None  # of the two sums
    flagged: bool  # any GPU (or the sums) beyond tolerance_frac
    avg_power_w: float | None  # total over GPUs
    idle_power_w: float | None  # sum of the baselines, only when every GPU has one
    energy_above_idle_j: float | None
    energy_per_agent_kj: float | None  # energy_j / finished_agents / 1000
    energy_above_idle_per_agent_kj: float | None
    gpus: tuple[GpuRunEnergy, ...] = field(default_factory=tuple)

    @property
    def idle_origin(self) -> str:
        """``preset``, ``measured``, ``mixed`` or ``""`` (no baseline)."""
        origins = {g.idle.origin for g in self.gpus if g.idle is not None}
        return "" if not origins else origins.pop() if len(origins) == 1 else "mixed"


def finest_series(table: pa.Table, key: str, integrated_from: str) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns, W) of one GPU's power series named as in ``GpuEnergy.integrated_from``."""
    if table.num_rows == 0 or not integrated_from:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    host, gpu, source = _split_key(key)
    mine = pc.and_(pc.and_(pc.equal(table["host"], host), pc.equal(table["gpu"], gpu)), pc.equal(table["source"], source))
    rows = table.filter(mine)
    is_buffer = pc.equal(rows["kind"], "buffer")
    rows = rows.filter(is_buffer if integrated_from == "buffer" else pc.invert(is_buffer))
    column = "power_avg_w" if integrated_from == "power_avg_w" else "power_w"
    t = rows["t_ns"].to_numpy()
    p = pc.cast(rows[column], pa.float64()).to_numpy(zero_copy_only=False)
    keep = ~np.isnan(p)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], p[keep][order]


def _split_key(key: str) -> tuple[str, int, str]:
    rest, source = key.rsplit("/", 1)
    host, gpu = rest.rsplit("/", 1)
    return host, int(gpu), source


def lowest_mean_power_w(t_ns: np.ndarray, power_w: np.ndarray, *, before_ns: int, window_s: float = IDLE_WINDOW_S) -> float | None:
    """The lowest mean power over any ``window_s`` span of the samples before ``before_ns``.

    None when the samples before ``before_ns`` span less than ``window_s``. A mean over a span
    rather than the lowest single sample: the 20 ms buffer jitters by several watts, and its
    minimum would undercut the idle floor.
    """
    from kairosbench.profiler.energy import trapezoid_j

    t = np.asarray(t_ns, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    lead = t < before_ns
    t, p = t[lead], p[lead]
    width_ns = int(window_s * 1e9)
    if len(t) < 2 or t[-1] - t[0] < width_ns:
        return None
    starts = t[t + width_ns <= t[-1]]
    if len(starts) == 0:
        starts = t[:1]
    if len(starts) > 400:  # a long lead-in: every 1 s span is still covered to within a few samples
        starts = starts[:: int(np.ceil(len(starts) / 400))]
    means = [trapezoid_j(t, p, int(s), int(s) + width_ns) / window_s for s in starts]
    return float(min(means))


def run_energy(
    table: pa.Table,
    *,
    t0_ns: int,
    t1_ns: int,
    finished_agents: int,
    preset_idle: Mapping[str, IdleBaseline] | None = None,
    measure_idle: bool = True,
    names: Mapping[str, str] | None = None,
    tolerance_frac: float = 0.02,
) -> RunEnergy | None:
    """Energy of every GPU in a power table over ``[t0_ns, t1_ns]``; None when the table is empty.

    ``preset_idle``: known idle baselines by GPU key (``host/gpu/source``); any other GPU's
    baseline is measured from the rows before ``t0_ns`` (when ``measure_idle``).
    """
    from kairosbench.profiler.energy import disagreement, trapezoid_j
    from kairosbench.profiler.summary import summarize_table

    if table.num_rows == 0 or t1_ns <= t0_ns:
        return None
    preset_idle = preset_idle or {}
    t = table["t_ns"]
    inside = table.filter(pc.and_(pc.greater_equal(t, t0_ns), pc.less_equal(t, t1_ns)))
    window_s = (t1_ns - t0_ns) / 1e9
    gpus: list[GpuRunEnergy] = []
    for g in summarize_table(inside, tolerance_frac=tolerance_frac, names=dict(names or {})):
        key = gpu_key(g.host, g.gpu, g.source)
        series_t, series_p = finest_series(table, key, g.integrated_from)
        full_j = trapezoid_j(series_t, series_p, t0_ns, t1_ns) if len(series_t) >= 2 else None
        if g.energy_counter_j is not None:
            edges_j = max(0.0, (full_j or 0.0) - (g.energy_integrated_j or 0.0)) if full_j is not None else 0.0
            energy: float | None = g.energy_counter_j + edges_j
        else:
            energy = full_j
        measured = lowest_mean_power_w(series_t, series_p, before_ns=t0_ns) if measure_idle and len(series_t) else None
        idle = preset_idle.get(key)
        if idle is None and measured is not None:
            lead_s = (t0_ns - int(series_t[0])) / 1e9
            idle = IdleBaseline(measured, "measured", f"lowest {IDLE_WINDOW_S:g} s mean power in the {lead_s:.1f} s before the replay")
        gpus.append(GpuRunEnergy(
            key=key, name=g.name, energy_j=energy, energy_counter_j=g.energy_counter_j,
            energy_integrated_j=g.energy_integrated_j, integrated_from=g.integrated_from,
            disagreement_frac=g.disagreement_frac, flagged=g.flagged,
            avg_power_w=energy / window_s if energy is not None else None,
            idle=idle, idle_measured_w=measured,
            energy_above_idle_j=(energy - idle.power_w * window_s) if energy is not None and idle is not None else None,
        ))
    if not gpus:
        return None
    energies = [g.energy_j for g in gpus]
    total = sum(e for e in energies if e is not None) if any(e is not None for e in energies) else None
    counters = [g.energy_counter_j for g in gpus]
    integrals = [g.energy_integrated_j for g in gpus]
    counter_sum = sum(c for c in counters if c is not None) if all(c is not None for c in counters) else None
    integral_sum = sum(i for i in integrals if i is not None) if all(i is not None for i in integrals) else None
    frac, flagged = disagreement(counter_sum, integral_sum, tolerance_frac)
    idles = [g.idle for g in gpus]
    idle_sum = sum(i.power_w for i in idles if i is not None) if all(i is not None for i in idles) else None
    above = (total - idle_sum * window_s) if total is not None and idle_sum is not None else None
    per_agent = (lambda j: j / finished_agents / 1000.0 if j is not None and finished_agents > 0 else None)
    return RunEnergy(
        window_s=window_s, tolerance_frac=tolerance_frac, finished_agents=finished_agents,
        energy_j=total, energy_counter_j=counter_sum, energy_integrated_j=integral_sum,
        disagreement_frac=frac, flagged=flagged or any(g.flagged for g in gpus),
        avg_power_w=total / window_s if total is not None else None,
        idle_power_w=idle_sum, energy_above_idle_j=above,
        energy_per_agent_kj=per_agent(total), energy_above_idle_per_agent_kj=per_agent(above),
        gpus=tuple(gpus),
    )


def preset_idle_from_manifest(profiler_info: Mapping[str, Any]) -> dict[str, IdleBaseline]:
    """The preset idle baselines the profiler service recorded (``manifest.services.profiler.idle_presets``)."""
    out: dict[str, IdleBaseline] = {}
    for key, entry in (profiler_info.get("idle_presets") or {}).items():
        out[key] = IdleBaseline(float(entry["power_w"]), "preset", str(entry.get("detail", "")))
    return out


def energy_from_run_dir(run_dir: str | Path) -> RunEnergy | None:
    """Recompute a finished run's :class:`RunEnergy` from its directory (manifest.json + power.parquet)."""
    import pyarrow.parquet as pq

    from kairosbench.profiler.journal import read_metadata
    from kairosbench.profiler.sampler import POWER_FILE

    run_dir = Path(run_dir)
    power = run_dir / POWER_FILE
    manifest = json.loads((run_dir / "manifest.json").read_text())
    replay = manifest.get("replay") or {}
    t0 = replay.get("t_replay_start_ns")
    t1 = replay.get("t_replay_end_ns")
    if not power.exists() or t0 is None or t1 is None:
        return None
    info = (manifest.get("services") or {}).get("profiler") or {}
    names = {f"{g['host']}/{g['gpu']}/{g['source']}": g.get("name", "") for g in read_metadata(power).get("gpus", [])}
    return run_energy(
        pq.read_table(power), t0_ns=int(t0), t1_ns=int(t1),
        finished_agents=int((manifest.get("summary") or {}).get("sessions_completed", 0)),
        preset_idle=preset_idle_from_manifest(info), measure_idle=bool(info.get("measure_idle", True)),
        names=names, tolerance_frac=float(info.get("tolerance_frac", 0.02)),
    )
