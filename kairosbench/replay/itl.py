"""Per-token inter-token latency from per-chunk arrivals (pure).

A streamed reply arrives as chunks; a chunk may carry several tokens (speculative decoding,
servers that coalesce, a proxy that batches writes). Tools that treat every chunk gap as one
token's latency overstate ITL by the chunk size and under-count tokens. kairosbench attributes
per token, with this method (docs/replay.md, "Inter-token latency"):

- A chunk of ``k`` tokens that arrives ``g`` after the previous chunk contributes ``k`` gaps
  of ``g / k`` each: the tokens were produced over that interval, and spreading it keeps the
  sum of gaps equal to the stream's duration.
- The ``k0 - 1`` tokens that ride with the first chunk contribute gaps of 0: they arrived with
  the first token, and counting them keeps ``len(gaps) == output_tokens - 1``.
- When the server's final usage disagrees with the counted tokens (counts were a 1-per-chunk
  assumption), every chunk's ``k`` is scaled by ``usage / counted``.

So the mean ITL equals TPOT = (t_last - t_first) / (output_tokens - 1) by construction, and
percentiles are of per-token gaps. (The alternative, "first token of a chunk gets the whole gap,
the others 0", makes p50 zero as soon as chunks carry two tokens, which says nothing useful.)
Percentiles are weighted nearest-rank: the smallest gap whose cumulative weight reaches q·W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["ITLSummary", "itl_summary", "weighted_percentile"]


@dataclass(frozen=True, slots=True)
class ITLSummary:
    """Per-token inter-token latency of one reply, in seconds."""

    itl_mean_s: float
    itl_p50_s: float
    itl_p99_s: float
    tpot_s: float


def weighted_percentile(pairs: Sequence[tuple[float, float]], q: float) -> float:
    """Nearest-rank percentile of ``(value, weight)`` pairs; ``q`` in [0, 1]."""
    if not pairs:
        raise ValueError("no values")
    ordered = sorted(pairs)
    total = sum(w for _, w in ordered)
    target = q * total
    acc = 0.0
    for value, weight in ordered:
        acc += weight
        if acc >= target - 1e-12 and weight > 0:
            return value
    return ordered[-1][0]


def itl_summary(chunk_ns: Sequence[int], chunk_tokens: Sequence[int], output_tokens: int | None = None) -> ITLSummary | None:
    """Summarise per-token gaps; None when fewer than two tokens arrived.

    ``chunk_ns``: arrival time (ns) of every token-bearing chunk; ``chunk_tokens``: tokens in
    each; ``output_tokens``: the server's count if known (reconciles the per-chunk counts).
    """
    if not chunk_ns:
        return None
    counted = sum(chunk_tokens)
    total = output_tokens if output_tokens and output_tokens > 0 else counted
    if total < 2:
        return None
    scale = total / counted if counted else 1.0
    span_s = (chunk_ns[-1] - chunk_ns[0]) / 1e9
    tpot = span_s / (total - 1)
    if counted == total == len(chunk_ns):  # one token per chunk: plain gaps, nearest rank
        gaps = sorted(b - a for a, b in zip(chunk_ns, chunk_ns[1:]))
        m = len(gaps)
        return ITLSummary(itl_mean_s=tpot, itl_p50_s=gaps[math.ceil(0.5 * m) - 1] / 1e9, itl_p99_s=gaps[math.ceil(0.99 * m) - 1] / 1e9, tpot_s=tpot)
    pairs: list[tuple[float, float]] = []
    first_companions = chunk_tokens[0] * scale - 1.0
    if first_companions > 1e-9:
        pairs.append((0.0, first_companions))
    prev = chunk_ns[0]
    for t, k in zip(chunk_ns[1:], chunk_tokens[1:]):
        w = k * scale
        pairs.append(((t - prev) / 1e9 / w, w))
        prev = t
    if not pairs:
        return None
    return ITLSummary(
        itl_mean_s=tpot,
        itl_p50_s=weighted_percentile(pairs, 0.50),
        itl_p99_s=weighted_percentile(pairs, 0.99),
        tpot_s=tpot,
    )
