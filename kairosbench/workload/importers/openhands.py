"""OpenHands sessions: evaluation ``output.jsonl`` files and saved event lists (``*.json``).

``output.jsonl`` holds one session per line: ``history`` (the ordered event list) and
``metrics.token_usages`` (one entry per LLM call: ``prompt_tokens``, ``completion_tokens``,
``response_id``). A ``*.json`` file is one event list (OpenHands' saved trajectories and its
runtime test fixtures), or an object / list of objects with a ``history``.

Events are actions (``action``: run, read, edit, think, finish, message, system, ...) and
observations (``observation``, with ``cause`` = the id of the action it answers). A turn is one
LLM response: the agent actions that carry the same ``tool_call_metadata.model_response.id``
(one response can call several tools), or one agent action where no response id was kept.
What a turn appends is every message-bearing event since the previous turn: the system
prompt, user messages, the observations of the previous turn's actions, recalled context and
error observations. ``agent_state_changed`` and ``null`` observations carry nothing to the
model and are skipped.

Tokens: ``metrics.token_usages`` by response id, else the response's own ``usage``, else the
tokenizer/estimate. Tool duration: last observation's timestamp minus the first action's
timestamp of the turn; a ``finish`` has none (0 s); an agent ``message`` that a user message
answers waits for the user, recorded as tool ``user`` with the human's reply time. Events
without timestamps (old ``output.jsonl`` files) leave durations unknown (0 s, flagged).
A session arrives at its first event's timestamp.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._chat import Usage, message_record, message_text, recorded_usage
from kairosbench.workload.importers._source import (
    Where,
    as_dict,
    as_int,
    as_list,
    as_str,
    get,
    iter_jsonl,
    opt,
    parse_time_s,
    read_json,
)
from kairosbench.workload.importers._turns import Call, ImportLog, make_sessions
from kairosbench.workload.model import Session
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["read", "session_from_events", "NON_LLM_ACTIONS", "SILENT_OBSERVATIONS"]

# Actions that are not an LLM reply: the system prompt, memory recall, state changes, the
# condenser's bookkeeping.
NON_LLM_ACTIONS = frozenset({"system", "recall", "change_agent_state", "condensation", "null"})
# Observations that put nothing in front of the model.
SILENT_OBSERVATIONS = frozenset({"agent_state_changed", "null"})


@dataclass(slots=True)
class _Turn:
    """An LLM response being assembled from its action and observation events."""

    call: Call
    response_id: str | None
    action_ids: set[int] = field(default_factory=set)
    start_s: float | None = None
    end_s: float | None = None
    observed: bool = False


def _event_id(event: Mapping[str, Any], where: Where) -> int | None:
    value, value_where = opt(event, "id", where)
    return None if value is None else as_int(value, value_where, minimum=None)


def _is_llm_action(event: Mapping[str, Any], name: str, source: str | None) -> bool:
    if name in NON_LLM_ACTIONS:
        return False
    if source is not None:
        return source == "agent"
    if name == "message":  # old files: no source; the agent's messages wait for a response
        return event.get("wait_for_response") is True
    return True


def _action_args(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The action's parameters: ``args`` in current files, top-level fields in old ones."""
    args = event.get("args")
    if isinstance(args, Mapping):
        return args
    skip = {"id", "timestamp", "source", "message", "action", "tool_call_metadata", "llm_metrics", "timeout"}
    return {k: v for k, v in event.items() if k not in skip}


def _event_text(event: Mapping[str, Any]) -> str:
    """The text a message-like event shows the model: its content, else its message."""
    args = _action_args(event)
    for value in (args.get("content"), event.get("content"), event.get("message")):
        if isinstance(value, str):
            return value
    return ""


def _fallback_output(event: Mapping[str, Any], name: str) -> str:
    """The reply rebuilt from the action when the raw model response was not kept."""
    args = _action_args(event)
    thought = args.get("thought") if isinstance(args.get("thought"), str) else ""
    if name == "message":
        body = _event_text(event)
    else:
        rest = {k: v for k, v in args.items() if k not in ("thought", "action_risk", "is_confirmed")}
        body = f"{name}({json.dumps(rest, sort_keys=True, ensure_ascii=False, default=str)})"
    return f"{thought}\n{body}" if thought else body


