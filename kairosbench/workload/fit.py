"""Generator parameters per agent kind, fitted to real traces, and the code that fits them.

Every distribution is a log-normal (``median``, ``sigma`` of the log): token counts and tool
times in agent traces are positive, right-skewed and span decades, and two parameters are all
the thin traces can support. Fits match the samples' median and mean (``fit_lognormal``). Where the traces are too
thin to see a tail (one data-engineering session; tool times from toy tasks) an anchor from the
literature fills the gap, and the field's ``sources`` entry says so.

The constants ``SWE`` and ``DE`` below are what :func:`fit_from_workloads` returns on the traces
in ../shared/traces (imported with ``kairosbench workload import``), rounded; the test suite
re-derives them and fails if the code and the traces drift apart. ``workloads/README.md`` shows
the same numbers, and every generated file carries them in its metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kairosbench.errors import UsageError
from kairosbench.workload.model import Workload

__all__ = [
    "LogNormal",
    "AgentParams",
    "SWE",
    "DE",
    "PARAMS",
    "KAIROS_MEAN_TURNS",
    "KAIROS_MAX_TURNS",
    "canonical_tool",
    "fit_lognormal",
    "lognormal_mle",
    "sigma_for_mean",
    "truncated_mean",
    "TraceSamples",
    "collect_samples",
    "fit_from_workloads",
    "FIT_CORPUS",
    "import_fit_corpus",
    "compare",
]

_STD_NORMAL = NormalDist()

# KAIROS §3 characterisation (ANCHORS.md §1.2, second-hand): turns per agent mean 37, range 1-2518.
KAIROS_MEAN_TURNS = 37.0
KAIROS_MAX_TURNS = 2518
# Continuum (arXiv 2511.02230, ANCHORS.md §2): mini-swe-agent SWE-bench tool time 925 ± 3550 ms.
# As a log-normal: sigma = sqrt(ln(1 + (3.55/0.925)^2)) = 1.66, median 0.233 s.
CONTINUUM_TOOL_S = (0.925, 3.55)


@dataclass(frozen=True)
class LogNormal:
    """exp(N(ln median, sigma^2)). ``median`` in the unit of the field it describes."""

    median: float
    sigma: float

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    def quantile(self, q: float) -> float:
        return self.median * math.exp(self.sigma * _STD_NORMAL.inv_cdf(q))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.median * np.exp(self.sigma * rng.standard_normal(size))

    def sample_between(self, rng: np.random.Generator, size: int, lo: float, hi: float, *,
                       stratified: bool = False) -> np.ndarray:
        """Inverse-CDF draws truncated to [lo, hi]: exact for any range, however unlikely.

        ``stratified``: one draw from each of ``size`` equal-probability slices, in random
        order, so that even a small sample spans the distribution (its mean then sits close
        to the target instead of swinging with how many tail draws happened to land).
        """
        c_lo, c_hi = self._cdf(lo), self._cdf(hi)
        if c_hi - c_lo <= 1e-12:
            raise UsageError(f"the range [{lo:g}, {hi:g}] has no probability under median {self.median:g}, sigma {self.sigma:g}")
        if stratified:
            u01 = (rng.permutation(size) + rng.random(size)) / size
        else:
            u01 = rng.random(size)
        u = c_lo + (c_hi - c_lo) * u01
        z = np.fromiter((_STD_NORMAL.inv_cdf(min(max(x, 1e-15), 1 - 1e-15)) for x in u), dtype=np.float64, count=size)
        return np.clip(self.median * np.exp(self.sigma * z), lo, hi)

    def _cdf(self, x: float) -> float:
        if x <= 0:
            return 0.0
        if self.sigma == 0:
            return 1.0 if x >= self.median else 0.0
        return _STD_NORMAL.cdf(math.log(x / self.median) / self.sigma)


@dataclass(frozen=True)
class AgentParams:
    """Everything the generator draws for one agent kind. Sources per field in ``sources``."""

    kind: str
    turns: LogNormal  # turns per session, before truncation to [1, max_turns]
    max_turns: int
    first_turn_tokens: LogNormal  # appended tokens of turn 0: system prompt + task
    appended_tokens: LogNormal  # appended tokens of turns >= 1: tool observation + harness text
    output_tokens: LogNormal  # generated tokens per turn
    tool_mix: Mapping[str, float]  # which tool follows a non-final turn (probabilities sum to 1)
    tool_duration_s: Mapping[str, LogNormal]  # per tool kind, seconds
    final_tool: str | None  # tool after the last turn (swe: submit), None: the session just ends
    context_window_tokens: int  # final context (last prompt + its output) never exceeds this
    sources: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for file metadata and docs (medians, sigmas and the mean they imply)."""
        d = asdict(self)
        for key in ("turns", "first_turn_tokens", "appended_tokens", "output_tokens"):
            d[key]["mean"] = round(getattr(self, key).mean, 4)
        return d


