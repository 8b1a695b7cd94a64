"""SWE-agent trajectories (``*.traj``): one session per file, one turn per model call.

A ``.traj`` file is a JSON object with ``history`` (the messages as sent to the model) and
``trajectory`` (one step per model call: ``action``, ``observation``, ``response`` and, in newer
files, ``execution_time`` in seconds stored as a string). Turns come from the assistant
messages of ``history``; step ``i`` of ``trajectory`` gives turn ``i`` its tool duration.
Some files stop ``history`` before the last call (the final ``submit``); the steps beyond it
become turns too, their appended message being the previous step's observation.

Tool names: the function name where the message has ``tool_calls``; otherwise the first
word of the action when it is one of SWE-agent's own commands (``open``, ``edit``,
``find_file``, ``submit``...), else ``bash`` (the action was a shell command line).

Trajectories carry no usage per call (``info.model_stats`` holds only totals), so tokens are
counted with the named tokenizer or the estimate; ``docs/importers.md`` compares the sums
with ``model_stats.tokens_sent``. They carry no start time either, so every session arrives
at 0 s; give the replay an arrival process (e.g. ``--rate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._chat import message_record, tool_calls
from kairosbench.workload.importers._source import Where, as_dict, as_float, as_list, as_str, get, opt, read_json
from kairosbench.workload.importers._transcript import calls_from_messages, drop_trailing
from kairosbench.workload.importers._turns import Call, ImportLog, make_sessions
from kairosbench.workload.model import Session
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["read", "SWE_AGENT_COMMANDS", "swe_tool_name"]

# SWE-agent's own tools (default, windowed-edit, CTF and function-calling bundles). A first
# word outside this set means the model ran a plain shell command.
SWE_AGENT_COMMANDS = frozenset(
    {
        "open", "goto", "scroll_up", "scroll_down", "create", "edit", "insert", "append",
        "search_dir", "search_file", "find_file", "submit", "set_cursors", "filemap",
        "str_replace_editor", "exit_forfeit", "decompile", "disassemble",
        "debug_start", "debug_add_breakpoint", "debug_continue", "debug_step", "debug_exec",
        "debug_stop", "connect_start", "connect_sendline", "connect_exec", "connect_stop",
    }
)  # fmt: skip


def swe_tool_name(message: Mapping[str, Any], where: Where) -> str | None:
    """The tool an assistant message called: function-call name, SWE-agent command, or bash."""
    calls = tool_calls(message, where)
    if calls:
        return calls[0][0]
    action = message.get("action")
    return _action_tool(action) if isinstance(action, str) else None


def _action_tool(action: str) -> str | None:
    words = action.split()
    if not words:
        return None
    return words[0] if words[0] in SWE_AGENT_COMMANDS else "bash"


def _step_duration(step: Mapping[str, Any], where: Where) -> float | None:
    value, value_where = opt(step, "execution_time", where)
    return None if value is None else as_float(value, value_where, minimum=0.0)


def read_file(path: Path, counter: TokenCounter, log: ImportLog) -> list[Session]:
    """One ``.traj`` file as one session."""
    where = Where(str(path))
    doc = as_dict(read_json(path), where)
    history_value, history_where = get(doc, "history", where)
    history = as_list(history_value, history_where)
    steps_value, steps_where = opt(doc, "trajectory", where)
    steps = [] if steps_value is None else as_list(steps_value, steps_where)
    calls, trailing = calls_from_messages(history, history_where, swe_tool_name)

    tail_role = _last_observation_role(history)
    for i in range(len(calls), len(steps)):  # calls the history does not show (the final submit)
        step_where = steps_where.at(i)
        step = as_dict(steps[i], step_where)
        if trailing:  # the history's own rendering of the previous observation
            appended, trailing = trailing, []
        else:
            previous = as_dict(steps[i - 1], steps_where.at(i - 1)) if i else {}
            observation = previous.get("observation")
            appended = [message_record(tail_role, observation)] if isinstance(observation, str) else []
        response, response_where = opt(step, "response", step_where)
        action, action_where = opt(step, "action", step_where)
        calls.append(
            Call(
                appended=appended,
                output_text="" if response is None else as_str(response, response_where),
                tool_name=None if action is None else _action_tool(as_str(action, action_where)),
            )
        )
        log.add("turns_from_trajectory_steps_only")

    for i, call in enumerate(calls[: len(steps)]):
        step_where = steps_where.at(i)
        call.tool_duration_s = _step_duration(as_dict(steps[i], step_where), step_where)
        if call.tool_name is None:
            action = steps[i].get("action")
            call.tool_name = _action_tool(action) if isinstance(action, str) else None
    drop_trailing(trailing, log)
    _check_api_calls(doc, where, len(calls), log)
    name = path.name.removesuffix(".traj")
    return make_sessions(
        name, agent_kind="swe", arrival_s=0.0, source=f"swe-agent:{path.name}", calls=calls, counter=counter, log=log
    )


def _last_observation_role(history: Sequence[Any]) -> str:
    """The role the trajectory's format gives observations (``tool`` with function calling)."""
    for message in reversed(history):
        if isinstance(message, Mapping) and message.get("role") in ("tool", "user"):
            return str(message["role"])
    return "user"


def _check_api_calls(doc: Mapping[str, Any], where: Where, n_calls: int, log: ImportLog) -> None:
    """Note (not fail) when ``info.model_stats.api_calls`` disagrees with the turns found."""
    info = doc.get("info")
    stats = info.get("model_stats") if isinstance(info, Mapping) else None
    api_calls = stats.get("api_calls") if isinstance(stats, Mapping) else None
    if isinstance(api_calls, int) and api_calls > 0 and api_calls != n_calls:
        log.add("sessions_where_api_calls_differ_from_turns")
        log.note(f"{where.path}: info.model_stats.api_calls is {api_calls}, found {n_calls} model calls")


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    return [s for path in paths for s in read_file(path, counter, log)]
