"""The bytes-level SSE parser: same result for any split of the stream, escapes kept verbatim."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.replay.sse import MalformedStream, SSEParser


def chunk(content: str | None = None, *, finish: str | None = None, usage: dict | None = None, spaces: bool = False, reasoning: str | None = None) -> bytes:
    delta: dict = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    obj: dict = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        obj = {"id": "x", "choices": [], "usage": usage}
    sep = (", ", ": ") if spaces else (",", ":")
    return b"data: " + json.dumps(obj, separators=sep).encode() + b"\n\n"


def stream(words: list[str], *, spaces: bool = False, usage: bool = True) -> bytes:
    out = chunk("", spaces=spaces)
    for w in words:
        out += chunk(w, spaces=spaces)
    out += chunk("", finish="length", spaces=spaces)
    if usage:
        out += chunk(usage={"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}, spaces=spaces)
    return out + b"data: [DONE]\n\n"


def parse(data: bytes, splits: list[int] | None = None, **kw) -> SSEParser:
    p = SSEParser(**kw)
    cuts = sorted(set(splits or []))
    prev = 0
    for i, c in enumerate(cuts + [len(data)]):
        if c > prev:
            p.feed(data[prev:c], i)
            prev = c
    p.close(len(cuts) + 1)
    return p


def test_plain_stream() -> None:
    p = parse(stream([" hello", " world", "!"]))
    assert p.text == " hello world!"
    assert p.done and p.finish_reason == "length"
    assert (p.usage_prompt_tokens, p.usage_completion_tokens) == (7, 3)
    assert p.chunk_tokens == [1, 1, 1]
    assert p.output_tokens == 3


def test_python_json_spacing_is_understood() -> None:
    p = parse(stream([" a", " b"], spaces=True))
    assert p.text == " a b" and p.usage_completion_tokens == 2 and p.finish_reason == "length"


def test_escapes_are_kept_verbatim_and_decode_right() -> None:
    words = [' "quoted"', "\n", " back\\slash", " caf\u00e9", " \U0001f600", "\u2028"]
    p = parse(stream(words))
    assert p.text == "".join(words)
    # the raw bytes are a valid JSON string body: they round-trip through json
    assert json.loads(b'"' + p.content_json + b'"') == "".join(words)


def test_surrogate_pair_split_across_events() -> None:
    raw = b'data: {"choices":[{"delta":{"content":"\\ud83d"}}]}\n\ndata: {"choices":[{"delta":{"content":"\\ude00"}}]}\n\ndata: [DONE]\n\n'
    p = parse(raw)
    assert p.text == "\U0001f600"


def test_crlf_comments_and_multiline_data() -> None:
    raw = b": keep-alive\r\n\r\n" + b'data: {"choices":[{"delta":\r\ndata: {"content":" x"}}]}\r\n\r\n' + b"event: message\r\ndata: [DONE]\r\n\r\n"
    p = parse(raw, [3, 20, 21, 40])
    assert p.text == " x" and p.done


def test_count_words_counts_tokens_in_multi_token_chunks() -> None:
    p = parse(stream([" a b c", " d", " e f"], usage=False), count_words=True)
    assert p.chunk_tokens == [3, 1, 2]
    assert p.output_tokens == 6


def test_continuous_usage_gives_exact_counts() -> None:
    raw = b""
    for i, (text, n) in enumerate([(" a", 1), (" bcd", 4), (" e", 5)]):
        raw += b'data: {"choices":[{"delta":{"content":"' + text.encode() + b'"}}],"usage":{"prompt_tokens":9,"completion_tokens":' + str(n).encode() + b"}}\n\n"
    raw += b"data: [DONE]\n\n"
    p = parse(raw)
    assert p.continuous_usage
    assert p.chunk_tokens == [1, 3, 1]
    assert p.usage_completion_tokens == 5


def test_reasoning_tokens_time_but_are_not_resent() -> None:
    raw = chunk(reasoning="think") + chunk(reasoning=" more") + chunk(" answer") + b"data: [DONE]\n\n"
    p = parse(raw)
    assert p.text == " answer"
    assert len(p.chunk_ns) == 3


def test_role_only_and_null_content_are_not_tokens() -> None:
    raw = b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n' + b'data: {"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    p = parse(raw)
    assert p.chunk_ns == [] and p.finish_reason == "stop"


def test_error_event_is_reported() -> None:
    raw = chunk(" a") + b'data: {"error":{"message":"engine died","code":500}}\n\n'
    p = parse(raw)
    assert p.error == "engine died"


def test_event_error_field() -> None:
    p = parse(b"event: error\ndata: overloaded\n\n")
    assert p.error == "overloaded"


@pytest.mark.parametrize(
    "raw",
    [
        b"data: {this is not json\n\n",
        b"data: hello\n\n",
        b'data: {"choices":[{"delta":{"content":"unterminated}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":42}}]}\n\n',
    ],
)
def test_malformed_events_raise(raw: bytes) -> None:
    with pytest.raises(MalformedStream):
        parse(raw)


def test_strict_mode_catches_what_the_fast_path_cannot() -> None:
    raw = b'data: {"choices":[{"delta":{"content":" a"}}] trailing}\n\n'
    parse(raw)  # structurally fine for the fast path
    with pytest.raises(MalformedStream):
        parse(raw, strict=True)


def test_final_event_without_blank_line_counts_at_close() -> None:
    p = parse(chunk(" a") + b"data: [DONE]")
    assert p.done and p.text == " a"


def test_events_in_one_read_share_its_timestamp() -> None:
    p = SSEParser()
    p.feed(chunk(" a") + chunk(" b"), 100)
    p.feed(chunk(" c")[:10], 200)
    p.feed(chunk(" c")[10:], 300)
    assert p.chunk_ns == [100, 100, 300]


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(words=st.lists(_text, min_size=0, max_size=12), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30), spaces=st.booleans())
def test_any_split_gives_the_same_result(words: list[str], cuts: list[int], spaces: bool) -> None:
    data = stream(words, spaces=spaces)
    whole = parse(data)
    split = parse(data, [c % (len(data) + 1) for c in cuts])
    assert whole.text == split.text == "".join(words)
    assert whole.content_json == split.content_json
    assert whole.usage_completion_tokens == split.usage_completion_tokens == len(words)
    assert len(split.chunk_ns) == sum(1 for w in words if w)
    assert split.done


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_raises_malformed_or_parses_never_crashes(garbage: bytes) -> None:
    p = SSEParser()
    try:
        p.feed(garbage, 0)
        p.close(1)
    except MalformedStream:
        pass