# ---------------------------------------------------------------------------------------------
# Fitted constants. Regenerate with `kairosbench workload fit` (docs/workload-format.md).

_SWE_TRACES = "OpenHands multi_swe_bench + resolver, SWE-agent trajectories, mini-swe-agent (FIT_CORPUS)"

SWE = AgentParams(
    kind="swe",
    # median: of the 23 swe sessions of FIT_CORPUS; sigma: solved so that the mean, truncated
    # to [1, 2518], is KAIROS's 37 (the traces are too few to show the tail).
    turns=LogNormal(median=11.0, sigma=1.560),
    max_turns=KAIROS_MAX_TURNS,  # KAIROS: turns per agent range 1-2518
    # turn-0 prompt: OpenHands usage (2 sessions) + estimates from the other 21 histories.
    first_turn_tokens=LogNormal(median=2062.0, sigma=0.786),
    # prompt[t] - prompt[t-1] - output[t-1] (OpenHands usage) + estimated message sizes.
    appended_tokens=LogNormal(median=129.0, sigma=1.662),
    # OpenHands completion_tokens + estimated assistant messages.
    output_tokens=LogNormal(median=89.5, sigma=0.877),
    # tool kinds over non-final turns (aliases in _TOOL_ALIASES), add-one smoothed.
    tool_mix={"bash": 0.5696, "edit": 0.3165, "view": 0.0633, "search": 0.0506},
    tool_duration_s={
        # median: 36 timed calls (OpenHands execute_bash, SWE-agent execution_time); sigma
        # widened to Continuum's 1.66 because the toy tasks never run a real test suite.
        "bash": LogNormal(0.455, 1.660),
        "edit": LogNormal(0.00520, 2.518),  # 36 timed calls: OpenHands str_replace_editor, SWE-agent edit/create
        "view": LogNormal(0.189, 0.377),  # 4 timed SWE-agent open calls
        "search": LogNormal(0.194, 0.362),  # 3 timed SWE-agent find_file calls
        "submit": LogNormal(0.193, 0.341),  # 3 timed SWE-agent submit calls
    },
    final_tool="submit",
    # a common served max_model_len; Qwen3-Coder-30B-A3B (KAIROS's model) supports 262,144.
    context_window_tokens=131_072,
    sources={
        "turns": f"median: {_SWE_TRACES}; sigma: KAIROS mean 37 (arXiv 2604.16682 §3, second-hand)",
        "max_turns": "KAIROS: turns per agent 1-2518 (arXiv 2604.16682 §3, second-hand)",
        "first_turn_tokens": f"{_SWE_TRACES}: turn-0 appended tokens (usage where recorded, else estimate)",
        "appended_tokens": f"{_SWE_TRACES}: appended tokens of turns >= 1",
        "output_tokens": f"{_SWE_TRACES}: output tokens per turn",
        "tool_mix": f"{_SWE_TRACES}: tool kinds of non-final turns, add-one smoothed",
        "tool_duration_s": "OpenHands observation-action gaps, SWE-agent execution_time; bash sigma: "
                           "Continuum mini-swe-agent tool time 925 +- 3550 ms (arXiv 2511.02230)",
        "final_tool": "SWE-agent and OpenHands sessions end with submit/finish",
        "context_window_tokens": "assumption: a common served max_model_len (128k)",
    },
)

