"""Render chat prompts incrementally: an agent's turn t+1 repeats turn t's messages verbatim.

An agent resends its whole conversation every turn, so a 100k-token context would otherwise be
split into words and hashed block by block on every request. This cache keeps, per request,
the state after its last message (token count, the chained block hashes, the partial last
block's words, the last 32 words) under a key chained over (role, content) of every message.
The next turn finds the longest cached message prefix (usually everything but the new
messages) and only renders and hashes what was appended.

The result is bit-identical to rendering from scratch with ``kairosbench.tokenizer`` and
``textgen.block_hashes`` (tests check this), so usage, EOS draws and prefix-cache hits do not
depend on whether the cache was warm. Bounded LRU; block hashes are kept as numpy arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from kairosbench.tokenizer import render_chat_words

__all__ = ["RenderedPrompt", "ChatPromptCache", "continue_hashes"]

_TAIL_WORDS = 32  # request_seed looks at the last 32 prompt words
_GEN_PROMPT = render_chat_words([])  # the generation prompt (assistant header), e.g. ["<|assistant|>"]


@dataclass(slots=True)
class RenderedPrompt:
    """A chat prompt as the engine needs it.

    ``hashes``: chained hashes of its full blocks; ``h_last``: the chain value after them;
    ``tail``: the words of the trailing partial block; ``last_words``: its last 32 words.
    """

    n_tokens: int
    hashes: list[int]
    h_last: int
    tail: list[Any]
    last_words: list[Any]


@dataclass(slots=True)
class _State:
    n_words: int
    hashes: np.ndarray
    h_last: int
    tail: list[Any]
    last: list[Any]


def continue_hashes(h: int, tail: Sequence[Any], words: Sequence[Any], block_size: int, out: list[int]) -> tuple[int, list[Any]]:
    """Extend a hash chain (value ``h``, partial block ``tail``) by ``words``; appends full-block
    hashes to ``out`` and returns the new chain value and partial block."""
    buf = list(tail)
    buf.extend(words)
    n_full = len(buf) // block_size
    for i in range(0, n_full * block_size, block_size):
        h = hash((h, *buf[i : i + block_size]))
        out.append(h)
    return h, buf[n_full * block_size :]


class ChatPromptCache:
    """Chat prompt renderer with an LRU of per-request end states (see the module docstring)."""

    def __init__(self, block_size: int = 16, max_entries: int = 1024) -> None:
        self.block_size = block_size
        self.max_entries = max_entries
        self._states: OrderedDict[int, _State] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.words_rendered = 0

    def render(self, messages: Sequence[Mapping[str, Any]]) -> RenderedPrompt:
        bs = self.block_size
        keys: list[int] = []
        k = 0
        for m in messages:
            content = m.get("content")
            ck = hash(content) if isinstance(content, str) else hash(repr(content))
            k = hash((k, m.get("role", "user"), ck))
            keys.append(k)
        start = 0
        state: _State | None = None
        for j in range(len(keys) - 1, -1, -1):
            st = self._states.get(keys[j])
            if st is not None:
                state, start = st, j + 1
                self._states.move_to_end(keys[j])
                break
        if state is None:
            self.misses += 1
            hashes: list[int] = []
            h, tail, last, n = 0, [], [], 0
        else:
            self.hits += 1
            hashes = state.hashes.tolist()
            h, tail, last, n = state.h_last, list(state.tail), list(state.last), state.n_words
        for m in messages[start:]:
            words = render_chat_words([m])[:-1]  # the message without the generation prompt
            self.words_rendered += len(words)
            n += len(words)
            h, tail = continue_hashes(h, tail, words, bs, hashes)
            last = (last + words)[-_TAIL_WORDS:]
        if start < len(messages) and keys:
            self._states[keys[-1]] = _State(n, np.asarray(hashes, dtype=np.int64), h, list(tail), list(last))
            if len(self._states) > self.max_entries:
                self._states.popitem(last=False)
        # the generation prompt closes every request's prompt (not part of the cached state)
        final = list(hashes)
        h2, tail2 = continue_hashes(h, tail, _GEN_PROMPT, bs, final)
        return RenderedPrompt(n + len(_GEN_PROMPT), final, h2, tail2, (last + _GEN_PROMPT)[-_TAIL_WORDS:])
