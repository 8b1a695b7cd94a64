"""OpenAI-compatible request parsing and response shaping for the emulator (pure, no IO).

What is accepted, and how it is answered, follows vLLM's OpenAI server where the emulator can
honour it and fails with a clear 400 where it cannot:

* ``/v1/chat/completions``: ``messages`` (roles system/developer/user/assistant/tool; content a
  string, null, or a list of text parts), ``max_tokens`` (or ``max_completion_tokens``),
  ``min_tokens``, ``ignore_eos``, ``stream``, ``stream_options.include_usage``, ``n`` = 1.
  Sampling parameters (temperature, top_p, seed, stop, ...) are accepted and ignored.
* ``/v1/completions``: ``prompt`` as a string, a one-element list of strings, or a list of
  token ids (vLLM's form), plus the same length/stream options.
* Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = [
    "ApiError",
    "ParsedRequest",
    "load_json",
    "parse_chat",
    "parse_completion",
    "error_body",
    "ChunkFormat",
    "usage_dict",
    "full_response",
    "words_text",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class ApiError(Exception):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, type_: str | None = None, code: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.code = code if code is not None else status

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type_=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(slots=True)
class ParsedRequest:
    """A validated generation request: the prompt as the engine will see it, plus options."""

    kind: str  # "chat" | "completion"
    model: str | None
    prompt_words: list[Any]  # completions: words (str) or token ids (int); chat: [] (see messages)
    max_tokens: int | None  # None: server default
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    user: str | None
    messages: list[dict[str, Any]] | None = None  # chat: validated messages, rendered by the server


def load_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError("request body must be a JSON object")
    return obj


def _int_field(obj: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(f"'{name}' must be an integer, got {type(v).__name__}", param=name)
    if v < minimum:
        raise ApiError(f"'{name}' must be at least {minimum}, got {v}", param=name)
    return v


def _bool_field(obj: Mapping[str, Any], name: str) -> bool:
    v = obj.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ApiError(f"'{name}' must be a boolean, got {type(v).__name__}", param=name)
    return v


def _common(obj: Mapping[str, Any]) -> tuple[str | None, int | None, int, bool, bool, bool, str | None]:
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError("'model' must be a string", param="model")
    max_tokens = _int_field(obj, "max_tokens", minimum=1)
    mct = _int_field(obj, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = mct
    min_tokens = _int_field(obj, "min_tokens", minimum=0) or 0
    if max_tokens is not None and min_tokens > max_tokens:
        raise ApiError(f"min_tokens ({min_tokens}) must be less than or equal to max_tokens ({max_tokens})", param="min_tokens")
    ignore_eos = _bool_field(obj, "ignore_eos")
    stream = _bool_field(obj, "stream")
    so = obj.get("stream_options")
    include_usage = False
    if so is not None:
        if not stream:
            raise ApiError("Stream options can only be defined when `stream=True`.", param="stream_options")
        if not isinstance(so, dict):
            raise ApiError("'stream_options' must be an object", param="stream_options")
        iu = so.get("include_usage", False)
        if not isinstance(iu, bool):
            raise ApiError("'stream_options.include_usage' must be a boolean", param="stream_options")
        include_usage = iu
    n = obj.get("n", 1)
    if n != 1 and n is not None:
        raise ApiError(f"the emulator generates one choice per request; 'n' must be 1, got {n!r}", param="n")
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError("'user' must be a string", param="user")
    return model, max_tokens, min_tokens, ignore_eos, stream, include_usage, user


def parse_chat(obj: Mapping[str, Any]) -> ParsedRequest:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(f"messages[{i}] must be an object", param="messages")
        role = m.get("role")
        if role not in _ROLES:
            raise ApiError(f"messages[{i}].role must be one of {sorted(_ROLES)}, got {role!r}", param="messages")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ApiError(f"messages[{i}].content must be a string, a list of parts or null", param="messages")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type", "text") != "text" or not isinstance(part.get("text", ""), str):
                    raise ApiError(f"messages[{i}].content[{j}]: the emulator accepts text parts only", param="messages")
    model, max_tokens, min_tokens, ignore_eos, stream, include_usage, user = _common(obj)
    return ParsedRequest("chat", model, [], max_tokens, min_tokens, ignore_eos, stream, include_usage, user, messages)


def parse_completion(obj: Mapping[str, Any]) -> ParsedRequest:
    prompt = obj.get("prompt")
    words: list[Any]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        words = prompt.split()
    elif isinstance(prompt, list) and prompt and all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
        words = list(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise ApiError("the emulator serves one prompt per request; send a string or a list of token ids", param="prompt")
    else:
        raise ApiError("'prompt' must be a string or a list of token ids", param="prompt")
    if not words:
        raise ApiError("'prompt' must contain at least one token", param="prompt")
    if obj.get("echo"):
        raise ApiError("'echo' is not supported by the emulator", param="echo")
    model, max_tokens, min_tokens, ignore_eos, stream, include_usage, user = _common(obj)
    if max_tokens is None:
        max_tokens = 16  # [doc] OpenAI legacy completions default
    return ParsedRequest("completion", model, words, max_tokens, min_tokens, ignore_eos, stream, include_usage, user)


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class ChunkFormat:
    """Pre-encoded SSE byte templates for one streaming response (hot path: no json.dumps per token)."""

    __slots__ = ("kind", "head", "tail", "first_head", "id", "created", "model", "include_usage")

    def __init__(self, kind: str, rid: str, created: int, model: str, include_usage: bool) -> None:
        self.kind, self.id, self.created, self.model, self.include_usage = kind, rid, created, model, include_usage
        usage = ',"usage":null' if include_usage else ""
        m = json.dumps(model)
        if kind == "chat":
            base = f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{created},"model":{m},"choices":[{{"index":0,"delta":{{'
            self.head = (base + '"content":"').encode()
            self.first_head = (base + '"role":"assistant","content":"').encode()
        else:
            base = f'data: {{"id":"{rid}","object":"text_completion","created":{created},"model":{m},"choices":[{{"index":0,"text":"'
            self.head = self.first_head = base.encode()
        close = '"},"logprobs":null,"finish_reason":' if kind == "chat" else '","logprobs":null,"finish_reason":'
        self.tail = (close + "null}]" + usage + "}\n\n").encode()

    def token(self, text: str, first: bool) -> bytes:
        return (self.first_head if first else self.head) + text.encode() + self.tail

    def last_token(self, text: str, first: bool, finish_reason: str) -> bytes:
        close = '"},"logprobs":null,"finish_reason":' if self.kind == "chat" else '","logprobs":null,"finish_reason":'
        usage = ',"usage":null' if self.include_usage else ""
        return (self.first_head if first else self.head) + text.encode() + f'{close}"{finish_reason}"}}]{usage}}}\n\n'.encode()

    def usage_chunk(self, usage: Mapping[str, Any]) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": dict(usage),
        }
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def full_response(kind: str, rid: str, created: int, model: str, text: str, finish_reason: str, usage: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": dict(usage)}


def words_text(words: Sequence[str], start: int, end: int) -> list[str]:
    """Per-token texts: the first token bare, later ones with a leading space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words[start:end], start)]