def _response(event: Mapping[str, Any], where: Where) -> tuple[Mapping[str, Any] | None, Where, str | None]:
    """``(model_response, its place, function_name)`` of an action's tool-call metadata."""
    meta_value, meta_where = opt(event, "tool_call_metadata", where)
    if meta_value is None:
        return None, meta_where, None
    meta = as_dict(meta_value, meta_where)
    fn_value, fn_where = opt(meta, "function_name", meta_where)
    function = None if fn_value is None else as_str(fn_value, fn_where)
    response_value, response_where = opt(meta, "model_response", meta_where)
    response = None if response_value is None else as_dict(response_value, response_where)
    return response, response_where, function


def _response_text(response: Mapping[str, Any], where: Where) -> str | None:
    choices_value, choices_where = opt(response, "choices", where)
    if not choices_value:
        return None
    choices = as_list(choices_value, choices_where)
    first = as_dict(choices[0], choices_where.at(0))
    message_value, message_where = get(first, "message", choices_where.at(0))
    return message_text(as_dict(message_value, message_where), message_where)


def session_from_events(
    events: Sequence[Any],
    where: Where,
    *,
    session_id: str,
    source: str,
    usage_by_id: Mapping[str, Usage],
    counter: TokenCounter,
    log: ImportLog,
) -> list[Session]:
    """One OpenHands event list as one session (see the module docstring for the rules)."""
    turns: list[_Turn] = []
    pending: list[dict[str, str]] = []
    first_s: float | None = None
    last_s: float | None = None
    for i, raw in enumerate(events):
        event_where = where.at(i)
        event = as_dict(raw, event_where)
        ts_value, ts_where = opt(event, "timestamp", event_where)
        ts = None if ts_value is None else parse_time_s(ts_value, ts_where)
        if ts is not None:
            if last_s is not None and ts < last_s:
                raise ts_where.error(f"timestamp goes back {last_s - ts:.6f} s from the previous event")
            first_s = ts if first_s is None else first_s
            last_s = ts
        source_value, source_where = opt(event, "source", event_where)
        event_source = None if source_value is None else as_str(source_value, source_where)
        if "action" in event:
            name = as_str(event["action"], event_where.at("action"))
            if _is_llm_action(event, name, event_source):
                pending = _llm_action(event, event_where, name, ts, turns, pending, usage_by_id)
            elif name in ("system", "message"):
                role = "system" if name == "system" else "user"
                text = _event_text(event)
                pending.append(message_record(role, text))
                if role == "user" and turns and turns[-1].call.tool_name is None and not turns[-1].observed:
                    turns[-1].call.tool_name = "user"  # the agent's reply waited for this user message
                    turns[-1].end_s = ts
        elif "observation" in event:
            name = as_str(event["observation"], event_where.at("observation"))
            if name in SILENT_OBSERVATIONS:
                continue
            cause_value, cause_where = opt(event, "cause", event_where)
            cause = None if cause_value is None else as_int(cause_value, cause_where, minimum=None)
            current = turns[-1] if turns else None
            text = _event_text(event)
            if current is not None and (
                (cause is not None and cause in current.action_ids)
                or (cause is None and event_source is None and not current.observed)
            ):
                current.observed = True
                current.end_s = ts
                pending.append(message_record("tool", text))
            elif text:
                pending.append(message_record("user", text))
                log.add(f"observations_outside_a_turn:{name}")
        else:
            log.add("events_ignored_neither_action_nor_observation")
    if pending and turns:
        log.add("trailing_messages_dropped", len(pending))
    calls = [_finish(turn) for turn in turns]
    for prev, turn in zip(turns, turns[1:]):  # the next request goes out when the tools are done
        turn.call.sent_s = prev.end_s if prev.end_s is not None else prev.start_s
    arrival = math.nan if first_s is None else first_s
    return make_sessions(
        session_id, agent_kind="swe", arrival_s=arrival, source=source, calls=calls, counter=counter, log=log
    )


