"""Workload statistics: the distributions the generator is fitted on, for any workload.

``workload_stats`` is a pure function from a ``Workload`` to a ``WorkloadStats`` record; the
rich renderer lays several of them out side by side (rows of one metric adjacent), which is
how a user compares a generated workload with the real trace it was fitted to.

Units: token counts in tokens, durations in seconds, rates in sessions per second.
Percentiles use linear interpolation (numpy's default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from rich.console import Console, Group
from rich.table import Table

from kairosbench.workload.model import Workload

__all__ = ["Dist", "WorkloadStats", "workload_stats", "stats_tables", "render_stats"]


@dataclass(frozen=True)
class Dist:
    """Summary of one distribution. ``n`` samples; all other fields in the metric's unit."""

    n: int = 0
    mean: float = float("nan")
    p50: float = float("nan")
    p90: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    min: float = float("nan")

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> "Dist":
        x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
        if x.size == 0:
            return cls()
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(int(x.size), float(x.mean()), float(p50), float(p90), float(p99), float(x.max()), float(x.min()))


@dataclass(frozen=True)
class WorkloadStats:
    """Everything ``kairosbench workload stats`` prints for one workload (or one agent kind of it)."""

    name: str
    sessions: int
    turns: int
    agent_kinds: dict[str, int]  # sessions per agent kind
    token_count_methods: dict[str, int]  # turns per token_count_method
    turns_per_session: Dist
    first_turn_appended_tokens: Dist  # turn 0: system prompt + task
    appended_tokens: Dist  # turns >= 1
    output_tokens: Dist
    prompt_tokens: Dist  # recorded where known, else from the growth chain
    context_last_turn_tokens: Dist  # per session: last prompt + its output
    tool_time_per_session_s: Dist  # sum of tool durations between turns (last tool excluded)
    tool_duration_s: dict[str, Dist] = field(default_factory=dict)  # per tool_name; "(none)" for null
    inter_arrival_s: Dist = Dist()
    arrival_rate_per_s: float = float("nan")  # (sessions - 1) / arrival span

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def workload_stats(wl: Workload, name: str = "", *, agent_kind: str | None = None) -> WorkloadStats:
    """Summarise ``wl`` (only sessions of ``agent_kind`` when given)."""
    sessions = [s for s in wl.sessions if agent_kind is None or s.agent_kind == agent_kind]
    kinds: dict[str, int] = {}
    methods: dict[str, int] = {}
    n_turns, first, later, output, prompt, last_ctx, tool_time = [], [], [], [], [], [], []
    tools: dict[str, list[float]] = {}
    for s in sessions:
        kinds[s.agent_kind] = kinds.get(s.agent_kind, 0) + 1
        n_turns.append(len(s.turns))
        if not s.turns:
            continue
        prompts = s.prompt_tokens()
        prompt.extend(prompts)
        last_ctx.append(prompts[-1] + s.turns[-1].output_tokens)
        first.append(s.turns[0].appended_tokens)
        busy = 0.0
        for i, t in enumerate(s.turns):
            methods[t.token_count_method] = methods.get(t.token_count_method, 0) + 1
            if i:
                later.append(t.appended_tokens)
            output.append(t.output_tokens)
            tools.setdefault(t.tool_name if t.tool_name is not None else "(none)", []).append(t.tool_duration_s)
            if i + 1 < len(s.turns):
                busy += t.tool_duration_s
        tool_time.append(busy)
    arrivals = np.sort(np.asarray([s.arrival_s for s in sessions], dtype=np.float64))
    gaps = np.diff(arrivals)
    span = float(arrivals[-1] - arrivals[0]) if arrivals.size > 1 else 0.0
    return WorkloadStats(
        name=name or str(wl.meta.get("name") or ""),
        sessions=len(sessions),
        turns=int(sum(n_turns)),
        agent_kinds=dict(sorted(kinds.items())),
        token_count_methods=dict(sorted(methods.items())),
        turns_per_session=Dist.of(n_turns),
        first_turn_appended_tokens=Dist.of(first),
        appended_tokens=Dist.of(later),
        output_tokens=Dist.of(output),
        prompt_tokens=Dist.of(prompt),
        context_last_turn_tokens=Dist.of(last_ctx),
        tool_time_per_session_s=Dist.of(tool_time),
        tool_duration_s={k: Dist.of(v) for k, v in sorted(tools.items(), key=lambda kv: -len(kv[1]))},
        inter_arrival_s=Dist.of(gaps),
        arrival_rate_per_s=(len(sessions) - 1) / span if span > 0 else float("nan"),
    )


