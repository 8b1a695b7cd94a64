"""A lean, bytes-level parser for OpenAI-style chat-completion SSE streams.

This is the load generator's hot path: at no inter-token delay a 128-token reply is 128
events, and ``json.loads`` on each costs about 6 µs (0.8 CPU-s per 1,000 requests on its
own, more than the whole budget). So the parser never decodes an event it can read by
finding keys in the bytes:

- ``"content":"..."`` — the escaped JSON string body is kept as raw bytes. Concatenating the
  bodies of valid JSON strings yields the body of the concatenated string, so the reply is
  resent verbatim as ``b'"' + b"".join(pieces) + b'"'`` with no decode/encode round trip.
- ``"usage":{...}`` — ``prompt_tokens`` / ``completion_tokens`` read as integers.
- ``"finish_reason":"..."``, ``"reasoning_content"``/``"reasoning"`` (thinking tokens count as
  output tokens for timing but are not resent, as agents do), and ``"error"`` (fully parsed:
  it ends the stream anyway).

Validation is structural: every ``data:`` payload must be ``[DONE]`` or start with ``{`` and
end with ``}``, and a ``"content"`` value must be ``null`` or a terminated string; anything
else is a malformed stream. ``strict=True`` additionally ``json.loads`` every event (for
debugging a server; about 8x slower).

Tokens per event (for per-token ITL, see ``kairosbench.replay.itl``): the server's usage delta
when it sends usage on every chunk (vLLM ``continuous_usage_stats``); else the number of
whitespace words when the endpoint's tokenizer is the emulator's (``count_words=True``, exact
there); else 1 per content-bearing event, reconciled with the final usage afterwards.
"""

from __future__ import annotations

import json

__all__ = ["SSEParser", "MalformedStream"]


class MalformedStream(ValueError):
    """The byte stream is not a valid OpenAI SSE stream (the message says what was seen)."""


_CONTENT = b'"content":'
_CONTENT_STR = b'"content":"'
# Events that need the per-event path (anything but a plain content delta).
_SPECIAL_MARKERS = (b'"usage"', b'"finish_reason":"', b'"reasoning', b'"error"', b"data: [DONE]", b"data:[DONE]")
_USAGE = b'"usage":'
_FINISH = b'"finish_reason":'
_REASONING_KEYS = (b'"reasoning_content":', b'"reasoning":')
_PROMPT_TOKENS = b'"prompt_tokens":'
_COMPLETION_TOKENS = b'"completion_tokens":'
_WS = b" \t\r\n"


