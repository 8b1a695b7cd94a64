"""The workload data model: sessions of turns, as every importer, generator and driver sees it.

A *turn* is one LLM call of an agent. Its request carries the whole context so far:

    prompt_tokens[t] = prompt_tokens[t-1] + output_tokens[t-1] + appended_tokens[t]

(``appended_tokens`` is the new user/tool content of turn t; for turn 0 it is the system
prompt plus the task.) After the call the agent runs a tool for ``tool_duration_s`` seconds,
then sends the next turn. On disk (Parquet, one row per turn) see ``kairosbench.workload.schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Turn", "Session", "Workload", "TOKEN_COUNT_METHODS"]

# Where a token count came from, most trustworthy first. Recorded per turn.
TOKEN_COUNT_METHODS = ("usage", "tokenizer", "generated", "estimate")


@dataclass(slots=True)
class Turn:
    """One LLM call of an agent and the tool run that follows it."""

    appended_tokens: int
    output_tokens: int
    tool_duration_s: float = 0.0
    tool_name: str | None = None
    prompt_tokens: int | None = None  # as the real request had it; None: derive from the chain
    text: str | None = None  # real appended message text, JSON list of messages, where known
    output_text: str | None = None  # real assistant reply, where known
    prefix_hashes: list[int] | None = None  # prefix-block hash chain, where known (Mooncake)
    token_count_method: str = "generated"


@dataclass(slots=True)
class Session:
    """One agent: an ordered list of turns arriving at ``arrival_s`` from workload start."""

    session_id: str
    agent_kind: str
    arrival_s: float
    turns: list[Turn]
    source: str = ""

    def prompt_tokens(self) -> list[int]:
        """Prompt size of every turn, from the recorded value or the growth chain."""
        sizes: list[int] = []
        prev_prompt = 0
        prev_out = 0
        for i, turn in enumerate(self.turns):
            chained = turn.appended_tokens if i == 0 else prev_prompt + prev_out + turn.appended_tokens
            size = turn.prompt_tokens if turn.prompt_tokens is not None else chained
            sizes.append(size)
            prev_prompt, prev_out = size, turn.output_tokens
        return sizes

    @property
    def total_output_tokens(self) -> int:
        return sum(t.output_tokens for t in self.turns)


@dataclass(slots=True)
class Workload:
    """Sessions sorted by arrival, plus provenance (generator parameters, source, seed)."""

    sessions: list[Session]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)
