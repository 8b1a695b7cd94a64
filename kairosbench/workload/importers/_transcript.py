"""A chat transcript (a list of messages) as LLM calls: one call per assistant message.

The request of call ``t`` is every message before assistant message ``t``, so the messages it
appends are the ones since the previous assistant message (for the first call: the system
prompt and the task). Messages after the last assistant message (the final tool result, the
submitted patch) reached no model; they are dropped and counted in the import log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kairosbench.workload.importers._chat import message_record, message_text, recorded_usage, role_of
from kairosbench.workload.importers._source import Where, as_dict
from kairosbench.workload.importers._turns import Call, ImportLog

__all__ = ["ToolNamer", "calls_from_messages", "drop_trailing"]

# Names the tool an assistant message called (None: it called none), given the message.
ToolNamer = Callable[[Mapping[str, Any], Where], "str | None"]


def calls_from_messages(
    messages: Sequence[Any], where: Where, tool_name: ToolNamer
) -> tuple[list[Call], list[dict[str, str]]]:
    """One ``Call`` per assistant message of ``messages`` (``where`` names the list), plus the
    messages after the last assistant message (they reached no model)."""
    calls: list[Call] = []
    pending: list[dict[str, str]] = []
    for i, raw in enumerate(messages):
        message_where = where.at(i)
        message = as_dict(raw, message_where)
        role = role_of(message, message_where)
        text = message_text(message, message_where)
        if role == "assistant":
            calls.append(
                Call(
                    appended=pending,
                    output_text=text,
                    tool_name=tool_name(message, message_where),
                    usage=recorded_usage(message, message_where),
                )
            )
            pending = []
        else:
            call_id = message.get("tool_call_id")
            pending.append(message_record(role, text, tool_call_id=call_id if isinstance(call_id, str) else ""))
    return calls, pending


def drop_trailing(trailing: list[dict[str, str]], log: ImportLog) -> None:
    """Count the messages after a session's last call: no request carried them."""
    if trailing:
        log.add("trailing_messages_dropped", len(trailing))
