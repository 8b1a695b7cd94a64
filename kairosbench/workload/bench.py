"""``kairosbench bench generate``: how fast the vectorised generator makes and writes a workload.

Target (issue 3): 10,000 sessions in seconds, not minutes. The baseline, measured in the same
run, is a straightforward per-turn loop drawing the same distributions one value at a time
(what a first implementation would write); the ratio shows what vectorising buys. The
baseline builds rows only and writes nothing, so the ratio understates the gap slightly.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from tempfile import TemporaryDirectory

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from kairosbench.workload.fit import PARAMS, AgentParams
from kairosbench.workload.generate import GenerateSpec
from kairosbench.workload.generate import generate as generate_workload
from kairosbench.workload.io import write_table

__all__ = ["generate"]


def _per_turn_baseline(spec: GenerateSpec, p: AgentParams) -> int:
    """Same distributions, one scalar draw at a time; returns the number of turns made."""
    rng = np.random.default_rng([spec.seed, zlib.crc32(b"baseline")])
    tools = list(p.tool_mix)
    probs = np.array([p.tool_mix[t] for t in tools])
    cum = np.cumsum(probs / probs.sum())
    rows: list[tuple[int, int, int, int, str, float]] = []
    arrival = 0.0
    for s in range(spec.sessions):
        arrival += rng.exponential(1.0 / spec.rate_per_s)
        n = 0
        while not 1 <= n <= p.max_turns:
            n = int(round(p.turns.median * np.exp(p.turns.sigma * rng.standard_normal())))
        context = 0
        for i in range(n):
            dist = p.first_turn_tokens if i == 0 else p.appended_tokens
            appended = max(1, int(round(dist.median * np.exp(dist.sigma * rng.standard_normal()))))
            output = max(1, int(round(p.output_tokens.median * np.exp(p.output_tokens.sigma * rng.standard_normal()))))
            context += appended
            tool = tools[int(np.searchsorted(cum, rng.random()))]
            d = p.tool_duration_s[tool]
            rows.append((s, i, context, appended, tool, float(d.median * np.exp(d.sigma * rng.standard_normal()))))
            context += output
    return len(rows)


@click.command("generate")
@click.option("--sessions", type=click.IntRange(1), default=10_000, show_default=True, help="Sessions per workload.")
@click.option("--kind", type=click.Choice(["swe", "de", "mixed"]), default="swe", show_default=True)
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True, help="Runs of the generator; best is reported.")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Also time the per-turn loop baseline.")
def generate_bench(sessions: int, kind: str, repeat: int, baseline: bool) -> None:
    """Time generating SESSIONS sessions and writing Parquet; ratio against a per-turn loop."""
    console = Console()
    spec = GenerateSpec(kind=kind, sessions=sessions, rate_per_s=0.08, seed=1, name="bench")
    gen_s: list[float] = []
    write_s: list[float] = []
    turns = 0
    with TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.parquet"
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = generate_workload(spec)
            t1 = time.perf_counter()
            write_table(result.table, out, result.meta)
            t2 = time.perf_counter()
            gen_s.append(t1 - t0)
            write_s.append(t2 - t1)
            turns = result.table.num_rows
        size_mb = out.stat().st_size / 1e6
    best = min(g + w for g, w in zip(gen_s, write_s))
    table = Table(title=f"kairosbench bench generate: {sessions:,} {kind} sessions, {turns:,} turns, {size_mb:.1f} MB Parquet")
    for col in ("what", "seconds (best of %d)" % repeat, "sessions/s", "turns/s"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row("generate (vectorised)", f"{min(gen_s):.3f}", f"{sessions / min(gen_s):,.0f}", f"{turns / min(gen_s):,.0f}")
    table.add_row("write Parquet", f"{min(write_s):.3f}", "", "")
    table.add_row("generate + write", f"{best:.3f}", f"{sessions / best:,.0f}", f"{turns / best:,.0f}")
    if baseline:
        b_spec = GenerateSpec(kind="swe" if kind == "mixed" else kind, sessions=sessions, rate_per_s=0.08, seed=1)
        t0 = time.perf_counter()
        b_turns = _per_turn_baseline(b_spec, PARAMS[b_spec.kind])
        b_s = time.perf_counter() - t0
        table.add_row("baseline: per-turn loop (rows only)", f"{b_s:.3f}", f"{sessions / b_s:,.0f}", f"{b_turns / b_s:,.0f}")
        table.add_row("speed-up, turns/s vs baseline", f"{(turns / best) / (b_turns / b_s):.1f}x", "", "")
    console.print(table)


generate = generate_bench  # noqa: F811  the name kairosbench.bench wires: "kairosbench.workload.bench:generate"
