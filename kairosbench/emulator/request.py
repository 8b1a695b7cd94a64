"""A request as the engine model sees it: lengths, block hashes and progress counters.

The engine never sees text. A request carries its prompt length, exactly how many tokens it
will generate (the server decides EOS before submitting; ``max_tokens`` here is that number),
and the chained hashes of every *full* block of its token stream (prompt followed by the
planned output). Hashes of output blocks are known up front because output text is
deterministic, so when the next turn of an agent resends "previous prompt + reply + new
message", its leading blocks hash the same and hit the prefix cache.

``block_hashes`` only needs ``__getitem__`` and ``__len__`` and is never copied: the
simulator passes one growing per-session list to every turn of that session, so a 100k-token
context costs nothing per request.

State transitions (``RequestState``)::

    WAITING --schedule--> RUNNING --all tokens--> FINISHED
       ^                    |
       +----- preempt ------+           any state --abort--> ABORTED
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Sequence

__all__ = ["EngineRequest", "RequestState"]


class RequestState(IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2
    ABORTED = 3


class EngineRequest:
    """One generation request and its progress. Times are seconds on the engine's clock."""

    __slots__ = (
        "request_id",
        "prompt_len",
        "max_tokens",
        "block_hashes",
        "stream_key",
        "payload",
        "state",
        "arrival_s",
        "first_scheduled_s",
        "first_token_s",
        "last_token_s",
        "finish_s",
        "num_computed",
        "num_output",
        "blocks",
        "num_hashed_blocks",
        "max_computed",
        "preemptions",
        "cached_tokens",
        "recomputed_tokens",
        "abort_requested",
        "finish_reason",
        "in_flight",
        "hint_blocks",
    )

    def __init__(
        self,
        request_id: Any,
        prompt_len: int,
        max_tokens: int,
        block_hashes: Sequence[int] = (),
        *,
        stream_key: Any = None,
        payload: Any = None,
    ) -> None:
        if prompt_len < 1:
            raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.request_id = request_id
        self.prompt_len = prompt_len
        self.max_tokens = max_tokens
        self.block_hashes = block_hashes
        self.stream_key = stream_key  # agent/session id: lets the engine count evicted-context re-prefill
        self.payload = payload  # the driver's own handle (a stream, an agent); the engine ignores it
        self.state = RequestState.WAITING
        self.arrival_s = 0.0
        self.first_scheduled_s: float | None = None
        self.first_token_s: float | None = None
        self.last_token_s: float | None = None
        self.finish_s: float | None = None
        self.num_computed = 0  # tokens whose KV is in the cache
        self.num_output = 0  # tokens generated so far
        self.blocks: list[int] = []
        self.num_hashed_blocks = 0  # leading blocks registered in the prefix cache
        self.max_computed = 0  # progress lost to the latest preemption (for recompute accounting)
        self.preemptions = 0
        self.cached_tokens = 0  # prefix-cache hit at first admission (usage.prompt_tokens_details)
        self.recomputed_tokens = 0
        self.abort_requested = False
        self.finish_reason: str | None = None  # "length" | "stop" | "abort" | "capacity"
        self.in_flight = False
        self.hint_blocks: list[int] | None = None  # blocks it held before a preemption (lookup hint)

    @property
    def num_tokens(self) -> int:
        """Tokens known so far: prompt plus generated."""
        return self.prompt_len + self.num_output

    @property
    def done(self) -> bool:
        return self.state >= RequestState.FINISHED

    def __repr__(self) -> str:
        return (
            f"EngineRequest({self.request_id!r}, prompt={self.prompt_len}, out={self.num_output}/{self.max_tokens}, "
            f"computed={self.num_computed}, state={self.state.name})"
        )
