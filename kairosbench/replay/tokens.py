"""How prompt tokens are counted for an endpoint: the emulator's tokenizer, a local Hugging Face
tokenizer, the endpoint's ``/tokenize`` route, or a word estimate.

A ``TokenModel`` gives the prompt builder four things: single-token words to synthesise from,
``count(text)`` for the tokens of a message's content, the per-message chat-template overhead,
and the generation-prompt overhead, so that

    prompt_tokens = sum(content tokens + message_overhead) + generation_overhead

- ``emulator``: exact by construction (``kairosbench.tokenizer``: 1 token per whitespace word,
  2 per message, 1 for the generation prompt). No correction is ever needed.
- ``hf:DIR``: ``tokenizers`` on ``DIR/tokenizer.json``; overheads measured once by rendering
  the chat template from ``tokenizer_config.json`` (jinja2) and counting. Synthetic words are
  vocabulary entries verified to add exactly one token in running text.
- ``remote``: the endpoint's ``POST /tokenize`` (vLLM, SGLang); overheads measured once with
  ``messages`` requests; words from ``COMMON_WORDS`` verified against the route.
- ``words``: 1 token per word with the emulator's overheads — an estimate for endpoints with
  no tokenizer available (hosted APIs); the server's usage corrects each session's drift.

Inexact models (all but ``emulator``) are corrected per session from the server's reported
``prompt_tokens`` after each turn (``kairosbench.replay.prompt``), so prompt sizes converge to
the trace even where the chat template is unknown.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from kairosbench import tokenizer as emu_tok
from kairosbench.errors import EndpointError, UsageError
from kairosbench.replay.wordpool import COMMON_WORDS, is_json_safe_word

__all__ = [
    "TokenModel",
    "EmulatorTokenModel",
    "WordsTokenModel",
    "HFTokenModel",
    "RemoteTokenModel",
    "measure_template_overheads",
]


class TokenModel:
    """Base: counts content tokens; subclasses set the overheads and the vocabulary."""

    name: str = "words"
    exact: bool = False  # counts equal the server's: no usage feedback applied
    message_overhead: int = emu_tok.MESSAGE_OVERHEAD_TOKENS
    generation_overhead: int = emu_tok.GENERATION_PROMPT_TOKENS
    words_are_tokens: bool = False  # every synthetic word is exactly one token (skip counting)

    def vocabulary(self) -> Sequence[str]:
        return COMMON_WORDS

    async def count(self, text: str) -> int:
        """Tokens of ``text`` as message content (no special tokens, no template)."""
        return emu_tok.count_tokens(text)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exact": self.exact,
            "message_overhead_tokens": self.message_overhead,
            "generation_overhead_tokens": self.generation_overhead,
        }


class EmulatorTokenModel(TokenModel):
    """The emulator's tokenizer: exact."""

    name = "emulator"
    exact = True
    words_are_tokens = True

    def vocabulary(self) -> Sequence[str]:
        return COMMON_WORDS


class WordsTokenModel(TokenModel):
    """1 token per word: an estimate, corrected per session by the server's usage."""

    name = "words"
    exact = False
    words_are_tokens = False


def measure_template_overheads(count_messages: Callable[[list[dict[str, str]], bool], int], count_text: Callable[[str], int]) -> tuple[int, int]:
    """Per-message and generation-prompt overheads of a chat template, by differences.

    ``count_messages(messages, add_generation_prompt)`` counts a rendered conversation;
    ``count_text`` counts bare content. A user/assistant pair is added to a conversation and
    the growth not explained by the two contents, halved, is the per-message overhead.
    """
    base = [{"role": "system", "content": "alpha"}, {"role": "user", "content": "beta"}]
    more = base + [{"role": "assistant", "content": "gamma"}, {"role": "user", "content": "delta"}]
    t_base = count_messages(base, False)
    t_more = count_messages(more, False)
    pair = t_more - t_base - count_text("gamma") - count_text("delta")
    per_message = max(0, round(pair / 2))
    generation = max(0, count_messages(base, True) - t_base)
    return per_message, generation


