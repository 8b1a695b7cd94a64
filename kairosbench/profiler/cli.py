"""``kairosbench profile``: a power-aware ``time`` for a command or a period.

    kairosbench profile --out runs/p1 -- python train.py      # profile a command
    kairosbench profile --out runs/p1 --duration 60           # profile a minute
    kairosbench profile --out runs/p1                         # until Ctrl-C
    kairosbench profile --out runs/p1 --recover               # finish the files of a killed profiler

Writes ``power.parquet`` (and ``engine.parquet`` with ``--engine``), ``power_summary.json`` and
``profiler.log`` into ``--out``, then prints energy, average and peak power per GPU (to stderr,
like ``time``, so the command's own output stays clean). With a command, exits with its code.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kairosbench.errors import UsageError
from kairosbench.profiler.journal import recover_run_dir
from kairosbench.profiler.launch import SUMMARY_FILE, ProfilerHandle, detect_sources, start_profiler, summarize_run_dir
from kairosbench.profiler.periods import update_periods
from kairosbench.profiler.sampler import POWER_FILE
from kairosbench.profiler.summary import DEFAULT_TOLERANCE_FRAC, ProfileSummary

__all__ = ["profile"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True, help="Directory for power.parquet, engine.parquet and the summary.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds to profile (without a COMMAND). Default: until Ctrl-C.")
@click.option("--source", "sources", multiple=True, metavar="SPEC", help="nvml | emulator:URL | prometheus:URL (repeatable). Default: nvml if a GPU is found.")
@click.option("--engine", "engines", multiple=True, metavar="URL", help="vLLM/SGLang endpoint whose /metrics to scrape into engine.parquet (repeatable).")
@click.option("--interval", type=click.FloatRange(min=0.001), default=None, help="Poll period in seconds. Default: the source's own (NVML 0.05, Prometheus 1).")
@click.option("--engine-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True, help="Engine /metrics scrape period in seconds.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCE_FRAC, show_default=True, help="Flag counter vs integrated energy differing by more than this fraction.")
@click.option("--recover", is_flag=True, help="Only finish the Parquet files a killed profiler left in --out, and summarise them.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def profile(
    out_dir: Path, duration: float | None, sources: tuple[str, ...], engines: tuple[str, ...], interval: float | None,
    engine_interval: float, tolerance: float, recover: bool, command: tuple[str, ...],
) -> None:
    """Profile GPU power during COMMAND (after --) or for a period; print energy and power per GPU."""
    console = Console(stderr=True)
    if recover:
        recover_run_dir(out_dir, {POWER_FILE: update_periods})
        summary = summarize_run_dir(out_dir, tolerance_frac=tolerance)
        summary.write(out_dir / SUMMARY_FILE)
        _print_summary(console, summary)
        return
    if command and duration is not None:
        raise UsageError("--duration cannot be combined with a COMMAND: the command's run is the profiled period")
    chosen = list(sources) or detect_sources()
    if not chosen and not engines:
        console.print("[yellow]No NVML GPU found: profiling without GPU telemetry (use --source emulator:URL or prometheus:URL).[/]")
    handle = start_profiler(out_dir, chosen, engine_endpoints=list(engines), interval_s=interval,
                            engine_interval_s=engine_interval, tolerance_frac=tolerance)
    shown = {w for w in handle.warnings if "no telemetry source" in w}
    for warning in handle.warnings:
        if warning not in shown:
            console.print(f"[yellow]warning:[/] {warning}")
            shown.add(warning)
    if handle.gpus:
        console.print(f"profiling {len(handle.gpus)} GPU(s): " + ", ".join(f"{g.host}/{g.gpu} {g.name}".strip() for g in handle.gpus))
    exit_code = 0
    try:
        if command:
            exit_code = _run_command(command)
        else:
            _wait(console, handle, duration)
    finally:
        summary = handle.stop()
    _print_summary(console, summary, already_shown=shown)
    if exit_code:
        raise click.exceptions.Exit(exit_code)


def _run_command(command: tuple[str, ...]) -> int:
    try:
        proc = subprocess.Popen(list(command))
    except FileNotFoundError as exc:
        raise UsageError(f"command not found: {command[0]}") from exc
    except PermissionError as exc:
        raise UsageError(f"command is not executable: {command[0]}") from exc
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the command got the Ctrl-C too; let it finish its own way
        return proc.wait()


def _wait(console: Console, handle: ProfilerHandle, duration: float | None) -> None:
    start = time.monotonic()
    first_energy: dict[str, float] = {}
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while duration is None or time.monotonic() - start < duration:
                live.update(_live_table(handle, time.monotonic() - start, duration, first_energy))
                time.sleep(0.5 if duration is None else min(0.5, max(0.0, duration - (time.monotonic() - start))))
    except KeyboardInterrupt:
        console.print("stopping the profiler…")


def _live_table(handle: ProfilerHandle, elapsed_s: float, duration: float | None, first_energy: dict[str, float]) -> Table:
    title = f"profiling {elapsed_s:.0f} s" + (f" of {duration:g} s" if duration else " (Ctrl-C to stop)")
    table = Table(title=title, title_justify="left")
    for header in ("GPU", "power W", "1s-avg W", "SM MHz", "energy J"):
        table.add_column(header, justify="right" if header != "GPU" else "left")
    for key, row in sorted(handle.latest().items()):
        energy = row.get("energy_j")
        if energy is not None:
            first_energy.setdefault(key, energy)
        table.add_row(
            key, _num(row.get("power_w"), 1), _num(row.get("power_avg_w"), 1), _num(row.get("sm_clock_mhz"), 0),
            _num(energy - first_energy[key] if energy is not None else None, 0),
        )
    return table


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _print_summary(console: Console, summary: ProfileSummary, *, already_shown: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    console.print(summary)
    cpu = summary.profiler.get("profiler_cpu", {})
    if cpu.get("loop_cpu_pct_of_one_core") is not None:
        console.print(f"profiler CPU: {cpu['loop_cpu_pct_of_one_core']:.2f}% of one core over {cpu['loop_wall_s']:.1f} s")
    for warning in summary.warnings:
        if warning not in already_shown:
            console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"files in {summary.run_dir}: {', '.join(summary.profiler.get('files', [])) or 'none'}")
