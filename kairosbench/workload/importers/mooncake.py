"""Mooncake-style request traces: sessions recovered from the prefix-block hash chain.

Each JSONL line is one request: ``timestamp`` (ms from trace start), ``input_length`` and
``output_length`` (tokens) and ``hash_ids``, the ids of the prompt's 512-token blocks, where
an id stands for the whole prefix up to and including its block. The FAST'25 conversation,
tool-agent and arxiv traces all use this schema. No session ids are recorded.

Recovery (``recover_chains``): request ``j`` continues an earlier request ``i`` when ``i``'s
*full* blocks (``input_length // 512`` of them, at least ``MIN_SHARED_BLOCKS`` = 2) are a
prefix of ``j``'s blocks and ``j``'s prompt is longer than ``i``'s (an equally long prompt
over the same blocks is the same prompt sent again: a retry or a regenerated answer, which
starts a session of its own). A turn re-sends the
previous prompt and reply, so its first blocks repeat the previous request's full blocks;
the previous request's last, partial block differs because the new turn fills it further.
Block 0 is the system prompt every request shares, so a single shared block never links
two requests; that is why at least 2 are required. Among several candidates the longest
shared prefix wins; at equal length, a request not yet continued beats one that was, and
the latest arrival beats earlier ones (a retried or regenerated request is continued by
what follows it). If every candidate was already continued, the request is a fork (an
edited or regenerated turn); a session is a single chain, so it starts a new session.

Turns: ``prompt_tokens`` is the recorded ``input_length``; ``appended_tokens`` is
``input_length - (previous input_length + previous output_length)``, clamped at 0 when the
provider re-tokenised the previous reply shorter (counted as ``appended_tokens_clamped_to_0``).
``tool_duration_s`` is the gap between this request's arrival and the next turn's, in
seconds: it includes this request's own service time, which the trace does not record.
``prefix_hashes`` keeps each request's ``hash_ids``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairosbench.workload.importers._source import Where, as_int, as_float, as_list, get, iter_jsonl
from kairosbench.workload.importers._turns import ImportLog
from kairosbench.workload.model import Session, Turn
from kairosbench.workload.tokencount import TokenCounter

__all__ = ["BLOCK_TOKENS", "MIN_SHARED_BLOCKS", "Request", "ChainResult", "recover_chains", "read", "read_requests"]

BLOCK_TOKENS = 512
MIN_SHARED_BLOCKS = 2


@dataclass(frozen=True, slots=True)
class Request:
    """One trace line."""

    line: int
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]

    @property
    def full_blocks(self) -> int:
        return self.input_length // BLOCK_TOKENS


@dataclass(slots=True)
class ChainResult:
    """Sessions as lists of request indices (arrival order), and how they were found."""

    chains: list[list[int]]
    linked: int = 0  # requests attached to an earlier one
    ties: int = 0  # requests with several equally long candidates
    forks: int = 0  # requests whose candidates were all continued already: new session
    parent: list[int | None] = field(default_factory=list)


def recover_chains(requests: Sequence[Request], *, min_shared_blocks: int = MIN_SHARED_BLOCKS) -> ChainResult:
    """Group requests (in arrival order) into sessions by the rules in the module docstring."""
    # last full block id -> requests whose full blocks end there (an id names its whole prefix)
    by_last_block: dict[int, list[int]] = {}
    continued = [False] * len(requests)
    parent: list[int | None] = [None] * len(requests)
    result = ChainResult(chains=[])
    for j, req in enumerate(requests):
        hashes = req.hash_ids
        for p in range(len(hashes) - 1, min_shared_blocks - 2, -1):
            candidates = [
                i
                for i in by_last_block.get(hashes[p], ())
                if requests[i].full_blocks == p + 1
                and requests[i].input_length < req.input_length
                and requests[i].hash_ids[: p + 1] == hashes[: p + 1]
            ]
            if not candidates:
                continue
            if len(candidates) > 1:
                result.ties += 1
            open_ones = [i for i in candidates if not continued[i]]
            if open_ones:
                chosen = max(open_ones)
                parent[j] = chosen
                continued[chosen] = True
                result.linked += 1
            else:
                result.forks += 1
            break
        if req.full_blocks >= min_shared_blocks:
            by_last_block.setdefault(hashes[req.full_blocks - 1], []).append(j)
    session_of: list[int] = [0] * len(requests)
    for j, p in enumerate(parent):
        if p is None:
            session_of[j] = len(result.chains)
            result.chains.append([j])
        else:
            session_of[j] = session_of[p]
            result.chains[session_of[j]].append(j)
    result.parent = parent
    return result


def _request(obj: Any, where: Where) -> Request:
    ts, ts_where = get(obj, "timestamp", where)
    inp, inp_where = get(obj, "input_length", where)
    out, out_where = get(obj, "output_length", where)
    ids, ids_where = get(obj, "hash_ids", where)
    input_length = as_int(inp, inp_where)
    hash_ids = tuple(as_int(h, ids_where.at(k), minimum=None) for k, h in enumerate(as_list(ids, ids_where)))
    expected = math.ceil(input_length / BLOCK_TOKENS)
    if len(hash_ids) != expected:
        raise ids_where.error(
            f"has {len(hash_ids)} block ids, but input_length {input_length} needs ceil({input_length}/"
            f"{BLOCK_TOKENS}) = {expected}"
        )
    return Request(
        line=where.line or 0,
        timestamp_ms=as_float(ts, ts_where, minimum=0.0),
        input_length=input_length,
        output_length=as_int(out, out_where),
        hash_ids=hash_ids,
    )


def read_requests(path: Path) -> list[Request]:
    """Every request of one trace file; timestamps must not decrease."""
    requests: list[Request] = []
    for where, obj in iter_jsonl(path):
        req = _request(obj, where)
        if requests and req.timestamp_ms < requests[-1].timestamp_ms:
            raise where.at("timestamp").error(
                f"out of order: {req.timestamp_ms:g} ms is before the previous request's "
                f"{requests[-1].timestamp_ms:g} ms (line {requests[-1].line}); sort the trace by timestamp"
            )
        requests.append(req)
    return requests


def _agent_kind(path: Path) -> str:
    """The FAST'25 files say what they hold in their names; anything else is chat."""
    name = path.name.lower()
    return "tool" if "toolagent" in name else "chat"


