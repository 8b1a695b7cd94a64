"""Deterministic output text, EOS lengths and prefix-block hashes for the emulator server.

* **Output words.** Every generated token is one word from a fixed 1,024-word vocabulary of
  lowercase pseudo-words (never whitespace, never a chat marker), so the reply re-tokenises to
  exactly ``completion_tokens`` words when the client sends it back in the next turn. The
  sequence is a function of ``(seed, prompt)``: the same request always gets the same reply.
* **EOS length.** With ``ignore_eos`` or ``min_tokens >= max_tokens`` the emulator generates
  exactly ``max_tokens``. Otherwise it stops after ``n`` tokens, drawn uniformly from
  ``[max(1, min_tokens), max_tokens]`` by ``n = lo + floor(u * (hi - lo + 1))`` with
  ``u = crc32(f"{seed}|{request_seed}|eos") / 2**32`` and ``request_seed`` below
  (finish_reason "stop" when n < max_tokens, else "length").
* **Block hashes.** The engine's prefix cache needs one hash per full 16-token block of the
  token stream "prompt words + output words", chained over the parent block's hash, like vLLM.
  Python's ``hash`` of a tuple of words is used: fast, and stable within one process, which is
  all a prefix cache needs. Because a chat template ends with the assistant header and the
  next turn renders the reply right after that header (``kairosbench.tokenizer``), turn t+1's
  prompt starts with exactly turn t's prompt + reply, so its leading blocks hash the same.
"""

from __future__ import annotations

import zlib
from typing import Sequence

__all__ = ["VOCAB", "request_seed", "output_words", "eos_length", "block_hashes"]

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "n", "r", "s", "l", "th", "m", "x")
# 16 * 8 * 8 = 1024 distinct syllables; two-syllable words from a fixed walk keep them readable.
_SYLLABLES = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
VOCAB: tuple[str, ...] = tuple(_SYLLABLES[i] + _SYLLABLES[(i * 37 + 11) % 1024] for i in range(1024))


def request_seed(seed: int, prompt_words: Sequence[str] | Sequence[int], prompt_tokens: int) -> int:
    """A 32-bit seed from the server seed, the prompt length and the prompt's last 32 tokens."""
    tail = " ".join(str(w) for w in prompt_words[-32:])
    return zlib.crc32(f"{seed}|{prompt_tokens}|{tail}".encode())


def output_words(rseed: int, n: int) -> list[str]:
    """The ``n`` words a request with seed ``rseed`` generates (a full-period LCG walk)."""
    out: list[str] = []
    x = rseed & 1023
    step = ((rseed >> 10) & 511) * 2 + 1  # odd step: visits all 1,024 words before repeating
    vocab = VOCAB
    for _ in range(n):
        out.append(vocab[x])
        x = (x + step) & 1023
    return out


def eos_length(seed: int, rseed: int, max_tokens: int, min_tokens: int, ignore_eos: bool) -> int:
    """How many tokens the request generates before EOS (see the module docstring)."""
    if ignore_eos or min_tokens >= max_tokens:
        return max_tokens
    lo = max(1, min_tokens)
    u = zlib.crc32(f"{seed}|{rseed}|eos".encode()) / 2**32
    return min(max_tokens, lo + int(u * (max_tokens - lo + 1)))


def block_hashes(words: Sequence[object], block_size: int = 16) -> list[int]:
    """Chained hashes of every full block of ``words`` (Python's tuple hash: a signed 64-bit
    int that is never -1, as the KV cache requires). The tuples die at once, so they cost the
    garbage collector nothing; long-lived word lists do, which is why the server drops a
    request's prompt words as soon as these hashes exist."""
    out: list[int] = []
    h = 0
    for i in range(0, len(words) - block_size + 1, block_size):
        h = hash((h, *words[i : i + block_size]))
        out.append(h)
    return out