def _llm_action(
    event: Mapping[str, Any],
    where: Where,
    name: str,
    ts: float | None,
    turns: list[_Turn],
    pending: list[dict[str, str]],
    usage_by_id: Mapping[str, Usage],
) -> list[dict[str, str]]:
    """Start a turn for an agent action, or join the turn of the same model response."""
    response, response_where, function = _response(event, where)
    response_id = response.get("id") if response is not None else None
    response_id = response_id if isinstance(response_id, str) else None
    action_id = _event_id(event, where)
    if turns and response_id is not None and turns[-1].response_id == response_id:
        if action_id is not None:
            turns[-1].action_ids.add(action_id)
        return pending
    output = _response_text(response, response_where) if response is not None else None
    usage = usage_by_id.get(response_id) if response_id is not None else None
    if usage is None and response is not None:
        usage = recorded_usage(response, response_where)
    tool = function if function is not None else (None if name == "message" else name)
    turn = _Turn(
        call=Call(
            appended=pending,
            output_text=output if output is not None else _fallback_output(event, name),
            tool_name=tool,
            usage=usage,
        ),
        response_id=response_id,
        start_s=ts,
    )
    if action_id is not None:
        turn.action_ids.add(action_id)
    turns.append(turn)
    return []


def _finish(turn: _Turn) -> Call:
    """Settle a turn's tool duration from its first action and last observation."""
    call = turn.call
    if turn.start_s is not None and turn.end_s is not None:
        duration = turn.end_s - turn.start_s
        call.tool_duration_s = max(duration, 0.0)  # timestamps are checked to be ordered
    elif call.tool_name is None or (call.tool_name == "finish" and not turn.observed):
        call.tool_duration_s = 0.0
    return call


def _token_usages(session: Mapping[str, Any], where: Where) -> dict[str, Usage]:
    """``metrics.token_usages`` keyed by response id."""
    metrics_value, metrics_where = opt(session, "metrics", where)
    if metrics_value is None:
        return {}
    usages_value, usages_where = opt(as_dict(metrics_value, metrics_where), "token_usages", metrics_where)
    if usages_value is None:
        return {}
    out: dict[str, Usage] = {}
    for i, raw in enumerate(as_list(usages_value, usages_where)):
        entry_where = usages_where.at(i)
        entry = as_dict(raw, entry_where)
        rid_value, rid_where = get(entry, "response_id", entry_where)
        prompt_value, prompt_where = get(entry, "prompt_tokens", entry_where)
        completion_value, completion_where = get(entry, "completion_tokens", entry_where)
        out[as_str(rid_value, rid_where)] = (
            as_int(prompt_value, prompt_where),
            as_int(completion_value, completion_where),
        )
    return out


def _session_record(
    obj: Any, where: Where, default_id: str, path: Path, counter: TokenCounter, log: ImportLog
) -> list[Session]:
    """A session object with a ``history`` (an ``output.jsonl`` line)."""
    record = as_dict(obj, where)
    history_value, history_where = get(record, "history", where)
    instance, instance_where = opt(record, "instance_id", where)
    if instance is not None and not isinstance(instance, (str, int)):
        raise instance_where.error("expected a string or integer id")
    return session_from_events(
        as_list(history_value, history_where),
        history_where,
        session_id=default_id if instance is None else str(instance),
        source=f"openhands:{path.name}",
        usage_by_id=_token_usages(record, where),
        counter=counter,
        log=log,
    )


def read_file(path: Path, counter: TokenCounter, log: ImportLog) -> list[Session]:
    """Every session of one ``output.jsonl`` or event-list ``.json`` file."""
    found: list[Session] = []
    if path.suffix == ".jsonl":
        for where, obj in iter_jsonl(path):
            found.extend(_session_record(obj, where, f"{path.stem}:{where.line}", path, counter, log))
        return found
    where = Where(str(path))
    doc = read_json(path)
    if isinstance(doc, Mapping):
        found.extend(_session_record(doc, where, path.stem, path, counter, log))
    elif isinstance(doc, list) and doc and isinstance(doc[0], Mapping) and "history" in doc[0]:
        for i, obj in enumerate(doc):
            found.extend(_session_record(obj, where.at(i), f"{path.stem}:{i}", path, counter, log))
    else:
        events = as_list(doc, where)
        found.extend(
            session_from_events(
                events,
                where,
                session_id=path.stem,
                source=f"openhands:{path.name}",
                usage_by_id={},
                counter=counter,
                log=log,
            )
        )
    return found


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    return [s for path in paths for s in read_file(path, counter, log)]
