"""The report's figures over time: power, SM clocks, time at each clock, engine state, control decisions.

Every x axis is seconds since the replay's start, so runs line up and the idle lead-in before
the first request shows at negative times. Each builder returns a ``FigureBlock`` naming the
runs that lack its data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kairosbench.report.plotting import INSTANCE_COLORS, INSTANCE_DASHES, FigureBlock, layout, run_color, seconds_text, to_dict
from kairosbench.report.rundata import RunData
from kairosbench.report.series import Series, bin_means, steps, sum_on_grid, time_at_value_s, window_means

__all__ = ["mean_window_s", "total_power", "clock_series", "time_at_clock_s", "power_figure", "clock_figure", "time_at_clock_figure", "engine_figure", "control_figure"]

_FINEST_WORDS = {"buffer": "20 ms driver buffer", "power_w": "polled instant power", "power_avg_w": "polled 1 s average", "bin": "1 s simulator bins"}


def _finest_power(gpu_rows: pd.DataFrame) -> tuple[Series, str]:
    """A GPU's finest power series: the driver buffer, else polled instant power, else the 1 s average."""
    buffer = gpu_rows[gpu_rows["kind"] == "buffer"]
    if len(buffer) >= 2:
        return Series.of(buffer["t_s"].to_numpy(), buffer["power_w"].to_numpy()), "buffer"
    polls = gpu_rows[gpu_rows["kind"] != "buffer"]
    if polls["power_w"].notna().sum() >= 2:
        return Series.of(polls["t_s"].to_numpy(), polls["power_w"].to_numpy()), ("bin" if (polls["kind"] == "bin").all() else "power_w")
    if polls["power_avg_w"].notna().sum() >= 2:
        return Series.of(polls["t_s"].to_numpy(), polls["power_avg_w"].to_numpy()), "power_avg_w"
    return Series.of(np.array([]), np.array([])), ""


def total_power(run: RunData) -> tuple[Series, set[str], int]:
    """Power summed over the run's GPUs on a common grid; the series kinds used; the GPU count."""
    if run.power is None:
        return Series.of(np.array([]), np.array([])), set(), 0
    parts, kinds = [], set()
    for _, rows in run.power.groupby("gpu", sort=True):
        series, kind = _finest_power(rows)
        if len(series) >= 2:
            parts.append(series)
            kinds.add(kind)
    return sum_on_grid(parts), kinds, len(parts)


def clock_series(run: RunData) -> dict[str, Series]:
    """Each GPU's SM clock from its polls (MHz), by instance label."""
    if run.power is None or "sm_clock_mhz" not in run.power.columns:
        return {}
    out = {}
    polls = run.power[(run.power["kind"] != "buffer") & run.power["sm_clock_mhz"].notna()]
    for gpu, rows in polls.groupby("gpu", sort=True):
        out[str(gpu)] = Series.of(rows["t_s"].to_numpy(), rows["sm_clock_mhz"].to_numpy())
    return out


def time_at_clock_s(run: RunData) -> dict[float, float]:
    """GPU-seconds at each SM clock (MHz, rounded) over the replay, summed over GPUs."""
    total: dict[float, float] = {}
    for series in clock_series(run).values():
        rounded = Series(series.t_s, np.round(series.values))
        for clock, seconds in time_at_value_s(rounded, run.duration_s, 0.0).items():
            total[clock] = total.get(clock, 0.0) + seconds
    return total


def _per_instance(run: RunData, columns: Sequence[str]) -> tuple[pd.DataFrame | None, str, str]:
    """Engine signals per instance: engine.parquet, else the control log's copy (the simulator's only source)."""
    if run.engine is not None and any(c in run.engine.columns for c in columns):
        return run.engine, "instance", "engine.parquet"
    if run.control is not None and any(c in run.control.columns for c in columns):
        return run.control, "instance_id", "control.parquet"
    return None, "", ""


def _summed(frame: pd.DataFrame, by: str, column: str, *, mean: bool = False) -> Series:
    parts = [Series.of(g["t_s"].to_numpy(), g[column].to_numpy(dtype=np.float64)) for _, g in frame.groupby(by, sort=True) if g[column].notna().sum() >= 2]
    total = sum_on_grid(parts)
    if mean and parts:
        return Series(total.t_s, total.values / len(parts))
    return total


# ---- the figures -----------------------------------------------------------------------------


def mean_window_s(span_s: float, max_points: int) -> float:
    """The averaging window of the default power view: 1 s, or longer for long runs.

    About 400 windows over the longest run (a readable line for several overlapping runs),
    rounded up to 1, 2, 5, 10, 15, 30 or 60 s or whole minutes, and never more points than
    ``max_points``.
    """
    want = max(1.0, span_s / 400.0, span_s / max_points)
    for nice in (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0):
        if want <= nice:
            return nice
    return float(np.ceil(want / 60.0) * 60.0)


