"""Spider 2.0 agent rollouts (spider-agent-tc result files): data-engineering sessions.

A result file is a JSON list of rollouts (a single rollout object is accepted too), each
with ``instance_id``, ``rollout_idx`` and ``conversation``: chat messages where the
assistant calls ``execute_bash`` (reading schema files), ``execute_snowflake_sql`` /
``execute_bigquery_sql`` (running queries) or ``terminate``, and ``tool`` messages carry the
results. One rollout is one session of agent kind ``de``; each assistant message is a turn,
its tool the first tool call's name. Files with no ``conversation`` fall back to
``final_messages``.

Rollouts record neither timestamps nor usage: tool durations are 0 s and flagged unknown,
sessions arrive at 0 s, tokens come from the tokenizer or the estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._chat import tool_calls
from kairosbench.workload.importers._source import Where, as_dict, as_int, as_list, get, opt, read_json
from kairosbench.workload.importers._transcript import calls_from_messages, drop_trailing
from kairosbench.workload.importers._turns import ImportLog, make_sessions
from kairosbench.workload.model import Session
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["read", "read_file"]


def _tool_name(message: Mapping[str, Any], where: Where) -> str | None:
    calls = tool_calls(message, where)
    return calls[0][0] if calls else None


def _rollout(obj: Any, where: Where, path: Path, index: int, counter: TokenCounter, log: ImportLog) -> list[Session]:
    rollout = as_dict(obj, where)
    instance, instance_where = opt(rollout, "instance_id", where)
    if instance is not None and not isinstance(instance, (str, int)):
        raise instance_where.error("expected a string or integer id")
    rollout_idx, idx_where = opt(rollout, "rollout_idx", where)
    key = "conversation" if "conversation" in rollout else "final_messages"
    messages_value, messages_where = get(rollout, key, where)
    calls, trailing = calls_from_messages(as_list(messages_value, messages_where), messages_where, _tool_name)
    drop_trailing(trailing, log)
    session_id = str(instance) if instance is not None else f"{path.stem}-{index}"
    if rollout_idx is not None:
        session_id += f"-r{as_int(rollout_idx, idx_where)}"
    return make_sessions(
        session_id, agent_kind="de", arrival_s=0.0, source=f"spider2:{path.name}", calls=calls, counter=counter, log=log
    )


def read_file(path: Path, counter: TokenCounter, log: ImportLog) -> list[Session]:
    """Every rollout of one result file."""
    where = Where(str(path))
    doc = read_json(path)
    items = [(obj, where.at(i)) for i, obj in enumerate(doc)] if isinstance(doc, list) else [(doc, where)]
    return [s for i, (obj, obj_where) in enumerate(items) for s in _rollout(obj, obj_where, path, i, counter, log)]


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    return [s for path in paths for s in read_file(path, counter, log)]
