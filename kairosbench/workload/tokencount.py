"""Token counts for importers when a trace has text but no recorded usage.

Three sources, most trustworthy first (the per-turn ``token_count_method`` says which one
gave each count):

1. ``usage``: the provider's own counts, recorded in the trace. Importers use them directly
   and never come here.
2. ``tokenizer``: a Hugging Face tokenizer the user names (a directory holding
   ``tokenizer.json``, or that file itself), loaded with the ``tokenizers`` package.
3. ``estimate``: ``ceil(chars / CHARS_PER_TOKEN)``. The constant was chosen by measuring
   candidate rules on the traces that carry both text and usage (OpenHands with Llama-4
   Maverick, SWE-agent with GPT-4); ``docs/importers.md`` has the table and errors.

Every chat message also costs ``MESSAGE_OVERHEAD_TOKENS`` for its role header and end marker,
whichever counter is used: a template-free tokenizer sees only the content, while the
endpoint's chat template wraps each message. The per-message rule keeps counts additive, so
``prompt[t] = prompt[t-1] + output[t-1] + appended[t]`` holds exactly for imported sessions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kairosbench.errors import UsageError

__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "TokenCounter",
    "EstimateCounter",
    "HFTokenizerCounter",
    "make_counter",
]

# Characters per token of the estimate. 4 is the usual rule for English prose with GPT
# tokenizers; agent traces (code, JSON, shell output) pack fewer characters per token, and the
# measurement in docs/importers.md ("Token-count estimate") is what picked this value.
CHARS_PER_TOKEN = 3.5

# Role header + end-of-message marker of one chat message. Chat templates spend 3-5 tokens
# here (OpenAI's cl100k chat format: 3; Llama 3/4: 4-5); 3 keeps estimates conservative.
MESSAGE_OVERHEAD_TOKENS = 3


class TokenCounter(Protocol):
    """Counts the tokens of a piece of text. ``method`` is recorded on every turn it counted."""

    @property
    def method(self) -> str: ...

    def count(self, text: str) -> int: ...


@dataclass(frozen=True, slots=True)
class EstimateCounter:
    """``ceil(len(text) / chars_per_token)``: no dependency, flagged ``estimate`` in the output."""

    chars_per_token: float = CHARS_PER_TOKEN

    @property
    def method(self) -> str:
        return "estimate"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token) if text else 0


class HFTokenizerCounter:
    """Counts with a local Hugging Face ``tokenizer.json`` (content tokens, no special tokens)."""

    def __init__(self, path: str | Path) -> None:
        file = _tokenizer_file(Path(path))
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # optional dependency: the `hf` extra
            raise UsageError(
                "--tokenizer needs the 'tokenizers' package: pip install 'kairosbench[hf]' "
                "(or leave --tokenizer out to use recorded usage or the documented estimate)"
            ) from exc
        try:
            self._tok: Any = Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises bare Exception subclasses
            raise UsageError(f"--tokenizer {path}: cannot load {file}: {exc}") from exc
        self.path = file

    @property
    def method(self) -> str:
        return "tokenizer"

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tok.encode(text, add_special_tokens=False).ids)


def _tokenizer_file(path: Path) -> Path:
    """Accept a tokenizer directory (the usual Hugging Face layout) or its tokenizer.json."""
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.is_file():
            raise UsageError(
                f"--tokenizer {path}: the directory has no tokenizer.json "
                "(point it at a Hugging Face model or tokenizer directory)"
            )
        return file
    if path.is_file():
        return path
    raise UsageError(f"--tokenizer {path}: no such directory or file")


def make_counter(tokenizer: str | Path | None) -> TokenCounter:
    """The counter an import uses: the named tokenizer, else the estimate."""
    if tokenizer is None or str(tokenizer) == "":
        return EstimateCounter()
    return HFTokenizerCounter(tokenizer)
