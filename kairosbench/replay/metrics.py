"""Run summary metrics, computed from the requests and sessions tables (pure).

Definitions (docs/replay.md, "Run summary"):

- **Per-agent output throughput** (the KAIROS metric): a session's output tokens divided by its
  LLM time, the sum of its requests' end-to-end times (retries included; tool time and backoff
  excluded). The population is every session that sent at least one request.
- **P5 per-agent throughput**: the 5th percentile of that over the population.
- **SLO attainment**: the fraction of the population whose throughput is at least the SLO
  (default 20 tok/s) and that was not abandoned.
- **Job throughput**: completed sessions per second of run time. **Goodput**: completed
  sessions that met the SLO, per second.
- Latency percentiles are over requests with status ok. ITL p50 is the median of the
  per-request per-token ITL medians; ITL p99 is the 99th percentile of the per-request p99s.
- Scheduling lag is over every request sent (retries included).
- Token mismatch compares the server's usage with the trace (prompt) and with ``max_tokens``
  (output), over requests that reported usage.

Percentiles use numpy's default (linear interpolation).

GPU energy (``RunSummary.energy``, when the run recorded GPU telemetry) is computed from
``power.parquet`` over the replay window by ``kairosbench.replay.run_energy``: energy from the
counter and from integration (disagreement flagged), average total power, idle-subtracted
energy where an idle baseline is known, and energy per finished agent (KAIROS's metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from rich.table import Table
from rich.text import Text

from kairosbench.replay.run_energy import RunEnergy

__all__ = ["RunSummary", "summarize", "p", "energy_rows"]


def p(values: np.ndarray, q: float) -> float | None:
    """Percentile ``q`` (0-100) ignoring NaN; None when there is nothing to rank."""
    values = values[~np.isnan(values)] if values.size else values
    return float(np.percentile(values, q)) if values.size else None


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(float) if table.num_rows else np.array([], dtype=float)


@dataclass
class RunSummary:
    duration_s: float
    slo_tok_s: float
    sessions: int = 0
    sessions_completed: int = 0
    sessions_abandoned: int = 0
    sessions_unfinished: int = 0
    requests: int = 0
    requests_ok: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    output_tok_s: float = 0.0
    requests_per_s: float = 0.0
    p5_agent_tok_s: float | None = None
    p50_agent_tok_s: float | None = None
    slo_attainment: float | None = None
    job_throughput_per_s: float = 0.0
    goodput_jobs_per_s: float = 0.0
    ttft_p50_s: float | None = None
    ttft_p90_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None
    itl_p99_s: float | None = None
    tpot_p50_s: float | None = None
    e2e_p50_s: float | None = None
    sched_lag_p50_s: float | None = None
    sched_lag_p99_s: float | None = None
    sched_lag_max_s: float | None = None
    prompt_mismatch_mean_tokens: float | None = None  # mean |usage - trace| over requests with usage
    prompt_mismatch_max_tokens: float | None = None
    prompt_exact_fraction: float | None = None
    output_mismatch_mean_tokens: float | None = None
    output_exact_fraction: float | None = None
    energy: RunEnergy | None = None  # GPU energy over the replay window; None without GPU telemetry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __rich__(self) -> Table:
        table = Table(title="kairosbench run summary", show_header=True, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")

        def fmt(v: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
            return "—" if v is None else f"{v * scale:.{digits}f}{unit}"

        rows = [
            ("duration", fmt(self.duration_s, " s", digits=1)),
            ("sessions completed / abandoned / unfinished", f"{self.sessions_completed} / {self.sessions_abandoned} / {self.sessions_unfinished}"),
            ("requests ok / sent", f"{self.requests_ok} / {self.requests}"),
            ("errors by kind", ", ".join(f"{k}: {v}" for k, v in sorted(self.errors_by_kind.items())) or "none"),
            ("output tokens/s (all)", fmt(self.output_tok_s, digits=1)),
            ("per-agent throughput P5 (tok/s)", fmt(self.p5_agent_tok_s, digits=1)),
            (f"SLO attainment (≥ {self.slo_tok_s:g} tok/s)", fmt(self.slo_attainment, " %", 100, 1)),
            ("job throughput (jobs/min)", fmt(self.job_throughput_per_s, "", 60)),
            ("goodput (SLO-meeting jobs/min)", fmt(self.goodput_jobs_per_s, "", 60)),
            ("TTFT p50 / p99", f"{fmt(self.ttft_p50_s, ' ms', 1e3, 1)} / {fmt(self.ttft_p99_s, ' ms', 1e3, 1)}"),
            ("ITL p50 / p99", f"{fmt(self.itl_p50_s, ' ms', 1e3, 2)} / {fmt(self.itl_p99_s, ' ms', 1e3, 2)}"),
            ("scheduling lag p50 / p99 / max", f"{fmt(self.sched_lag_p50_s, ' ms', 1e3)} / {fmt(self.sched_lag_p99_s, ' ms', 1e3)} / {fmt(self.sched_lag_max_s, ' ms', 1e3)}"),
            ("prompt tokens vs trace: exact / mean |Δ|", f"{fmt(self.prompt_exact_fraction, ' %', 100, 1)} / {fmt(self.prompt_mismatch_mean_tokens, digits=1)}"),
            ("output tokens vs trace: exact / mean |Δ|", f"{fmt(self.output_exact_fraction, ' %', 100, 1)} / {fmt(self.output_mismatch_mean_tokens, digits=1)}"),
        ]
        for k, v in rows:
            table.add_row(k, v)
        table.add_section()
        for label, value in energy_rows(self.energy):
            table.add_row(label, value)
        return table


def _kj(j: float | None, digits: int = 2) -> str:
    return "—" if j is None else f"{j / 1e3:,.{digits}f} kJ"


def energy_rows(e: RunEnergy | None) -> list[tuple[str, Text | str]]:
    """The summary table's energy rows (a disagreement beyond tolerance is marked ``!`` in red)."""
    if e is None:
        return [("GPU energy", "— (no GPU telemetry)")]
    counter = "—" if e.energy_counter_j is None else f"{e.energy_counter_j / 1e3:,.2f}"
    pair = f"{counter} / {_kj(e.energy_integrated_j)}"
    if e.disagreement_frac is not None:
        diff = f"{e.disagreement_frac * 100:.2f} %" + (f" ! > {e.tolerance_frac * 100:g} %" if e.flagged else "")
        both: Text | str = Text(f"{pair} (Δ {diff})", style="bold red" if e.flagged else "")
    else:
        both = pair
    span = f"{e.window_s:,.1f} s" + (f", {len(e.gpus)} GPUs" if len(e.gpus) > 1 else "")
    rows: list[tuple[str, Text | str]] = [
        ("GPU energy over the replay", f"{_kj(e.energy_j)} ({span})"),
        ("  counter / integrated, same span", both),
        ("average GPU power (total)", "—" if e.avg_power_w is None else f"{e.avg_power_w:,.1f} W"),
    ]
    if e.idle_power_w is not None:
        rows.append((f"idle baseline ({e.idle_origin})", f"{e.idle_power_w:,.1f} W"))
        rows.append(("energy above idle", _kj(e.energy_above_idle_j)))
    else:
        rows.append(("idle baseline", "— (not known)"))
    per_agent = "—" if e.energy_per_agent_kj is None else f"{e.energy_per_agent_kj:,.3f} kJ"
    rows.append(("energy per finished agent", f"{per_agent} ({e.finished_agents} finished)"))
    if e.energy_above_idle_per_agent_kj is not None:
        rows.append(("  above idle", f"{e.energy_above_idle_per_agent_kj:,.3f} kJ"))
    if len(e.gpus) > 1:
        for g in e.gpus:
            bits = [_kj(g.energy_j), "—" if g.avg_power_w is None else f"{g.avg_power_w:,.0f} W"]
            if g.idle is not None:
                bits.append(f"idle {g.idle.power_w:,.0f} W")
            if g.disagreement_frac is not None:
                bits.append(f"Δ {g.disagreement_frac * 100:.2f} %" + (" !" if g.flagged else ""))
            rows.append((f"  GPU {g.key.rsplit('/', 1)[0]}", Text(", ".join(bits), style="red" if g.flagged else "")))
    return rows


