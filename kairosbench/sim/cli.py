"""``kairosbench sim``: policies compared on emulated instances in virtual time; ``sim sweep``: the knee.

    kairosbench sim --policy kairos --policy max --policy static:900 --workload W --instances 4
    kairosbench sim sweep --clocks 1980,1500,1200,900,600 --workload W --instances 1

Each simulation is independent (one process each with ``--jobs``); the first policy (or the
highest clock) is the baseline the Δ columns compare against. ``--out DIR`` keeps, per
policy, summary.json, control.parquet, requests.parquet, sessions.parquet and power.parquet,
plus summary.csv across policies.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kairosbench.errors import UsageError

__all__ = ["sim", "run_policies", "render_comparison", "render_sweep", "render_clock_time"]

DEFAULT_WORKLOAD = Path(__file__).resolve().parents[2] / "workloads" / "mixed-kairos.parquet"

# (summary key, column title, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("avg_power_w", "avg power W", "{:.1f}"),
    ("energy_per_completed_agent_kj", "energy/agent kJ", "{:.2f}"),
    ("agent_tok_s_p5", "P5 agent tok/s", "{:.1f}"),
    ("slo_attainment", "SLO attain.", "{:.0%}"),
    ("sessions_completed", "done", "{}"),
    ("job_throughput_per_h", "jobs/h", "{:.1f}"),
    ("preemptions", "preempt.", "{}"),
    ("recomputed_tokens", "recomputed tok", "{:,}"),
    ("turns_held", "turns held", "{}"),
    ("migrations", "migr.", "{}"),
    ("mean_sm_clock_mhz", "busy clock MHz", "{:.0f}"),
    ("duration_s", "sim s", "{:.0f}"),
]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:120]


def _one(workload_path: str, max_sessions: int | None, spec: str, cfg: dict[str, Any], slo_tok_s: float, out: str | None) -> dict[str, Any]:
    """Run one simulation (in a worker process); returns its summary and time at each clock."""
    from kairosbench.sim.cluster import simulate_cluster  # noqa: PLC0415
    from kairosbench.sim.engine_sim import SimConfig  # noqa: PLC0415
    from kairosbench.replay.flow import FlowOptions  # noqa: PLC0415

    sessions = _load(workload_path, max_sessions)
    flow = FlowOptions(time_scale=cfg.pop("time_scale"))
    config = SimConfig(flow=flow, **cfg)
    t0 = time.perf_counter()
    result = simulate_cluster(sessions, spec, config, slo_tok_s=slo_tok_s)
    summary = result.summary(slo_tok_s)
    summary["wall_s"] = time.perf_counter() - t0
    summary["time_at_clock_s"] = {str(k): v for k, v in result.time_at_clock_s().items()}
    if out is not None:
        _write(Path(out) / _safe(spec), result, summary)
    return summary


def _load(path: str, max_sessions: int | None) -> list[Any]:
    from kairosbench.workload.io import load_workload  # noqa: PLC0415

    sessions = sorted(load_workload(Path(path)).sessions, key=lambda s: s.arrival_s)
    return sessions[:max_sessions] if max_sessions else sessions


def _write(d: Path, result: Any, summary: dict[str, Any]) -> None:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from kairosbench.gateway.control_log import CONTROL_SCHEMA  # noqa: PLC0415

    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    pq.write_table(pa.Table.from_pylist(result.control_rows, schema=CONTROL_SCHEMA), d / "control.parquet")
    for name, frame in result.sim.frames().items():
        frame.to_parquet(d / f"{name}.parquet")


def run_policies(
    specs: list[str],
    *,
    workload: Path,
    max_sessions: int | None,
    sim_config: dict[str, Any],
    slo_tok_s: float,
    out: Path | None,
    jobs: int,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Simulate each policy spec; returns spec -> summary (in the order given)."""
    from controllers.registry import build_policy  # noqa: PLC0415

    for spec in specs:
        build_policy(spec)  # fail fast, before any process starts
    results: dict[str, dict[str, Any]] = {}
    args = [(str(workload), max_sessions, spec, dict(sim_config), slo_tok_s, str(out) if out else None) for spec in specs]
    if jobs <= 1 or len(specs) == 1:
        for a in args:
            results[a[2]] = _one(*a)
            if on_done:
                on_done(a[2], results[a[2]])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_one, *a): a[2] for a in args}
            for fut in futures:
                results[futures[fut]] = fut.result()
                if on_done:
                    on_done(futures[fut], results[futures[fut]])
    ordered = {s: results[s] for s in specs}
    if out is not None:
        import pandas as pd  # noqa: PLC0415

        pd.DataFrame([{"policy": s, **{k: v for k, v in r.items() if k != "time_at_clock_s"}} for s, r in ordered.items()]).to_csv(out / "summary.csv", index=False)
    return ordered