DE = AgentParams(
    kind="de",
    # median: the one Spider2 session (25 turns, stopped by its 25-round cap: a lower bound);
    # sigma: solved so the truncated mean is KAIROS's 37 (KAIROS ran DABStep among its workloads).
    turns=LogNormal(median=25.0, sigma=0.885),
    max_turns=KAIROS_MAX_TURNS,
    first_turn_tokens=LogNormal(median=1576.0, sigma=0.786),  # Spider2 turn 0 (estimate); sigma: SWE's
    # Spider2 tool messages (estimate), capped near 620 tokens by the agent, so their mean (395)
    # lies below their median: fitted on the mean and log spread (see fit_lognormal).
    appended_tokens=LogNormal(median=145.3, sigma=1.415),
    output_tokens=LogNormal(median=86.0, sigma=0.370),  # Spider2 assistant messages (estimate)
    tool_mix={"schema": 0.8889, "sql": 0.0741, "python": 0.0370},  # Spider2: 23 schema reads, 1 SQL; add-one smoothed
    tool_duration_s={
        "schema": LogNormal(0.455, 1.660),  # untimed; Spider2 schema reads are local bash: SWE bash
        "python": LogNormal(0.455, 1.660),  # no DE trace times python: SWE bash
        "sql": LogNormal(0.233, 1.660),  # no trace times SQL: Continuum's tool-time log-normal
    },
    final_tool=None,
    context_window_tokens=131_072,
    sources={
        "turns": "median: Spider 2.0 sf_bq024 (1 session, capped at 25 rounds); sigma: KAIROS mean 37",
        "max_turns": "KAIROS: turns per agent 1-2518 (arXiv 2604.16682 §3, second-hand)",
        "first_turn_tokens": "Spider 2.0 sf_bq024 turn 0 (estimate); sigma from the swe fit (one sample)",
        "appended_tokens": "Spider 2.0 sf_bq024 tool messages (estimate)",
        "output_tokens": "Spider 2.0 sf_bq024 assistant messages (estimate)",
        "tool_mix": "Spider 2.0 sf_bq024 tool calls (execute_bash: schema, execute_snowflake_sql: sql), add-one smoothed",
        "tool_duration_s": "no DE trace records times: schema/python use the swe bash fit, sql uses "
                           "Continuum's tool-time log-normal (median 0.233 s, sigma 1.66)",
        "final_tool": "Spider 2.0 sessions end with a final answer, no tool",
        "context_window_tokens": "assumption: a common served max_model_len (128k)",
    },
)

PARAMS: dict[str, AgentParams] = {"swe": SWE, "de": DE}


# ---------------------------------------------------------------------------------------------
# Fitting.

