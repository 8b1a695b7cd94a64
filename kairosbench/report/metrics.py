"""The comparison math (pure): one row of metrics per run, deltas against a baseline, the reading.

Every metric is declared once as a :class:`Metric` record (key with its stored unit, label,
display unit, which direction is better, how it is compared with the baseline, and its
definition); the report's table, its highlighting and its glossary iterate over
:data:`METRICS`. Definitions follow the run summary (``kairosbench.replay.metrics``), which
computes the per-agent and latency figures here too, so a report and ``kairosbench run``'s
summary agree on the same run directory:

- **energy** is GPU energy over the replay window from the energy counter (completed at the
  window's edges by the integral of the finest power series; ``kairosbench.replay.run_energy``),
  summed over GPUs; **average power** is that energy over the window;
- **energy per finished agent** is energy over sessions completed (KAIROS's metric);
- **preemptions** and **recomputed tokens** are increases of the engines' cumulative counters
  over the run, summed over instances (a counter that drops restarted: its new value counts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "Metric",
    "METRICS",
    "METRIC_GROUPS",
    "metric",
    "agent_metrics",
    "counter_increase",
    "relative_change",
    "point_change",
    "best_runs",
    "reading",
    "comparability_warnings",
    "Comparison",
    "compare",
]

MetricValues = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Metric:
    """One column of the comparison table.

    ``key`` carries the stored unit (``_w``, ``_kj``, ``_s``, ``_frac``); ``scale`` turns it into
    the display ``unit``. ``better`` is ``lower``, ``higher`` or ``""`` (not ranked). ``delta``
    is how a run is compared with the baseline: ``rel`` (relative change, %), ``pp``
    (difference in percentage points, for fractions) or ``""`` (not compared).
    """

    key: str
    label: str
    unit: str
    group: str
    better: str
    delta: str
    doc: str
    scale: float = 1.0
    digits: int = 1

    def format(self, value: float | None) -> str:
        """The display text of a value ("—" when missing)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        shown = value * self.scale
        if self.digits == 0:
            return f"{shown:,.0f}"
        return f"{shown:,.{self.digits}f}"

    def format_delta(self, value: float | None, base: float | None) -> str:
        """The change against the baseline as text: ``-31.2 %`` or ``-2.0 pp``; "" when not compared."""
        if self.delta == "rel":
            change = relative_change(value, base)
            return "" if change is None else f"{change * 100:+.1f} %".replace("-", "−")
        if self.delta == "pp":
            change = point_change(value, base)
            return "" if change is None else f"{change:+.1f} pp".replace("-", "−")
        return ""


METRIC_GROUPS: tuple[str, ...] = ("Power and energy", "Agents", "Latency", "Engine")

METRICS: tuple[Metric, ...] = (
    Metric("avg_power_w", "avg power", "W", "Power and energy", "lower", "rel",
           "GPU energy over the replay window divided by its length, summed over GPUs."),
    Metric("energy_kj", "energy", "kJ", "Power and energy", "lower", "rel",
           "GPU energy over the replay window, from the energy counter (its edges completed by the "
           "integral of the finest power series), summed over GPUs.", digits=2),
    Metric("energy_per_agent_kj", "energy / agent", "kJ", "Power and energy", "lower", "rel",
           "Energy per finished agent: energy divided by the sessions that completed (KAIROS's energy metric).", digits=3),
    Metric("finished_agents", "agents done", "", "Agents", "higher", "",
           "Sessions that completed every turn, of those started.", digits=0),
    Metric("p5_agent_tok_s", "P5 per-agent", "tok/s", "Agents", "higher", "rel",
           "P5 per-agent output throughput: the 5th percentile over sessions of output tokens / LLM time (the KAIROS SLO metric)."),
    Metric("slo_attainment_frac", "SLO attainment", "%", "Agents", "higher", "pp",
           "Share of sessions with per-agent throughput at or above the SLO that were not abandoned.",
           scale=100.0),
    Metric("job_throughput_per_min", "jobs", "per min", "Agents", "higher", "rel",
           "Job throughput: completed sessions per minute of replay.", digits=2),
    Metric("ttft_p50_s", "TTFT p50", "ms", "Latency", "lower", "rel",
           "Median time to first token over requests that succeeded.", scale=1e3),
    Metric("ttft_p99_s", "TTFT p99", "ms", "Latency", "lower", "rel",
           "99th percentile time to first token over requests that succeeded.", scale=1e3),
    Metric("itl_p50_s", "ITL p50", "ms", "Latency", "lower", "rel",
           "Median of the per-request median per-token gaps (multi-token chunks split evenly).",
           scale=1e3, digits=2),
    Metric("itl_p99_s", "ITL p99", "ms", "Latency", "lower", "rel",
           "99th percentile of the per-request 99th percentile per-token gaps.", scale=1e3, digits=2),
    Metric("preemptions", "preemptions", "", "Engine", "lower", "",
           "Increase of the engines' preemption counters over the run, summed over instances.", digits=0),
    Metric("recomputed_tokens", "recomputed", "tokens", "Engine", "lower", "",
           "Tokens prefilled again (preemption recompute + evicted agent context), from the engine "
           "counter (control.parquet or engine.parquet).", digits=0),
    Metric("errors", "errors", "requests", "Engine", "lower", "",
           "Requests that did not succeed (every status but ok and cancelled), retries included.", digits=0),
)

