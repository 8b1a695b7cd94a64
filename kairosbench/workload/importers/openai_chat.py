"""OpenAI chat-completions request logs (JSONL): sessions from a session field or the message prefix.

One line is one request::

    {"messages": [...],                       # required: the request's chat messages
     "timestamp": 1714000000.5,               # optional: when it was sent (s, or ISO 8601)
     "latency_s": 2.1,                        # optional: how long the call took (s)
     "usage": {"prompt_tokens": .., "completion_tokens": ..},   # optional
     "response": {...} | "output": {...},     # optional: a chat.completion, a message, or text
     "session_id" | "session" | "conversation_id" | "user": "...",  # optional grouping key
     "agent_kind": "swe"}                     # optional, default "chat"

A request may also sit under ``body`` or ``request`` (OpenAI batch files, proxy logs).
``usage`` is read at the top level or inside the response.

Sessions: requests with a grouping key form one session per key, in line order. Requests
without one are joined by message prefix: a request continues the session whose latest
request's messages are a proper prefix of its own, the longest such; at equal length the
session whose recorded reply is the next message wins, then the most recent one. A request
extending no session starts one. Identical first requests from different sessions are told
apart only by their replies, so log a session key where you can.

Turns: appended = the messages beyond the previous request's messages and its reply (a
reply that is not recorded is taken from the next request, which re-sends it). When a
request does not extend the previous one (the client truncated or summarised its history),
its size is counted afresh and the turn is flagged in the import log. Tool duration =
the next request's timestamp - this one's - ``latency_s`` (without ``latency_s`` the gap
includes this call's service time); unknown without timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._chat import (
    Usage,
    message_record,
    message_text,
    recorded_usage,
    role_of,
    tool_calls,
)
from kairosbench.workload.importers._source import (
    Where,
    as_dict,
    as_float,
    as_list,
    as_str,
    get,
    iter_jsonl,
    opt,
    parse_time_s,
)
from kairosbench.workload.importers._turns import Call, ImportLog, make_sessions
from kairosbench.workload.model import Session
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["SESSION_KEYS", "Request", "read", "read_requests", "group_requests"]

SESSION_KEYS = ("session_id", "session", "conversation_id", "user")

Message = tuple[str, str]  # (role, text): what prefix matching compares


@dataclass(slots=True)
class Request:
    """One logged chat-completion request."""

    where: Where
    messages: list[Message]
    records: list[dict[str, str]]
    tools: list[str | None]  # per message: the first tool call's name
    reply: str | None
    reply_tool: str | None
    usage: Usage | None
    timestamp_s: float | None
    latency_s: float | None
    key: str | None
    agent_kind: str


def _reply(value: Any, where: Where) -> tuple[str | None, str | None, Usage | None]:
    """``(text, tool name, usage)`` of a logged response: completion, message or plain text."""
    if value is None:
        return None, None, None
    if isinstance(value, str):
        return value, None, None
    obj = as_dict(value, where)
    usage = recorded_usage(obj, where)
    message: Mapping[str, Any] = obj
    message_where = where
    if "choices" in obj:
        choices_value, choices_where = get(obj, "choices", where)
        choices = as_list(choices_value, choices_where)
        if not choices:
            return None, None, usage
        first = as_dict(choices[0], choices_where.at(0))
        message_value, message_where = get(first, "message", choices_where.at(0))
        message = as_dict(message_value, message_where)
    calls = tool_calls(message, message_where)
    return message_text(message, message_where), (calls[0][0] if calls else None), usage


def _request(obj: Any, where: Where) -> Request:
    top = as_dict(obj, where)
    body: Mapping[str, Any] = top
    body_where = where
    for wrapper in ("body", "request"):
        if "messages" not in top and isinstance(top.get(wrapper), Mapping):
            body, body_where = top[wrapper], where.at(wrapper)
    messages_value, messages_where = get(body, "messages", body_where)
    messages: list[Message] = []
    records: list[dict[str, str]] = []
    tools: list[str | None] = []
    for i, raw in enumerate(as_list(messages_value, messages_where)):
        message_where = messages_where.at(i)
        message = as_dict(raw, message_where)
        role = role_of(message, message_where)
        text = message_text(message, message_where)
        messages.append((role, text))
        calls = tool_calls(message, message_where)
        tools.append(calls[0][0] if calls else None)
        call_id = message.get("tool_call_id")
        records.append(message_record(role, text, tool_call_id=call_id if isinstance(call_id, str) else ""))
    if not messages:
        raise messages_where.error("a request needs at least one message")
    response_value = top.get("response", top.get("output"))
    response_where = where.at("response" if "response" in top else "output")
    reply, reply_tool, response_usage = _reply(response_value, response_where)
    usage_value, usage_where = opt(top, "usage", where)
    usage = recorded_usage(top, where) if usage_value is not None else response_usage
    ts_value, ts_where = opt(top, "timestamp", where)
    latency_value, latency_where = opt(top, "latency_s", where)
    key = None
    for name in SESSION_KEYS:
        for holder, holder_where in ((top, where), (body, body_where)):
            value = holder.get(name)
            if value is not None and key is None:
                if not isinstance(value, (str, int)) or isinstance(value, bool):
                    raise holder_where.at(name).error("expected a string or integer session key")
                key = str(value)
    kind_value, kind_where = opt(top, "agent_kind", where)
    return Request(
        where=where,
        messages=messages,
        records=records,
        tools=tools,
        reply=reply,
        reply_tool=reply_tool,
        usage=usage,
        timestamp_s=None if ts_value is None else parse_time_s(ts_value, ts_where),
        latency_s=None if latency_value is None else as_float(latency_value, latency_where, minimum=0.0),
        key=key,
        agent_kind="chat" if kind_value is None else as_str(kind_value, kind_where),
    )


def read_requests(path: Path) -> list[Request]:
    return [_request(obj, where) for where, obj in iter_jsonl(path)]


def group_requests(requests: Sequence[Request]) -> list[list[Request]]:
    """Sessions (lists of requests in log order): by key where given, else by message prefix."""
    sessions: list[list[Request]] = []
    by_key: dict[str, int] = {}
    # hash of a session's latest messages -> sessions whose latest request has exactly them
    by_prefix: dict[int, list[int]] = {}
    prefix_of: dict[int, int] = {}
    for req in requests:
        if req.key is not None:
            if req.key in by_key:
                sessions[by_key[req.key]].append(req)
            else:
                by_key[req.key] = len(sessions)
                sessions.append([req])
            continue
        hashes = _prefix_hashes(req.messages)
        chosen: int | None = None
        for k in range(len(req.messages) - 1, 0, -1):  # a proper prefix, longest first
            candidates = [s for s in by_prefix.get(hashes[k - 1], ()) if sessions[s][-1].messages == req.messages[:k]]
            if candidates:
                chosen = _pick(candidates, sessions, req.messages[k])
                break
        if chosen is None:
            chosen = len(sessions)
            sessions.append([req])
        else:
            by_prefix[prefix_of[chosen]].remove(chosen)
            sessions[chosen].append(req)
        prefix_of[chosen] = hashes[-1]
        by_prefix.setdefault(hashes[-1], []).append(chosen)
    return sessions


def _prefix_hashes(messages: Sequence[Message]) -> list[int]:
    out = []
    h = 0
    for message in messages:
        h = hash((h, message))
        out.append(h)
    return out


def _pick(candidates: list[int], sessions: list[list[Request]], next_message: Message) -> int:
    """Among sessions with the same latest messages: the one whose reply comes next, else the latest."""
    replied = [s for s in candidates if next_message == ("assistant", sessions[s][-1].reply)]
    return max(replied or candidates)


def _calls(requests: list[Request]) -> list[Call]:
    """One session's requests as calls: appended = what each adds to the previous one."""
    calls: list[Call] = []
    for t, req in enumerate(requests):
        call = Call(
            appended=req.records,
            output_text=req.reply,
            tool_name=req.reply_tool,
            usage=req.usage,
            sent_s=req.timestamp_s,
        )
        if t:
            prev = requests[t - 1]
            base = len(prev.messages)
            if req.messages[:base] == prev.messages:
                rest = base
                if rest < len(req.messages) and req.messages[rest][0] == "assistant":
                    resent = req.messages[rest][1]
                    prev_call = calls[-1]
                    if prev_call.output_text is None:  # the reply, as the client re-sent it
                        prev_call.output_text = resent
                        prev_call.tool_name = req.tools[rest]
                    rest += 1
                call.appended = req.records[rest:]
            else:
                common = _common_prefix(req.messages, prev.messages)
                call.appended = req.records[common:]
                call.context = req.records
        calls.append(call)
    _durations(requests, calls)
    return calls


