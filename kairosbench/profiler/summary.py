"""The end-of-run summary: per GPU, energy both ways, average and peak power, samples captured.

Computed from ``power.parquet`` alone (so a recovered file gives the same summary as a clean
one), written next to it as ``power_summary.json`` and rendered as a rich table by
``kairosbench profile``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.table import Table
from rich.text import Text

from kairosbench.profiler.energy import counter_energy_from_polls, disagreement, trapezoid_j
from kairosbench.profiler.periods import gpu_groups
from kairosbench.profiler.schema import KIND_BUFFER, VALUE_TIMED_SOURCES

__all__ = ["GpuEnergy", "ProfileSummary", "summarize_table", "DEFAULT_TOLERANCE_FRAC"]

# Flag the two energy figures when they differ by more than this. The goal is 1 %;
# what the H100 run measured is in docs/profiler.md.
DEFAULT_TOLERANCE_FRAC = 0.02


@dataclass(frozen=True, slots=True)
class GpuEnergy:
    """One GPU's figures over the profiled window (J, W, s)."""

    host: str
    gpu: int
    source: str
    name: str
    duration_s: float  # first to last row of this GPU
    energy_j: float | None  # the counter's figure if there is one, else the integral
    energy_counter_j: float | None
    energy_integrated_j: float | None
    integrated_from: str  # buffer | power_w | power_avg_w | "" (no power series)
    window_s: float  # the window both energy figures cover
    disagreement_frac: float | None  # |integrated - counter| / counter
    flagged: bool
    avg_power_w: float | None
    peak_power_w: float | None  # of the finest series (buffer samples and instant polls)
    peak_power_avg_w: float | None  # of the 1 s average
    samples_per_s: dict[str, float] = field(default_factory=dict)  # poll / buffer rows per second
    counter_discontinuities: int = 0


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """What ``ProfilerHandle.stop()`` returns and ``kairosbench profile`` prints."""

    run_dir: str
    gpus: tuple[GpuEnergy, ...]
    tolerance_frac: float
    warnings: tuple[str, ...] = ()
    profiler: dict[str, Any] = field(default_factory=dict)  # CPU use, recovered?, files

    @property
    def total_energy_j(self) -> float | None:
        values = [g.energy_j for g in self.gpus if g.energy_j is not None]
        return sum(values) if values else None

    @property
    def flagged(self) -> bool:
        return any(g.flagged for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "tolerance_frac": self.tolerance_frac,
            "total_energy_j": self.total_energy_j,
            "gpus": [asdict(g) for g in self.gpus],
            "warnings": list(self.warnings),
            "profiler": self.profiler,
        }

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        return path

    def __rich__(self) -> Table | Text:
        if not self.gpus:
            return Text("No GPU telemetry was recorded.")
        table = Table(title="GPU energy and power", title_justify="left")
        for header in ("GPU", "source", "time s", "energy J", "integrated J", "diff", "avg W", "peak W", "peak 1s-avg W", "samples/s"):
            table.add_column(header, justify="left" if header in ("GPU", "source") else "right")
        for g in self.gpus:
            diff = "" if g.disagreement_frac is None else f"{g.disagreement_frac * 100:.2f}%" + (" !" if g.flagged else "")
            rates = " + ".join(f"{v:.0f} {k}" for k, v in g.samples_per_s.items() if v > 0)
            table.add_row(
                f"{g.host}/{g.gpu}" + (f" {g.name}" if g.name else ""), g.source, f"{g.duration_s:.1f}",
                _fmt(g.energy_counter_j), _fmt(g.energy_integrated_j), diff, _fmt(g.avg_power_w, 1),
                _fmt(g.peak_power_w, 1), _fmt(g.peak_power_avg_w, 1), rates,
                style="red" if g.flagged else None,
            )
        if len(self.gpus) > 1 and self.total_energy_j is not None:
            table.add_section()
            table.add_row("all GPUs", "", "", _fmt(self.total_energy_j), "", "", "", "", "", "")
        return table


def _fmt(value: float | None, digits: int = 0) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _nanmax(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.max()) if len(values) else None


def summarize_table(table: pa.Table, *, tolerance_frac: float = DEFAULT_TOLERANCE_FRAC, names: dict[str, str] | None = None) -> tuple[GpuEnergy, ...]:
    """One :class:`GpuEnergy` per (host, gpu, source) in a power table (pure)."""
    if table.num_rows == 0:
        return ()
    names = names or {}
    codes, groups = gpu_groups(table)
    t = table["t_ns"].to_numpy()
    buffer = pc.equal(table["kind"], KIND_BUFFER).to_numpy(zero_copy_only=False)
    col = {c: pc.cast(table[c], pa.float64()).to_numpy(zero_copy_only=False) for c in ("power_w", "power_avg_w", "energy_j")}
    out = []
    for code, key in sorted(enumerate(groups), key=lambda cg: cg[1]):
        mine = codes == code
        poll, buf = mine & ~buffer, mine & buffer
        t_all = t[mine]
        duration_s = float(t_all.max() - t_all.min()) / 1e9
        if buf.sum() >= 2:
            series_t, series_p, used = t[buf], col["power_w"][buf], "buffer"
        elif np.count_nonzero(~np.isnan(col["power_w"][poll])) >= 2:
            series_t, series_p, used = t[poll], col["power_w"][poll], "power_w"
        elif np.count_nonzero(~np.isnan(col["power_avg_w"][poll])) >= 2:
            series_t, series_p, used = t[poll], col["power_avg_w"][poll], "power_avg_w"
        else:
            series_t, series_p, used = np.array([], dtype=np.int64), np.array([]), ""
        counter = counter_energy_from_polls(t[poll], col["energy_j"][poll], col["power_avg_w"][poll], series_t, series_p,
                                            value_timed=key[2] in VALUE_TIMED_SOURCES)
        if counter is not None:
            window = (counter.t0_ns, counter.t1_ns)
        elif len(series_t):
            window = (int(series_t.min()), int(series_t.max()))
        else:
            window = (0, 0)
        window_s = (window[1] - window[0]) / 1e9
        integrated = trapezoid_j(series_t, series_p, *window) if used else None
        counter_j = counter.energy_j if counter is not None else None
        frac, flagged = disagreement(counter_j, integrated, tolerance_frac)
        energy = counter_j if counter_j is not None else integrated
        finest = np.concatenate((col["power_w"][buf], col["power_w"][poll]))
        out.append(GpuEnergy(
            host=key[0], gpu=int(key[1]), source=key[2], name=names.get(f"{key[0]}/{key[1]}/{key[2]}", ""),
            duration_s=duration_s, energy_j=energy, energy_counter_j=counter_j, energy_integrated_j=integrated,
            integrated_from=used, window_s=window_s, disagreement_frac=frac, flagged=flagged,
            avg_power_w=(energy / window_s) if energy is not None and window_s > 0 else None,
            peak_power_w=_nanmax(finest), peak_power_avg_w=_nanmax(col["power_avg_w"][poll]),
            samples_per_s={"poll": float(poll.sum()) / duration_s, "buffer": float(buf.sum()) / duration_s} if duration_s > 0 else {},
            counter_discontinuities=counter.discontinuities if counter is not None else 0,
        ))
    return tuple(out)
