"""The report's figures, in reading order, built from the loaded runs (no IO; plotly JSON out).

Each builder returns a ``FigureBlock``: the figure as plotly JSON (or None when no run has the
data), a caption saying what is drawn, in which units and how it was reduced, and the runs
that lack the data. One colour per run throughout (``plotting.RUN_COLORS``), one per serving
instance where instances are drawn separately. The time-series figures are in
``figures_time``; the summary and distribution figures are here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kairosbench.report.figures_time import clock_figure, control_figure, engine_figure, power_figure, time_at_clock_figure
from kairosbench.report.plotting import RUN_COLORS, FigureBlock, figure_json, layout, run_color, to_dict
from kairosbench.report.rundata import RunData
from kairosbench.report.series import ecdf

__all__ = ["FigureBlock", "RUN_COLORS", "figure_json", "build_figures", "tradeoff_figure", "throughput_cdf_figure", "latency_figure"]


def tradeoff_figure(runs: Sequence[RunData], values: Sequence[dict[str, Any]], slo_tok_s: float) -> FigureBlock:
    """Average power against P5 per-agent throughput: the trade-off every policy makes."""
    fig = go.Figure()
    missing = []
    for i, (run, v) in enumerate(zip(runs, values)):
        if v.get("avg_power_w") is None or v.get("p5_agent_tok_s") is None:
            missing.append(run.label)
            continue
        energy = v.get("energy_per_agent_kj")
        attain = v.get("slo_attainment_frac")
        fig.add_trace(go.Scatter(
            x=[v["avg_power_w"]], y=[v["p5_agent_tok_s"]], mode="markers+text", name=run.label, text=[run.label],
            textposition="top center", marker={"size": 14, "color": run_color(i), "line": {"width": 1, "color": "#333"}},
            hovertemplate=(f"<b>{run.label}</b><br>avg power %{{x:.1f}} W<br>P5 per-agent %{{y:.1f}} tok/s"
                           + (f"<br>energy / finished agent {energy:.3f} kJ" if energy is not None else "")
                           + (f"<br>SLO attainment {attain * 100:.1f} %" if attain is not None else "") + "<extra></extra>"),
        ))
    if not fig.data:
        return FigureBlock("tradeoff", "Power against per-agent throughput", "", None, missing, "No run has both power telemetry and per-agent throughput.")
    fig.add_hline(y=slo_tok_s, line_dash="dash", line_color="#c0392b", annotation_text=f"SLO {slo_tok_s:g} tok/s", annotation_position="bottom right")
    layout(fig, height=420, showlegend=False, xaxis_title="average GPU power over the replay, W (sum over GPUs)",
            yaxis_title="P5 per-agent output throughput, tok/s")
    fig.update_yaxes(rangemode="tozero")
    caption = ("Each run is one point: lower (left) saves power, higher meets the per-agent SLO with more margin. "
               "The dashed line is the SLO; a run whose P5 sits below it fails it for at least 5 % of agents.")
    return FigureBlock("tradeoff", "Power against per-agent throughput", caption, to_dict(fig), missing)


def _agent_rates(run: RunData) -> np.ndarray:
    """Per-agent output throughput over the sessions that sent a request (as the run summary counts them)."""
    s = run.sessions
    if s.num_rows == 0:
        return np.array([])
    rates = np.nan_to_num(s["output_tok_s"].to_numpy(zero_copy_only=False).astype(float), nan=0.0)
    sent = s["requests"].to_numpy(zero_copy_only=False).astype(float) > 0
    return rates[sent]


def throughput_cdf_figure(runs: Sequence[RunData], slo_tok_s: float, max_points: int) -> FigureBlock:
    """Per-agent output throughput CDF with the SLO line."""
    fig = go.Figure()
    missing = []
    for i, run in enumerate(runs):
        x, y = ecdf(_agent_rates(run), max_points)
        if len(x) == 0:
            missing.append(run.label)
            continue
        fig.add_trace(go.Scatter(x=x, y=y * 100, mode="lines", line={"shape": "hv", "color": run_color(i), "width": 2}, name=run.label,
                                 hovertemplate=f"{run.label}: %{{y:.1f}} % of agents at ≤ %{{x:.1f}} tok/s<extra></extra>"))
    if not fig.data:
        return FigureBlock("agent-cdf", "Per-agent throughput", "", None, missing, "No sessions in any of these runs.")
    fig.add_vline(x=slo_tok_s, line_dash="dash", line_color="#c0392b", annotation_text=f"SLO {slo_tok_s:g} tok/s", annotation_position="top right")
    fig.add_hline(y=5, line_dash="dot", line_color="#777", annotation_text="P5", annotation_position="bottom right")
    layout(fig, height=420, xaxis_title="per-agent output throughput, tok/s (output tokens / time waiting on the LLM)",
            yaxis_title="agents at or below, %")
    fig.update_yaxes(range=[0, 100.5])
    fig.update_xaxes(rangemode="tozero")
    caption = ("Cumulative distribution of each agent's output tokens over its LLM time (tool time excluded), over every "
               "session that sent a request. Where a curve crosses the dotted 5 % line is its P5; agents left of the "
               "dashed line miss the SLO.")
    return FigureBlock("agent-cdf", "Per-agent throughput", caption, to_dict(fig), missing)


def _ok_column(run: RunData, column: str) -> np.ndarray:
    r = run.requests
    if r.num_rows == 0:
        return np.array([])
    ok = np.array(r["status"].to_pylist(), dtype=object) == "ok"
    return r[column].to_numpy(zero_copy_only=False).astype(float)[ok]


def latency_figure(runs: Sequence[RunData], max_points: int) -> FigureBlock:
    """TTFT and ITL distributions (CDFs on log axes)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["time to first token", "inter-token latency (per-request median)"], horizontal_spacing=0.09)
    missing = []
    for i, run in enumerate(runs):
        ttft_x, ttft_y = ecdf(_ok_column(run, "ttft_s") * 1e3, max_points)
        itl_x, itl_y = ecdf(_ok_column(run, "itl_p50_s") * 1e3, max_points)
        if len(ttft_x) == 0:
            missing.append(run.label)
            continue
        fig.add_trace(go.Scatter(x=ttft_x, y=ttft_y * 100, mode="lines", line={"shape": "hv", "color": run_color(i)}, name=run.label, legendgroup=run.label,
                                 hovertemplate=f"{run.label}: %{{y:.1f}} % ≤ %{{x:.1f}} ms<extra></extra>"), row=1, col=1)
        if len(itl_x):
            fig.add_trace(go.Scatter(x=itl_x, y=itl_y * 100, mode="lines", line={"shape": "hv", "color": run_color(i)}, name=run.label, legendgroup=run.label,
                                     showlegend=False, hovertemplate=f"{run.label}: %{{y:.1f}} % ≤ %{{x:.2f}} ms<extra></extra>"), row=1, col=2)
    if not fig.data:
        return FigureBlock("latency", "Latency distributions", "", None, missing, "No successful requests in any of these runs.")
    fig.update_xaxes(type="log", title_text="TTFT, ms (log)", row=1, col=1)
    fig.update_xaxes(type="log", title_text="median per-token gap of a request, ms (log)", row=1, col=2)
    fig.update_yaxes(title_text="requests at or below, %", range=[0, 100.5], row=1, col=1)
    fig.update_yaxes(range=[0, 100.5], row=1, col=2)
    layout(fig, height=440)
    fig.update_layout(margin={"t": 80}, legend={"y": 1.12})
    caption = ("Cumulative distributions over requests that succeeded. ITL is each request's median per-token gap "
               "(tokens arriving together in one chunk split its gap evenly); the simulator records no per-token times.")
    return FigureBlock("latency", "Latency distributions", caption, to_dict(fig), missing)


def build_figures(runs: Sequence[RunData], values: Sequence[dict[str, Any]], *, slo_tok_s: float, max_points: int = 2000) -> list[FigureBlock]:
    """Every figure of the report, in reading order."""
    return [
        tradeoff_figure(runs, values, slo_tok_s),
        power_figure(runs, max_points),
        clock_figure(runs, max_points),
        time_at_clock_figure(runs),
        throughput_cdf_figure(runs, slo_tok_s, max_points),
        latency_figure(runs, max_points),
        engine_figure(runs, max_points),
        control_figure(runs, max_points),
    ]
