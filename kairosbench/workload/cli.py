"""``kairosbench workload``: validate, inspect, generate, import and refit workloads.

Thin click wrappers: each command parses flags, calls the pure code in this package and renders
the result with rich. Errors are raised as ``KairosbenchError`` and printed by the CLI edge.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kairosbench.errors import UsageError, WorkloadError
from kairosbench.workload.generate import ARRIVALS, KINDS, GenerateSpec, generate
from kairosbench.workload.io import load_workload, save_workload, workload_hash, write_table
from kairosbench.workload.stats import WorkloadStats, render_stats, workload_stats
from kairosbench.workload.validate import DEFAULT_MAX_PROBLEMS, validate_file

__all__ = ["workload"]


def _console() -> Console:
    """stdout console; when piped (no terminal, no COLUMNS) wide enough for the stats tables."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console(soft_wrap=False)
    return Console(soft_wrap=False, width=160)


@click.group()
def workload() -> None:
    """Workload files: validate, stats, generate, import (format: docs/workload-format.md)."""


@workload.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--max-problems", default=DEFAULT_MAX_PROBLEMS, show_default=True, type=click.IntRange(1),
              help="List at most this many problems (all are counted).")
def validate(file: Path, max_problems: int) -> None:
    """Check FILE (Parquet or JSONL) without running anything; exit 1 if it has problems."""
    report = validate_file(file, max_problems=max_problems)
    _console().print(report)
    if not report.ok:
        raise WorkloadError(f"{report.problem_count} problem(s) found; see the table above", path=str(file))


@workload.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--by-kind", is_flag=True, help="One column group per agent kind of each file.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON instead of tables.")
def stats(files: tuple[Path, ...], by_kind: bool, as_json: bool) -> None:
    """Distributions of one or more workloads, side by side (units in the tables)."""
    results: list[WorkloadStats] = []
    for f in files:
        wl = load_workload(f)
        name = str(wl.meta.get("name") or f.stem)
        if by_kind:
            for kind in sorted({s.agent_kind for s in wl.sessions}):
                results.append(workload_stats(wl, f"{name}/{kind}", agent_kind=kind))
        else:
            results.append(workload_stats(wl, name))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2, allow_nan=True))
    else:
        render_stats(results, _console())


@workload.command()
@click.option("--kind", type=click.Choice(KINDS), default="swe", show_default=True, help="Agent kind to generate.")
@click.option("--sessions", type=click.IntRange(1), default=100, show_default=True, help="Number of sessions.")
@click.option("--rate", type=float, default=0.08, show_default=True, help="Session arrival rate, sessions/s.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Random seed (same seed, same file).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file (.parquet; .jsonl writes JSONL).")
@click.option("--arrival", type=click.Choice(list(ARRIVALS)), default="poisson", show_default=True,
              help="Arrival process of sessions.")
@click.option("--arrival-cv", type=float, default=2.0, show_default=True, help="gamma arrivals: CV of the gaps.")
@click.option("--swe-fraction", type=float, default=0.5, show_default=True, help="mixed: share of swe sessions.")
@click.option("--min-turns", type=click.IntRange(1), default=1, show_default=True, help="Truncate turns/session below.")
@click.option("--max-turns", type=click.IntRange(1), default=None, help="Truncate turns/session above [default: 2518].")
@click.option("--context-window", type=click.IntRange(1024), default=None,
              help="Largest final context, tokens [default: 131072].")
