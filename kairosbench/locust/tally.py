"""Per-agent-kind numbers for the web UI's Agents tab, summable across Locust workers (pure).

Locust's own statistics are per request; what kairosbench is about is per *agent*: did the
agent get its output throughput (output tokens / LLM time, the KAIROS metric) up to the SLO?
``AgentTally`` counts per agent kind. A worker ``drain()``s its counts into each report it
sends the master (every 3 s, Locust's ``report_to_master``) and the master ``merge()``s them,
as Locust does with its own stats; the local runner reads its tally directly.

Definitions match ``kairosbench.replay.summarize`` (docs/replay.md, "The run summary"), over
the sessions *finished so far*: the SLO population is every finished session that sent at
least one request; an agent meets the SLO when its throughput is at least ``slo_tok_s`` and
it was not abandoned. Sessions still running are not in the population yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["KindTally", "AgentTally", "TableColumn", "TABLE_COLUMNS", "ALL_KINDS"]

ALL_KINDS = "All"


@dataclass(frozen=True, slots=True)
class TableColumn:
    """One column of the Agents table: key, title with its unit, what it means."""

    key: str
    title: str
    doc: str


TABLE_COLUMNS: tuple[TableColumn, ...] = (
    TableColumn("agent_kind", "Agent kind", "swe, de, ... from the workload; All sums them"),
    TableColumn("agents", "Agents", "sessions started"),
    TableColumn("running", "Running", "sessions started and not finished"),
    TableColumn("completed", "Completed", "sessions that ran every turn"),
    TableColumn("abandoned", "Abandoned", "sessions given up after a non-retryable fault or retries spent"),
    TableColumn("unfinished", "Unfinished", "sessions cut by the end of a test (or a stopped user) mid-way"),
    TableColumn("turns_ok", "Turns ok", "requests answered in full"),
    TableColumn("turns_failed", "Turns failed", "requests that failed (retried ones included; not those cut by the end of the test)"),
    TableColumn("output_tokens", "Output tokens", "tokens, over ok and failed requests"),
    TableColumn("slo_attainment_pct", "SLO attainment (%)", "finished agents at or above --slo-tok-s and not abandoned, % of finished agents"),
    TableColumn("p5_agent_tok_s", "P5 agent tok/s", "5th percentile of per-agent output throughput (tokens/s), finished agents"),
    TableColumn("p50_agent_tok_s", "P50 agent tok/s", "median per-agent output throughput (tokens/s), finished agents"),
    TableColumn("prompt_exact_pct", "Prompt exact (%)", "ok requests whose server-reported prompt tokens equal the trace's, % of those reporting usage"),
)


@dataclass
class KindTally:
    """Counts for one agent kind (every field sums across workers)."""

    started: int = 0
    finished: int = 0
    completed: int = 0
    abandoned: int = 0
    turns_ok: int = 0
    turns_failed: int = 0
    output_tokens: int = 0
    prompt_checked: int = 0
    prompt_exact: int = 0
    slo_population: int = 0
    slo_met: int = 0
    agent_tok_s: list[float] = field(default_factory=list)

    def add(self, other: "KindTally") -> None:
        for f in fields(self):
            if f.name == "agent_tok_s":
                self.agent_tok_s.extend(other.agent_tok_s)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_report(self) -> dict[str, Any]:
        return {f.name: (list(getattr(self, f.name)) if f.name == "agent_tok_s" else getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_report(cls, data: dict[str, Any]) -> "KindTally":
        known = {f.name for f in fields(cls)}
        t = cls(**{k: v for k, v in data.items() if k in known and k != "agent_tok_s"})
        t.agent_tok_s = [float(x) for x in data.get("agent_tok_s", [])]
        return t


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 1) if den else None


def _q(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class AgentTally:
    """Counts per agent kind; fed by the users of one process, or merged from worker reports."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindTally] = {}

    def _kind(self, kind: str) -> KindTally:
        t = self.kinds.get(kind)
        if t is None:
            t = self.kinds[kind] = KindTally()
        return t

    # -- fed by the users ------------------------------------------------------------------
    def session_started(self, kind: str) -> None:
        self._kind(kind).started += 1

    def turn(self, kind: str, *, status: str, output_tokens: int, usage_prompt_tokens: int | None, expected_prompt_tokens: int) -> None:
        """One request; ``status`` as in ``requests.parquet`` (``cancelled``: cut by the end of the test)."""
        t = self._kind(kind)
        if status == "ok":
            t.turns_ok += 1
            if usage_prompt_tokens is not None:
                t.prompt_checked += 1
                t.prompt_exact += int(usage_prompt_tokens == expected_prompt_tokens)
        elif status != "cancelled":
            t.turns_failed += 1
        t.output_tokens += output_tokens

    def session_finished(self, kind: str, *, status: str, requests: int, output_tok_s: float | None, slo_tok_s: float) -> None:
        """``status``: completed | abandoned | unfinished (cut by the end of the test)."""
        t = self._kind(kind)
        t.finished += 1
        t.completed += int(status == "completed")
        t.abandoned += int(status == "abandoned")
        if requests > 0:
            tput = output_tok_s if output_tok_s is not None and math.isfinite(output_tok_s) else 0.0
            t.slo_population += 1
            t.slo_met += int(tput >= slo_tok_s and status != "abandoned")
            t.agent_tok_s.append(tput)

    # -- across processes ------------------------------------------------------------------
    def drain(self) -> dict[str, dict[str, Any]]:
        """The counts since the last drain, as a report (msgpack-safe), then start from zero."""
        report = {kind: t.to_report() for kind, t in self.kinds.items()}
        self.kinds = {}
        return report

    def merge(self, report: dict[str, dict[str, Any]]) -> None:
        for kind, data in report.items():
            self._kind(str(kind)).add(KindTally.from_report(data))

    def clear(self) -> None:
        self.kinds = {}

    # -- the table -------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per agent kind (sorted), then the ``All`` row; keys are ``TABLE_COLUMNS``."""
        total = KindTally()
        out = []
        for kind in sorted(self.kinds):
            t = self.kinds[kind]
            total.add(t)
            out.append(self._row(kind, t))
        out.append(self._row(ALL_KINDS, total))
        return out

    @staticmethod
    def _row(kind: str, t: KindTally) -> dict[str, Any]:
        return {
            "agent_kind": kind,
            "agents": t.started,
            "running": t.started - t.finished,
            "completed": t.completed,
            "abandoned": t.abandoned,
            "unfinished": t.finished - t.completed - t.abandoned,
            "turns_ok": t.turns_ok,
            "turns_failed": t.turns_failed,
            "output_tokens": t.output_tokens,
            "slo_attainment_pct": _pct(t.slo_met, t.slo_population),
            "p5_agent_tok_s": _q(t.agent_tok_s, 5),
            "p50_agent_tok_s": _q(t.agent_tok_s, 50),
            "prompt_exact_pct": _pct(t.prompt_exact, t.prompt_checked),
        }
