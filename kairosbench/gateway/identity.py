"""Who a request belongs to and how big its prompt is, before the server says.

The headers kairosbench's load generator sends, and the per-agent prompt-size estimate the
gateway counts for admission until the server's ``usage`` arrives (docs/gateway.md).
"""

from __future__ import annotations

__all__ = ["AGENT_HEADER", "TURN_HEADER", "FINAL_HEADER", "PROMPT_TOKENS_HEADER", "CHARS_PER_TOKEN", "ContextEstimator"]

AGENT_HEADER = "X-Kairosbench-Agent"
TURN_HEADER = "X-Kairosbench-Turn"
FINAL_HEADER = "X-Kairosbench-Final"
PROMPT_TOKENS_HEADER = "X-Kairosbench-Prompt-Tokens"
CHARS_PER_TOKEN = 4.0


class ContextEstimator:
    """Per-agent prompt-size estimate before the server's usage is known (see module docstring)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # agent -> (body bytes, prompt tokens) of its last request

    def estimate(self, agent_id: str, body_len: int, header_tokens: str | None) -> int:
        if header_tokens:
            try:
                return max(0, int(header_tokens))
            except ValueError:
                pass
        last = self._last.get(agent_id)
        if last is None or last[1] <= 0:
            return int(body_len / CHARS_PER_TOKEN)
        bytes_per_token = last[0] / last[1]
        return int(last[1] + max(0, body_len - last[0]) / max(bytes_per_token, 0.5))

    def observe(self, agent_id: str, body_len: int, prompt_tokens: int | None) -> None:
        if prompt_tokens:
            self._last[agent_id] = (body_len, prompt_tokens)

    def forget(self, agent_id: str) -> None:
        self._last.pop(agent_id, None)