# ----------------------------------------------------------------------------- rendering

_DIST_ROWS: tuple[tuple[str, str, str], ...] = (
    ("turns_per_session", "turns / session", "turns"),
    ("first_turn_appended_tokens", "appended, turn 0", "tokens"),
    ("appended_tokens", "appended, turns ≥ 1", "tokens"),
    ("output_tokens", "output / turn", "tokens"),
    ("prompt_tokens", "prompt / turn", "tokens"),
    ("context_last_turn_tokens", "context at last turn", "tokens"),
    ("tool_time_per_session_s", "tool time / session", "s"),
    ("inter_arrival_s", "inter-arrival", "s"),
)


def _fmt(x: float, unit: str) -> str:
    if x != x:  # NaN
        return "-"
    if unit == "s":
        return f"{x:.3g}" if abs(x) < 10 else f"{x:,.1f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _dist_table(title: str, rows: Sequence[tuple[str, str, Sequence[tuple[str, Dist]]]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col, justify in (("metric", "left"), ("unit", "left"), ("workload", "left"), ("n", "right"), ("mean", "right"),
                         ("p50", "right"), ("p90", "right"), ("p99", "right"), ("max", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r, (label, unit, per_wl) in enumerate(rows):
        for j, (wl_name, d) in enumerate(per_wl):
            table.add_row(label if j == 0 else "", unit if j == 0 else "", wl_name, f"{d.n:,}",
                          *(_fmt(v, unit) for v in (d.mean, d.p50, d.p90, d.p99, d.max)),
                          end_section=(j == len(per_wl) - 1 and r < len(rows) - 1))
    return table


def stats_tables(stats: Sequence[WorkloadStats]) -> list[Table]:
    """Overview, distributions and tool durations, one row per workload under each metric."""
    overview = Table(title="Workload", title_justify="left")
    overview.add_column("workload")
    for col in ("sessions", "turns", "agent kinds", "token counts from", "arrivals / s"):
        overview.add_column(col, justify="right" if col in ("sessions", "turns", "arrivals / s") else "left")
    for s in stats:
        overview.add_row(s.name, f"{s.sessions:,}", f"{s.turns:,}",
                         ", ".join(f"{k} {v}" for k, v in s.agent_kinds.items()),
                         ", ".join(f"{k} {v}" for k, v in s.token_count_methods.items()),
                         _fmt(s.arrival_rate_per_s, "s"))
    dists = _dist_table("Distributions", [
        (label, unit, [(s.name, getattr(s, key)) for s in stats]) for key, label, unit in _DIST_ROWS])
    tool_names = list(dict.fromkeys(t for s in stats for t in s.tool_duration_s))
    tools = _dist_table("Tool duration by tool (s); n = calls, share of turns in parentheses", [
        (t, "s", [(f"{s.name} ({s.tool_duration_s[t].n / max(s.turns, 1):.0%})", s.tool_duration_s[t])
                  for s in stats if t in s.tool_duration_s]) for t in tool_names])
    return [overview, dists, tools]


def render_stats(stats: Sequence[WorkloadStats], console: Console | None = None) -> None:
    """Print the stats tables (to stdout unless a console is given)."""
    (console or Console()).print(Group(*stats_tables(stats)))
