"""Small, internally consistent run directories written from a few parameters (a test double).

Reports read only run directories, so testing a report (this package's tests, or a user's own
figure or metric) needs run directories. A real run takes a minute; this writes the same files
with the real schemas in milliseconds: ``manifest.json``, ``requests.parquet``,
``sessions.parquet`` and, on request, ``power.parquet`` (20 ms buffer + 100 ms polls whose
energy counter is the integral of the power, so the two energy figures agree), ``engine.parquet``
and ``control.parquet``. The numbers are what the parameters say they are, so a test can
assert on them exactly (e.g. a constant ``power_w`` per GPU gives that average power).

Not a model of anything: the example report in ``reports/`` comes from real runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SyntheticRun", "write_run_dir", "write_sim_dir"]

T0_NS = 1_795_000_000_000_000_000  # an arbitrary run-clock origin (2026)


@dataclass
class SyntheticRun:
    """What to write. Powers in W, clocks in MHz, times in s, rates in tok/s."""

    policy: str | None = "max"
    status: str = "completed"
    duration_s: float = 20.0
    gpus: int = 2
    power_w: Sequence[float] = (400.0, 300.0)  # per GPU, constant over the replay
    idle_power_w: float = 76.0  # before the replay (the lead-in)
    lead_in_s: float = 2.0
    clock_mhz: Sequence[float] = (1980.0, 1980.0)  # per GPU
    agent_tok_s: Sequence[float] = (50.0, 40.0, 30.0, 20.0, 10.0)  # per session (its output rate)
    session_status: Sequence[str] = ()  # per session; default all completed
    turns: int = 3
    output_tokens: int = 60  # per request
    ttft_s: float = 0.05
    itl_s: float = 0.01
    failed_requests: int = 0  # extra requests with status http (not counted in sessions' tokens)
    workload_sha256: str = "ab" * 32
    workload_name: str = "synthetic"
    time_scale: float = 0.2
    slo_tok_s: float = 20.0
    with_power: bool = True
    power_source: str = "emulator"  # emulator (host:port per instance, preset idle) | nvml (one host, GPUs 0..n-1, idle measured)
    with_buffer: bool = True
    with_engine: bool = True
    with_control: bool = True
    preemptions: Sequence[int] = (0, 0)  # per instance, over the run
    recomputed_tokens: Sequence[int] = (0, 0)  # per instance
    with_summary: bool = True  # manifest carries summary + replay window (a killed run has neither)
    as_journal: Sequence[str] = ()  # tables written as a kill-safe journal instead of Parquet (power, engine, control)
    requests_as_parts: bool = False  # requests left as requests.parts/ (a killed run)
    extra_manifest: dict[str, object] = field(default_factory=dict)


def _endpoints(n: int) -> list[str]:
    return [f"http://127.0.0.1:{18000 + k}" for k in range(n)]


def _write(table: pa.Table, run_dir: Path, name: str, journal: bool) -> None:
    if journal:
        with pa.OSFile(str(run_dir / f"{name}.parquet.journal"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, run_dir / f"{name}.parquet")


def _records(spec: SyntheticRun, t0: int) -> tuple[pa.Table, pa.Table]:
    from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, schema_of

    statuses = list(spec.session_status) or ["completed"] * len(spec.agent_tok_s)
    endpoints = _endpoints(spec.gpus)
    req_rows: list[tuple[object, ...]] = []
    ses_rows: list[tuple[object, ...]] = []
    for i, rate in enumerate(spec.agent_tok_s):
        sid = f"agent-{i:03d}"
        e2e = spec.output_tokens / rate
        t = t0 + int(i * 0.5e9)
        start = t
        for turn in range(spec.turns):
            t_end = t + int(e2e * 1e9)
            req_rows.append((
                sid, "swe", turn, 0, endpoints[i % spec.gpus], t, t, t + int(spec.ttft_s * 1e9), t_end, 0.001,
                spec.ttft_s, spec.itl_s, spec.itl_s, spec.itl_s * 2, spec.itl_s, e2e, 1000 + turn, 1000 + turn, 1000 + turn,
                spec.output_tokens, spec.output_tokens, spec.output_tokens, spec.output_tokens, "length", "ok", None, 200, "ignore_eos",
            ))
            t = t_end + int(0.2e9)
        ses_rows.append((sid, sid, "swe", endpoints[i % spec.gpus], start, start, t, spec.turns, spec.turns, spec.turns,
                         spec.turns * spec.output_tokens, spec.turns * e2e, rate, statuses[i], None))
    for k in range(spec.failed_requests):
        req_rows.append((f"agent-{k:03d}", "swe", 0, 1, endpoints[0], t0, t0, None, t0 + 1000, 0.0, None, None, None, None, None,
                         1e-6, 1000, 1000, None, spec.output_tokens, 0, 0, 0, None, "http", "HTTP 503", 503, "ignore_eos"))

    def table(rows: list[tuple[object, ...]], columns: Sequence[object], name: str) -> pa.Table:
        schema = schema_of(columns, name)  # type: ignore[arg-type]
        cols: list[Sequence[object]] = list(zip(*rows)) if rows else [[] for _ in columns]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema)

    return table(req_rows, REQUEST_COLUMNS, "requests"), table(ses_rows, SESSION_COLUMNS, "sessions")


def _power(spec: SyntheticRun, t0: int) -> pa.Table:
    from kairosbench.profiler.schema import POWER_SCHEMA

    rows: dict[str, list[object]] = {f.name: [] for f in POWER_SCHEMA}
    start = t0 - int(spec.lead_in_s * 1e9)
    end = t0 + int(spec.duration_s * 1e9) + int(0.3e9)

    def add(t: int, host: str, gpu: int, kind: str, power: float, energy: float | None, clock: float | None) -> None:
        values = {"t_ns": t, "host": host, "gpu": gpu, "source": spec.power_source, "kind": kind, "power_w": power,
                  "power_avg_w": power if kind == "poll" else None, "energy_j": energy, "sm_clock_mhz": clock}
        for name in rows:
            rows[name].append(values.get(name))

    for k in range(spec.gpus):
        host, gpu = (_endpoints(spec.gpus)[k].split("//")[1], 0) if spec.power_source == "emulator" else ("gpu-node", k)
        level = float(spec.power_w[k])
        clock = float(spec.clock_mhz[k])
        if spec.with_buffer:
            for t in range(start, end, 20_000_000):
                add(t, host, gpu, "buffer", spec.idle_power_w if t < t0 else level, None, None)
        for t in range(start, end, 100_000_000):
            # the counter integrates the same step function the buffer samples: idle, then the level from t0
            energy = spec.idle_power_w * (min(t, t0) - start) / 1e9 + level * max(0, t - t0) / 1e9
            add(t, host, gpu, "poll", spec.idle_power_w if t < t0 else level, energy, 345.0 if t < t0 else clock)
    table = pa.table(rows, schema=POWER_SCHEMA.remove_metadata())
    return table.sort_by([("t_ns", "ascending")])


def _engine(spec: SyntheticRun, t0: int) -> pa.Table:
    from kairosbench.profiler.schema import ENGINE_SCHEMA

    rows: dict[str, list[object]] = {f.name: [] for f in ENGINE_SCHEMA}
    n = int(spec.duration_s) + 1
    for k, url in enumerate(_endpoints(spec.gpus)):
        for j in range(n):
            values = {"t_ns": t0 + j * 1_000_000_000, "endpoint": f"{url}/metrics", "engine": "vllm",
                      "kv_usage_frac": 0.1 * (k + 1), "num_running": float(k + 1), "num_waiting": float(j % 2),
                      "preemptions_total": float(round(spec.preemptions[k] * j / (n - 1))) if n > 1 else 0.0}
            for name in rows:
                rows[name].append(values.get(name))
    return pa.table(rows, schema=ENGINE_SCHEMA.remove_metadata())


def _control(spec: SyntheticRun, t0: int) -> pa.Table:
    from kairosbench.gateway.control_log import CONTROL_SCHEMA

    rows: list[dict[str, object]] = []
    n = int(spec.duration_s) + 1
    for j in range(n):
        for k, url in enumerate(_endpoints(spec.gpus)):
            rows.append({
                "t_ns": t0 + j * 1_000_000_000, "epoch": j, "policy": spec.policy, "instance_id": f"i{k}", "endpoint": url,
                "telemetry": "emulator", "telemetry_ok": True, "sm_clock_mhz": float(spec.clock_mhz[k]),
                "kv_capacity_tokens": 400_000, "kv_usage_frac": 0.1 * (k + 1), "context_frac": 0.05 * (k + 1),
                "held_agents": j % 2, "pending_agents": 0, "num_running": k + 1, "num_waiting": j % 2,
                "preemptions_total": round(spec.preemptions[k] * j / (n - 1)) if n > 1 else 0,
                "recomputed_tokens_total": round(spec.recomputed_tokens[k] * j / (n - 1)) if n > 1 else 0,
                "clock_action": "lock", "target_clock_mhz": int(spec.clock_mhz[k]), "note": "synthetic",
            })
    return pa.Table.from_pylist(rows, schema=CONTROL_SCHEMA)


def write_run_dir(run_dir: Path, spec: SyntheticRun | None = None) -> Path:
    """Write a run directory described by ``spec`` (defaults: a completed ``max`` run on 2 GPUs)."""
    spec = spec or SyntheticRun()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = T0_NS
    t1 = t0 + int(spec.duration_s * 1e9)
    requests, sessions = _records(spec, t0)
    if spec.requests_as_parts:
        (run_dir / "requests.parts").mkdir(exist_ok=True)
        pq.write_table(requests, run_dir / "requests.parts" / "part-000001.parquet")
    else:
        pq.write_table(requests, run_dir / "requests.parquet")
    pq.write_table(sessions, run_dir / "sessions.parquet")
    endpoints = _endpoints(spec.gpus)
    manifest: dict[str, object] = {
        "kairosbench_manifest_version": 1, "status": spec.status, "run_dir": str(run_dir),
        "t_start_ns": t0 - int(spec.lead_in_s * 1e9), "start": "2026-11-16T07:33:20.000+00:00", "end": "2026-11-16T07:33:45.000+00:00",
        "config": {"policy": spec.policy, "time_scale": spec.time_scale, "max_sessions": None, "duration_s": None, "slo_tok_s": spec.slo_tok_s,
                   "endpoint": [], "instances": spec.gpus, "epoch_s": 1.0},
        "effective": {"time_scale": spec.time_scale, "arrival": "recorded", "seed": 0, "slo_tok_s": spec.slo_tok_s},
        "workload": {"path": f"/workloads/{spec.workload_name}.parquet", "sha256": spec.workload_sha256, "sessions": len(spec.agent_tok_s),
                     "turns": spec.turns * len(spec.agent_tok_s), "meta": {"name": spec.workload_name}},
        "versions": {"python": "3.11.7", "kairosbench": "0.1.0"},
        "host": {"hostname": "synthetic"},
        "gpu": None,
        "services": {
            "emulator": {"instances": spec.gpus, "gpu": "h100-sxm", "model": "qwen3-coder-30b-a3b-fp8", "endpoints": endpoints},
            "profiler": {"sources": ([f"emulator:{u}" for u in endpoints] if spec.power_source == "emulator" else ["nvml"]) if spec.with_power else [],
                         "measure_idle": True, "tolerance_frac": 0.02,
                         "idle_presets": {f"{u.split('//')[1]}/0/emulator": {"power_w": spec.idle_power_w, "detail": "synthetic"}
                                          for u in endpoints} if spec.power_source == "emulator" else {}},
        },
    }
    if spec.with_summary:
        manifest["summary"] = {"duration_s": spec.duration_s}
        manifest["replay"] = {"t_replay_start_ns": t0, "t_replay_end_ns": t1}
    manifest.update(spec.extra_manifest)
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if spec.with_power:
        _write(_power(spec, t0), run_dir, "power", "power" in spec.as_journal)
    if spec.with_engine:
        _write(_engine(spec, t0), run_dir, "engine", "engine" in spec.as_journal)
    if spec.with_control and spec.policy:
        _write(_control(spec, t0), run_dir, "control", "control" in spec.as_journal)
    return run_dir


def write_sim_dir(out_dir: Path, policies: Sequence[tuple[str, float]] = (("max", 500.0), ("kairos", 300.0)), *, sessions: int = 4,
                  duration_s: float = 30.0, instances: int = 2) -> Path:
    """A ``kairosbench sim --out`` directory: per policy (spec, power per instance in W) its files and summary.csv."""
    import re

    import pandas as pd

    from kairosbench.gateway.control_log import CONTROL_SCHEMA

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for spec, power in policies:
        d = out_dir / re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)
        d.mkdir(exist_ok=True)
        reqs, sess = [], []
        for i in range(sessions):
            for turn in range(3):
                t = i * 2.0 + turn * 1.0
                reqs.append({"session_id": f"s{i}", "turn_index": turn, "attempt": 0, "instance": i % instances, "t_submit_s": t,
                             "t_first_token_s": t + 0.02, "t_end_s": t + 0.5, "prompt_tokens": 1000, "cached_tokens": 0,
                             "recomputed_tokens": 0, "output_tokens": 50, "preemptions": 0, "status": "ok"})
            sess.append({"session_id": f"s{i}", "agent_kind": "swe", "arrival_s": i * 2.0, "start_s": i * 2.0, "finish_s": i * 2.0 + 3,
                         "turns_done": 3, "turns_total": 3, "output_tokens": 150, "llm_time_s": 1.5, "status": "completed", "instance": i % instances})
        req = pd.DataFrame(reqs)
        req["ttft_s"] = req["t_first_token_s"] - req["t_submit_s"]
        req["e2e_s"] = req["t_end_s"] - req["t_submit_s"]
        req.to_parquet(d / "requests.parquet")
        ses = pd.DataFrame(sess)
        ses["output_tok_s"] = ses["output_tokens"] / ses["llm_time_s"]
        ses.to_parquet(d / "sessions.parquet")
        bins = int(duration_s)
        pw = pd.DataFrame([{"instance": k, "t_s": float(j), "power_w": power, "energy_j": power * (j + 1), "sm_clock_mhz": 1980.0 if spec == "max" else 900.0,
                            "busy_frac": 0.5} for k in range(instances) for j in range(bins)])
        pw.to_parquet(d / "power.parquet")
        control = [{"t_ns": j * 1_000_000_000, "epoch": j, "policy": spec, "instance_id": f"i{k}", "endpoint": "", "telemetry": "sim",
                    "telemetry_ok": True, "kv_usage_frac": 0.2, "num_running": 2, "num_waiting": 0, "context_frac": 0.1,
                    "held_agents": 0, "pending_agents": 0, "preemptions_total": j, "recomputed_tokens_total": 10 * j,
                    "target_clock_mhz": 1980 if spec == "max" else 900} for j in range(bins) for k in range(instances)]
        pq.write_table(pa.Table.from_pylist(control, schema=CONTROL_SCHEMA), d / "control.parquet")
        energy = power * instances * duration_s
        summary = {"duration_s": duration_s, "energy_j": energy, "avg_power_w": energy / duration_s, "slo_tok_s": 20.0, "policy": spec,
                   "sessions_completed": sessions}
        (d / "summary.json").write_text(json.dumps(summary))
        summaries.append(summary)
    pd.DataFrame(summaries)[["policy", "duration_s", "energy_j", "avg_power_w"]].to_csv(out_dir / "summary.csv", index=False)
    return out_dir