def summarize(requests: pa.Table, sessions: pa.Table, *, duration_s: float, slo_tok_s: float = 20.0) -> RunSummary:
    """The run summary from the two tables (see the module docstring for definitions)."""
    s = RunSummary(duration_s=duration_s, slo_tok_s=slo_tok_s)
    dur = max(duration_s, 1e-9)
    if requests.num_rows:
        status = np.array(requests.column("status").to_pylist(), dtype=object)
        ok = status == "ok"
        s.requests = int(requests.num_rows)
        s.requests_ok = int(ok.sum())
        kinds, counts = np.unique(status[~ok], return_counts=True)
        s.errors_by_kind = {str(k): int(c) for k, c in zip(kinds, counts)}
        out = _col(requests, "output_tokens")
        s.output_tokens = int(np.nansum(out))
        s.output_tok_s = s.output_tokens / dur
        s.requests_per_s = s.requests / dur
        s.ttft_p50_s = p(_col(requests, "ttft_s")[ok], 50)
        s.ttft_p90_s = p(_col(requests, "ttft_s")[ok], 90)
        s.ttft_p99_s = p(_col(requests, "ttft_s")[ok], 99)
        s.itl_p50_s = p(_col(requests, "itl_p50_s")[ok], 50)
        s.itl_p99_s = p(_col(requests, "itl_p99_s")[ok], 99)
        s.tpot_p50_s = p(_col(requests, "tpot_s")[ok], 50)
        s.e2e_p50_s = p(_col(requests, "e2e_s")[ok], 50)
        lag = _col(requests, "sched_lag_s")
        s.sched_lag_p50_s, s.sched_lag_p99_s = p(lag, 50), p(lag, 99)
        s.sched_lag_max_s = float(np.nanmax(lag)) if lag.size and not np.all(np.isnan(lag)) else None
        usage_p = _col(requests, "prompt_tokens")
        expected_p = _col(requests, "prompt_tokens_expected")
        has = ok & ~np.isnan(usage_p)
        if has.any():
            d = np.abs(usage_p[has] - expected_p[has])
            s.prompt_mismatch_mean_tokens = float(d.mean())
            s.prompt_mismatch_max_tokens = float(d.max())
            s.prompt_exact_fraction = float((d == 0).mean())
        expected_o = _col(requests, "output_tokens_expected")
        has_o = ok & ~np.isnan(out)
        if has_o.any():
            d = np.abs(out[has_o] - expected_o[has_o])
            s.output_mismatch_mean_tokens = float(d.mean())
            s.output_exact_fraction = float((d == 0).mean())
    if sessions.num_rows:
        st = np.array(sessions.column("status").to_pylist(), dtype=object)
        s.sessions = int(sessions.num_rows)
        s.sessions_completed = int((st == "completed").sum())
        s.sessions_abandoned = int((st == "abandoned").sum())
        s.sessions_unfinished = int((st == "unfinished").sum())
        nreq = _col(sessions, "requests")
        tput = np.nan_to_num(_col(sessions, "output_tok_s"), nan=0.0)
        pop = nreq > 0
        if pop.any():
            s.p5_agent_tok_s = p(tput[pop], 5)
            s.p50_agent_tok_s = p(tput[pop], 50)
            meets = (tput >= slo_tok_s) & (st != "abandoned")
            s.slo_attainment = float(meets[pop].mean())
            s.goodput_jobs_per_s = float((meets & (st == "completed")).sum()) / dur
        s.job_throughput_per_s = s.sessions_completed / dur
    return s
