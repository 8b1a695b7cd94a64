"""The incremental chat-prompt renderer equals rendering from scratch, warm or cold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.emulator.prompt_cache import ChatPromptCache
from kairosbench.emulator.textgen import block_hashes
from kairosbench.tokenizer import chat_prompt_tokens, render_chat_words

word = st.text(alphabet="abcdefgh<|>", min_size=1, max_size=6)
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": st.lists(word, max_size=40).map(" ".join)})


@settings(max_examples=120, deadline=None)
@given(st.lists(message, min_size=1, max_size=6), st.lists(st.lists(message, min_size=1, max_size=3), max_size=4), st.sampled_from([4, 16]))
def test_incremental_rendering_is_exact(first, appends, bs) -> None:  # type: ignore[no-untyped-def]
    cache = ChatPromptCache(bs)
    msgs = list(first)
    for extra in [[]] + appends:
        msgs = msgs + extra
        got = cache.render(msgs)
        words = render_chat_words(msgs)
        assert got.n_tokens == len(words) == chat_prompt_tokens(msgs)
        assert got.hashes == block_hashes(words, bs)
        assert got.tail == words[len(got.hashes) * bs :]
        assert got.last_words == words[-32:]
        # and a cold cache agrees
        cold = ChatPromptCache(bs).render(msgs)
        assert (cold.hashes, cold.h_last, cold.tail) == (got.hashes, got.h_last, got.tail)


def test_next_turn_renders_only_the_new_messages() -> None:
    cache = ChatPromptCache(16)
    msgs = [{"role": "system", "content": "w " * 5000}, {"role": "user", "content": "task " * 100}]
    cache.render(msgs)
    before = cache.words_rendered
    msgs += [{"role": "assistant", "content": "reply " * 50}, {"role": "user", "content": "more " * 30}]
    cache.render(msgs)
    assert cache.words_rendered - before == (50 + 2) + (30 + 2)
    assert cache.hits == 1