# Raw tool names as importers record them (OpenHands actions, SWE-agent commands, function
# names) -> the generator's tool kinds. Unlisted names fall back per agent kind (see
# canonical_tool). Pseudo-actions that run nothing (think, recall, message) map to None.
_TOOL_ALIASES: dict[str, dict[str, str | None]] = {
    "swe": {
        "run": "bash", "execute_bash": "bash", "bash": "bash", "cmd_run": "bash",
        "run_ipython": "bash", "execute_ipython_cell": "bash", "python": "bash",
        "edit": "edit", "create": "edit", "insert": "edit", "str_replace_editor": "edit",
        "str_replace": "edit", "edit_file": "edit", "write": "edit", "set_cursors": "edit",
        # OpenHands' one editor tool both views and edits; its calls take milliseconds either way.
        "read": "view", "open": "view", "goto": "view", "scroll_up": "view", "scroll_down": "view",
        "view": "view", "cat": "view",
        "find_file": "search", "search_dir": "search", "search_file": "search", "search": "search",
        "grep": "search", "find": "search",
        "submit": "submit", "finish": "submit",
        "think": None, "recall": None, "message": None, "system": None,
        "user": None,  # OpenHands waiting on a human: not agent tool time
    },
    "de": {
        "execute_bash": "schema", "bash": "schema", "ls": "schema", "cat": "schema", "grep": "schema",
        "execute_snowflake_sql": "sql", "execute_bigquery_sql": "sql", "execute_sql": "sql", "sql": "sql",
        "python": "python", "execute_python": "python",
        "terminate": None, "finish": None, "think": None,
    },
}
_TOOL_FALLBACK = {"swe": "bash", "de": "schema"}


def canonical_tool(kind: str, raw: str | None) -> str | None:
    """Map a recorded tool name to a tool kind of ``kind`` (None: no real tool ran)."""
    if raw is None:
        return None
    aliases = _TOOL_ALIASES.get(kind, {})
    name = raw.strip().lower()
    if name in aliases:
        return aliases[name]
    head = name.split()[0] if name.split() else name
    return aliases.get(head, _TOOL_FALLBACK.get(kind, head))


def fit_lognormal(samples: Iterable[float]) -> LogNormal:
    """The log-normal with the samples' median and mean (positive samples only).

    Why not maximum likelihood: agent traces are thin and their log is itself skewed (a few
    huge file reads among short observations), so the MLE median (the geometric mean) lands
    far from the real median. Matching the median keeps the typical turn right, matching the
    mean keeps the context growth rate right; ``workload stats`` shows both. Samples whose
    mean is below their median (capped tool output) fit no log-normal: there the mean and
    the log spread are kept, since the mean is what drives context growth.
    """
    x = np.asarray([s for s in samples if s > 0], dtype=np.float64)
    if x.size == 0:
        raise ValueError("no positive samples to fit")
    median, mean = float(np.median(x)), float(x.mean())
    if mean > median:
        return LogNormal(median=median, sigma=math.sqrt(2 * math.log(mean / median)))
    spread = float(np.log(x).std())
    return LogNormal(median=mean / math.exp(spread**2 / 2), sigma=spread)


def lognormal_mle(samples: Iterable[float]) -> LogNormal:
    """Maximum-likelihood log-normal (geometric mean, log standard deviation); for checks."""
    x = np.asarray([s for s in samples if s > 0], dtype=np.float64)
    if x.size == 0:
        raise ValueError("no positive samples to fit")
    logs = np.log(x)
    return LogNormal(median=float(np.exp(logs.mean())), sigma=float(logs.std()))


def truncated_mean(median: float, sigma: float, lo: float, hi: float) -> float:
    """Mean of a log-normal truncated to [lo, hi] (closed form via the normal CDF)."""
    mu = math.log(median)
    z_lo = (math.log(lo) - mu) / sigma
    z_hi = (math.log(hi) - mu) / sigma
    mass = _STD_NORMAL.cdf(z_hi) - _STD_NORMAL.cdf(z_lo)
    mean = median * math.exp(sigma**2 / 2)
    return mean * (_STD_NORMAL.cdf(sigma - z_lo) - _STD_NORMAL.cdf(sigma - z_hi)) / mass


def sigma_for_mean(median: float, target_mean: float, lo: float, hi: float) -> float:
    """The sigma whose log-normal (given median), truncated to [lo, hi], has ``target_mean``.

    This is how the turn distribution combines the traces (which give the median but are too
    few to show a tail) with KAIROS's reported mean. Bisection: the truncated mean rises
    monotonically with sigma over the range that matters here.
    """
    a, b = 1e-3, 5.0
    if not truncated_mean(median, a, lo, hi) < target_mean < truncated_mean(median, b, lo, hi):
        raise ValueError(f"no sigma gives mean {target_mean} with median {median} in [{lo}, {hi}]")
    for _ in range(200):
        mid = (a + b) / 2
        if truncated_mean(median, mid, lo, hi) < target_mean:
            a = mid
        else:
            b = mid
    return (a + b) / 2


