"""Synthetic prompt text: a long random run of single-token words, sliced per message.

Building a turn must cost time proportional to what the turn *appends*, never to the whole
context. A ``WordPool`` is built once per run and token model: ``size_words`` words drawn from
a vocabulary of words that are one token each for the endpoint's tokenizer, joined by single
spaces into one ``bytes`` object with a word-offset index. ``take(n, rng)`` returns ``n``
contiguous words from a random offset as one slice (a memcpy), already JSON-safe (the
vocabulary admits no quotes, backslashes or control characters), so appending a synthetic
message never escapes, tokenises or re-encodes anything.

Different sessions slice the same pool, but every session's first user message starts with a
unique tag, and prefix caches (vLLM, SGLang, the emulator) hash blocks chained from the start
of the prompt, so no two sessions share cache blocks unless they share the real prefix (the
per-agent-kind system prompt, see ``kairosbench.replay.prompt``).
"""

from __future__ import annotations

import random
from array import array
from typing import Sequence

__all__ = ["WordPool", "COMMON_WORDS", "is_json_safe_word"]

# Everyday English words that are one token (with a leading space) in the BPE vocabularies of
# current open models (Llama 3, Qwen, Mistral); used where the tokenizer is only reachable
# through a /tokenize route, and checked against it before use.
COMMON_WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is that for it as was with be by on not he this are or his from at which
    but have an they you were her she there one all we their has been if more when will would
    who so no out up into do can time some what only other new its about than two may first
    then any like my now over such our man me even most made after also did many before must
    through back years where much your way well down should because each just those people how
    too little state good very make world still own see men work long get here between both life
    being under never day same another know while last might us great old year off come since
    against go came right used take three states himself few house use during without again
    place around however home small found thought went say part once general high upon school
    every does got united left number course war until always away something fact though water
    less public put think almost hand enough far took head yet government system better set told
    nothing night end why called find look asked later point knew city next program business
    give group toward young days let room president side social given present several order
    national possible rather second face per among form important often things looked early
    white case john become large big need four within felt along children saw best church ever
    least power development light thing seemed family interest want members others mind country
    area done turned although open god service certain kind problem began different door thus
    help sense means whole matter perhaps itself york times law human line above name example
    action company hands local show whether five history gave today either act feet across taken
    past quite anything having seen death experience body word half really field car words
    already themselves information tell together college shall money period held keep sure free
    seems real probably behind clear week miss court students woman above data file code test
    value table query result error function return list string number index build change update
    check output input model server client request response module package class method object
    type field column row schema report task step issue patch commit branch merge review
    """.split()
)


def is_json_safe_word(word: str) -> bool:
    """A word that needs no JSON escaping and holds no whitespace."""
    return bool(word) and all(ch > " " and ch not in '"\\' and ch != "\x7f" for ch in word)


class WordPool:
    """``size_words`` random words from ``vocabulary``, joined by spaces, sliced per message."""

    def __init__(self, vocabulary: Sequence[str], *, size_words: int = 1 << 18, seed: int = 0) -> None:
        words = [w for w in dict.fromkeys(vocabulary) if is_json_safe_word(w)]
        if not words:
            raise ValueError("word pool needs at least one JSON-safe, whitespace-free word")
        rng = random.Random(seed)
        drawn = rng.choices(words, k=size_words)
        encoded = [w.encode("utf-8") for w in drawn]
        starts = array("q", [0]) * (size_words + 1)
        pos = 0
        for i, w in enumerate(encoded):
            starts[i] = pos
            pos += len(w) + 1
        starts[size_words] = pos  # one past the trailing space
        self.vocabulary = words
        self.data = b" ".join(encoded) + b" "
        self.starts = starts
        self.size_words = size_words

    def take(self, n: int, rng: random.Random) -> bytes:
        """``n`` contiguous words (wrapping around) from a random offset, space-separated."""
        return self.slice(n, rng.randrange(self.size_words))

    def slice(self, n: int, offset: int) -> bytes:
        """``n`` contiguous words from word ``offset`` (wrapping around); same bytes every call."""
        if n <= 0:
            return b""
        offset %= self.size_words
        parts: list[bytes] = []
        remaining = n
        while remaining > 0:
            m = min(remaining, self.size_words - offset)
            parts.append(self.data[self.starts[offset] : self.starts[offset + m] - 1])
            remaining -= m
            offset = 0
        return parts[0] if len(parts) == 1 else b" ".join(parts)
