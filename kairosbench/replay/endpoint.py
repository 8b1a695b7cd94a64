"""One OpenAI-compatible endpoint: its URL, model, and what it accepts (learnt at run time).

Output length is held to the trace with ``max_tokens`` plus, where accepted, vLLM's
``ignore_eos`` and ``min_tokens``. The levels, strongest first:

    ignore_eos   sends max_tokens + ignore_eos=true (generation runs to max_tokens)
    min_tokens   sends max_tokens + min_tokens=max_tokens (for servers without ignore_eos)
    none         sends max_tokens only (the model may stop early at EOS)

With ``eos_control="auto"`` an endpoint starts at ``ignore_eos``; a 400/422 whose message names
``ignore_eos`` or ``min_tokens`` drops that parameter for this endpoint (and ``stream_options``
likewise), the request is resent at once (not a retry: nothing reached the model), and the
downgrade with the server's message goes into the run manifest and every later request's
``eos_control`` column.

The request body is assembled from bytes: a per-request head (model, stream, max_tokens, eos
parameters, user, extra body) and the session's messages array body, so no request is ever
JSON-encoded as a whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Endpoint", "EOS_LEVELS", "rejected_parameter", "normalize_base_url"]

EOS_LEVELS = ("ignore_eos", "min_tokens", "none")
_MANAGED_KEYS = {"model", "messages", "stream", "max_tokens", "ignore_eos", "min_tokens", "user", "stream_options"}


def normalize_base_url(url: str) -> str:
    """``http://h:8000/v1/`` and ``http://h:8000`` both become ``http://h:8000``."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def rejected_parameter(status: int, body: str) -> str | None:
    """The request parameter a 400/422 complains about, if it is one we can drop."""
    if status not in (400, 422):
        return None
    text = body.lower()
    for name in ("ignore_eos", "min_tokens", "stream_options"):
        if name in text:
            return name
    return None


@dataclass
class Endpoint:
    """A base URL like ``http://127.0.0.1:8000`` (``/v1/chat/completions`` is appended)."""

    base_url: str
    model: str
    eos_control: str = "ignore_eos"  # current level, see EOS_LEVELS
    stream_usage: bool = True  # send stream_options.include_usage
    extra_body: dict[str, Any] = field(default_factory=dict)
    downgrades: list[dict[str, Any]] = field(default_factory=list)
    auto_eos: bool = True  # may downgrade on rejection

    def __post_init__(self) -> None:
        self.base_url = normalize_base_url(self.base_url)
        self.chat_url = f"{self.base_url}/v1/chat/completions"
        self._model_json = json.dumps(self.model).encode()
        extra = {k: v for k, v in self.extra_body.items() if k not in _MANAGED_KEYS}
        self._extra = b"".join(b"," + json.dumps(k).encode() + b":" + json.dumps(v, separators=(",", ":")).encode() for k, v in extra.items())
        user_options = self.extra_body.get("stream_options")
        # e.g. {"continuous_usage_stats": true} (vLLM: usage on every chunk, exact tokens per chunk)
        self._stream_options = {"include_usage": True, **(user_options if isinstance(user_options, dict) else {})}
        self._rebuild()

    def _rebuild(self) -> None:
        head = b'{"model":' + self._model_json + b',"stream":true'
        if self.stream_usage:
            head += b',"stream_options":' + json.dumps(self._stream_options, separators=(",", ":")).encode()
        self._head = head + self._extra + b',"max_tokens":'

    def body(self, messages: bytes | memoryview, max_tokens: int, user_json: bytes) -> bytes:
        """The request body: ``user_json`` is the JSON-encoded session id (with quotes)."""
        n = str(max_tokens).encode()
        if self.eos_control == "ignore_eos":
            eos = b',"ignore_eos":true'
        elif self.eos_control == "min_tokens":
            eos = b',"min_tokens":' + n
        else:
            eos = b""
        return b"".join((self._head, n, eos, b',"user":', user_json, b',"messages":[', messages, b"]}"))

    def downgrade(self, parameter: str, message: str, t_ns: int) -> bool:
        """Stop sending ``parameter``; False when there is nothing left to drop for it."""
        before = self.eos_control if parameter != "stream_options" else "stream_options"
        if parameter == "stream_options":
            if not self.stream_usage:
                return False
            self.stream_usage = False
        elif not self.auto_eos:
            return False
        elif parameter == "ignore_eos" and self.eos_control == "ignore_eos":
            self.eos_control = "min_tokens"
        elif parameter == "min_tokens" and self.eos_control == "min_tokens":
            self.eos_control = "none"
        else:
            return False
        self.downgrades.append(
            {"parameter": parameter, "from": before, "to": self.eos_control if parameter != "stream_options" else "no stream_options", "t_ns": t_ns, "server_message": message[:300]}
        )
        self._rebuild()
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "eos_control": self.eos_control,
            "stream_usage": self.stream_usage,
            "downgrades": list(self.downgrades),
        }
