"""The calibrated synthetic workload generator: vectorised numpy, deterministic given a seed.

Per session: an arrival (Poisson by default), an agent kind, a turn count (truncated
log-normal). Per turn: appended tokens (turn 0 is the system prompt plus task), output tokens,
the tool that runs after it and that tool's duration. All distributions come from
``kairosbench.workload.fit`` (fitted to real traces). Nothing is drawn in a Python loop over
turns, so 10,000 sessions (about 370,000 turns) take about a second (docs/workload-format.md).

Context window: a session's final context (last prompt plus its output) must fit the model's
window, or no endpoint could serve it. Sessions whose draws would overflow keep their turn
count (the turn distribution is the KAIROS target) and have their per-turn growth scaled down
uniformly until they fit: long agents append less per turn, which is what a 1000-turn agent
inside a 128k window must do. ``GenerationResult.compressed_sessions`` says how many.

Determinism: each quantity draws from its own stream, ``default_rng([seed, crc32(label)])``, so
the same spec always gives the same rows, and changing e.g. the arrival process leaves the
turn counts unchanged. Metadata holds no wall-clock time, so the same spec gives the same
file bytes (for a given pyarrow and numpy).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from kairosbench import __version__
from kairosbench.errors import UsageError
from kairosbench.workload.fit import PARAMS, AgentParams
from kairosbench.workload.schema import ARROW_SCHEMA, SCHEMA_VERSION

__all__ = [
    "KINDS",
    "ARRIVALS",
    "GenerateSpec",
    "GenerationResult",
    "generate",
    "poisson",
    "constant",
    "gamma",
    "MAX_TOOL_DURATION_S",
    "TRACE_SOURCES",
]

KINDS = ("swe", "de", "mixed")
# Agent harnesses kill a command that runs too long (OpenHands' default sandbox timeout is
# 120 s), so no generated tool call runs longer; the log-normal tail would otherwise produce
# a handful of 10-minute calls per 10,000 sessions.
MAX_TOOL_DURATION_S = 120.0
TRACE_SOURCES = (
    "OpenHands multi_swe_bench example output (All-Hands-AI/OpenHands @156d068): token_usages, event timestamps",
    "SWE-agent trajectories (SWE-agent/SWE-agent @3ea751c): histories, execution_time",
    "mini-swe-agent test trajectories (SWE-agent/mini-swe-agent @a83fcae): message histories",
    "Spider 2.0 spider-agent-tc rollout sf_bq024 (xlang-ai/Spider2 @e12c5f1): conversation",
    "KAIROS arXiv 2604.16682 via ANCHORS.md §1.2: turns mean 37, range 1-2518, Poisson 0.03-0.16 agents/s",
    "Continuum arXiv 2511.02230 via ANCHORS.md §2: mini-swe-agent tool time 925 ± 3550 ms",
)

_KIND_VOCAB = ("swe", "de")

Arrivals = Callable[[np.random.Generator, int], np.ndarray]


# ---------------------------------------------------------------------------- arrivals
# Small closures in the style of Locust's wait_time: each returns n sorted arrival times (s),
# the first at 0 s so a run starts working at once.


def poisson(rate_per_s: float) -> Arrivals:
    """A Poisson process at ``rate_per_s`` conditioned on its count (KAIROS: 0.03-0.16 agents/s).

    Given that n-1 arrivals fall in (0, T], a Poisson process places them independently and
    uniformly; with T = (n-1)/rate the workload spans exactly its nominal duration, so a
    300-session file is an hour at 0.08/s and not, by chance, 52 minutes.
    """
    def arrivals(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.concatenate([[0.0], np.sort(rng.uniform(0.0, (n - 1) / rate_per_s, n - 1))])
    return arrivals


def constant(rate_per_s: float) -> Arrivals:
    """Evenly spaced arrivals, ``1/rate_per_s`` apart: no burstiness at all."""
    return lambda rng, n: np.arange(n) / rate_per_s


def gamma(rate_per_s: float, cv: float = 2.0) -> Arrivals:
    """A renewal process with gamma gaps of coefficient of variation ``cv`` (>1: bursty)."""
    shape = 1.0 / cv**2
    return lambda rng, n: np.concatenate([[0.0], np.cumsum(rng.gamma(shape, 1.0 / (rate_per_s * shape), n - 1))])


ARRIVALS: dict[str, Callable[..., Arrivals]] = {"poisson": poisson, "constant": constant, "gamma": gamma}


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate. ``None`` fields take the fitted defaults of each agent kind."""

    kind: str = "swe"  # swe | de | mixed
    sessions: int = 100
    rate_per_s: float = 0.08  # session arrival rate, sessions/s (KAIROS characterisation: 0.08)
    seed: int = 0
    arrival: str = "poisson"  # poisson | constant | gamma
    arrival_cv: float = 2.0  # gamma only: coefficient of variation of the gaps
    swe_fraction: float = 0.5  # mixed only: share of swe sessions, the rest de
    min_turns: int = 1
    max_turns: int | None = None  # default: the kind's max_turns (KAIROS: 2518)
    context_window_tokens: int | None = None  # default: the kind's context_window_tokens
    name: str = ""

    def check(self) -> None:
        """Reject impossible specs with the flag to fix (UsageError, exit 2)."""
        if self.kind not in KINDS:
            raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.sessions < 1:
            raise UsageError(f"--sessions must be at least 1, got {self.sessions}")
        if not self.rate_per_s > 0:
            raise UsageError(f"--rate must be > 0 sessions/s, got {self.rate_per_s}")
        if self.arrival not in ARRIVALS:
            raise UsageError(f"--arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}")
        if self.arrival == "gamma" and not self.arrival_cv > 0:
            raise UsageError(f"--arrival-cv must be > 0, got {self.arrival_cv}")
        if not 0.0 <= self.swe_fraction <= 1.0:
            raise UsageError(f"--swe-fraction must be within [0, 1], got {self.swe_fraction}")
        if self.min_turns < 1 or (self.max_turns is not None and self.max_turns < self.min_turns):
            raise UsageError(f"--min-turns/--max-turns must satisfy 1 <= min <= max, got {self.min_turns}/{self.max_turns}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        for p in PARAMS.values():
            window, max_t = self.window(p), self.turn_cap(p)
            if window < 8 * max_t or window < 1024:
                raise UsageError(f"--context-window {window} is too small for {max_t} turns "
                                 f"(needs at least 8 tokens per turn and 1024 in all)")

    def window(self, p: AgentParams) -> int:
        return self.context_window_tokens or p.context_window_tokens

    def turn_cap(self, p: AgentParams) -> int:
        return self.max_turns or p.max_turns

    def command(self) -> str:
        """The canonical command line that regenerates this spec (output path left out)."""
        parts = [f"kairosbench workload generate --kind {self.kind} --sessions {self.sessions}",
                 f"--rate {self.rate_per_s:g} --seed {self.seed} --arrival {self.arrival}"]
        if self.arrival == "gamma":
            parts.append(f"--arrival-cv {self.arrival_cv:g}")
        if self.kind == "mixed":
            parts.append(f"--swe-fraction {self.swe_fraction:g}")
        if self.min_turns != 1:
            parts.append(f"--min-turns {self.min_turns}")
        if self.max_turns is not None:
            parts.append(f"--max-turns {self.max_turns}")
        if self.context_window_tokens is not None:
            parts.append(f"--context-window {self.context_window_tokens}")
        if self.name:
            parts.append(f"--name {self.name}")
        return " ".join(parts)


@dataclass
class GenerationResult:
    """The generated rows (an Arrow table in the workload schema) and their provenance."""

    table: pa.Table
    meta: dict[str, Any]
    compressed_sessions: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def _rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def generate(spec: GenerateSpec, params: dict[str, AgentParams] | None = None) -> GenerationResult:
    """Draw a whole workload for ``spec``; returns the table and its metadata."""
    spec.check()
    params = dict(PARAMS if params is None else params)
    n = spec.sessions
    process = ARRIVALS[spec.arrival](*((spec.rate_per_s, spec.arrival_cv) if spec.arrival == "gamma" else (spec.rate_per_s,)))
    arrival = process(_rng(spec.seed, "arrival"), n)
    if spec.kind == "mixed":
        is_swe = _rng(spec.seed, "kind").random(n) < spec.swe_fraction
        kind_of = np.where(is_swe, "swe", "de")
    else:
        kind_of = np.full(n, spec.kind)

    tool_vocab = tuple(dict.fromkeys(t for p in params.values() for t in [*p.tool_mix, *([p.final_tool] if p.final_tool else [])]))
    parts: list[dict[str, np.ndarray]] = []
    compressed = 0
    for kind in ("swe", "de"):
        idx = np.flatnonzero(kind_of == kind)
        if idx.size:
            rows, c = _draw_kind(spec, params[kind], idx, arrival[idx], tool_vocab)
            parts.append(rows)
            compressed += c
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["turn_index"], cols["session"]))  # sessions in arrival order
    cols = {k: v[order] for k, v in cols.items()}
    table = _to_table(cols, kind_of, tool_vocab)
    kinds = {k: int((kind_of == k).sum()) for k in ("swe", "de") if (kind_of == k).any()}
    meta = {
        "name": spec.name,
        "generator": "kairosbench.workload.generate",
        "kairosbench_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "seed": spec.seed,
        "command": spec.command(),
        "spec": asdict(spec),
        "fitted_parameters": {k: params[k].to_json() for k in kinds},
        "max_tool_duration_s": MAX_TOOL_DURATION_S,
        "sources": list(TRACE_SOURCES),
        "sessions_compressed_to_window": compressed,
    }
    return GenerationResult(table=table, meta=meta, compressed_sessions=compressed, kinds=kinds)


