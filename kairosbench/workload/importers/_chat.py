"""Chat messages as traces store them: text, tool calls, recorded usage.

Traces disagree on shape (OpenAI ``tool_calls`` with a ``function`` object, Spider 2's flat
``{"name", "arguments"}``, content as a string or a list of parts), so this module turns any of
them into plain text for counting and into the ``{"role", "content"}`` records a turn's
``text`` column holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kairosbench.workload.importers._source import Where, as_dict, as_int, as_list, as_str, get, opt

__all__ = [
    "Usage",
    "content_text",
    "tool_calls",
    "message_text",
    "message_record",
    "recorded_usage",
    "role_of",
]

# (prompt_tokens, completion_tokens) as a provider reported them for one call.
Usage = tuple[int, int]


def content_text(content: Any, where: Where) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content-part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
                continue
            part_obj = as_dict(part, where.at(i))
            text = part_obj.get("text")
            if isinstance(text, str):
                parts.append(text)
        return "\n".join(parts)
    raise where.error("expected message content to be a string or a list of content parts")


def tool_calls(message: Mapping[str, Any], where: Where) -> list[tuple[str, str]]:
    """``(name, arguments)`` of every tool call of an assistant message, in order."""
    raw, raw_where = opt(message, "tool_calls", where)
    if raw is None:
        return []
    calls: list[tuple[str, str]] = []
    for i, call in enumerate(as_list(raw, raw_where)):
        call_where = raw_where.at(i)
        call_obj = as_dict(call, call_where)
        fn = call_obj.get("function")
        body, body_where = (fn, call_where.at("function")) if isinstance(fn, Mapping) else (call_obj, call_where)
        name_value, name_where = get(body, "name", body_where)
        name = as_str(name_value, name_where)
        args = body.get("arguments")
        if args is None:
            args_text = ""
        elif isinstance(args, str):
            args_text = args
        else:
            args_text = json.dumps(args, ensure_ascii=False, sort_keys=True)
        calls.append((name, args_text))
    return calls


def message_text(message: Mapping[str, Any], where: Where) -> str:
    """Everything of a message that reaches the model: content, then one line per tool call."""
    content, content_where = opt(message, "content", where)
    text = content_text(content, content_where)
    calls = tool_calls(message, where)
    if not calls:
        return text
    rendered = "\n".join(f"{name}({args})" for name, args in calls)
    return f"{text}\n{rendered}" if text else rendered


def message_record(role: str, text: str, **extra: str) -> dict[str, str]:
    """The JSON record a turn's ``text`` column stores for one appended message."""
    record = {"role": role, "content": text}
    record.update({k: v for k, v in extra.items() if v})
    return record


def recorded_usage(obj: Mapping[str, Any], where: Where) -> Usage | None:
    """``usage`` of an OpenAI-style response object, where one was recorded.

    Looks at ``obj["usage"]`` and, for mini-swe-agent's newer messages, at
    ``obj["extra"]["response"]["usage"]``.
    """
    usage, usage_where = opt(obj, "usage", where)
    if usage is None:
        extra = obj.get("extra")
        if isinstance(extra, Mapping) and isinstance(extra.get("response"), Mapping):
            response_where = where.at("extra").at("response")
            usage, usage_where = opt(extra["response"], "usage", response_where)
    if usage is None:
        return None
    usage_obj = as_dict(usage, usage_where)
    prompt, prompt_where = get(usage_obj, "prompt_tokens", usage_where)
    completion, completion_where = get(usage_obj, "completion_tokens", usage_where)
    return as_int(prompt, prompt_where), as_int(completion, completion_where)


def role_of(message: Any, where: Where) -> str:
    """The ``role`` of a chat message (required)."""
    value, value_where = get(as_dict(message, where), "role", where)
    return as_str(value, value_where)