def power_figure(runs: Sequence[RunData], max_points: int) -> FigureBlock:
    """Total GPU power over time per run: 1 s means, and (a button away) the finest samples."""
    fig = go.Figure()
    missing, notes = [], []
    fine_traces: list[bool] = []
    span = max((r.duration_s for r in runs), default=0.0)
    mean_s = mean_window_s(span, max_points)
    for i, run in enumerate(runs):
        total, kinds, n = total_power(run)
        if len(total) < 2:
            missing.append(run.label)
            continue
        fine, width = bin_means(total, max_points)
        means = window_means(total, mean_s)
        words = " + ".join(_FINEST_WORDS.get(k, k) for k in sorted(kinds))
        notes.append(f"{run.label}: {n} GPU{'s' if n != 1 else ''}, {words}" + (f" (shown as {seconds_text(width)} bin means)" if width else ""))
        fig.add_trace(go.Scatter(x=means.t_s, y=means.values, mode="lines", name=run.label, legendgroup=run.label,
                                 line={"color": run_color(i), "width": 1.8},
                                 hovertemplate=f"{run.label}: %{{y:.0f}} W ({mean_s:g} s mean) at %{{x:.1f}} s<extra></extra>"))
        fig.add_trace(go.Scattergl(x=fine.t_s, y=fine.values, mode="lines", name=run.label, legendgroup=run.label, visible=False,
                                   line={"color": run_color(i), "width": 1.0},
                                   hovertemplate=f"{run.label}: %{{y:.0f}} W at %{{x:.2f}} s<extra></extra>"))
        fine_traces += [False, True]
    if not fig.data:
        return FigureBlock("power", "GPU power over time", "", None, missing, "No power telemetry in any of these runs.")
    buttons = [
        {"label": f"{mean_s:g} s means", "method": "update", "args": [{"visible": [not f for f in fine_traces]}]},
        {"label": "finest samples", "method": "update", "args": [{"visible": list(fine_traces)}]},
    ]
    layout(fig, height=440, xaxis_title="time since the replay started, s", yaxis_title="GPU power, W (sum over GPUs)", hovermode="closest",
            updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "x": 0.0, "xanchor": "left", "y": 1.2, "yanchor": "bottom",
                          "showactive": True, "pad": {"r": 0, "t": 0}, "font": {"size": 11}}])
    fig.update_layout(margin={"t": 95})
    fig.update_yaxes(rangemode="tozero")
    caption = (f"Power summed over each run's GPUs on a common time grid (only where every GPU has samples), from the finest "
               f"series each GPU recorded, shown as {mean_s:g} s means; the buttons switch to the finest samples (bin means "
               "where a run has more than the figure's point budget: they keep the energy, the area, but flatten spikes "
               "shorter than a bin). Series: " + "; ".join(notes) + ".")
    return FigureBlock("power", "GPU power over time", caption, to_dict(fig), missing)


def clock_figure(runs: Sequence[RunData], max_points: int) -> FigureBlock:
    """SM clock over time, one panel per run, one line per instance."""
    with_clocks = [(i, run, clock_series(run)) for i, run in enumerate(runs)]
    have = [(i, run, c) for i, run, c in with_clocks if c]
    missing = [run.label for _, run, c in with_clocks if not c]
    if not have:
        return FigureBlock("clocks", "SM clock over time", "", None, missing, "No SM clock readings in any of these runs.")
    fig = make_subplots(rows=len(have), cols=1, shared_xaxes=True, vertical_spacing=min(0.08, 0.3 / len(have)),
                        subplot_titles=[run.label for _, run, _ in have])
    instances = sorted({name for _, _, c in have for name in c})
    shown_legend: set[str] = set()
    for row, (_, run, clocks) in enumerate(have, start=1):
        for name, series in clocks.items():
            shown = steps(series, max_points)
            k = instances.index(name)
            fig.add_trace(go.Scatter(x=shown.t_s, y=shown.values, mode="lines", line={"shape": "hv", "color": INSTANCE_COLORS[k % len(INSTANCE_COLORS)], "width": 1.5},
                                     name=name, legendgroup=name, showlegend=name not in shown_legend,
                                     hovertemplate=f"{run.label} {name}: %{{y:.0f}} MHz at %{{x:.2f}} s<extra></extra>"), row=row, col=1)
            shown_legend.add(name)
        fig.update_yaxes(title_text="MHz", row=row, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="time since the replay started, s", row=len(have), col=1)
    layout(fig, height=140 + 170 * len(have))
    fig.update_layout(margin={"t": 80}, legend={"y": 1.0 + 60 / (140 + 170 * len(have))})
    caption = ("The effective SM clock each GPU reported at every poll (kept where it changed; drawn as steps). "
               "Instances are i0, i1, … in endpoint order (the gateway's ids); NVML GPUs are host/gpuN.")
    return FigureBlock("clocks", "SM clock over time", caption, to_dict(fig), missing)


