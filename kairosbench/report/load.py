"""Read run directories (and ``kairosbench sim`` output) into one tidy shape for the report.

DESIGN.md: "Run directories are the interface to reports. Reports read only run directories."
So everything here comes from files: ``manifest.json``, the requests and sessions tables
(``kairosbench.replay.read_table``, which also reads the part files a killed run left), and,
when present, ``power.parquet``, ``engine.parquet`` and ``control.parquet`` (or their
``.journal`` files when the writer was killed; read, never rewritten: a report does not change
the runs it reads). A missing optional file is a note in the report, not an error.

Times become seconds since the replay's start (``t_s``), so runs line up on one axis. GPU
energy is recomputed over the replay window with ``kairosbench.replay.run_energy`` (the same
function that wrote the run's summary), so a run without a summary (killed, or written before
the profiler was wired in) gets the same figures.

``kairosbench sim --out`` directories are found here too (:func:`find_inputs`) and read by
``sim_output.load_sim``; the shape both produce is ``rundata.RunData``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kairosbench.errors import InputError
from kairosbench.report.manifest_info import run_info
from kairosbench.report.rundata import Energy, RunData, read_json_object, unique_labels

__all__ = [
    "Energy",
    "RunData",
    "find_inputs",
    "load_input",
    "load_run",
    "load_sim",
    "replay_window_ns",
    "unique_labels",
]


def load_sim(sim_dir: Path) -> RunData:
    """One policy directory of ``kairosbench sim --out`` (see ``sim_output``)."""
    from kairosbench.report.sim_output import load_sim as _load_sim

    return _load_sim(Path(sim_dir))

_POWER_COLUMNS = ("t_ns", "host", "gpu", "source", "kind", "power_w", "power_avg_w", "energy_j", "sm_clock_mhz")
_ENGINE_COLUMNS = ("kv_usage_frac", "num_running", "num_waiting", "preemptions_total", "recomputed_tokens", "recomputed_tokens_total")


def find_inputs(paths: list[Path]) -> list[Path]:
    """The run and sim directories named by ``paths``, in order.

    A run directory (``manifest.json``) or a sim policy directory (``summary.json``) stands for
    itself; a ``kairosbench sim --out`` directory (``summary.csv``) for its policy directories in
    the order of its ``summary.csv``; any other directory for the run directories directly in
    it (sorted by name), so ``kairosbench report runs/`` compares everything there.
    """
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise InputError("not a directory: pass run directories (with manifest.json) or kairosbench sim --out directories", path=str(p))
        if _is_run(p) or _is_sim_policy(p):
            found.append(p)
        elif (p / "summary.csv").exists():
            found.extend(_sim_policy_dirs(p))
        else:
            children = sorted(c for c in p.iterdir() if c.is_dir() and (_is_run(c) or _is_sim_policy(c)))
            if not children:
                raise InputError("no run here: expected manifest.json (kairosbench run), summary.json or summary.csv "
                                 "(kairosbench sim --out), or directories holding them", path=str(p))
            found.extend(children)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _is_run(p: Path) -> bool:
    return (p / "manifest.json").is_file()


def _is_sim_policy(p: Path) -> bool:
    return (p / "summary.json").is_file() and ((p / "sessions.parquet").exists() or (p / "control.parquet").exists())


def _sim_policy_dirs(p: Path) -> list[Path]:
    import re

    try:
        order = [str(x) for x in pd.read_csv(p / "summary.csv")["policy"].tolist()]
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"not a kairosbench sim summary: {exc}", path=str(p / "summary.csv")) from None
    dirs = []
    for spec in order:
        d = p / re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)[:120]  # as kairosbench sim names them
        if _is_sim_policy(d):
            dirs.append(d)
    others = sorted(c for c in p.iterdir() if c.is_dir() and _is_sim_policy(c) and c not in dirs)
    return dirs + others


def load_input(path: Path) -> RunData:
    """A run directory or a sim policy directory."""
    from kairosbench.report.sim_output import load_sim

    return load_run(Path(path)) if _is_run(Path(path)) else load_sim(Path(path))


# ---- kairosbench run directories -------------------------------------------------------------


def _read_records(run_dir: Path, name: str, notes: list[str]) -> pa.Table:
    """requests or sessions: the Parquet file and any parts a killed run left; empty if neither."""
    from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, read_table, schema_of

    if (run_dir / f"{name}.parts").is_dir():
        notes.append(f"{name}: read from {name}.parts/ as well (the run did not finish its files)")
    try:
        return read_table(run_dir, name)
    except FileNotFoundError:
        notes.append(f"no {name}.parquet: no {name} were recorded")
        return schema_of(REQUEST_COLUMNS if name == "requests" else SESSION_COLUMNS, name).empty_table()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read the {name} table: {exc}", path=str(run_dir / f"{name}.parquet")) from None


def _read_optional(run_dir: Path, name: str, notes: list[str]) -> tuple[pa.Table | None, dict[str, Any]]:
    """``<name>.parquet``, else its kill-safe journal (read only); (None, {}) if neither exists."""
    from kairosbench.profiler.journal import JOURNAL_SUFFIX, read_journal
    from kairosbench.profiler.schema import METADATA_KEY

    path = run_dir / f"{name}.parquet"
    journal = path.with_name(path.name + JOURNAL_SUFFIX)
    try:
        if path.exists():
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            return table, (json.loads(raw) if raw else {})
        if journal.exists():
            table, meta, truncated = read_journal(journal)
            notes.append(f"{name}: read from {journal.name} (its writer never finished: the run was killed)"
                         + ("; its last batch was cut short" if truncated else ""))
            return table, meta
    except (pa.ArrowInvalid, OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=str(path if path.exists() else journal)) from None
    return None, {}


def _ns(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)) else None


def _min_ns(table: pa.Table, column: str) -> int | None:
    if table.num_rows == 0 or column not in table.column_names:
        return None
    return _ns(pc.min(table[column]).as_py())


def _max_ns(table: pa.Table, column: str) -> int | None:
    if table.num_rows == 0 or column not in table.column_names:
        return None
    return _ns(pc.max(table[column]).as_py())


def replay_window_ns(manifest: dict[str, Any], requests: pa.Table, sessions: pa.Table) -> tuple[int | None, int | None]:
    """[start, end] of the replay on the run clock: the manifest's, else the records' span."""
    replay = manifest.get("replay") or {}
    t0 = _ns(replay.get("t_replay_start_ns"))
    if t0 is None:
        # the first request planned (the replay starts with it), else the run's own start
        candidates = [v for v in (_min_ns(requests, "t_planned_ns"), _min_ns(requests, "t_start_ns")) if v is not None]
        t0 = min(candidates) if candidates else _ns(manifest.get("t_start_ns"))
    t1 = _ns(replay.get("t_replay_end_ns"))
    if t1 is None and t0 is not None:
        duration = (manifest.get("summary") or {}).get("duration_s")
        if isinstance(duration, (int, float)) and duration > 0:
            t1 = t0 + int(duration * 1e9)
        else:
            ends = [v for v in (_max_ns(requests, "t_end_ns"), _max_ns(sessions, "t_finish_ns")) if v is not None]
            t1 = max(ends) if ends else None
    return t0, t1


def _instance_names(manifest: dict[str, Any]) -> dict[str, str]:
    """host:port of each serving instance -> ``i0``, ``i1``, ... (the gateway's instance ids)."""
    services = manifest.get("services") or {}
    endpoints = ((services.get("gateway") or {}).get("endpoints") or (services.get("emulator") or {}).get("endpoints")
                 or (manifest.get("config") or {}).get("endpoint") or [])
    return {urlsplit(u).netloc: f"i{k}" for k, u in enumerate(endpoints) if isinstance(u, str)}


def _gpu_label(host: str, gpu: int, source: str, instances: dict[str, str]) -> str:
    if source == "emulator" and host in instances:
        return instances[host]
    return f"{host}/gpu{gpu}"


def _power_frame(table: pa.Table, t0_ns: int, instances: dict[str, str]) -> pd.DataFrame:
    cols = [c for c in _POWER_COLUMNS if c in table.column_names]
    df = table.select(cols).to_pandas()
    df["t_s"] = (df.pop("t_ns").to_numpy(dtype=np.int64) - t0_ns) / 1e9
    labels = {k: _gpu_label(str(k[0]), int(k[1]), str(k[2]), instances) for k in df[["host", "gpu", "source"]].drop_duplicates().itertuples(index=False, name=None)}
    df["gpu"] = [labels[k] for k in zip(df["host"], df["gpu"], df["source"])]
    return df.drop(columns=["host", "source"]).sort_values("t_s", kind="stable").reset_index(drop=True)


def _engine_frame(table: pa.Table, t0_ns: int, instances: dict[str, str]) -> pd.DataFrame:
    cols = ["t_ns", "endpoint"] + [c for c in _ENGINE_COLUMNS if c in table.column_names]
    df = table.select(cols).to_pandas()
    df["t_s"] = (df.pop("t_ns").to_numpy(dtype=np.int64) - t0_ns) / 1e9
    df["instance"] = [instances.get(urlsplit(str(u)).netloc, urlsplit(str(u)).netloc) for u in df.pop("endpoint")]
    return df.sort_values("t_s", kind="stable").reset_index(drop=True)


def _control_frame(table: pa.Table, t0_ns: int) -> pd.DataFrame:
    df = table.to_pandas()
    df["t_s"] = (df["t_ns"].to_numpy(dtype=np.int64) - t0_ns) / 1e9
    return df.sort_values("t_s", kind="stable").reset_index(drop=True)


def _run_energy(power: pa.Table, meta: dict[str, Any], manifest: dict[str, Any], t0: int, t1: int, finished: int) -> Energy | None:
    """GPU energy over [t0, t1] by the run summary's own function (kairosbench.replay.run_energy)."""
    from kairosbench.replay.run_energy import preset_idle_from_manifest, run_energy

    info = (manifest.get("services") or {}).get("profiler") or {}
    names = {f"{g['host']}/{g['gpu']}/{g['source']}": g.get("name", "") for g in meta.get("gpus", []) if isinstance(g, dict) and "host" in g}
    e = run_energy(power, t0_ns=t0, t1_ns=t1, finished_agents=finished, preset_idle=preset_idle_from_manifest(info),
                   measure_idle=bool(info.get("measure_idle", True)), names=names,
                   tolerance_frac=float(info.get("tolerance_frac", 0.02)))
    if e is None:
        return None
    finest = sorted({g.integrated_from for g in e.gpus if g.integrated_from})
    return Energy(
        energy_j=e.energy_j, avg_power_w=e.avg_power_w, window_s=e.window_s,
        method="counter" if e.energy_counter_j is not None else "integral", gpus=len(e.gpus), finest="/".join(finest),
        energy_counter_j=e.energy_counter_j, energy_integrated_j=e.energy_integrated_j,
        disagreement_frac=e.disagreement_frac, flagged=e.flagged, idle_power_w=e.idle_power_w,
        idle_origin=e.idle_origin, energy_above_idle_j=e.energy_above_idle_j,
    )


def load_run(run_dir: Path) -> RunData:
    """One ``kairosbench run`` directory."""
    run_dir = Path(run_dir)
    manifest = read_json_object(run_dir / "manifest.json")
    notes: list[str] = []
    config = manifest.get("config") or {}
    policy = str(config.get("policy") or "none")
    status = str(manifest.get("status") or "unknown")
    if status == "running":
        notes.append("the manifest still says running: the run was killed (or is still going); this report shows what it had written")
    elif status == "failed":
        notes.append(f"the run failed: {manifest.get('error') or 'no error recorded'}")
    elif status == "interrupted":
        notes.append("the run was interrupted (Ctrl-C, SIGTERM or --duration's stop): sessions still running were cut")
    requests = _read_records(run_dir, "requests", notes)
    sessions = _read_records(run_dir, "sessions", notes)
    t0, t1 = replay_window_ns(manifest, requests, sessions)
    if t0 is None or t1 is None or t1 <= t0:
        t0 = t0 if t0 is not None else 0
        t1 = t0
        notes.append("no replay window: the run recorded no requests")
    duration_s = (t1 - t0) / 1e9
    effective = manifest.get("effective") or {}
    slo = float(effective.get("slo_tok_s", config.get("slo_tok_s", 20.0)) or 20.0)
    run = RunData(path=run_dir, source="run", policy=policy, status=status, info=run_info(manifest, run_dir, policy, status),
                  requests=requests, sessions=sessions, duration_s=duration_s, slo_tok_s=slo, notes=notes)
    instances = _instance_names(manifest)

    power, power_meta = _read_optional(run_dir, "power", notes)
    if power is None or power.num_rows == 0:
        notes.append("no power telemetry in this run (no power.parquet)" if power is None else "power.parquet holds no samples")
    else:
        run.power = _power_frame(power, t0, instances)
        if duration_s > 0:
            run.energy = _run_energy(power, power_meta, manifest, t0, t1, run.finished_agents)
    engine, _ = _read_optional(run_dir, "engine", notes)
    if engine is not None and engine.num_rows:
        run.engine = _engine_frame(engine, t0, instances)
    control, _ = _read_optional(run_dir, "control", notes)
    if control is not None and control.num_rows:
        run.control = _control_frame(control, t0)
    elif config.get("policy"):
        notes.append("no control.parquet: the gateway's decisions were not recorded")
    for note in ((manifest.get("services") or {}).get("profiler") or {}).get("notes", []):
        notes.append(f"profiler: {note}")
    return run


