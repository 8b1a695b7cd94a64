"""Incremental prompt synthesis: exact sizes for the emulator tokenizer, history grows by appending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairosbench import tokenizer as emu
from kairosbench.replay.prompt import PromptFactory, PromptSettings
from kairosbench.replay.tokens import EmulatorTokenModel, HFTokenModel, TokenModel
from kairosbench.replay.wordpool import COMMON_WORDS, WordPool
from kairosbench.workload.model import Session, Turn

POOL = WordPool(COMMON_WORDS, size_words=1 << 14, seed=3)


def session(sid: str = "s1", kind: str = "swe", appended: list[int] | None = None, outputs: list[int] | None = None, texts: dict[int, str] | None = None) -> Session:
    appended = appended or [3000, 400, 0, 1, 2500]
    outputs = outputs or [50] * len(appended)
    turns = [Turn(appended_tokens=a, output_tokens=o, tool_duration_s=1.0, text=(texts or {}).get(i)) for i, (a, o) in enumerate(zip(appended, outputs))]
    return Session(sid, kind, 0.0, turns)


def decode(messages: bytes) -> list[dict]:
    return json.loads(b"[" + messages + b"]")


def reply(n: int, turn: int) -> bytes:
    return " ".join(f"r{turn}w{i}" for i in range(n)).encode()


async def test_emulator_sizes_are_exact_and_history_is_a_growing_prefix() -> None:
    s = session()
    sp = PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=500), POOL).session(s)
    targets = s.prompt_tokens()
    previous = b""
    for i in range(len(s.turns)):
        prep = await sp.prepare(i)
        msgs = decode(prep.messages)
        assert prep.messages.startswith(previous)
        expected = max(targets[i], emu.chat_prompt_tokens(msgs[:-1]) + emu.MESSAGE_OVERHEAD_TOKENS + 1)
        assert emu.chat_prompt_tokens(msgs) == prep.prompt_tokens_sent == expected
        if i == 0:
            assert [m["role"] for m in msgs] == ["system", "user"]
            assert len(msgs[0]["content"].split()) == 500
            assert msgs[1]["content"].startswith("task-s1 ")
        assert await sp.prepare(i) is prep  # a retry reuses the same messages
        body = reply(s.turns[i].output_tokens, i)
        await sp.add_reply(body, emu.chat_prompt_tokens(msgs))
        previous = bytes(sp.messages)
        assert decode(previous)[-1] == {"role": "assistant", "content": body.decode()}
    # turn 2 appends 0 tokens in the trace: a message needs at least its overhead and a word
    assert targets[2] == targets[1] + 50


async def test_shorter_reply_than_trace_is_absorbed_by_the_next_turn() -> None:
    s = session(appended=[1000, 300], outputs=[100, 10])
    sp = PromptFactory(EmulatorTokenModel(), PromptSettings(), POOL).session(s)
    await sp.prepare(0)
    await sp.add_reply(reply(40, 0), None)  # the model stopped at 40 of 100 tokens
    prep = await sp.prepare(1)
    assert emu.chat_prompt_tokens(decode(prep.messages)) == s.prompt_tokens()[1] == 1400


async def test_system_prompt_shared_per_kind_and_users_unique() -> None:
    f = PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=200), POOL)
    first = {}
    for sid, kind in [("a", "swe"), ("b", "swe"), ("c", "de")]:
        sp = f.session(session(sid, kind))
        first[sid] = decode((await sp.prepare(0)).messages)
    assert first["a"][0] == first["b"][0]
    assert first["a"][0] != first["c"][0]
    assert first["a"][1]["content"] != first["b"][1]["content"]


async def test_no_system_prompt_when_disabled_or_too_small() -> None:
    f = PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=0), POOL)
    msgs = decode((await f.session(session()).prepare(0)).messages)
    assert [m["role"] for m in msgs] == ["user"]
    tiny = session(appended=[5])
    msgs = decode((await PromptFactory(EmulatorTokenModel(), PromptSettings(), POOL).session(tiny).prepare(0)).messages)
    assert emu.chat_prompt_tokens(msgs) == 5


async def test_real_text_is_sent_as_is() -> None:
    text = json.dumps([{"role": "system", "content": "You are a \"careful\" agent."}, {"role": "user", "content": "fix bug #12\nplease"}])
    tool = json.dumps([{"role": "tool", "content": "ok: 3 tests passed", "tool_call_id": "x"}])
    s = session(appended=[10, 10], texts={0: text, 1: tool})
    sp = PromptFactory(EmulatorTokenModel(), PromptSettings(), POOL).session(s)
    prep = await sp.prepare(0)
    assert decode(prep.messages) == json.loads(text)
    await sp.add_reply(b"done", None)
    prep = await sp.prepare(1)
    msgs = decode(prep.messages)
    assert msgs[-1] == {"role": "user", "content": "ok: 3 tests passed"}
    assert prep.prompt_tokens_sent == emu.chat_prompt_tokens(msgs)


class SkewedModel(TokenModel):
    """A tokenizer where every 3rd word costs two tokens, with a bigger template."""

    name = "skewed"
    exact = False
    message_overhead = 5
    generation_overhead = 3
    words_are_tokens = False

    async def count(self, text: str) -> int:
        words = text.split()
        return len(words) + sum(1 for w in words if len(w) % 3 == 0)

    def vocabulary(self) -> list[str]:
        # as HFTokenModel does: synthesise only from words that are one token each
        return [w for w in COMMON_WORDS if len(w) % 3]


async def test_correction_converges_even_with_multi_token_words() -> None:
    class Sloppy(SkewedModel):
        def vocabulary(self) -> list[str]:
            return list(COMMON_WORDS)

    sp = PromptFactory(Sloppy(), PromptSettings(system_prompt_tokens=0)).session(session(appended=[2000]))
    prep = await sp.prepare(0)
    assert abs(skewed_prompt(decode(prep.messages)) - 2000) <= 1


def skewed_prompt(messages: list[dict]) -> int:
    m = SkewedModel()
    total = 0
    for msg in messages:
        words = msg["content"].split()
        total += m.message_overhead + len(words) + sum(1 for w in words if len(w) % 3 == 0)
    return total + m.generation_overhead


async def test_inexact_tokenizer_is_corrected_on_the_appended_part() -> None:
    s = session(appended=[2000, 500, 700])
    sp = PromptFactory(SkewedModel(), PromptSettings(system_prompt_tokens=300)).session(s)
    targets = s.prompt_tokens()
    for i in range(3):
        prep = await sp.prepare(i)
        assert skewed_prompt(decode(prep.messages)) == prep.prompt_tokens_sent == targets[i]
        await sp.add_reply(reply(50, i), skewed_prompt(decode(prep.messages)))


async def test_usage_feedback_corrects_a_template_we_do_not_know() -> None:
    s = session(appended=[2000, 500, 700])
    sp = PromptFactory(SkewedModel(), PromptSettings()).session(s)
    targets = s.prompt_tokens()
    hidden = 11  # the server's template adds 11 tokens we do not model
    prep = await sp.prepare(0)
    server = skewed_prompt(decode(prep.messages)) + hidden
    assert server - targets[0] == hidden
    await sp.add_reply(reply(50, 0), server)
    prep = await sp.prepare(1)
    assert skewed_prompt(decode(prep.messages)) + hidden == targets[1]


def _tiny_hf_tokenizer(tmp: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(COMMON_WORDS[i : i + 40]) for i in range(0, len(COMMON_WORDS), 7)] * 20
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(tmp / "tokenizer.json"))
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    (tmp / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|im_end|>"}))
    return tmp


async def test_hf_tokenizer_directory(tmp_path: Path) -> None:
    d = _tiny_hf_tokenizer(tmp_path)
    model = HFTokenModel(d)
    assert model.template_found
    assert model.message_overhead > 0 and model.generation_overhead > 0
    tok = model._tok
    s = session(appended=[1500, 300])
    sp = PromptFactory(model, PromptSettings(system_prompt_tokens=200)).session(s)
    targets = s.prompt_tokens()
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    tmpl = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(json.loads((d / "tokenizer_config.json").read_text())["chat_template"])
    for i in range(2):
        prep = await sp.prepare(i)
        rendered = tmpl.render(messages=decode(prep.messages), add_generation_prompt=True)
        real = len(tok.encode(rendered, add_special_tokens=False).ids)
        assert abs(real - targets[i]) <= 3, (real, targets[i])
        await sp.add_reply(b" ".join(w.encode() for w in COMMON_WORDS[:50]), real)


async def test_word_level_tokenizer_directory(tmp_path: Path) -> None:
    """Word-level vocabularies have no word-start marker (Ġ, ▁): bare words must be usable."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2} | {f"w{i}": i + 3 for i in range(400)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    template = "{% for m in messages %}<|im_start|> {{ m.role }} {{ m.content }} <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    model = HFTokenModel(tmp_path)
    assert len(model.vocabulary()) >= 50 and all(w.startswith("w") for w in model.vocabulary())
    assert model.template_found and model.message_overhead == 3 and model.generation_overhead == 2