def _clock_buckets(clocks: set[float]) -> Callable[[float], tuple[float, str]]:
    """Exact clock levels when there are few, else 100 MHz ranges (sort key, label)."""
    if len(clocks) <= 12:
        return lambda c: (c, f"{c:.0f} MHz")
    return lambda c: (float(int(c // 100) * 100), f"{int(c // 100) * 100}–{int(c // 100) * 100 + 99} MHz")


def time_at_clock_figure(runs: Sequence[RunData]) -> FigureBlock:
    """Share of GPU time at each SM clock, one stacked bar per run."""
    per_run = [(run, time_at_clock_s(run)) for run in runs]
    missing = [run.label for run, t in per_run if not t]
    have = [(run, t) for run, t in per_run if t]
    if not have:
        return FigureBlock("time-at-clock", "Time at each SM clock", "", None, missing, "No SM clock readings in any of these runs.")
    bucket = _clock_buckets({c for _, t in have for c in t})
    shares: dict[tuple[float, str], list[float]] = {}
    seconds: dict[tuple[float, str], list[float]] = {}
    for j, (_, t) in enumerate(have):
        total = sum(t.values())
        for clock, s in t.items():
            key = bucket(clock)
            shares.setdefault(key, [0.0] * len(have))[j] += 100.0 * s / total if total else 0.0
            seconds.setdefault(key, [0.0] * len(have))[j] += s
    keys = sorted(shares)
    lo, hi = keys[0][0], keys[-1][0]
    fig = go.Figure()
    labels = [run.label for run, _ in have]
    for key in keys:
        frac = 0.0 if hi == lo else (key[0] - lo) / (hi - lo)
        color = _viridis(frac)
        fig.add_trace(go.Bar(y=labels, x=shares[key], orientation="h", name=key[1], marker={"color": color},
                             customdata=seconds[key], hovertemplate=f"%{{y}}: {key[1]}, %{{x:.1f}} % (%{{customdata:.1f}} GPU-s)<extra></extra>"))
    layout(fig, height=140 + 48 * len(have), barmode="stack", xaxis_title="share of GPU time over the replay, %",
            legend={"orientation": "h", "y": -0.35 if len(have) < 4 else -0.2, "yanchor": "top", "x": 0, "traceorder": "normal"})
    fig.update_layout(margin={"l": 140, "r": 30, "t": 20, "b": 110})
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 100])
    caption = ("How long the GPUs sat at each SM clock between the replay's start and end, from the polled clock "
               "(each reading holds until the next), summed over GPUs; darker is slower. The emulator parks an idle GPU "
               "at its lowest clock, so idle time shows as the lowest level.")
    return FigureBlock("time-at-clock", "Time at each SM clock", caption, to_dict(fig), missing)


def _viridis(frac: float) -> str:
    from plotly.colors import sample_colorscale

    return str(sample_colorscale("Viridis", [min(1.0, max(0.0, 0.12 + 0.85 * frac))])[0])


def engine_figure(runs: Sequence[RunData], max_points: int) -> FigureBlock:
    """KV-cache usage, running and waiting requests over time."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=["KV-cache usage (mean over instances)", "requests running (sum over instances)", "requests waiting (sum over instances)"])
    missing, sources = [], []
    for i, run in enumerate(runs):
        frame, by, source = _per_instance(run, ("kv_usage_frac", "num_running", "num_waiting"))
        if frame is None:
            missing.append(run.label)
            continue
        sources.append(f"{run.label}: {source}")
        for row, (column, mean, scale, unit) in enumerate((("kv_usage_frac", True, 100.0, "%"), ("num_running", False, 1.0, ""), ("num_waiting", False, 1.0, "")), start=1):
            if column not in frame.columns:
                continue
            series = _summed(frame, by, column, mean=mean)
            if len(series) < 2:
                continue
            shown, _ = bin_means(series, max_points)
            fig.add_trace(go.Scatter(x=shown.t_s, y=shown.values * scale, mode="lines", line={"color": run_color(i), "width": 1.3},
                                     name=run.label, legendgroup=run.label, showlegend=row == 1,
                                     hovertemplate=f"{run.label}: %{{y:.1f}}{unit} at %{{x:.1f}} s<extra></extra>"), row=row, col=1)
    if not fig.data:
        return FigureBlock("engine", "Engine state over time", "", None, missing, "No engine metrics (engine.parquet) or control log in any of these runs.")
    fig.update_yaxes(title_text="%", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="requests", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="requests", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text="time since the replay started, s", row=3, col=1)
    layout(fig, height=680)
    fig.update_layout(margin={"t": 80}, legend={"y": 1.06})
    caption = ("The engines' own gauges (vLLM names; the emulator reports the same), scraped about once a second, "
               "combined over instances on a common grid. Sources: " + "; ".join(sources) + ".")
    return FigureBlock("engine", "Engine state over time", caption, to_dict(fig), missing)


def control_figure(runs: Sequence[RunData], max_points: int) -> FigureBlock:
    """The gateway's decisions: target clock, resident context and held agents, per epoch."""
    have = [(i, run, run.control) for i, run in enumerate(runs) if run.control is not None and len(run.control)]
    missing = [run.label for run in runs if run.control is None or not len(run.control)]
    if not have:
        return FigureBlock("control", "Control decisions", "", None, missing, "No control.parquet in any of these runs (they ran without --policy).")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=["clock the policy asked for (per instance)", "resident context U/Umax (per instance)", "agents held at the gateway + pending admission"])
    instances = sorted({str(x) for _, _, c in have for x in c["instance_id"].unique()})
    for i, run, c in have:
        for key, rows in c.groupby("instance_id", sort=True):
            name = str(key)
            dash = INSTANCE_DASHES[instances.index(name) % len(INSTANCE_DASHES)]
            target = Series.of(rows["t_s"].to_numpy(), rows["target_clock_mhz"].to_numpy(dtype=np.float64)) if "target_clock_mhz" in rows else Series.of(np.array([]), np.array([]))
            if len(target):
                shown = steps(target, max_points)
                fig.add_trace(go.Scatter(x=shown.t_s, y=shown.values, mode="lines", line={"shape": "hv", "color": run_color(i), "dash": dash, "width": 1.5},
                                         name=f"{run.label} {name}", legendgroup=run.label, showlegend=True,
                                         hovertemplate=f"{run.label} {name}: %{{y:.0f}} MHz at %{{x:.1f}} s<extra></extra>"), row=1, col=1)
            if "context_frac" in rows:
                ctx, _ = bin_means(Series.of(rows["t_s"].to_numpy(), rows["context_frac"].to_numpy(dtype=np.float64)), max_points)
                fig.add_trace(go.Scatter(x=ctx.t_s, y=ctx.values * 100, mode="lines", line={"color": run_color(i), "dash": dash, "width": 1.3},
                                         name=f"{run.label} {name}", legendgroup=run.label, showlegend=False,
                                         hovertemplate=f"{run.label} {name}: U/Umax %{{y:.1f}} % at %{{x:.1f}} s<extra></extra>"), row=2, col=1)
        waiting = _held_and_pending(c)
        if len(waiting):
            shown = steps(waiting, max_points)
            fig.add_trace(go.Scatter(x=shown.t_s, y=shown.values, mode="lines", line={"shape": "hv", "color": run_color(i), "width": 1.5},
                                     name=run.label, legendgroup=run.label, showlegend=False,
                                     hovertemplate=f"{run.label}: %{{y:.0f}} agents waiting at %{{x:.1f}} s<extra></extra>"), row=3, col=1)
    fig.update_yaxes(title_text="MHz", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="%", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="agents", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text="time since the replay started, s", row=3, col=1)
    layout(fig, height=740)
    fig.update_layout(margin={"t": 90}, legend={"y": 1.05})
    caption = ("One row of control.parquet per instance per control epoch: the SM clock the policy set (solid, dotted, dashed: "
               "i0, i1, i2, …), U/Umax (the context of the agents active on the instance over its KV capacity; KAIROS's "
               "signal) and the agents the gateway held between turns or had not yet admitted.")
    return FigureBlock("control", "Control decisions", caption, to_dict(fig), missing)


def _held_and_pending(control: pd.DataFrame) -> Series:
    """Held agents summed over instances plus the gateway-wide pending count, per epoch."""
    if "epoch" not in control.columns:
        return Series.of(np.array([]), np.array([]))
    by_epoch = control.groupby("epoch", sort=True)
    t = by_epoch["t_s"].min().to_numpy()
    held = by_epoch["held_agents"].sum().to_numpy(dtype=np.float64) if "held_agents" in control else np.zeros(len(t))
    pending = by_epoch["pending_agents"].max().to_numpy(dtype=np.float64) if "pending_agents" in control else np.zeros(len(t))
    return Series.of(t, np.nan_to_num(held) + np.nan_to_num(pending))