def _delta(s: dict[str, Any], base: dict[str, Any] | None, key: str) -> str:
    b = base.get(key) if base else None
    v = s.get(key)
    if not b or v is None or b == float("inf") or v == float("inf"):
        return "-"
    return f"{v / b - 1:+.1%}"


def render_comparison(results: dict[str, dict[str, Any]], title: str, label: str = "policy") -> Table:
    """Metrics as rows, one column per policy (Δ rows compare with the first policy)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right", overflow="fold")
    base = next(iter(results.values()), None)
    for i, (key, head, fmt) in enumerate(COLUMNS):
        table.add_row(head, *[fmt.format(r.get(key, 0)) for r in results.values()])
        if i in (0, 1):
            table.add_row(f"  Δ vs {next(iter(results), '')}", *[_delta(r, base, key) for r in results.values()])
    return table


def render_clock_time(results: dict[str, dict[str, Any]], top: int = 5) -> Table:
    """Busy time at each effective SM clock, as shares, the largest first (per policy)."""
    table = Table(title="Busy time at each effective SM clock (summed over instances)")
    table.add_column("policy")
    table.add_column("busy s", justify="right")
    table.add_column(f"largest shares (MHz: %), top {top}")
    for name, r in results.items():
        t = {int(k): float(v) for k, v in (r.get("time_at_clock_s") or {}).items()}
        total = sum(t.values())
        shares = sorted(t.items(), key=lambda kv: -kv[1])[:top]
        table.add_row(name, f"{total:.0f}", "  ".join(f"{f}: {100 * s / total:.0f}%" for f, s in shares) if total else "-")
    return table


SWEEP_COLUMNS = [c for c in COLUMNS if c[0] in ("avg_power_w", "energy_per_completed_agent_kj", "agent_tok_s_p5", "slo_attainment", "preemptions", "recomputed_tokens", "duration_s")]


def render_sweep(results: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per clock (Δ against the first, highest clock)."""
    table = Table(title=title)
    table.add_column("clock")
    for key, head, _ in SWEEP_COLUMNS:
        table.add_column(head, justify="right")
        if key in ("avg_power_w", "energy_per_completed_agent_kj"):
            table.add_column("Δ", justify="right")
    base = next(iter(results.values()), None)
    for name, r in results.items():
        cells = []
        for key, _, fmt in SWEEP_COLUMNS:
            cells.append(fmt.format(r.get(key, 0)))
            if key in ("avg_power_w", "energy_per_completed_agent_kj"):
                cells.append(_delta(r, base, key))
        table.add_row(name, *cells)
    return table


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--workload", "-w", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Workload file [default: the bundled workloads/mixed-kairos.parquet]."),
        click.option("--instances", "-n", type=int, default=4, show_default=True, help="Emulated instances (one GPU each)."),
        click.option("--gpu", default="h100-sxm", show_default=True, help="Emulated GPU preset."),
        click.option("--model", default="qwen3-coder-30b-a3b-fp8", show_default=True, help="Emulated model preset."),
        click.option("--time-scale", type=float, default=1.0, show_default=True, help="Multiply arrivals and tool delays (0.5 = twice the load)."),
        click.option("--max-sessions", type=int, default=None, help="Only the first N sessions by arrival."),
        click.option("--duration-s", type=float, default=None, help="Stop at this virtual time (unfinished agents are recorded)."),
        click.option("--epoch-s", type=float, default=1.0, show_default=True, help="Control epoch, virtual seconds."),
        click.option("--slo-tok-s", type=float, default=20.0, show_default=True, help="Per-agent P5 output-rate SLO, tokens/s."),
        click.option("--kv-capacity-tokens", type=int, default=None, help="Override each instance's KV pool (tokens)."),
        click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write per-policy Parquet/JSON here."),
        click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Simulations in parallel (processes)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _prepare(kw: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    workload = kw.pop("workload") or DEFAULT_WORKLOAD
    if not Path(workload).exists():
        raise UsageError(f"workload file not found: {workload}; pass --workload FILE")
    from kairosbench.emulator.engine import EngineConfig  # noqa: PLC0415
    from kairosbench.emulator.presets import gpu_preset, model_preset  # noqa: PLC0415

    gpu_preset(kw["gpu"])
    model_preset(kw["model"])
    if kw["instances"] < 1 or kw["epoch_s"] <= 0 or kw["time_scale"] <= 0:
        raise UsageError("need --instances >= 1, --epoch-s > 0 and --time-scale > 0")
    engine = EngineConfig(trace_bin_s=1.0, trace_keep_s=None)
    if kw.get("kv_capacity_tokens"):
        engine = replace(engine, kv_capacity_tokens=kw["kv_capacity_tokens"])
    cfg = {"gpu": kw["gpu"], "model": kw["model"], "n_instances": kw["instances"], "duration_s": kw["duration_s"], "epoch_s": kw["epoch_s"], "time_scale": kw["time_scale"], "engine": engine}
    return Path(workload), cfg


def _run_and_show(specs: list[str], kw: dict[str, Any], title: str, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    workload, cfg = _prepare(kw)
    out: Path | None = kw["out"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {len(specs)} x {workload.name} on {kw['instances']} instance(s)", total=len(specs))
        results = run_policies(
            specs, workload=workload, max_sessions=kw["max_sessions"], sim_config=cfg, slo_tok_s=kw["slo_tok_s"], out=out, jobs=kw["jobs"],
            on_done=lambda spec, s: progress.advance(task),
        )
    shown = {(names[i] if names else s): r for i, (s, r) in enumerate(results.items())}
    heading = f"{title}: {workload.name} (time scale {kw['time_scale']:g}), {kw['instances']} x {kw['gpu']} / {kw['model']}, SLO {kw['slo_tok_s']:g} tok/s"
    console_out = Console() if Console().is_terminal else Console(width=140)
    console_out.print(render_sweep(shown, heading) if names else render_comparison(shown, heading))
    if not names:
        console_out.print(render_clock_time(shown))
    if out is not None:
        console_out.print(f"per-policy records in {out}")
    return results


@click.group("sim", invoke_without_command=True)
@click.option("--policy", "-p", "policies", multiple=True, help="Policy spec (repeat to compare; the first is the baseline). Default: max, static:900, kairos.")
@_common
@click.pass_context
def sim(ctx: click.Context, policies: tuple[str, ...], **kw: Any) -> None:
    """Simulate emulated instances under power policies in virtual time and compare them."""
    if ctx.invoked_subcommand is not None:
        return
    specs = list(policies) or ["max", "static:900", "kairos"]
    _run_and_show(specs, kw, "Policies")


@sim.command("sweep")
@click.option("--clocks", default="1980,1710,1500,1290,1200,1095,990,900,810,705,600,495", show_default=True, help="Comma-separated static clocks (MHz, snapped to supported values); highest first is the baseline.")
@_common
def sweep(clocks: str, **kw: Any) -> None:
    """Static-clock sweep at a fixed arrival rate: power falls, then the knee (KAIROS Fig. 4)."""
    try:
        values = [int(c) for c in clocks.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--clocks must be comma-separated integers in MHz (got {clocks!r})") from None
    if not values:
        raise UsageError("--clocks is empty")
    _run_and_show([f"static:{c}" for c in values], kw, "Static-clock sweep", [f"{c} MHz" for c in values])