@dataclass
class TraceSamples:
    """Per-kind samples pulled out of imported workloads, kept for the fit and its report."""

    turns: list[int] = field(default_factory=list)
    first_turn_tokens: list[int] = field(default_factory=list)
    appended_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    tool_counts: dict[str, int] = field(default_factory=dict)
    tool_durations_s: dict[str, list[float]] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)


def collect_samples(kind: str, workloads: Sequence[Workload]) -> TraceSamples:
    """Pool turns of every session of ``kind`` (a session counts once per turn it has)."""
    out = TraceSamples()
    for wl in workloads:
        for s in wl.sessions:
            if s.agent_kind != kind or not s.turns:
                continue
            out.sources.add(s.source.split(":")[0] if s.source else "unknown")
            out.turns.append(len(s.turns))
            out.first_turn_tokens.append(s.turns[0].appended_tokens)
            out.appended_tokens.extend(t.appended_tokens for t in s.turns[1:])
            out.output_tokens.extend(t.output_tokens for t in s.turns)
            for i, t in enumerate(s.turns):
                tool = canonical_tool(kind, t.tool_name)
                if tool is None:
                    continue
                last = i == len(s.turns) - 1
                if not last or tool == "submit":
                    out.tool_counts[tool] = out.tool_counts.get(tool, 0) + 1
                if t.tool_duration_s > 0 and (not last or tool == "submit"):
                    out.tool_durations_s.setdefault(tool, []).append(t.tool_duration_s)
    return out


def _mix(counts: Mapping[str, int], tools: Sequence[str]) -> dict[str, float]:
    """Add-one smoothed shares over ``tools``, so a tool the thin traces never show still occurs."""
    total = sum(counts.get(t, 0) + 1 for t in tools)
    return {t: round((counts.get(t, 0) + 1) / total, 4) for t in tools}


def fit_from_workloads(workloads_by_kind: Mapping[str, Sequence[Workload]], *,
                       base: Mapping[str, AgentParams] = PARAMS) -> dict[str, AgentParams]:
    """Re-derive ``PARAMS`` from imported trace workloads; anchors come from ``base``.

    ``base`` supplies what no trace can: max turns, the final tool, the context window, and
    the fallbacks for tools never timed. Returns unrounded parameters.
    """
    fitted: dict[str, AgentParams] = {}
    swe_bash: LogNormal | None = None
    continuum_sigma = math.sqrt(math.log(1 + (CONTINUUM_TOOL_S[1] / CONTINUUM_TOOL_S[0]) ** 2))
    continuum = LogNormal(CONTINUUM_TOOL_S[0] / math.exp(continuum_sigma**2 / 2), continuum_sigma)
    for kind in ("swe", "de"):
        b = base[kind]
        smp = collect_samples(kind, workloads_by_kind.get(kind, ()))
        if not smp.turns:
            raise UsageError(f"no '{kind}' sessions among the imported traces: nothing to fit")
        t_med = float(np.median(smp.turns))
        first = fit_lognormal(smp.first_turn_tokens)
        if len(smp.first_turn_tokens) < 3 and swe_bash is not None:
            first = LogNormal(first.median, fitted["swe"].first_turn_tokens.sigma)
        tools = [t for t in b.tool_mix]
        durations: dict[str, LogNormal] = {}
        for tool in [*tools, *([b.final_tool] if b.final_tool else [])]:
            samples = smp.tool_durations_s.get(tool, [])
            if len(samples) >= 2:
                d = fit_lognormal(samples)
                if tool == "bash":  # toy-task traces show no tail: widen to Continuum's sigma
                    d = LogNormal(d.median, max(d.sigma, continuum_sigma))
            elif tool == "sql":
                d = continuum
            elif swe_bash is not None:
                d = swe_bash
            else:
                d = b.tool_duration_s[tool]
            durations[tool] = d
        params = replace(
            b,
            turns=LogNormal(t_med, sigma_for_mean(t_med, KAIROS_MEAN_TURNS, 0.5, b.max_turns + 0.5)),
            first_turn_tokens=first,
            appended_tokens=fit_lognormal(smp.appended_tokens),
            output_tokens=fit_lognormal(smp.output_tokens),
            tool_mix=_mix(smp.tool_counts, tools),
            tool_duration_s=durations,
        )
        fitted[kind] = params
        if kind == "swe":
            swe_bash = durations["bash"]
    return fitted


