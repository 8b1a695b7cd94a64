"""Terminal-Bench trial summaries: session totals, not turns.

The derived leaderboard CSV has one row per agent session on one terminal task:
``submission, task_id, trial_name, is_resolved, failure_mode, total_input_tokens,
total_output_tokens`` and ISO 8601 ``trial/agent/test _started_at/_ended_at``. Only session
totals are known: how many LLM calls a session made and how its context grew are not.
In this file no row has both: the orchestrator submissions report token totals and no
times; the others report times and 0 or blank tokens (read as "not reported").

So the rows are exposed two ways:

* ``read_trials`` returns every row as a typed ``Trial`` (token totals, agent wall time),
  which is what the generator's fitting wants from this source;
* ``import_source("terminal-bench", ...)`` gives a **statistics-only** workload: one session
  per trial with token totals, holding one aggregate turn (``prompt_tokens =
  appended_tokens = total_input_tokens``, the sum of prompt tokens over all the session's
  calls; ``output_tokens = total_output_tokens``). Splitting the totals over an invented
  number of turns would put made-up numbers in a file that looks measured, so this is not
  done. The workload's metadata says ``"replayable": false``; replaying it would send one
  request of the whole session's summed input.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kairosbench.errors import WorkloadError
from kairosbench.workload.importers._source import Where, as_int, parse_time_s
from kairosbench.workload.importers._turns import ImportLog
from kairosbench.workload.model import Session, Turn
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["Trial", "COLUMNS", "read_trials", "read"]

COLUMNS = ("submission", "task_id", "trial_name", "total_input_tokens", "total_output_tokens")
_TIMES = (
    "trial_started_at", "trial_ended_at", "agent_started_at", "agent_ended_at", "test_started_at", "test_ended_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Trial:
    """One agent session on one terminal task, as the leaderboard summarises it."""

    submission: str  # date_agent_model
    task_id: str
    trial_name: str
    line: int
    is_resolved: bool | None
    failure_mode: str
    total_input_tokens: int | None  # sum of prompt tokens over the session's calls; None: not reported
    total_output_tokens: int | None
    agent_started_s: float | None  # Unix epoch seconds
    agent_ended_s: float | None

    @property
    def agent_duration_s(self) -> float | None:
        """Wall time the agent ran (s), where the times were reported."""
        if self.agent_started_s is None or self.agent_ended_s is None:
            return None
        return self.agent_ended_s - self.agent_started_s

    @property
    def session_id(self) -> str:
        return f"{self.submission}/{self.trial_name}"


def _tokens(text: str, where: Where) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise where.error(f"expected a token count, got {text[:40]!r}") from None
    count = as_int(value, where)
    return count or None  # 0 means "not reported" in the leaderboard files


def _time(text: str, where: Where) -> float | None:
    text = text.strip()
    return parse_time_s(text, where) if text else None


def _resolved(text: str, where: Where) -> bool | None:
    value = text.strip().lower()
    if value in ("", "none", "nan"):
        return None
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise where.error(f"expected True or False, got {text[:40]!r}")


def read_trials(path: Path) -> list[Trial]:
    """Every row of one summary CSV, checked (missing column, bad number, end before start)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise WorkloadError(
                    f"missing column (expected {', '.join(COLUMNS)})", path=str(path), line=1, field=missing[0]
                )
            trials = [_trial(row, Where(str(path), reader.line_num)) for row in reader]
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"not UTF-8 text (byte {exc.start}): is this the right file?", path=str(path)) from exc
    except csv.Error as exc:
        raise WorkloadError(f"not a readable CSV file: {exc}", path=str(path)) from exc
    except OSError as exc:
        raise WorkloadError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    return trials


def _trial(row: dict[str, str | None], where: Where) -> Trial:
    def text(name: str) -> str:
        value = row.get(name)
        return value if isinstance(value, str) else ""

    times = {name: _time(text(name), where.at(name)) for name in _TIMES}
    for start, end in (("trial_started_at", "trial_ended_at"), ("agent_started_at", "agent_ended_at")):
        t0, t1 = times[start], times[end]
        if t0 is not None and t1 is not None and t1 < t0:
            raise where.at(end).error(f"ends {t0 - t1:.3f} s before {start}")
    return Trial(
        submission=text("submission"),
        task_id=text("task_id"),
        trial_name=text("trial_name"),
        line=where.line or 0,
        is_resolved=_resolved(text("is_resolved"), where.at("is_resolved")),
        failure_mode=text("failure_mode"),
        total_input_tokens=_tokens(text("total_input_tokens"), where.at("total_input_tokens")),
        total_output_tokens=_tokens(text("total_output_tokens"), where.at("total_output_tokens")),
        agent_started_s=times["agent_started_at"],
        agent_ended_s=times["agent_ended_at"],
    )


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    """A statistics-only workload: one aggregate turn per trial with token totals."""
    del counter  # recorded totals only
    sessions: list[Session] = []
    for path in paths:
        for trial in read_trials(path):
            log.add("trials")
            if trial.total_input_tokens is None or trial.total_output_tokens is None:
                log.add("trials_without_token_totals_left_out")
                continue
            turn = Turn(
                appended_tokens=trial.total_input_tokens,
                output_tokens=trial.total_output_tokens,
                prompt_tokens=trial.total_input_tokens,
                token_count_method="usage",
            )
            arrival = math.nan if trial.agent_started_s is None else trial.agent_started_s
            source = f"terminal-bench:{trial.submission}"
            sessions.append(Session(trial.session_id, "terminal", arrival, [turn], source))
    log.note(
        "statistics only: one aggregate turn per trial (session token totals); "
        "turn counts are not recorded, so this workload cannot be replayed"
    )
    return sessions