def _sessions(path: Path, requests: Sequence[Request], chains: ChainResult, log: ImportLog) -> list[Session]:
    kind = _agent_kind(path)
    sessions = []
    for chain in chains.chains:
        turns = []
        for t, j in enumerate(chain):
            req = requests[j]
            if t == 0:
                appended = req.input_length
            else:
                prev = requests[chain[t - 1]]
                appended = req.input_length - prev.input_length - prev.output_length
                if appended < 0:
                    log.add("appended_tokens_clamped_to_0")
                    log.add("appended_tokens_clamped_sum_tokens", -appended)
                    appended = 0
            gap_s = (requests[chain[t + 1]].timestamp_ms - req.timestamp_ms) / 1000.0 if t + 1 < len(chain) else 0.0
            turns.append(
                Turn(
                    appended_tokens=appended,
                    output_tokens=req.output_length,
                    tool_duration_s=gap_s,
                    prompt_tokens=req.input_length,
                    prefix_hashes=list(req.hash_ids),
                    token_count_method="usage",
                )
            )
        first = requests[chain[0]]
        sessions.append(
            Session(
                session_id=f"{path.stem}:{first.line}",
                agent_kind=kind,
                arrival_s=first.timestamp_ms / 1000.0,
                turns=turns,
                source=f"mooncake:{path.name}",
            )
        )
    return sessions


def read(paths: Sequence[Path], counter: TokenCounter, log: ImportLog) -> list[Session]:
    """Sessions of every trace file (recovered per file: each file is its own trace)."""
    del counter  # recorded lengths only
    sessions: list[Session] = []
    for path in paths:
        requests = read_requests(path)
        chains = recover_chains(requests)
        log.add("requests", len(requests))
        log.add("requests_linked_to_an_earlier_turn", chains.linked)
        log.add("requests_with_tied_candidates", chains.ties)
        log.add("forks_started_a_new_session", chains.forks)
        sessions.extend(_sessions(path, requests, chains, log))
    return sessions
