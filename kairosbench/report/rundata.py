"""The report's view of one run: its records, telemetry frames, energy and header facts.

:class:`RunData` is what the loaders (``load.py`` for ``kairosbench run`` directories,
``sim_output.py`` for ``kairosbench sim`` output) produce and what the metrics and figures
read. Times in its frames are seconds since the replay's start (``t_s``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kairosbench.errors import InputError

__all__ = ["Energy", "RunData", "unique_labels", "read_json_object"]


@dataclass(frozen=True, slots=True)
class Energy:
    """GPU energy over the replay window, summed over GPUs (J, W, s)."""

    energy_j: float | None
    avg_power_w: float | None
    window_s: float
    method: str  # counter | integral | simulator
    gpus: int
    finest: str = ""  # the power series integrated: buffer | power_w | power_avg_w | bin
    energy_counter_j: float | None = None
    energy_integrated_j: float | None = None
    disagreement_frac: float | None = None
    flagged: bool = False
    idle_power_w: float | None = None
    idle_origin: str = ""
    energy_above_idle_j: float | None = None


@dataclass
class RunData:
    """One run (or one simulated policy), read from its directory.

    Frames are ``None`` when the run has no such file. ``t_s`` columns are seconds since the
    replay's start. ``info`` holds the header facts the report compares across runs.
    """

    path: Path
    source: str  # run | sim
    policy: str
    status: str  # completed | interrupted | failed | running | simulated
    info: dict[str, Any]
    requests: pa.Table
    sessions: pa.Table
    duration_s: float
    slo_tok_s: float
    power: pd.DataFrame | None = None  # t_s, gpu, kind, power_w, power_avg_w, energy_j, sm_clock_mhz
    engine: pd.DataFrame | None = None  # t_s, instance, kv_usage_frac, num_running, num_waiting, counters
    control: pd.DataFrame | None = None  # control.parquet with t_s
    energy: Energy | None = None
    notes: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def finished_agents(self) -> int:
        if self.sessions.num_rows == 0:
            return 0
        return int(pc.sum(pc.equal(self.sessions["status"], "completed")).as_py() or 0)


def unique_labels(runs: list[RunData]) -> list[str]:
    """Each run's label: its policy, with the directory name added where two runs share a policy."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.policy] = counts.get(r.policy, 0) + 1
    labels = []
    for r in runs:
        labels.append(r.policy if counts[r.policy] == 1 else f"{r.policy} ({r.path.name})")
    seen: dict[str, int] = {}
    out = []
    for label in labels:  # two runs in same-named directories: number them
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append(label if n == 0 else f"{label} #{n + 1}")
    return out


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file; bad JSON is an ``InputError`` naming the file and line."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path=str(path))
    return data
