"""The emulator's tokenizer: deterministic, trivial to reproduce, documented.

One token is one maximal run of non-whitespace characters (``str.split()``). A chat prompt
is rendered the way a chat template would be, with fixed overheads:

    each message:            MESSAGE_OVERHEAD_TOKENS (role start + end marker) + its content tokens
    the generation prompt:   GENERATION_PROMPT_TOKENS (the assistant header)

so ``chat_prompt_tokens(messages)`` equals what the emulator reports as ``prompt_tokens``.
The load generator synthesises text from words that are one token each, so it hits an exact
prompt size for the emulator without ever re-tokenising a growing history.

Token ids (for prefix-cache block hashes) are a stable 32-bit hash of each word, the same in
every process (unlike ``hash(str)``).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "GENERATION_PROMPT_TOKENS",
    "count_tokens",
    "content_text",
    "message_tokens",
    "chat_prompt_tokens",
    "render_chat_words",
    "token_ids",
]

MESSAGE_OVERHEAD_TOKENS = 2
GENERATION_PROMPT_TOKENS = 1


def count_tokens(text: str) -> int:
    return len(text.split())


def content_text(content: object) -> str:
    """OpenAI content is a string or a list of parts; only text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content)


def message_tokens(message: Mapping[str, object]) -> int:
    return MESSAGE_OVERHEAD_TOKENS + count_tokens(content_text(message.get("content")))


def chat_prompt_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    return sum(message_tokens(m) for m in messages) + GENERATION_PROMPT_TOKENS


def render_chat_words(messages: Sequence[Mapping[str, object]]) -> list[str]:
    """The prompt as the engine sees it: role markers, content words, end markers, header."""
    words: list[str] = []
    for m in messages:
        words.append(f"<|{m.get('role', 'user')}|>")
        words.extend(content_text(m.get("content")).split())
        words.append("<|end|>")
    words.append("<|assistant|>")
    return words


def token_ids(words: Iterable[str]) -> list[int]:
    return [zlib.crc32(w.encode("utf-8")) for w in words]
