"""``kairosbench sim --out`` directories read into the report's shape.

``kairosbench sim --out DIR`` writes one directory per policy: ``summary.json`` and
``requests/sessions/power/control.parquet`` in the simulator's own columns, in virtual seconds
from 0. :func:`load_sim` maps them onto the run schema (status ``simulated``), so the same
metrics are computed from them; what sim output does not record (workload, time scale, GPU
preset, per-token times) stays missing, and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kairosbench.errors import InputError
from kairosbench.report.rundata import Energy, RunData, read_json_object

__all__ = ["load_sim"]


def _sim_requests(df: pd.DataFrame) -> pa.Table:
    """The simulator's request records in the replay's columns (what ``summarize`` reads)."""
    from kairosbench.replay.records import REQUEST_COLUMNS, schema_of

    n = len(df)
    nan = np.full(n, np.nan)

    def col(name: str) -> np.ndarray:
        return df[name].to_numpy(dtype=np.float64) if name in df.columns else nan.copy()

    out_tokens = col("output_tokens")
    first, end = col("t_first_token_s"), col("t_end_s")
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_tokens > 1, (end - first) / (out_tokens - 1), np.nan)
    status = df["status"].astype(str).replace({"unfinished": "cancelled"}) if n else pd.Series([], dtype=str)
    schema = schema_of(REQUEST_COLUMNS, "requests")
    data: dict[str, Any] = {c.name: pa.nulls(n, type=c.type) for c in REQUEST_COLUMNS}
    data.update({
        "session_id": pa.array(df["session_id"].astype(str).tolist() if n else [], pa.string()),
        "turn_index": pa.array(df["turn_index"].tolist() if n else [], pa.int32()),
        "attempt": pa.array(df["attempt"].tolist() if "attempt" in df and n else [0] * n, pa.int32()),
        "t_start_ns": pa.array(np.round(np.nan_to_num(col("t_submit_s")) * 1e9).astype(np.int64), pa.int64()),
        "ttft_s": pa.array(col("ttft_s"), pa.float64(), from_pandas=True),
        "tpot_s": pa.array(tpot, pa.float64(), from_pandas=True),
        "itl_mean_s": pa.array(tpot, pa.float64(), from_pandas=True),
        "e2e_s": pa.array(col("e2e_s"), pa.float64(), from_pandas=True),
        "output_tokens": pa.array(out_tokens, pa.float64(), from_pandas=True).cast(pa.int64(), safe=False),
        "status": pa.array(status.tolist(), pa.string()),
    })
    return pa.Table.from_arrays([data[c.name] for c in REQUEST_COLUMNS], schema=schema)


def _sim_sessions(df: pd.DataFrame, requests: pd.DataFrame) -> pa.Table:
    from kairosbench.replay.records import SESSION_COLUMNS, schema_of

    n = len(df)
    per_session = requests.groupby("session_id").size() if len(requests) else pd.Series(dtype=int)
    schema = schema_of(SESSION_COLUMNS, "sessions")
    data: dict[str, Any] = {c.name: pa.nulls(n, type=c.type) for c in SESSION_COLUMNS}
    if n:
        llm = df["llm_time_s"].to_numpy(dtype=np.float64)
        out = df["output_tokens"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(llm > 0, out / llm, np.nan)
        data.update({
            "session_id": pa.array(df["session_id"].astype(str).tolist(), pa.string()),
            "workload_session_id": pa.array(df["session_id"].astype(str).tolist(), pa.string()),
            "agent_kind": pa.array(df["agent_kind"].astype(str).tolist(), pa.string()),
            "turns_done": pa.array(df["turns_done"].tolist(), pa.int32()),
            "turns_total": pa.array(df["turns_total"].tolist(), pa.int32()),
            "requests": pa.array([int(per_session.get(s, 0)) for s in df["session_id"]], pa.int32()),
            "output_tokens": pa.array(out.astype(np.int64), pa.int64()),
            "llm_time_s": pa.array(llm, pa.float64()),
            "output_tok_s": pa.array(rate, pa.float64(), from_pandas=True),
            "status": pa.array(df["status"].astype(str).tolist(), pa.string()),
        })
    return pa.Table.from_arrays([data[c.name] for c in SESSION_COLUMNS], schema=schema)


def _read_parquet_pd(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read: {exc}", path=str(path)) from None


def load_sim(sim_dir: Path) -> RunData:
    """One policy directory of ``kairosbench sim --out`` (virtual time, seconds from 0)."""
    sim_dir = Path(sim_dir)
    summary = read_json_object(sim_dir / "summary.json")
    notes = ["simulated in virtual time by kairosbench sim: no real requests, the engine and GPU are models"]
    policy = str(summary.get("policy") or sim_dir.name)
    req_df = _read_parquet_pd(sim_dir / "requests.parquet")
    ses_df = _read_parquet_pd(sim_dir / "sessions.parquet")
    req_df = req_df if req_df is not None else pd.DataFrame(columns=["session_id", "turn_index", "status"])
    ses_df = ses_df if ses_df is not None else pd.DataFrame(columns=["session_id", "agent_kind", "status"])
    duration_s = float(summary.get("duration_s") or 0.0)
    slo = float(summary.get("slo_tok_s") or 20.0)
    power_df = _read_parquet_pd(sim_dir / "power.parquet")
    instances = int(power_df["instance"].nunique()) if power_df is not None and len(power_df) else None
    info: dict[str, Any] = {
        "source": "sim", "driver": None, "run_dir": str(sim_dir), "policy": policy, "status": "simulated", "error": None,
        "workload_name": None, "workload_path": None, "workload_sha256": None, "workload_sessions": None,
        "time_scale": None, "arrival": None, "max_sessions": None, "duration_limit_s": None,
        "instances": instances, "hardware": f"{instances or '?'} × emulated GPU (preset not recorded by kairosbench sim)",
        "model": None, "slo_tok_s": summary.get("slo_tok_s"), "start": None, "end": None, "versions": {}, "host": None,
        "telemetry": "simulator (1 s bins)", "epoch_s": None,
    }
    run = RunData(path=sim_dir, source="sim", policy=policy, status="simulated", info=info,
                  requests=_sim_requests(req_df), sessions=_sim_sessions(ses_df, req_df),
                  duration_s=duration_s, slo_tok_s=slo, notes=notes)
    notes.append("kairosbench sim records no workload, time scale or GPU preset in its output; no per-token times (ITL)")
    if power_df is not None and len(power_df):
        pw = pd.DataFrame({
            "t_s": power_df["t_s"].to_numpy(dtype=np.float64),
            "gpu": [f"i{int(k)}" for k in power_df["instance"]],
            "kind": "bin",
            "power_w": power_df["power_w"].to_numpy(dtype=np.float64),
            "power_avg_w": np.nan,
            "energy_j": power_df["energy_j"].to_numpy(dtype=np.float64),
            "sm_clock_mhz": power_df["sm_clock_mhz"].to_numpy(dtype=np.float64),
        })
        run.power = pw.sort_values("t_s", kind="stable").reset_index(drop=True)
    else:
        notes.append("no power telemetry in this simulation (no power.parquet)")
    energy_j = summary.get("energy_j")
    if isinstance(energy_j, (int, float)) and duration_s > 0:
        run.energy = Energy(energy_j=float(energy_j), avg_power_w=float(energy_j) / duration_s, window_s=duration_s,
                            method="simulator", gpus=instances or 0, finest="bin")
    control = _read_parquet_pd(sim_dir / "control.parquet")
    if control is not None and len(control):
        control["t_s"] = control["t_ns"].to_numpy(dtype=np.float64) / 1e9
        run.control = control.sort_values("t_s", kind="stable").reset_index(drop=True)
    return run
