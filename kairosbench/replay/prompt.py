"""Each session's conversation, kept as JSON bytes and grown one turn at a time.

A real agent resends its whole conversation every turn: system prompt, every earlier
user/tool message and every earlier assistant reply *as the endpoint produced it*. Contexts
reach 100k+ tokens, so a turn must cost what it appends, never what it resends:

- the conversation is a ``bytearray`` holding the JSON-encoded ``messages`` array body
  (``{"role":..,"content":..},{...}``); a turn appends its new messages, a reply appends
  ``{"role":"assistant","content":"<raw escaped stream text>"}`` (see ``kairosbench.replay.sse``);
- synthetic text is a slice of a ``WordPool`` (JSON-safe, so no escaping);
- only the appended content is ever counted (``TokenModel.count``), and the running total is
  kept: ``context_tokens`` = sum over messages of (content tokens + per-message overhead).

Prompt size per turn. The target is the trace's prompt size for that turn. The new content is
sized so that ``context_tokens + new messages + generation_overhead + offset == target``,
which also absorbs any difference between the reply the endpoint produced and the trace's
output length. ``offset`` is the per-session correction learnt from the server's reported
``prompt_tokens`` (inexact token models only; always 0 for the emulator's tokenizer).

Turn 0 (no real text): a system message, then a user message. The system message is the
first ``system_prompt_tokens`` words of a text fixed per agent kind (agents of one kind share
their system prompt in production, so prefix caches see it shared), capped so the user message
keeps at least one word. The user message starts with a per-session tag, so nothing after the
system prompt is shared across sessions. Later turns append one user message (tool results are
sent with role ``user``: a ``tool`` message must answer a ``tool_calls`` reply, which we do not
request). Where the trace has real text for a turn, its messages are sent as they are
(roles other than system/user/assistant become ``user``) and counted, not padded.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

from kairosbench.replay.endpoint import Endpoint
from kairosbench.replay.tokens import TokenModel
from kairosbench.replay.wordpool import WordPool
from kairosbench.tokenizer import content_text
from kairosbench.workload.model import Session, Turn

__all__ = ["PromptSettings", "PromptFactory", "SessionPrompt", "PreparedTurn"]

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class PromptSettings:
    """Knobs of prompt synthesis (documented in docs/replay.md)."""

    system_prompt_tokens: int = 1024  # shared per agent kind; 0: no shared system prompt
    seed: int = 0  # with the session id, fixes every synthetic word
    max_correction_rounds: int = 6  # inexact tokenizers: recount-and-adjust rounds per message


@dataclass(frozen=True, slots=True)
class PreparedTurn:
    """A turn ready to send: the session's messages up to ``length`` and our prompt count.

    It refers to the session's buffer instead of copying it (at 100k tokens a copy per
    session would double the memory held through every tool wait); the messages cannot
    change before the turn is sent, because only a reply appends after them.
    """

    turn_index: int
    source: bytearray
    length: int
    prompt_tokens_sent: int  # our count, including the usage-feedback offset
    target_prompt_tokens: int

    @property
    def messages(self) -> bytes:
        """A copy of the messages array body (tests, diagnostics)."""
        return bytes(self.source[: self.length])

    def body(self, endpoint: "Endpoint", max_tokens: int, user_json: bytes) -> bytes:
        """The request body, built from a view of the buffer (one copy, into the body)."""
        view = memoryview(self.source)
        try:
            return endpoint.body(view[: self.length], max_tokens, user_json)
        finally:
            view.release()


def _message(role: bytes, content: bytes) -> bytes:
    return b'{"role":"' + role + b'","content":"' + content + b'"}'



class PromptFactory:
    """Per run and endpoint tokenizer: the word pool and the shared system prompts."""

    def __init__(self, model: TokenModel, settings: PromptSettings = PromptSettings(), pool: WordPool | None = None) -> None:
        self.model = model
        self.settings = settings
        self.pool = pool or WordPool(model.vocabulary(), seed=settings.seed)
        self._system_cache: dict[tuple[str, int], tuple[bytes, int]] = {}

    async def system_prompt(self, agent_kind: str, n_words: int) -> tuple[bytes, int]:
        """The shared system prompt of ``agent_kind``: its first ``n_words`` words and tokens."""
        key = (agent_kind, n_words)
        hit = self._system_cache.get(key)
        if hit is None:
            text = self.pool.slice(n_words, zlib.crc32(agent_kind.encode("utf-8")))
            tokens = n_words if self.model.words_are_tokens else await self.model.count(text.decode("utf-8"))
            hit = self._system_cache[key] = (text, tokens)
        return hit

    def session(self, session: Session, session_id: str | None = None) -> "SessionPrompt":
        return SessionPrompt(self, session, session_id or session.session_id)


class SessionPrompt:
    """One session's growing conversation (see the module docstring)."""

    def __init__(self, factory: PromptFactory, session: Session, session_id: str) -> None:
        self.factory = factory
        self.model = factory.model
        self.session = session
        self.session_id = session_id
        self.tag = "task-" + _SAFE_ID.sub("_", session_id)[:80]
        self.rng = random.Random(f"{factory.settings.seed}:{session_id}")
        self.messages = bytearray()
        self.n_messages = 0
        self.context_tokens = 0  # our count: content + overhead of every message so far
        self.offset = 0  # server usage feedback (inexact models)
        self._prepared: PreparedTurn | None = None
        self._prepared_context = 0
        self.targets = session.prompt_tokens()

    # -- building turns --------------------------------------------------------------------
    async def prepare(self, turn_index: int) -> PreparedTurn:
        """Append turn ``turn_index``'s new messages (once; retries reuse them)."""
        if self._prepared is not None and self._prepared.turn_index == turn_index:
            return self._prepared
        turn = self.session.turns[turn_index]
        target = self.targets[turn_index]
        if turn.text:
            await self._append_real(turn)
        elif self.n_messages == 0:
            await self._append_first(target)
        else:
            budget = target - self.model.generation_overhead - self.offset - self.context_tokens - self.model.message_overhead
            content, tokens = await self._synth(budget)
            self._append(b"user", content, tokens)
        sent = self.context_tokens + self.model.generation_overhead + self.offset
        self._prepared = PreparedTurn(turn_index, self.messages, len(self.messages), sent, target)
        self._prepared_context = self.context_tokens
        return self._prepared

    async def _append_first(self, target: int) -> None:
        mo = self.model.message_overhead
        budget = target - self.model.generation_overhead - self.offset
        sys_words = min(self.factory.settings.system_prompt_tokens, budget - 2 * mo - 1)
        if sys_words > 0:
            text, tokens = await self.factory.system_prompt(self.session.agent_kind, sys_words)
            self._append(b"system", text, tokens)
        content, tokens = await self._synth(budget - self.context_tokens - mo, lead=self.tag.encode())
        self._append(b"user", content, tokens)

    async def _synth(self, tokens: int, lead: bytes = b"") -> tuple[bytes, int]:
        """Content of ``tokens`` tokens (at least one word): ``lead`` then pool words."""
        lead_tokens = 0
        if lead:
            lead_tokens = 1 if self.model.words_are_tokens else await self.model.count(lead.decode())
        n = max(0 if lead else 1, tokens - lead_tokens)
        body = self.factory.pool.take(n, self.rng)
        text = lead + b" " + body if lead and body else (lead or body)
        if self.model.words_are_tokens:
            return text, lead_tokens + n
        want = max(tokens, 1)
        count = await self.model.count(text.decode("utf-8"))
        best = (abs(want - count), text, count)
        for _ in range(self.factory.settings.max_correction_rounds):
            diff = want - count
            if diff == 0:
                break
            words = text.split(b" ")
            per_word = count / len(words) if words and count > 0 else 1.0  # ~1 for single-token words
            n = max(1, round(abs(diff) / per_word))
            if diff > 0:
                text = text + b" " + self.factory.pool.take(n, self.rng)
            else:
                keep = max(1, len(words) - n)
                if keep == len(words):
                    break
                text = b" ".join(words[:keep])
            count = await self.model.count(text.decode("utf-8"))
            if abs(want - count) < best[0]:
                best = (abs(want - count), text, count)
        return best[1], best[2]

    async def _append_real(self, turn: Turn) -> None:
        try:
            msgs = json.loads(turn.text or "")
        except ValueError:
            msgs = [{"role": "user", "content": turn.text}]
        if isinstance(msgs, dict):
            msgs = [msgs]
        if not isinstance(msgs, list):
            msgs = [{"role": "user", "content": str(msgs)}]
        for m in msgs:
            if not isinstance(m, Mapping):
                m = {"role": "user", "content": str(m)}
            role = m.get("role")
            role = role if role in ("system", "user", "assistant") else "user"
            text = content_text(m.get("content"))
            tokens = await self.model.count(text)
            encoded = json.dumps(text, ensure_ascii=False).encode("utf-8")[1:-1]
            self._append(role.encode(), encoded, tokens)

    def _append(self, role: bytes, content: bytes, content_tokens: int) -> None:
        if self.n_messages:
            self.messages += b","
        self.messages += _message(role, content)
        self.n_messages += 1
        self.context_tokens += content_tokens + self.model.message_overhead

    # -- after the reply -------------------------------------------------------------------
    async def add_reply(self, content_json: bytes, usage_prompt_tokens: int | None) -> int:
        """Append the assistant reply as streamed; learn from the server's prompt count.

        Returns the reply's tokens as they will count when resent.
        """
        prepared = self._prepared
        if self.model.words_are_tokens and b"\\" not in content_json:
            tokens = len(content_json.split())
        else:
            text = json.loads(b'"' + content_json + b'"') if b"\\" in content_json else content_json.decode("utf-8", "replace")
            tokens = await self.model.count(text)
        if usage_prompt_tokens is not None and prepared is not None and not self.model.exact:
            self.offset = usage_prompt_tokens - (self._prepared_context + self.model.generation_overhead)
        self._append(b"assistant", content_json, tokens)
        self._prepared = None
        return tokens
