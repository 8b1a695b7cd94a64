"""Assemble the report (runs → comparison → figures) and render it to one self-contained HTML file.

The file carries everything it needs: the CSS, the figures' data and plotly.js itself (from
the installed plotly package, the version the figures were built for), so it opens offline,
from a mail attachment or an archive, years later. No ``<script src>``, no CDN, no fonts from
the network: STYLE.md names report templates fetched over the network as a peer's mistake.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from kairosbench import __version__
from kairosbench.errors import UsageError
from kairosbench.report.figures import RUN_COLORS, FigureBlock, build_figures
from kairosbench.report.load import RunData, unique_labels
from kairosbench.report.metrics import METRIC_GROUPS, METRICS, Comparison, comparability_warnings, compare, run_values

__all__ = ["ReportModel", "resolve_baseline", "build_report", "render_html", "write_report", "TEMPLATE_DIR"]

TEMPLATE_DIR = Path(__file__).with_name("templates")


@dataclass
class ReportModel:
    """Everything the template shows, computed (no logic left for the template but loops)."""

    title: str
    runs: list[RunData]
    values: list[dict[str, Any]]
    comparison: Comparison
    figures: list[FigureBlock]
    warnings: list[str]
    slo_tok_s: float
    command: str = ""
    baseline_given: bool = False  # --baseline named it (else the default rule chose it)
    generated: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def baseline(self) -> RunData:
        return self.runs[self.comparison.baseline]


def resolve_baseline(runs: Sequence[RunData], spec: str | None) -> int:
    """The baseline run's index: ``spec`` names a label, a policy, a directory or a 1-based position.

    Without ``spec``: the first run whose policy is ``max`` (KAIROS's baseline: maximum clock),
    else the first run.
    """
    if spec is None:
        return next((i for i, r in enumerate(runs) if r.policy == "max"), 0)
    for i, r in enumerate(runs):
        if spec == r.label:
            return i
    by_policy = [i for i, r in enumerate(runs) if r.policy == spec]
    if len(by_policy) == 1:
        return by_policy[0]
    if len(by_policy) > 1:
        raise UsageError(f"--baseline {spec}: {len(by_policy)} runs have that policy; name one by its label or directory: "
                         + ", ".join(runs[i].label for i in by_policy))
    target = Path(spec)
    for i, r in enumerate(runs):
        if r.path.name == spec or (target.exists() and r.path.resolve() == target.resolve()):
            return i
    if spec.isdigit() and 1 <= int(spec) <= len(runs):
        return int(spec) - 1
    raise UsageError(f"--baseline {spec} matches no run; give a label, policy, run directory or position (1-{len(runs)}): "
                     + ", ".join(r.label for r in runs))


def build_report(
    runs: list[RunData],
    *,
    baseline: str | None = None,
    slo_tok_s: float | None = None,
    title: str | None = None,
    max_points: int = 2000,
    command: str = "",
) -> ReportModel:
    """Label the runs, compute every metric at one SLO, compare with the baseline, draw the figures."""
    if not runs:
        raise UsageError("no runs to report on")
    if max_points < 10:
        raise UsageError("--max-points must be at least 10")
    for run, label in zip(runs, unique_labels(runs)):
        run.label = label
    base = resolve_baseline(runs, baseline)
    slo = slo_tok_s if slo_tok_s is not None else runs[base].slo_tok_s
    if slo <= 0:
        raise UsageError("--slo-tok-s must be > 0")
    values = [run_values(r, slo) for r in runs]
    comparison = compare([r.label for r in runs], values, baseline=base, slo_tok_s=slo)
    warnings = comparability_warnings([r.label for r in runs], [r.info for r in runs])
    if slo_tok_s is not None and any(r.slo_tok_s != slo for r in runs):
        warnings.append(f"SLO attainment is computed at {slo:g} tok/s (--slo-tok-s) for every run, not at the SLO each run was configured with.")
    figures = build_figures(runs, values, slo_tok_s=slo, max_points=max_points)
    return ReportModel(title=title or _default_title(runs), runs=runs, values=values, comparison=comparison,
                       figures=figures, warnings=warnings, slo_tok_s=slo, command=command,
                       baseline_given=baseline is not None)


def _default_title(runs: Sequence[RunData]) -> str:
    names = {r.info.get("workload_name") for r in runs} - {None}
    what = f" on {names.pop()}" if len(names) == 1 else ""
    kind = "Simulated policy comparison" if all(r.source == "sim" for r in runs) else "Policy comparison"
    return f"{kind}{what}: " + " vs ".join(r.label for r in runs)


def _common(runs: Sequence[RunData], key: str) -> str | None:
    values = {str(r.info.get(key)) for r in runs if r.info.get(key) is not None}
    return values.pop() if len(values) == 1 else None


def _delta_class(key: str, text: str) -> str:
    """``good`` / ``bad`` for a delta's direction given the metric's better side ("" when neutral)."""
    m = next(m for m in METRICS if m.key == key)
    if not text or not m.better:
        return ""
    if text.startswith("+0.0 ") or text.startswith("−0.0 "):
        return ""
    up = text.startswith("+")
    return "good" if up == (m.better == "higher") else "bad"


def _header(model: ReportModel) -> list[tuple[str, str]]:
    runs = model.runs
    facts: list[tuple[str, str]] = []
    name = _common(runs, "workload_name")
    sha = _common(runs, "workload_sha256")
    if name or sha:
        facts.append(("workload", f"{name or '?'}" + (f" (sha256 {sha[:12]})" if sha else "")))
    else:
        facts.append(("workload", "differs between runs" if any(r.info.get("workload_sha256") for r in runs) else "not recorded"))
    for key, label in (("time_scale", "time scale"), ("arrival", "arrivals"), ("max_sessions", "session limit"),
                       ("hardware", "hardware"), ("model", "model"), ("telemetry", "power telemetry")):
        value = _common(runs, key)
        present = [r for r in runs if r.info.get(key) is not None]
        if value is not None and len(present) == len(runs):
            facts.append((label, value))
        elif present:
            facts.append((label, "differs: " + ", ".join(f"{r.label} {r.info.get(key) if r.info.get(key) is not None else '—'}" for r in runs)))
    versions = sorted({str((r.info.get("versions") or {}).get("kairosbench")) for r in runs if (r.info.get("versions") or {}).get("kairosbench")})
    pythons = sorted({str((r.info.get("versions") or {}).get("python")) for r in runs if (r.info.get("versions") or {}).get("python")})
    if versions:
        facts.append(("versions", f"kairosbench {', '.join(versions)}" + (f"; Python {', '.join(pythons)}" if pythons else "")))
    facts.append(("SLO", f"P5 per-agent output throughput ≥ {model.slo_tok_s:g} tok/s"))
    facts.append(("baseline", model.baseline.label + (" (--baseline)" if model.baseline_given else " (default: the run with policy max, else the first)")))
    return facts


def _table(model: ReportModel) -> dict[str, Any]:
    """Header groups and one row per run of display cells (text, delta, classes, tooltip)."""
    comp = model.comparison
    groups = [(g, sum(1 for m in METRICS if m.group == g)) for g in METRIC_GROUPS]
    columns = [{"label": m.label, "unit": m.unit, "doc": m.doc, "group": m.group} for m in METRICS]
    rows = []
    for i, (run, v) in enumerate(zip(model.runs, model.values)):
        cells = []
        for m in METRICS:
            delta = comp.delta(m.key, i)
            title = m.doc
            text = m.format(v.get(m.key))
            if m.key == "errors" and v.get("errors_by_kind"):
                title = "by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(v["errors_by_kind"].items()))
            if m.key in ("energy_kj", "energy_per_agent_kj", "avg_power_w") and run.energy is not None:
                e = run.energy
                if e.flagged:
                    text += " !"
                    title = (f"the energy counter and the integral of the power samples disagree by "
                             f"{(e.disagreement_frac or 0) * 100:.2f} %: check the telemetry")
                elif e.method == "integral":
                    title += " (this run has no energy counter: integral of the power samples)"
            if m.key == "finished_agents":
                text += f" / {v.get('sessions', 0)}"
            cells.append({"text": text, "delta": delta, "delta_class": _delta_class(m.key, delta),
                          "best": i in comp.best.get(m.key, set()), "title": title})
        rows.append({"label": run.label, "color": RUN_COLORS[i % len(RUN_COLORS)], "status": run.status,
                     "baseline": i == comp.baseline, "cells": cells, "path": str(run.path)})
    return {"groups": groups, "columns": columns, "rows": rows}


def _details(model: ReportModel) -> list[dict[str, Any]]:
    out = []
    for i, (run, v) in enumerate(zip(model.runs, model.values)):
        info = run.info
        facts: list[tuple[str, str]] = [("directory", str(run.path)), ("status", run.status)]
        if info.get("start"):
            facts.append(("started", str(info["start"])))
        facts.append(("replay duration", f"{run.duration_s:,.1f} s"))
        if info.get("workload_name") or info.get("workload_sha256"):
            facts.append(("workload", f"{info.get('workload_name') or '?'} (sha256 {str(info.get('workload_sha256') or '?')[:12]}, {info.get('workload_path') or ''})"))
        for key, label in (("time_scale", "time scale"), ("hardware", "hardware"), ("model", "model"), ("telemetry", "telemetry"), ("epoch_s", "control epoch, s"), ("host", "host")):
            if info.get(key) is not None:
                facts.append((label, str(info[key])))
        facts.append(("sessions", f"{v.get('sessions', 0)} started: {int(v.get('finished_agents') or 0)} completed, "
                                  f"{v.get('sessions_abandoned', 0)} abandoned, {v.get('sessions_unfinished', 0)} unfinished"))
        errors = v.get("errors_by_kind") or {}
        facts.append(("requests", f"{v.get('requests', 0)} sent" + (": " + ", ".join(f"{n} {k}" for k, n in sorted(errors.items())) if errors else ", all ok")))
        e = run.energy
        if e is not None:
            if e.method == "simulator":
                facts.append(("energy", f"{(e.energy_j or 0) / 1e3:,.2f} kJ over {e.window_s:,.1f} s (the simulator's energy model)"))
            else:
                bits = [f"{(e.energy_j or 0) / 1e3:,.3f} kJ over the {e.window_s:,.1f} s replay window on {e.gpus} GPU{'s' if e.gpus != 1 else ''}"]
                if e.energy_counter_j is not None and e.energy_integrated_j is not None:
                    bits.append(f"counter {e.energy_counter_j / 1e3:,.3f} kJ vs integral of the {e.finest} series "
                                f"{e.energy_integrated_j / 1e3:,.3f} kJ over the same span (Δ {(e.disagreement_frac or 0) * 100:.2f} %"
                                + (", beyond tolerance" if e.flagged else "") + ")")
                facts.append(("energy", "; ".join(bits)))
                if e.idle_power_w is not None:
                    above = e.energy_above_idle_j
                    finished = int(v.get("finished_agents") or 0)
                    per = f", {above / finished / 1e3:,.3f} kJ per finished agent" if above is not None and finished else ""
                    facts.append(("idle baseline", f"{e.idle_power_w:,.1f} W ({e.idle_origin}); energy above idle "
                                                   f"{(above or 0) / 1e3:,.3f} kJ{per}"))
        versions = info.get("versions") or {}
        if versions:
            facts.append(("versions", ", ".join(f"{k} {val}" for k, val in versions.items() if val)))
        out.append({"label": run.label, "color": RUN_COLORS[i % len(RUN_COLORS)], "facts": facts, "notes": list(run.notes)})
    return out


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if "</script" in js.lower():  # cannot happen with plotly's own bundle; guard the embedding anyway
        js = js.replace("</script", "<\\/script")
    return js


def render_html(model: ReportModel) -> str:
    """The report as one HTML document (CSS, data and plotly.js inline)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("report.html.j2")
    flagged = [r for r in model.runs if r.status not in ("completed", "simulated")]
    return template.render(
        title=model.title, generated=model.generated, version=__version__, command=model.command,
        header=_header(model), warnings=model.warnings, flagged=[(r.label, r.status) for r in flagged],
        readings=list(model.comparison.readings), baseline_label=model.baseline.label,
        table=_table(model), figures=model.figures, details=_details(model),
        metrics=METRICS, plotly_js=_plotly_js(), slo_text=f"{model.slo_tok_s:g}",
    )


def write_report(html: str, path: Path) -> Path:
    """Write atomically (temp file + rename), creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