# ---------------------------------------------------------------------------------------------
# The trace corpus the constants are fitted on, and a comparison of stored against refitted.

# (agent kind, importer format, path under the traces directory, why it is in the fit).
FIT_CORPUS: tuple[tuple[str, str, str, str], ...] = (
    ("swe", "openhands", "raw/openhands_eval/multi_swe_bench_example_output.jsonl",
     "2 real CodeActAgent runs: usage per call, event timestamps"),
    ("swe", "openhands", "raw/openhands_eval/resolver_mock_output.jsonl",
     "2 issue-resolver sessions: turn counts, estimated tokens"),
    ("swe", "swe-agent", "raw/swe_agent_traj",
     "17 SWE-agent trajectories (3 GPT-4 runs, 14 demonstrations), 4 with execution_time"),
    ("swe", "mini-swe-agent", "raw/mini_swe_agent", "2 mini-swe-agent message histories"),
    ("de", "spider2", "raw/spider2_agent_tc", "the only data-engineering agent rollout found"),
)
# Left out, and why (docs/workload-format.md repeats this):
#   openhands runtime_traj_*.json: replay fixtures of OpenHands' runtime tests (2-5 canned
#     actions), not agents solving tasks;
#   terminal-bench: session totals only, no turns; used as a check instead (tests);
#   mooncake, azure: chat and code-completion serving traces, not agent sessions.


def import_fit_corpus(traces_dir: str | Path) -> dict[str, list[Workload]]:
    """Import every FIT_CORPUS entry with the trace importers, grouped by agent kind."""
    from kairosbench.workload.importers import import_source  # the importers are only needed here

    root = Path(traces_dir)
    out: dict[str, list[Workload]] = {}
    for kind, fmt, rel, _why in FIT_CORPUS:
        if not (root / rel).exists():
            raise UsageError(f"trace {root / rel} not found; pass --traces pointing at shared/traces")
        wl = import_source(fmt, root / rel)
        for s in wl.sessions:
            s.agent_kind = kind
        out.setdefault(kind, []).append(wl)
    return out


def compare(stored: Mapping[str, AgentParams], fitted: Mapping[str, AgentParams]) -> list[tuple[str, str, float, float]]:
    """(kind, parameter, stored, refitted) for every fitted number, for tables and tests."""
    rows: list[tuple[str, str, float, float]] = []
    for kind, s in stored.items():
        f = fitted[kind]
        for name in ("turns", "first_turn_tokens", "appended_tokens", "output_tokens"):
            for attr in ("median", "sigma"):
                rows.append((kind, f"{name}.{attr}", getattr(getattr(s, name), attr), getattr(getattr(f, name), attr)))
        for tool, share in s.tool_mix.items():
            rows.append((kind, f"tool_mix.{tool}", share, f.tool_mix[tool]))
        for tool, d in s.tool_duration_s.items():
            rows.append((kind, f"tool_duration_s.{tool}.median", d.median, f.tool_duration_s[tool].median))
            rows.append((kind, f"tool_duration_s.{tool}.sigma", d.sigma, f.tool_duration_s[tool].sigma))
    return rows
