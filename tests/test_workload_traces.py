"""The generator against the real traces in ../shared/traces (skipped when they are absent).

1. The constants in kairosbench/workload/fit.py are what the fit gives on the traces today.
2. Generated sessions look like the real ones, on the statistics the fit matches (median and
   mean; the mean alone where a real sample's mean is below its median, which no log-normal
   can follow): within 25%, turn-count medians within 35% (23 real sessions), main tool
   share within 0.1. Per-turn values compare generated sessions whose turn count lies within
   the real range, like for like: no real session is long enough to meet the context window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kairosbench.workload.fit import PARAMS, canonical_tool, compare, fit_from_workloads, import_fit_corpus
from kairosbench.workload.generate import GenerateSpec, generate
from kairosbench.workload.io import table_to_workload
from kairosbench.workload.model import Workload

TRACES = Path(__file__).parents[2] / "shared" / "traces"
pytestmark = [
    pytest.mark.traces,
    pytest.mark.skipif(not (TRACES / "raw").is_dir(), reason="../shared/traces not present"),
]


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Workload]]:
    return import_fit_corpus(TRACES)


def test_constants_in_code_are_the_fit_of_the_traces(corpus: dict[str, list[Workload]]) -> None:
    fitted = fit_from_workloads(corpus)
    for kind, name, stored, refit in compare(PARAMS, fitted):
        assert stored == pytest.approx(refit, rel=0.01, abs=1e-3), f"{kind} {name}: code {stored} vs traces {refit}"


def _per_turn(sessions: list, lo: int, hi: int) -> dict[str, np.ndarray]:
    keep = [s for s in sessions if lo <= len(s.turns) <= hi]
    return {
        "first": np.array([s.turns[0].appended_tokens for s in keep]),
        "appended": np.array([t.appended_tokens for s in keep for t in s.turns[1:]]),
        "output": np.array([t.output_tokens for s in keep for t in s.turns]),
    }


@pytest.mark.parametrize("kind", ["swe", "de"])
def test_generated_sessions_look_like_the_real_ones(kind: str, corpus: dict[str, list[Workload]]) -> None:
    real = [s for wl in corpus[kind] for s in wl.sessions]
    result = generate(GenerateSpec(kind=kind, sessions=4000, seed=21))
    gen = table_to_workload(result.table, result.meta).sessions
    real_turns = np.array([len(s.turns) for s in real])
    gen_turns = np.array([len(s.turns) for s in gen])
    if kind == "swe":  # one de session cannot give a median to compare with
        assert np.median(gen_turns) == pytest.approx(np.median(real_turns), rel=0.35)
    lo, hi = int(real_turns.min()), int(real_turns.max())
    r, g = _per_turn(real, lo, hi), _per_turn(gen, lo, hi)
    for key in ("first", "appended", "output"):
        if r[key].size >= 3:  # one de session has one turn 0: its spread is borrowed, not fitted
            assert g[key].mean() == pytest.approx(r[key].mean(), rel=0.25), f"{key} mean"
        if r[key].size < 3 or r[key].mean() > np.median(r[key]):
            assert np.median(g[key]) == pytest.approx(np.median(r[key]), rel=0.25), f"{key} median"
    real_tools = [canonical_tool(kind, t.tool_name) for s in real for t in s.turns[:-1]]
    gen_tools = [t.tool_name for s in gen for t in s.turns[:-1]]
    main_tool = "bash" if kind == "swe" else "schema"
    real_share = real_tools.count(main_tool) / len(real_tools)
    assert gen_tools.count(main_tool) / len(gen_tools) == pytest.approx(real_share, abs=0.1)


def test_the_kairos_anchor_holds_on_a_kairos_sized_workload() -> None:
    result = generate(GenerateSpec(kind="mixed", sessions=300, seed=203))
    sessions = table_to_workload(result.table, result.meta).sessions
    turns = np.array([len(s.turns) for s in sessions])
    assert turns.mean() == pytest.approx(37, rel=0.1) and turns.min() >= 1