def _skip_ws(buf: bytes, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


def _string_end(buf: bytes, start: int) -> int:
    """Index of the quote closing the JSON string whose body starts at ``start``; -1 if none."""
    k = buf.find(b'"', start)
    while k > 0 and buf[k - 1] == 92:  # a backslash: count the run, odd means escaped quote
        b = k - 1
        while b >= start and buf[b] == 92:
            b -= 1
        if (k - 1 - b) % 2 == 0:
            break
        k = buf.find(b'"', k + 1)
    return k


def _string_value(buf: bytes, key_at: int, key_len: int) -> bytes | None:
    """Raw body of the string value after the key at ``key_at``; None for null/non-string."""
    j = _skip_ws(buf, key_at + key_len)
    if j >= len(buf) or buf[j] != 34:
        if buf.startswith(b"null", j):
            return None
        raise MalformedStream(f"expected a string or null after {buf[key_at:key_at + key_len]!r}")
    end = _string_end(buf, j + 1)
    if end < 0:
        raise MalformedStream("unterminated string in event")
    return buf[j + 1 : end]


def _int_after(buf: bytes, key: bytes, start: int) -> int | None:
    i = buf.find(key, start)
    if i < 0:
        return None
    j = _skip_ws(buf, i + len(key))
    k = j
    n = len(buf)
    while k < n and 48 <= buf[k] <= 57:
        k += 1
    return int(buf[j:k]) if k > j else None


def _decode(raw: bytes) -> str:
    """Decode a raw JSON string body (only needed when it holds escapes)."""
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    try:
        return json.loads(b'"' + raw + b'"')
    except ValueError as exc:
        raise MalformedStream(f"bad escape in content: {exc}") from None


class SSEParser:
    """Feed it the response bytes as they arrive; read the reply, the timings and usage after.

    ``feed(data, t_ns)`` takes any split of the stream (events may straddle reads); every
    event completed by a read is stamped with that read's arrival time.
    """

    __slots__ = (
        "count_words",
        "strict",
        "pieces",
        "chunk_ns",
        "chunk_tokens",
        "usage_prompt_tokens",
        "usage_completion_tokens",
        "continuous_usage",
        "finish_reason",
        "done",
        "error",
        "events",
        "_buf",
        "_last_completion",
    )

    def __init__(self, *, count_words: bool = False, strict: bool = False) -> None:
        self.count_words = count_words
        self.strict = strict
        self.pieces: list[bytes] = []  # raw JSON string bodies of the content deltas
        self.chunk_ns: list[int] = []  # arrival time of every token-bearing event
        self.chunk_tokens: list[int] = []  # tokens in every token-bearing event
        self.usage_prompt_tokens: int | None = None
        self.usage_completion_tokens: int | None = None
        self.continuous_usage = False  # usage seen on a token-bearing event: counts are exact
        self.finish_reason: str | None = None
        self.done = False  # saw data: [DONE]
        self.error: str | None = None  # an error event sent in the stream
        self.events = 0
        self._buf = b""
        self._last_completion = 0

    # -- feeding -------------------------------------------------------------------------
    def feed(self, data: bytes, t_ns: int) -> None:
        """Consume one read from the socket. Raises ``MalformedStream`` on a bad event."""
        if self._buf:
            data = self._buf + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._buf = data
            return
        self._buf = data[cut + 2 :]
        if data.find(b"\n\n") == cut:  # one event in this read: the common case with any delay
            self._event(data[:cut], t_ns)
            return
        block = data[: cut + 2]
        if not self.strict:
            block = self._fast_prefix(block, t_ns)
        for ev in block.split(b"\n\n"):
            if ev:
                self._event(ev, t_ns)

    def _fast_prefix(self, block: bytes, t_ns: int) -> bytes:
        """Consume the leading run of steady-state events in one pass; return the rest.

        Steady state: each event one line ``data: {...}`` of compact JSON with one
        ``"content"`` string, before the first event that needs a closer look (usage, a
        finish reason, reasoning, an error, ``[DONE]``). Anything unexpected in the run
        sends the whole block down the per-event path, which validates every event.
        """
        stop = len(block)
        for marker in _SPECIAL_MARKERS:
            k = block.find(marker, 0, stop)
            if k >= 0:
                stop = k
        if stop < len(block):
            j = block.rfind(b"\n\n", 0, stop)
            stop = j + 2 if j >= 0 else 0
        if stop == 0:
            return block
        fast = block[:stop] if stop < len(block) else block
        n = fast.count(b"\n\n")
        if fast.count(b"\n") != 2 * n or fast.count(b'data: {"') != n or fast.count(b"}\n\n") != n:
            return block
        parts = fast.split(_CONTENT_STR)
        if len(parts) != n + 1:
            return block
        frags = []
        for part in parts[1:]:
            end = part.find(b'"')
            if end > 0 and part[end - 1] == 92:  # an escape before the quote: check it properly
                end = _string_end(part, 0)
            if end < 0:
                return block
            frags.append(part[:end])
        self.events += n
        frags = [f for f in frags if f]
        if frags:
            self.pieces += frags
            self.chunk_ns += [t_ns] * len(frags)
            if self.count_words:
                self.chunk_tokens += [(len(f.split()) if b"\\" not in f else len(_decode(f).split())) or 1 for f in frags]
            else:
                self.chunk_tokens += [1] * len(frags)
        return block[stop:]

    def close(self, t_ns: int) -> None:
        """End of the byte stream: a final event without its blank line still counts."""
        tail, self._buf = self._buf.strip(), b""
        if tail:
            self._event(tail, t_ns)

    # -- one event -----------------------------------------------------------------------
    def _event(self, ev: bytes, t_ns: int) -> None:
        if ev.startswith(b"data: ") and b"\n" not in ev:
            payload = ev[6:]
        else:
            payload = self._data_of(ev)
            if payload is None:
                return  # comment / keep-alive / event without data
        self.events += 1
        if payload == b"[DONE]":
            self.done = True
            return
        if not (payload[:1] == b"{" and payload[-1:] == b"}"):
            raise MalformedStream(f"event is not a JSON object: {payload[:80]!r}")
        if self.strict:
            try:
                json.loads(payload)
            except ValueError as exc:
                raise MalformedStream(f"event is not valid JSON ({exc}): {payload[:80]!r}") from None
        tokens = 0
        i = payload.find(_CONTENT_STR)  # fast path: compact JSON, a string value
        if i >= 0:
            start = i + 11
            end = payload.find(b'"', start)
            if end > 0 and payload[end - 1] == 92:  # a backslash before it: check the escape
                end = _string_end(payload, start)
            if end < 0:
                raise MalformedStream("unterminated content string in event")
            frag = payload[start:end] if end > start else None
        else:
            i = payload.find(_CONTENT)  # spaced JSON or null
            frag = _string_value(payload, i, len(_CONTENT)) if i >= 0 else None
        if frag:
            self.pieces.append(frag)
            if self.count_words:
                tokens = (len(frag.split()) if b"\\" not in frag else len(_decode(frag).split())) or 1
            else:
                tokens = 1
        if not tokens and b'"reasoning' in payload:
            for key in _REASONING_KEYS:
                r = payload.find(key)
                if r >= 0:
                    frag = _string_value(payload, r, len(key))
                    if frag:
                        tokens = (len(_decode(frag).split()) or 1) if self.count_words else 1
                    break
        u = payload.find(_USAGE) if b'"usage"' in payload else -1
        if u >= 0 and payload[(v := _skip_ws(payload, u + len(_USAGE))) : v + 1] == b"{":
            p = _int_after(payload, _PROMPT_TOKENS, u)
            c = _int_after(payload, _COMPLETION_TOKENS, u)
            if p is not None:
                self.usage_prompt_tokens = p
            if c is not None:
                self.usage_completion_tokens = c
                if tokens:
                    self.continuous_usage = True
                    tokens = max(1, c - self._last_completion)
                self._last_completion = c
        if tokens:
            self.chunk_ns.append(t_ns)
            self.chunk_tokens.append(tokens)
        f = payload.find(_FINISH)
        if f >= 0 and payload[f + 16 : f + 17] != b"n":  # skip the common "finish_reason":null
            reason = _string_value(payload, f, len(_FINISH))
            if reason:
                self.finish_reason = reason.decode("ascii", "replace")
        if i < 0 and b'"error"' in payload:
            self.error = self._error_message(payload)

    @staticmethod
    def _data_of(ev: bytes) -> bytes | None:
        """General SSE field parsing (multi-line data, comments, ``event:`` lines)."""
        data: list[bytes] = []
        is_error = False
        for line in ev.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event" and value.strip() == b"error":
                is_error = True
        if not data:
            return None
        payload = b"\n".join(data)
        if is_error and not payload.startswith(b"{"):
            payload = json.dumps({"error": {"message": payload.decode("utf-8", "replace")}}).encode()
        return payload

    @staticmethod
    def _error_message(payload: bytes) -> str:
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload[:300].decode("utf-8", "replace")
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]

    # -- results -------------------------------------------------------------------------
    @property
    def content_json(self) -> bytes:
        """The reply as the body of a JSON string (escaped exactly as the server sent it)."""
        return b"".join(self.pieces)

    @property
    def text(self) -> str:
        """The decoded reply text (tests and diagnostics; the hot path never needs it)."""
        return _decode(self.content_json)

    @property
    def output_tokens(self) -> int:
        """Server-reported completion tokens, else the tokens counted from the stream."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        return sum(self.chunk_tokens)
