"""``kairosbench report``: compare run directories in one self-contained HTML file.

    kairosbench report runs/r_max runs/r_kairos runs/r_static900 -o reports/cmp.html
    kairosbench report runs/                       # every run directory in runs/
    kairosbench report /tmp/sim_out --baseline max # the directories kairosbench sim --out wrote
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["report", "default_out_path", "summary_table"]


def default_out_path(runs: list[Any], reports_dir: Path, now: dt.datetime | None = None) -> Path:
    """``<reports_dir>/<UTC timestamp>-<workload name>.html`` (``runs`` when the workloads differ)."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    names = {r.info.get("workload_name") for r in runs} - {None}
    name = names.pop() if len(names) == 1 else ("sim" if all(r.source == "sim" for r in runs) else "runs")
    return reports_dir / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name))[:60]}.html"


def summary_table(model: Any) -> Table:
    """The headline columns of the comparison, for the terminal."""
    from kairosbench.report.metrics import metric

    table = Table(title=f"{model.title}", title_justify="left")
    table.add_column("run")
    keys = ("avg_power_w", "energy_per_agent_kj", "p5_agent_tok_s", "slo_attainment_frac", "ttft_p99_s")
    for key in keys:
        m = metric(key)
        table.add_column(f"{m.label} {m.unit}".strip(), justify="right")
    for i, (run, values) in enumerate(zip(model.runs, model.values)):
        cells = []
        for key in keys:
            m = metric(key)
            delta = model.comparison.delta(key, i)
            cells.append(m.format(values.get(key)) + (f" ({delta})" if delta else ""))
        name = run.label + (" [baseline]" if i == model.comparison.baseline else "") + ("" if run.status in ("completed", "simulated") else f" [{run.status}]")
        table.add_row(name, *cells)
    return table


def _command(runs: tuple[Path, ...], options: dict[str, Any]) -> str:
    """The command line that makes this report again (options left at their defaults omitted)."""
    args = ["kairosbench", "report", *map(str, runs)]
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write. Default: <reports-dir>/<UTC timestamp>-<workload>.html.")
@click.option("--reports-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True,
              help="Where the default output file goes.")
@click.option("--baseline", default=None, metavar="RUN",
              help="The run the others are compared with: a policy, a label, a run directory or a 1-based position. "
                   "Default: the run with policy max, else the first.")
@click.option("--slo-tok-s", type=float, default=None,
              help="Per-agent throughput SLO (tok/s) for SLO attainment in every run. Default: the baseline run's.")
@click.option("--title", default=None, help="Report title. Default: the workload and the policies compared.")
@click.option("--max-points", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Most points per line in a figure; longer series are reduced (bin means for power, held values for clocks).")
def report(runs: tuple[Path, ...], out: Path | None, reports_dir: Path, baseline: str | None, slo_tok_s: float | None,
           title: str | None, max_points: int) -> None:
    """Compare runs in one self-contained HTML report (opens offline; no CDN).

    RUNS are run directories (kairosbench run), directories holding run directories, or
    kairosbench sim --out directories. Missing telemetry (power, engine, control) is shown as
    such, never an error.
    """
    from kairosbench.report.load import find_inputs, load_input
    from kairosbench.report.render import build_report, render_html, write_report

    err = Console(stderr=True)
    paths = find_inputs(list(runs))
    loaded = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("reading runs", total=len(paths) + 1)
        for path in paths:
            progress.update(task, description=f"reading {path}")
            loaded.append(load_input(path))
            progress.advance(task)
        progress.update(task, description="computing metrics and drawing figures")
        command = _command(runs, {"-o": out, "--baseline": baseline, "--slo-tok-s": slo_tok_s, "--title": title,
                                  "--max-points": max_points if max_points != 2000 else None})
        model = build_report(loaded, baseline=baseline, slo_tok_s=slo_tok_s, title=title, max_points=max_points, command=command)
        html = render_html(model)
        progress.advance(task)
    target = out or default_out_path(loaded, reports_dir)
    write_report(html, target)
    console = Console() if Console().is_terminal else Console(width=150)
    console.print(summary_table(model))
    for line in model.comparison.readings:
        console.print(f"• {line}", highlight=False)
    for warning in model.warnings:
        console.print(f"[yellow]note:[/] {warning}", highlight=False)
    console.print(f"report: [bold]{target}[/] ({target.stat().st_size / 1e6:.1f} MB)")