class HFTokenModel(TokenModel):
    """A local Hugging Face tokenizer directory (``tokenizer.json`` + ``tokenizer_config.json``)."""

    exact = False

    def __init__(self, directory: str | Path, *, max_words: int = 8000) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageError("--tokenizer DIR needs the 'tokenizers' package: pip install 'kairosbench[hf]'") from exc
        path = Path(directory)
        tok_file = path / "tokenizer.json" if path.is_dir() else path
        if not tok_file.is_file():
            raise UsageError(f"--tokenizer {directory}: no tokenizer.json found there")
        try:
            self._tok = Tokenizer.from_file(str(tok_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise UsageError(f"--tokenizer {directory}: cannot load {tok_file}: {exc}") from exc
        self.name = f"hf:{path}"
        self._words = self._single_token_words(max_words)
        self.template_found = False
        self.message_overhead, self.generation_overhead = 0, 0
        config_file = (path if path.is_dir() else path.parent) / "tokenizer_config.json"
        if config_file.is_file():
            overheads = self._template_overheads(config_file)
            if overheads is not None:
                self.template_found = True
                self.message_overhead, self.generation_overhead = overheads

    def _n(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def _single_token_words(self, max_words: int) -> list[str]:
        """Vocabulary entries that add exactly one token after a space in running text."""
        vocab = sorted(self._tok.get_vocab().items(), key=lambda kv: kv[1])
        candidates: list[str] = []
        # BPE/SentencePiece vocabularies mark a word start (Ġ, ▁); word-level and WordPiece
        # ones store bare words. Take both; the encode check below keeps only true one-token words.
        for token, _ in vocab:
            word = token
            for marker in ("Ġ", "▁"):
                if token.startswith(marker):
                    word = token[len(marker) :]
                    break
            if 2 <= len(word) <= 12 and word.isascii() and word.isalnum() and word[0].isalpha():
                candidates.append(word)
        candidates = list(dict.fromkeys(candidates))
        anchor = "x"
        base = self._n(anchor)
        encoded = self._tok.encode_batch([f"{anchor} {w}" for w in candidates], add_special_tokens=False)
        words = [w for w, e in zip(candidates, encoded) if len(e.ids) == base + 1 and is_json_safe_word(w)]
        if len(words) < 50:
            raise UsageError(f"tokenizer {self.name} has too few single-token words ({len(words)}) to synthesise prompts")
        return words[:max_words]

    def _template_overheads(self, config_file: Path) -> tuple[int, int] | None:
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            return None
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if not isinstance(template, str):
            return None

        def special(key: str) -> str:
            v = config.get(key)
            return v.get("content", "") if isinstance(v, dict) else (v or "")

        try:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise TemplateError(message)

            env.globals["raise_exception"] = raise_exception
            compiled = env.from_string(template)
            bos, eos = special("bos_token"), special("eos_token")

            def count_messages(messages: list[dict[str, str]], add_generation_prompt: bool) -> int:
                text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
                return len(self._tok.encode(text, add_special_tokens=False).ids)

            return measure_template_overheads(count_messages, self._n)
        except Exception:  # any template feature we cannot render: fall back to usage feedback
            return None

    def vocabulary(self) -> Sequence[str]:
        return self._words

    async def count(self, text: str) -> int:
        if len(text) < 20_000:
            return self._n(text)
        return await asyncio.to_thread(self._n, text)  # tokenizers releases the GIL

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["chat_template_found"] = self.template_found
        return d


class RemoteTokenModel(TokenModel):
    """The endpoint's ``POST /tokenize`` route (vLLM / SGLang shape)."""

    exact = False

    def __init__(self, base_url: str, model: str, post_json: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"remote:{self.base_url}/tokenize"
        self.model = model
        self._post = post_json
        self._words: list[str] = list(COMMON_WORDS)

    async def _count_prompt(self, text: str) -> int:
        out = await self._post(f"{self.base_url}/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})
        return _count_of(out)

    async def _count_messages(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> int:
        out = await self._post(
            f"{self.base_url}/tokenize",
            {"model": self.model, "messages": messages, "add_generation_prompt": add_generation_prompt, "add_special_tokens": False},
        )
        return _count_of(out)

    async def setup(self) -> None:
        """Measure the template overheads and keep only single-token words (a few calls)."""
        counts: dict[tuple[str, bool], int] = {}
        probes = [
            [{"role": "system", "content": "alpha"}, {"role": "user", "content": "beta"}],
            [
                {"role": "system", "content": "alpha"},
                {"role": "user", "content": "beta"},
                {"role": "assistant", "content": "gamma"},
                {"role": "user", "content": "delta"},
            ],
        ]
        for msgs in probes:
            for gen in (False, True):
                counts[(json.dumps(msgs), gen)] = await self._count_messages(msgs, gen)
        texts = {w: await self._count_prompt(w) for w in ("gamma", "delta")}
        self.message_overhead, self.generation_overhead = measure_template_overheads(
            lambda m, g: counts[(json.dumps(m), g)], lambda t: texts[t]
        )
        self._words = await self._verified_words(list(COMMON_WORDS))

    async def _verified_words(self, words: list[str]) -> list[str]:
        """Split the list until each part tokenises to one token per word (after a space)."""
        anchor = await self._count_prompt("x")
        good: list[str] = []
        pending = [words]
        calls = 0
        while pending and calls < 400:
            part = pending.pop()
            calls += 1
            if await self._count_prompt("x " + " ".join(part)) == anchor + len(part):
                good.extend(part)
            elif len(part) > 1:
                mid = len(part) // 2
                pending += [part[:mid], part[mid:]]
        if len(good) < 20:
            raise EndpointError(f"{self.base_url}/tokenize: too few single-token words ({len(good)}) to synthesise prompts")
        return good

    def vocabulary(self) -> Sequence[str]:
        return self._words

    async def count(self, text: str) -> int:
        return await self._count_prompt(text)


def _count_of(out: dict[str, Any]) -> int:
    if isinstance(out.get("count"), int):
        return int(out["count"])
    if isinstance(out.get("tokens"), list):
        return len(out["tokens"])
    raise EndpointError(f"/tokenize answered without 'count' or 'tokens': {str(out)[:200]}")
