"""mini-swe-agent trajectories (``*.traj.json``): one session per file, one turn per reply.

The file is either a plain JSON list of chat messages (the test data format) or an object
with a ``messages`` list (newer releases, which also keep ``info.model_stats``). Each
assistant message is a turn; the user messages since the previous one (the command's
``<returncode>``/``<output>``) are what it appends. Newer releases keep the provider
response under ``extra.response``; its ``usage``, where present, gives exact counts.

The model runs one shell command per reply, fenced as ```` ```bash ```` (or
```` ```mswea_bash_command ````), so the tool is ``bash``; a reply with no command block has
no tool. No durations or start times are recorded: tool durations are 0 s and flagged
unknown in the metadata, and every session arrives at 0 s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._chat import content_text
from kairosbench.workload.importers._source import Where, as_list, get, read_json
from kairosbench.workload.importers._transcript import calls_from_messages, drop_trailing
from kairosbench.workload.importers._turns import ImportLog, make_sessions
from kairosbench.workload.model import Session
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["read", "read_file", "mini_tool_name"]

# A fenced command block; mini-swe-agent executes exactly these.
_COMMAND_BLOCK = re.compile(r"```(?:bash|sh|mswea_bash_command)\s*\n", re.IGNORECASE)


def mini_tool_name(message: Mapping[str, Any], where: Where) -> str | None:
    """``bash`` when the reply holds a command block, else None (no tool ran)."""
    text = content_text(message.get("content"), where.at("content"))
    return "bash" if _COMMAND_BLOCK.search(text) else None


def _messages(doc: Any, where: Where) -> tuple[Sequence[Any], Where]:
    if isinstance(doc, list):
        return doc, where
    value, value_where = get(doc, "messages", where)
    return as_list(value, value_where), value_where


def read_file(path: Path, counter: TokenCounter, log: ImportLog) -> list[Session]:
    """One trajectory file as one session."""
    messages, where = _messages(read_json(path), Where(str(path)))
    calls, trailing = calls_from_messages(messages, where, mini_tool_name)
    drop_trailing(trailing, log)
    name = path.name.removesuffix(".json").removesuffix(".traj")
    source = f"mini-swe-agent:{path.name}"
    return make_sessions(name, agent_kind="swe", arrival_s=0.0, source=source, calls=calls, counter=counter, log=log)


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    return [s for path in paths for s in read_file(path, counter, log)]