_BY_KEY = {m.key: m for m in METRICS}


def metric(key: str) -> Metric:
    """The declared metric called ``key``."""
    return _BY_KEY[key]


def agent_metrics(requests: pa.Table, sessions: pa.Table, *, duration_s: float, slo_tok_s: float) -> dict[str, Any]:
    """Per-agent, throughput and latency figures from the requests and sessions tables.

    Computed by the run summary's own ``summarize`` so the numbers match ``kairosbench run``.
    Also returns ``sessions``, ``sessions_abandoned`` and ``errors_by_kind`` for the details.
    """
    from kairosbench.replay.metrics import summarize

    s = summarize(requests, sessions, duration_s=duration_s, slo_tok_s=slo_tok_s)
    errors = {k: v for k, v in s.errors_by_kind.items() if k != "cancelled"}
    return {  # with no sessions (or no requests) there is no throughput (or error count) to report, not a zero
        "finished_agents": float(s.sessions_completed),
        "sessions": s.sessions,
        "sessions_abandoned": s.sessions_abandoned,
        "sessions_unfinished": s.sessions_unfinished,
        "requests": s.requests,
        "p5_agent_tok_s": s.p5_agent_tok_s,
        "p50_agent_tok_s": s.p50_agent_tok_s,
        "slo_attainment_frac": s.slo_attainment,
        "job_throughput_per_min": s.job_throughput_per_s * 60.0 if s.sessions else None,
        "ttft_p50_s": s.ttft_p50_s,
        "ttft_p99_s": s.ttft_p99_s,
        "itl_p50_s": s.itl_p50_s,
        "itl_p99_s": s.itl_p99_s,
        "errors": float(sum(errors.values())) if s.requests else None,
        "errors_by_kind": dict(s.errors_by_kind),
        "output_tokens": s.output_tokens,
    }