@click.option("--name", default="", help="Workload name stored in the metadata [default: the file stem].")
def generate_cmd(kind: str, sessions: int, rate: float, seed: int, output: Path, arrival: str, arrival_cv: float,
                 swe_fraction: float, min_turns: int, max_turns: int | None, context_window: int | None, name: str) -> None:
    """Generate a synthetic workload calibrated to real agent traces."""
    spec = GenerateSpec(kind=kind, sessions=sessions, rate_per_s=rate, seed=seed, arrival=arrival,
                        arrival_cv=arrival_cv, swe_fraction=swe_fraction, min_turns=min_turns, max_turns=max_turns,
                        context_window_tokens=context_window, name=name or output.stem)
    console = _console()
    with console.status(f"generating {sessions:,} {kind} sessions"):
        result = generate(spec)
        write_table(result.table, output, result.meta)
    console.print(f"wrote {output}: {sessions:,} sessions, {result.table.num_rows:,} turns "
                  f"({result.compressed_sessions} compressed to the context window); sha256 {workload_hash(output)[:16]}")


generate_cmd.name = "generate"
workload.add_command(generate_cmd)


@workload.command("import")
@click.option("--from", "fmt", required=True, help="Source format (see `kairosbench workload formats`).")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output workload file.")
@click.option("--tokenizer", type=click.Path(exists=True, path_type=Path), default=None,
              help="Local Hugging Face tokenizer (dir or tokenizer.json) for traces without usage.")
def import_cmd(fmt: str, src: Path, output: Path, tokenizer: Path | None) -> None:
    """Import a real trace (SRC file or directory) into the workload format."""
    formats, import_source = _importers()
    if fmt not in formats:
        raise UsageError(f"--from must be one of {', '.join(sorted(formats))}, got {fmt!r}")
    console = _console()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{fmt}: reading", total=None)

        def progress(done: int, total: int, next_file: Path) -> None:
            bar.update(task, completed=done, total=total, description=f"{fmt}: {next_file.name}")

        wl = import_source(fmt, src, tokenizer=str(tokenizer) if tokenizer else None, progress=progress)
        bar.update(task, description=f"writing {output}")
        save_workload(wl, output)
    methods: dict[str, int] = {}
    for s in wl.sessions:
        for t in s.turns:
            methods[t.token_count_method] = methods.get(t.token_count_method, 0) + 1
    console.print(f"wrote {output}: {len(wl.sessions):,} sessions, {wl.n_turns:,} turns; token counts from "
                  + ", ".join(f"{k} ({v})" for k, v in sorted(methods.items())))


@workload.command("formats")
def formats_cmd() -> None:
    """List the trace formats `workload import --from` accepts."""
    formats, _ = _importers()
    for name in sorted(formats):
        desc = formats[name] if isinstance(formats, dict) else ""
        click.echo(f"{name}\t{desc}" if desc else name)


def _importers():  # type: ignore[no-untyped-def]
    """The importers package, loaded on use so the other commands work without it."""
    try:
        from kairosbench.workload.importers import FORMATS, import_source
    except ImportError as exc:
        raise UsageError(f"the trace importers are not available in this installation ({exc})") from exc
    return FORMATS, import_source


@workload.command("fit")
@click.option("--traces", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The traces directory (holding raw/...), e.g. ../shared/traces.")
@click.option("--json", "as_json", is_flag=True, help="Print the refitted parameters as JSON.")
def fit_cmd(traces: Path, as_json: bool) -> None:
    """Refit the generator's parameters to the real traces; compare with those in the code."""
    from kairosbench.workload.fit import PARAMS, compare, fit_from_workloads, import_fit_corpus

    console = _console()
    with console.status(f"importing and fitting {traces}"):
        fitted = fit_from_workloads(import_fit_corpus(traces))
    if as_json:
        click.echo(json.dumps({k: p.to_json() for k, p in fitted.items()}, indent=2))
        return
    table = Table(title="Generator parameters: in the code vs refitted to the traces", title_justify="left")
    for col in ("kind", "parameter", "in code", "refitted", "difference"):
        table.add_column(col, justify="left" if col in ("kind", "parameter") else "right")
    for kind, name, stored, refit in compare(PARAMS, fitted):
        diff = (stored - refit) / refit if refit else 0.0
        table.add_row(kind, name, f"{stored:.4g}", f"{refit:.4g}", f"{diff:+.1%}")
    console.print(table)
