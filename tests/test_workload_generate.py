"""The generator: statistics match the fitted targets within stated tolerances; seeded; bounded.

Tolerances (large N, fixed seed; sampling error of the tested estimators is well inside them):
  turns/session: truncated mean within 4% of KAIROS's 37; median within 1 turn of the fit;
  log-normal token and duration fits: geometric median within 4%, log-sigma within 4%;
  tool shares within 0.01; Poisson gaps: mean within 3% of 1/rate and CV within 5% of 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kairosbench.errors import UsageError
from kairosbench.workload.fit import DE, KAIROS_MEAN_TURNS, PARAMS, SWE, LogNormal, lognormal_mle
from kairosbench.workload.generate import GenerateSpec, generate
from kairosbench.workload.io import load_workload, table_to_workload, write_table

HUGE_WINDOW = 10**9  # no session is compressed: per-turn draws are exactly the fitted ones


def _frame(spec: GenerateSpec) -> pd.DataFrame:
    return generate(spec).table.to_pandas()


@pytest.fixture(scope="module")
def swe_big() -> pd.DataFrame:
    return _frame(GenerateSpec(kind="swe", sessions=20_000, seed=7, context_window_tokens=HUGE_WINDOW))


@pytest.fixture(scope="module")
def de_big() -> pd.DataFrame:
    return _frame(GenerateSpec(kind="de", sessions=20_000, seed=8, context_window_tokens=HUGE_WINDOW))


def _close(fit: LogNormal, target: LogNormal, tol: float = 0.04) -> None:
    assert fit.median == pytest.approx(target.median, rel=tol)
    assert fit.sigma == pytest.approx(target.sigma, rel=tol)


@pytest.mark.parametrize("which", ["swe", "de"])
def test_statistics_match_the_fitted_targets(which: str, swe_big: pd.DataFrame, de_big: pd.DataFrame) -> None:
    df, p = (swe_big, SWE) if which == "swe" else (de_big, DE)
    turns = df.groupby("session_id", sort=False).size()
    assert turns.mean() == pytest.approx(KAIROS_MEAN_TURNS, rel=0.04)
    assert abs(turns.median() - p.turns.median) <= 1
    assert turns.min() >= 1 and turns.max() <= p.max_turns
    _close(lognormal_mle(df.loc[df.turn_index == 0, "appended_tokens"]), p.first_turn_tokens)
    _close(lognormal_mle(df.loc[df.turn_index > 0, "appended_tokens"]), p.appended_tokens)
    _close(lognormal_mle(df["output_tokens"]), p.output_tokens)
    is_last = df.turn_index == df.groupby("session_id", sort=False).turn_index.transform("max")
    shares = df.loc[~is_last, "tool_name"].value_counts(normalize=True)
    for tool, share in p.tool_mix.items():
        assert shares.get(tool, 0.0) == pytest.approx(share, abs=0.01)
        durations = df.loc[~is_last & (df.tool_name == tool), "tool_duration_s"]
        _close(lognormal_mle(durations), p.tool_duration_s[tool], tol=0.05)
    if p.final_tool is None:
        assert df.loc[is_last, "tool_name"].isna().all() and (df.loc[is_last, "tool_duration_s"] == 0).all()
    else:
        assert (df.loc[is_last, "tool_name"] == p.final_tool).all()


def test_poisson_arrivals_at_the_given_rate(swe_big: pd.DataFrame) -> None:
    arrivals = swe_big.groupby("session_id", sort=False).arrival_s.first().to_numpy()
    gaps = np.diff(arrivals)
    assert arrivals[0] == 0.0 and (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 0.08, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert arrivals[-1] <= (arrivals.size - 1) / 0.08  # conditioned on the count: spans its nominal duration


def test_a_small_poisson_workload_spans_its_nominal_duration() -> None:
    df = _frame(GenerateSpec(kind="swe", sessions=300, rate_per_s=0.08, seed=202))
    span = df.arrival_s.max()
    assert span == pytest.approx(299 / 0.08, rel=0.02)


@pytest.mark.parametrize("arrival,cv", [("constant", 0.0), ("gamma", 2.0)])
def test_other_arrival_processes(arrival: str, cv: float) -> None:
    df = _frame(GenerateSpec(kind="de", sessions=8000, rate_per_s=0.5, seed=3, arrival=arrival, arrival_cv=2.0))
    gaps = np.diff(df.groupby("session_id", sort=False).arrival_s.first().to_numpy())
    assert gaps.mean() == pytest.approx(2.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.1 * max(cv, 0.1))


def test_prompt_tokens_follow_the_growth_chain() -> None:
    result = generate(GenerateSpec(kind="mixed", sessions=300, seed=11))
    wl = table_to_workload(result.table, result.meta)
    for s in wl.sessions:
        recorded = [t.prompt_tokens for t in s.turns]
        chained = [sum(t.appended_tokens for t in s.turns[: i + 1]) + sum(t.output_tokens for t in s.turns[:i])
                   for i in range(len(s.turns))]
        assert recorded == chained


def test_context_window_is_respected_and_turn_counts_kept() -> None:
    spec = GenerateSpec(kind="swe", sessions=3000, seed=5, context_window_tokens=32_768)
    wide = GenerateSpec(kind="swe", sessions=3000, seed=5, context_window_tokens=HUGE_WINDOW)
    res, res_wide = generate(spec), generate(wide)
    df = res.table.to_pandas()
    last = df.groupby("session_id", sort=False).tail(1)
    assert (last.prompt_tokens + last.output_tokens).max() <= 32_768
    assert res.compressed_sessions > 0
    turns = df.groupby("session_id", sort=False).size()
    turns_wide = res_wide.table.to_pandas().groupby("session_id", sort=False).size()
    assert turns.tolist() == turns_wide.tolist()  # compression changes tokens, never turn counts
    assert (df.appended_tokens >= 1).all() and (df.output_tokens >= 1).all()


def test_small_sizing_flags_hold() -> None:
    df = _frame(GenerateSpec(kind="mixed", sessions=400, seed=2, min_turns=5, max_turns=15, context_window_tokens=32_768))
    turns = df.groupby("session_id").size()
    assert turns.between(5, 15).all()
    assert set(df.agent_kind) == {"swe", "de"}
    assert (df.groupby("session_id").agent_kind.first() == "swe").mean() == pytest.approx(0.5, abs=0.08)


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = generate(GenerateSpec(kind="mixed", sessions=200, seed=1))
    b = generate(GenerateSpec(kind="mixed", sessions=200, seed=1))
    c = generate(GenerateSpec(kind="mixed", sessions=200, seed=2))
    assert a.table.equals(b.table) and a.meta == b.meta
    assert not a.table.equals(c.table)


def test_streams_are_independent_per_quantity() -> None:
    """Changing the arrival process moves arrivals only, not the sessions' contents."""
    a = generate(GenerateSpec(kind="swe", sessions=100, seed=4)).table
    b = generate(GenerateSpec(kind="swe", sessions=100, seed=4, arrival="constant")).table
    assert a.drop(["arrival_s"]).equals(b.drop(["arrival_s"]))
    assert not a.column("arrival_s").equals(b.column("arrival_s"))


