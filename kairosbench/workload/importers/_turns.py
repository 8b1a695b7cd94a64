"""From LLM calls read out of a trace to counted turns, and the import log that says how.

Each text-bearing importer (SWE-agent, mini-swe-agent, OpenHands, Spider 2, OpenAI chat logs)
first reads its format into ``Call`` records: the messages new in that request, the reply, the
tool that ran after it, and the provider's usage where recorded. ``build_segments`` then
counts tokens the same way for all of them:

* with recorded usage: ``prompt_tokens`` and ``output_tokens`` as recorded, and
  ``appended = prompt[t] - (prompt[t-1] + output[t-1])``, clamped at 0 when the provider
  re-tokenised its previous reply shorter (the clamps are counted in the import log);
* without: every appended message costs its content tokens plus ``MESSAGE_OVERHEAD_TOKENS``,
  the previous reply costs its overhead again when it is re-sent, and ``output_tokens`` is the
  reply's content tokens, so that the growth chain reproduces each request's full size.

A replay only ever appends to a conversation, so a request whose context is *smaller* than
the previous one (a condenser summarised the history: recorded ``prompt_tokens`` fell) or
that does not extend it (the client rewrote the history) cannot continue the same session.
It starts a new session, ``<id>~1``, ``<id>~2``, ..., whose first turn carries the whole
request; it arrives when that request was sent where the trace says so.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kairosbench.workload.importers._chat import Usage
from kairosbench.workload.model import Session, Turn
from kairosbench.workload.tokencount import MESSAGE_OVERHEAD_TOKENS, TokenCounter

__all__ = ["Call", "ImportLog", "build_segments", "make_sessions", "MAX_NOTES"]

# Notes beyond this many are counted, not kept: a directory of 10,000 trajectories must not
# put 10,000 lines into a file's metadata.
MAX_NOTES = 50


@dataclass(slots=True)
class Call:
    """One LLM call as a trace records it, before its tokens are counted."""

    appended: list[dict[str, str]]  # messages new in this request: {"role", "content", ...}
    output_text: str | None  # the reply as the model produced it (content + tool calls)
    tool_name: str | None = None  # the tool the reply called; None: no tool (a final answer)
    tool_duration_s: float | None = None  # None: a tool ran but its duration was not recorded
    usage: Usage | None = None  # (prompt_tokens, completion_tokens) as recorded
    # The whole request, set only when it does not extend the previous request (the client
    # truncated or rewrote the history): the call then starts a new session.
    context: list[dict[str, str]] | None = None
    sent_s: float | None = None  # when the request was sent (same clock as the session arrival)


@dataclass(slots=True)
class ImportLog:
    """What an import had to decide or repair, written into the workload's metadata."""

    counts: Counter[str] = field(default_factory=Counter)
    sessions_without_tool_durations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def note(self, text: str) -> None:
        if text in self.notes:
            return
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.add("notes_not_kept")

    def as_meta(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "sessions_without_tool_durations": list(self.sessions_without_tool_durations),
            "notes": list(self.notes),
        }


def _messages_tokens(messages: list[dict[str, str]], counter: TokenCounter) -> int:
    return sum(counter.count(m.get("content", "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


@dataclass(slots=True)
class Segment:
    """Consecutive calls that form one replayable session, with the send time of the first."""

    turns: list[Turn]
    sent_s: float | None


def build_segments(calls: list[Call], counter: TokenCounter, log: ImportLog, session_id: str) -> list[Segment]:
    """Count the tokens of one session's calls (rules in the module docstring)."""
    segments: list[Segment] = []
    prev_prompt = prev_output = 0
    missing_duration = False
    for index, call in enumerate(calls):
        text: str | None = json.dumps(call.appended, ensure_ascii=False)
        if call.usage is not None:
            prompt, output = call.usage
            fresh = not segments or prompt < prev_prompt
            if segments and fresh:
                log.add("sessions_split_where_context_shrank")
                text = None  # the condensed request's messages were not recorded
            appended = prompt if fresh else prompt - (prev_prompt + prev_output)
            if appended < 0:
                log.add("appended_tokens_clamped_to_0")
                log.add("appended_tokens_clamped_sum_tokens", -appended)
                appended = 0
            recorded_prompt: int | None = prompt
            method = "usage"
        else:
            fresh = not segments or call.context is not None
            if segments and fresh:
                log.add("sessions_split_where_history_was_rewritten")
                text = json.dumps(call.context, ensure_ascii=False)
                appended = _messages_tokens(call.context or [], counter)
            else:
                appended = _messages_tokens(call.appended, counter)
                if segments:
                    appended += MESSAGE_OVERHEAD_TOKENS  # the previous reply's wrapper, re-sent
            output = counter.count(call.output_text or "")
            prompt = appended if fresh else prev_prompt + prev_output + appended
            recorded_prompt = None
            method = counter.method
        log.add(f"turns_counted_by_{method}")
        duration = call.tool_duration_s
        if duration is None:
            duration = 0.0
            # Nothing follows a session's last turn, so its tool time never reaches a replay.
            if call.tool_name is not None and index + 1 < len(calls):
                missing_duration = True
                log.add("tool_duration_unknown_turns")
        if fresh:
            segments.append(Segment(turns=[], sent_s=call.sent_s))
        segments[-1].turns.append(
            Turn(
                appended_tokens=appended,
                output_tokens=output,
                tool_duration_s=duration,
                tool_name=call.tool_name,
                prompt_tokens=recorded_prompt,
                text=text,
                output_text=call.output_text,
                token_count_method=method,
            )
        )
        prev_prompt, prev_output = prompt, output
    if missing_duration:
        log.sessions_without_tool_durations.append(session_id)
    return segments


def make_sessions(
    session_id: str,
    *,
    agent_kind: str,
    arrival_s: float,
    source: str,
    calls: list[Call],
    counter: TokenCounter,
    log: ImportLog,
) -> list[Session]:
    """The counted session (more than one where the context shrank); none for a trace
    with no LLM call in it (logged)."""
    if not calls:
        log.add("sessions_skipped_without_llm_calls")
        log.note(f"skipped session {session_id}: no LLM call in it")
        return []
    sessions = []
    for k, segment in enumerate(build_segments(calls, counter, log, session_id)):
        arrival = arrival_s
        if k and segment.sent_s is not None and math.isfinite(segment.sent_s):
            arrival = segment.sent_s
        sid = f"{session_id}~{k}" if k else session_id
        sessions.append(
            Session(session_id=sid, agent_kind=agent_kind, arrival_s=arrival, turns=segment.turns, source=source)
        )
    return sessions