def counter_increase(values: Sequence[float] | np.ndarray) -> float | None:
    """How much a cumulative counter grew across its samples (NaN skipped); None without samples.

    A drop means the counter restarted (an engine restart): its new value is all increase.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return None
    d = np.diff(v)
    return float(d[d > 0].sum() + v[1:][d < 0].sum())


def relative_change(value: float | None, base: float | None) -> float | None:
    """``value / base - 1``; None when either is missing or the base is zero."""
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return None
    return value / base - 1.0


def point_change(value_frac: float | None, base_frac: float | None) -> float | None:
    """The difference of two fractions in percentage points; None when either is missing."""
    if value_frac is None or base_frac is None or math.isnan(value_frac) or math.isnan(base_frac):
        return None
    return (value_frac - base_frac) * 100.0


def best_runs(values: Sequence[float | None], better: str) -> set[int]:
    """Indices of the best value(s); empty when fewer than two runs have a value or all are equal."""
    present = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if better not in ("lower", "higher") or len(present) < 2:
        return set()
    nums = [v for _, v in present]
    if max(nums) - min(nums) <= 1e-12 * max(1.0, abs(max(nums))):
        return set()
    target = min(nums) if better == "lower" else max(nums)
    return {i for i, v in present if abs(v - target) <= 1e-12 * max(1.0, abs(target))}


def _pct(frac: float) -> str:
    return f"{abs(frac) * 100:.1f} %"


def reading(label: str, base_label: str, run: MetricValues, base: MetricValues, slo_tok_s: float) -> str:
    """One sentence a reader can quote: what a run saves against the baseline, at what SLO cost."""
    power = relative_change(run.get("avg_power_w"), base.get("avg_power_w"))
    energy = relative_change(run.get("energy_per_agent_kj"), base.get("energy_per_agent_kj"))
    slo = point_change(run.get("slo_attainment_frac"), base.get("slo_attainment_frac"))
    parts: list[str] = []
    if power is None:
        parts.append("power cannot be compared (no GPU telemetry in one of the two runs)")
    else:
        if abs(power) < 0.0005:
            parts.append("draws the same average power")
        elif power < 0:
            parts.append(f"saves {_pct(power)} average power")
        else:
            parts.append(f"draws {_pct(power)} more average power")
        if energy is not None:
            same_sign = (energy < 0) == (power < 0)
            joint = " and" if same_sign else ", but"
            if abs(energy) < 0.0005:
                parts.append(", with the same energy per finished agent")
            elif energy < 0:
                parts.append(f"{joint} {_pct(energy)} less energy per finished agent")
            else:
                parts.append(f"{joint} {_pct(energy)} more energy per finished agent")
    text = f"{label} vs {base_label}: " + "".join(parts)
    if slo is None:
        text += "; SLO attainment cannot be compared"
    elif abs(slo) < 0.05:
        text += f" at no SLO cost (attainment {_frac_text(run.get('slo_attainment_frac'))} at ≥ {slo_tok_s:g} tok/s)"
    elif slo < 0:
        text += f" at a cost of {abs(slo):.1f} pp in SLO attainment ({_frac_text(base.get('slo_attainment_frac'))} → {_frac_text(run.get('slo_attainment_frac'))} at ≥ {slo_tok_s:g} tok/s)"
    else:
        text += f", and gains {slo:.1f} pp SLO attainment ({_frac_text(base.get('slo_attainment_frac'))} → {_frac_text(run.get('slo_attainment_frac'))} at ≥ {slo_tok_s:g} tok/s)"
    p5, p5_base = run.get("p5_agent_tok_s"), base.get("p5_agent_tok_s")
    if p5 is not None and p5_base is not None:
        text += f"; P5 per-agent throughput {p5_base:,.1f} → {p5:,.1f} tok/s"
    return text + "."


def _frac_text(frac: float | None) -> str:
    return "—" if frac is None else f"{frac * 100:.1f} %"


# what must match across runs for a comparison to mean something, with the words to say so
_COMPARABLE: tuple[tuple[str, str], ...] = (
    ("source", "kind of run (real replay vs simulation)"),
    ("driver", "load generator (kairosbench run vs Locust)"),
    ("workload_sha256", "workload"),
    ("time_scale", "time scale"),
    ("arrival", "arrival process"),
    ("max_sessions", "session limit (--max-sessions)"),
    ("duration_limit_s", "duration limit (--duration)"),
    ("instances", "number of serving instances"),
    ("hardware", "hardware"),
    ("model", "model"),
    ("slo_tok_s", "configured SLO"),
)


def comparability_warnings(labels: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per setting that differs between runs (workload, time scale, hardware, ...)."""
    out: list[str] = []
    for key, words in _COMPARABLE:
        groups: dict[str, list[str]] = {}
        for label, info in zip(labels, infos):
            value = info.get(key)
            groups.setdefault("not recorded" if value is None else str(value), []).append(label)
        known = [v for v in groups if v != "not recorded"]
        if len(known) > 1:
            detail = "; ".join(f"{v}: {', '.join(ls)}" for v, ls in groups.items())
            out.append(f"The runs differ in {words} ({detail}); their differences are not only the policy's.")
    return out