def test_same_spec_same_file_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        r = generate(GenerateSpec(kind="de", sessions=50, seed=9, name="x"))
        write_table(r.table, tmp_path / f"{name}.parquet", r.meta)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_metadata_records_provenance(tmp_path: Path) -> None:
    spec = GenerateSpec(kind="mixed", sessions=20, seed=12, rate_per_s=0.1, name="prov")
    r = generate(spec)
    write_table(r.table, tmp_path / "w.parquet", r.meta)
    meta = load_workload(tmp_path / "w.parquet").meta
    assert meta["seed"] == 12 and meta["name"] == "prov"
    assert meta["command"] == spec.command()
    assert "--kind mixed --sessions 20 --rate 0.1 --seed 12" in meta["command"]
    assert set(meta["fitted_parameters"]) == {"swe", "de"}
    swe = meta["fitted_parameters"]["swe"]
    assert swe["turns"]["median"] == SWE.turns.median and swe["sources"]["turns"].startswith("median:")
    assert any("KAIROS" in s for s in meta["sources"])
    assert not any(k in meta for k in ("created", "created_at", "time", "timestamp"))  # no wall clock


@pytest.mark.parametrize("changes,words", [
    ({"kind": "chat"}, "--kind"),
    ({"sessions": 0}, "--sessions"),
    ({"rate_per_s": 0.0}, "--rate"),
    ({"arrival": "bursty"}, "--arrival"),
    ({"swe_fraction": 1.5}, "--swe-fraction"),
    ({"min_turns": 10, "max_turns": 5}, "--min-turns"),
    ({"context_window_tokens": 2048}, "--context-window"),
    ({"seed": -1}, "--seed"),
])
def test_bad_specs_name_the_flag(changes: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        generate(GenerateSpec(**changes))


def test_an_unlikely_turn_range_is_still_exact() -> None:
    """Inverse-CDF truncation: 2000-2518 turns has probability ~5e-4 and still works."""
    df = _frame(GenerateSpec(kind="de", sessions=3, seed=1, min_turns=2000, context_window_tokens=HUGE_WINDOW))
    assert df.groupby("session_id").size().between(2000, 2518).all()


def test_fitted_turn_sigma_gives_kairos_mean() -> None:
    from kairosbench.workload.fit import truncated_mean

    for p in PARAMS.values():
        assert truncated_mean(p.turns.median, p.turns.sigma, 0.5, p.max_turns + 0.5) == pytest.approx(KAIROS_MEAN_TURNS, rel=0.01)
        assert math.isclose(sum(p.tool_mix.values()), 1.0, abs_tol=1e-3)