def _common_prefix(a: Sequence[Message], b: Sequence[Message]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _durations(requests: list[Request], calls: list[Call]) -> None:
    for t, (req, call) in enumerate(zip(requests, calls)):
        if t + 1 == len(requests):
            call.tool_duration_s = 0.0  # nothing follows the last request
            continue
        nxt = requests[t + 1]
        if req.timestamp_s is None or nxt.timestamp_s is None:
            continue
        gap = nxt.timestamp_s - req.timestamp_s
        if gap < 0:
            raise nxt.where.at("timestamp").error(
                f"out of order: {-gap:.3f} s before the session's previous request "
                f"({req.where.path}, line {req.where.line})"
            )
        call.tool_duration_s = max(gap - (req.latency_s or 0.0), 0.0)


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    out: list[Session] = []
    for path in paths:
        requests = read_requests(path)
        log.add("requests", len(requests))
        for group in group_requests(requests):
            first = group[0]
            session_id = first.key if first.key is not None else f"{path.stem}:{first.where.line}"
            arrival = math.nan if first.timestamp_s is None else first.timestamp_s
            out.extend(
                make_sessions(
                    session_id,
                    agent_kind=first.agent_kind,
                    arrival_s=arrival,
                    source=f"openai-chat:{path.name}",
                    calls=_calls(group),
                    counter=counter,
                    log=log,
                )
            )
    return out