def _draw_kind(spec: GenerateSpec, p: AgentParams, session_idx: np.ndarray, arrival: np.ndarray,
               tool_vocab: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
    """All rows of the sessions of one agent kind, plus how many were compressed to the window."""
    seed, k = spec.seed, p.kind
    n = session_idx.size
    window, turn_cap = spec.window(p), spec.turn_cap(p)
    turns = np.rint(p.turns.sample_between(_rng(seed, f"{k}/turns"), n, spec.min_turns - 0.5, turn_cap + 0.5,
                                           stratified=True)).astype(np.int64)
    turns = np.clip(turns, spec.min_turns, turn_cap)
    total = int(turns.sum())
    starts = np.concatenate([[0], np.cumsum(turns)[:-1]])
    sess = np.repeat(np.arange(n), turns)
    turn_index = np.arange(total) - starts[sess]
    first = turn_index == 0
    last = turn_index == turns[sess] - 1

    appended = p.appended_tokens.sample(_rng(seed, f"{k}/appended"), total)
    appended[first] = p.first_turn_tokens.sample(_rng(seed, f"{k}/first"), n)
    appended = np.clip(np.rint(appended), 1, window // 4).astype(np.int64)
    output = np.clip(np.rint(p.output_tokens.sample(_rng(seed, f"{k}/output"), total)), 1, window // 8).astype(np.int64)

    # Fit every session's final context (turn-0 tokens + later appended + all outputs) into
    # the window: scale the later appended tokens (harnesses truncate observations) and only
    # if outputs alone overflow, the outputs too. The "- turns" reserves pay for the floors at 1.
    later = np.where(first, 0, appended)
    app_total = np.bincount(sess, weights=later, minlength=n)
    out_total = np.bincount(sess, weights=output, minlength=n)
    first_tokens = appended[starts]
    over = first_tokens + app_total + out_total > window
    room = window - first_tokens - out_total - (turns - 1)
    app_scale = np.where(over, np.clip(room / np.maximum(app_total, 1), 0.0, 1.0), 1.0)
    out_scale = np.where(over & (room < 0), (window - first_tokens - 2 * turns + 1) / np.maximum(out_total, 1), 1.0)
    appended = np.where(first, appended, np.maximum(1, np.floor(later * app_scale[sess]))).astype(np.int64)
    output = np.maximum(1, np.floor(output * np.minimum(out_scale, 1.0)[sess])).astype(np.int64)

    prev_output = np.concatenate([[0], output[:-1]])
    step = appended + np.where(first, 0, prev_output)
    csum = np.cumsum(step)
    prompt = csum - (csum[starts] - step[starts])[sess]

    tools = list(p.tool_mix)
    probs = np.array([p.tool_mix[t] for t in tools], dtype=np.float64)
    tool_idx = _rng(seed, f"{k}/tool").choice(len(tools), size=total, p=probs / probs.sum())
    # Tool names as codes into tool_vocab (-1: no tool), so the table is built without
    # per-row Python strings.
    vocab = np.array([tool_vocab.index(t) for t in tools], dtype=np.int16)
    tool_code = vocab[tool_idx]
    duration = np.zeros(total)
    for j, t in enumerate(tools):
        picked = np.flatnonzero((tool_idx == j) & ~last)
        duration[picked] = p.tool_duration_s[t].sample(_rng(seed, f"{k}/duration/{t}"), picked.size)
    tool_code[last] = -1 if p.final_tool is None else tool_vocab.index(p.final_tool)
    last_rows = np.flatnonzero(last)
    if p.final_tool is not None:
        duration[last_rows] = p.tool_duration_s[p.final_tool].sample(_rng(seed, f"{k}/duration/{p.final_tool}"), last_rows.size)
    else:
        duration[last_rows] = 0.0
    duration = np.round(np.minimum(duration, MAX_TOOL_DURATION_S), 6).astype(np.float64)

    columns: dict[str, np.ndarray] = {
        "session": session_idx[sess],
        "kind": np.full(total, _KIND_VOCAB.index(k), dtype=np.int8),
        "arrival_s": np.round(arrival[sess], 6),
        "turn_index": turn_index,
        "prompt_tokens": prompt,
        "appended_tokens": appended,
        "output_tokens": output,
        "tool_code": tool_code,
        "tool_duration_s": duration,
    }
    return columns, int(over.sum())


def _to_table(c: dict[str, np.ndarray], kind_of: np.ndarray, tool_vocab: tuple[str, ...]) -> pa.Table:
    """Columns → Arrow: strings as dictionary arrays over tiny vocabularies, decoded in C++."""
    total = c["session"].size
    session_ids = pa.array([f"{k}-{i:06d}" for i, k in enumerate(kind_of.tolist())], pa.string())
    tool_code = c["tool_code"].astype(np.int32)

    def decoded(indices: np.ndarray, vocab: list[str], mask: np.ndarray | None = None) -> pa.Array:
        arr = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32(), mask=mask), pa.array(vocab, pa.string()))
        return arr.cast(pa.string())

    nulls = pa.nulls(total, pa.string())
    columns = {
        "session_id": session_ids.take(pa.array(c["session"], pa.int64())),
        "agent_kind": decoded(c["kind"].astype(np.int32), list(_KIND_VOCAB)),
        "arrival_s": pa.array(c["arrival_s"], pa.float64()),
        "source": decoded(c["kind"].astype(np.int32), [f"generated:{k}" for k in _KIND_VOCAB]),
        "turn_index": pa.array(c["turn_index"].astype(np.int32), pa.int32()),
        "prompt_tokens": pa.array(c["prompt_tokens"], pa.int64()),
        "appended_tokens": pa.array(c["appended_tokens"], pa.int64()),
        "output_tokens": pa.array(c["output_tokens"], pa.int64()),
        "tool_name": decoded(np.maximum(tool_code, 0), list(tool_vocab), mask=tool_code < 0),
        "tool_duration_s": pa.array(c["tool_duration_s"], pa.float64()),
        "text": nulls,
        "output_text": nulls,
        "prefix_hashes": pa.nulls(total, pa.list_(pa.int64())),
        "token_count_method": decoded(np.zeros(total, np.int32), ["generated"]),
    }
    return pa.table(columns, schema=ARROW_SCHEMA)