@dataclass(frozen=True)
class Comparison:
    """The comparison table's content: values, deltas against the baseline, best cells, readings."""

    labels: tuple[str, ...]
    values: tuple[dict[str, float | None], ...]
    baseline: int
    slo_tok_s: float
    best: dict[str, set[int]]
    readings: tuple[str, ...]

    def delta(self, key: str, index: int) -> str:
        """The formatted change of run ``index`` against the baseline for metric ``key`` ("" for the baseline)."""
        if index == self.baseline:
            return ""
        return metric(key).format_delta(self.values[index].get(key), self.values[self.baseline].get(key))


def compare(labels: Sequence[str], values: Sequence[Mapping[str, float | None]], *, baseline: int, slo_tok_s: float) -> Comparison:
    """Deltas, best values and one reading per non-baseline run."""
    if not 0 <= baseline < len(labels):
        raise ValueError(f"baseline index {baseline} out of range for {len(labels)} runs")
    rows = tuple(dict(v) for v in values)
    best = {m.key: best_runs([r.get(m.key) for r in rows], m.better) for m in METRICS}
    readings = tuple(
        reading(labels[i], labels[baseline], rows[i], rows[baseline], slo_tok_s) for i in range(len(labels)) if i != baseline
    )
    return Comparison(tuple(labels), rows, baseline, slo_tok_s, best, readings)


# control.parquet telemetry kinds whose engine counters are real readings (``none`` reports 0s;
# ``metrics`` has preemptions from vLLM but no recompute counter)
_PREEMPTION_TELEMETRY = frozenset({"emulator", "sim", "metrics"})
_RECOMPUTE_TELEMETRY = frozenset({"emulator", "sim"})


def _summed_increase(frame: Any, column: str, by: str) -> float | None:
    """Sum over instances of each instance's counter increase; None when nothing was recorded."""
    if frame is None or column not in frame.columns or not frame[column].notna().any():
        return None
    total = 0.0
    for _, group in frame.groupby(by, sort=False):
        inc = counter_increase(group[column].to_numpy(dtype=np.float64))
        total += inc or 0.0
    return total


def engine_counters(engine: Any, control: Any) -> dict[str, float | None]:
    """Preemptions and recomputed tokens over the run from engine.parquet, else control.parquet.

    ``engine`` and ``control`` are the report's frames (pandas, or None when the run lacks the
    file). engine.parquet is read first (it exists without a policy); control.parquet counters
    are used only where its telemetry really reads them.
    """
    preemptions = _summed_increase(engine, "preemptions_total", "instance")
    recomputed = None
    for column in ("recomputed_tokens_total", "recomputed_tokens"):
        recomputed = recomputed if recomputed is not None else _summed_increase(engine, column, "instance")
    if control is not None and len(control):
        trusted = control[control["telemetry"].isin(_PREEMPTION_TELEMETRY)] if "telemetry" in control.columns else control.iloc[0:0]
        if preemptions is None:
            preemptions = _summed_increase(trusted if len(trusted) else None, "preemptions_total", "instance_id")
        if recomputed is None:
            rec = trusted[trusted["telemetry"].isin(_RECOMPUTE_TELEMETRY)] if len(trusted) else trusted
            recomputed = _summed_increase(rec if len(rec) else None, "recomputed_tokens_total", "instance_id")
    return {"preemptions": preemptions, "recomputed_tokens": recomputed}


def run_values(run: Any, slo_tok_s: float) -> dict[str, Any]:
    """Every metric of one run (a ``RunData``) at the report's SLO, plus detail figures.

    Keys are the :data:`METRICS` keys; extra keys (``sessions``, ``errors_by_kind``, ...) feed
    the per-run details.
    """
    values: dict[str, Any] = agent_metrics(run.requests, run.sessions, duration_s=max(run.duration_s, 1e-9), slo_tok_s=slo_tok_s)
    if run.source == "sim":  # the simulator records no per-token times
        values["itl_p50_s"] = values["itl_p99_s"] = None
    energy = run.energy
    values["avg_power_w"] = energy.avg_power_w if energy else None
    values["energy_kj"] = energy.energy_j / 1e3 if energy and energy.energy_j is not None else None
    finished = values["finished_agents"]
    values["energy_per_agent_kj"] = values["energy_kj"] / finished if values["energy_kj"] is not None and finished else None
    values.update(engine_counters(run.engine, run.control))
    values["duration_s"] = run.duration_s
    return values
