"""Every importer on the real traces in ../shared/traces, checked against the sources' own numbers.

The expected values are computed here straight from the raw files (json / csv / pandas, no
kairosbench code), so these tests say "the import preserves what the source recorded".
Skipped when the traces are not next to the checkout.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from kairosbench.workload.importers import import_source
from kairosbench.workload.importers.mooncake import BLOCK_TOKENS
from kairosbench.workload.importers.terminal_bench import read_trials
from kairosbench.workload.model import Workload

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "raw"
pytestmark = [
    pytest.mark.traces,
    pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is not present"),
]


@pytest.fixture(scope="module")
def imported() -> dict[str, Workload]:
    sources = {
        "mooncake": "mooncake_fast25",
        "azure": "azure_llm_2023",
        "swe-agent": "swe_agent_traj",
        "mini-swe-agent": "mini_swe_agent",
        "openhands": "openhands_eval",
        "spider2": "spider2_agent_tc",
        "terminal-bench": "terminal_bench_leaderboard",
    }
    return {fmt: import_source(fmt, TRACES / sub) for fmt, sub in sources.items()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mooncake_preserves_requests_and_tokens(imported: dict[str, Workload]) -> None:
    rows = _jsonl(TRACES / "mooncake_fast25" / "conversation_trace.jsonl")
    wl = imported["mooncake"]
    turns = [t for s in wl.sessions for t in s.turns]
    assert len(turns) == len(rows) == 12031
    assert sum(t.prompt_tokens or 0 for t in turns) == sum(r["input_length"] for r in rows)
    assert sum(t.output_tokens for t in turns) == sum(r["output_length"] for r in rows)
    assert sorted(tuple(t.prefix_hashes or ()) for t in turns) == sorted(tuple(r["hash_ids"]) for r in rows)
    counts = wl.meta["import"]["counts"]
    assert len(wl.sessions) == counts["requests"] - counts["requests_linked_to_an_earlier_turn"] == 8190
    for s in wl.sessions:  # each link is the documented rule: full blocks (>= 2) are a prefix
        for prev, turn in zip(s.turns, s.turns[1:]):
            full = (prev.prompt_tokens or 0) // BLOCK_TOKENS
            assert full >= 2 and (turn.prefix_hashes or [])[:full] == (prev.prefix_hashes or [])[:full]
            assert (turn.prompt_tokens or 0) > (prev.prompt_tokens or 0)
        assert s.prompt_tokens() == [t.prompt_tokens for t in s.turns]
    first_ms = min(r["timestamp"] for r in rows)
    assert min(s.arrival_s for s in wl.sessions) == first_ms / 1000


def test_azure_preserves_requests(imported: dict[str, Workload]) -> None:
    df = pd.read_csv(TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv")
    wl = imported["azure"]
    assert len(wl.sessions) == wl.n_turns == len(df) == 8819
    assert sum(s.turns[0].prompt_tokens or 0 for s in wl.sessions) == int(df["ContextTokens"].sum())
    assert sum(s.turns[0].output_tokens for s in wl.sessions) == int(df["GeneratedTokens"].sum())
    span_s = (pd.Timestamp(df["TIMESTAMP"].iloc[-1]) - pd.Timestamp(df["TIMESTAMP"].iloc[0])).total_seconds()
    assert max(s.arrival_s for s in wl.sessions) == pytest.approx(span_s, abs=1e-6)
    assert {s.agent_kind for s in wl.sessions} == {"code"}


def test_swe_agent_turns_match_api_calls(imported: dict[str, Workload]) -> None:
    wl = imported["swe-agent"]
    by_id = {s.session_id: s for s in wl.sessions}
    assert len(by_id) == 17
    with_times = 0
    for path in sorted((TRACES / "swe_agent_traj").glob("*.traj")):
        doc = json.loads(path.read_text())
        session = by_id[path.name.removesuffix(".traj")]
        steps = doc.get("trajectory", [])
        assert len(session.turns) == max(len(steps), sum(m["role"] == "assistant" for m in doc["history"]))
        stats = doc.get("info", {}).get("model_stats", {})
        if stats.get("api_calls"):
            assert len(session.turns) == stats["api_calls"]
        times = [float(s["execution_time"]) for s in steps if "execution_time" in s]
        with_times += len(times)
        if times:
            assert [t.tool_duration_s for t in session.turns] == pytest.approx(times)
    assert with_times == 29  # SOURCES.md: 4 files carry execution_time, 29 steps in total


def test_swe_agent_estimate_against_tokens_sent(imported: dict[str, Workload]) -> None:
    """GPT-4 runs: the estimated prompt sizes, summed over calls, against model_stats.tokens_sent."""
    by_id = {s.session_id: s for s in imported["swe-agent"].sessions}
    for path in sorted((TRACES / "swe_agent_traj").glob("test__*.traj")):
        stats = json.loads(path.read_text())["info"]["model_stats"]
        session = by_id[path.name.removesuffix(".traj")]
        sent = sum(session.prompt_tokens())
        received = sum(t.output_tokens for t in session.turns)
        assert abs(sent / stats["tokens_sent"] - 1) < 0.30, (path.name, sent, stats["tokens_sent"])
        assert abs(received / stats["tokens_received"] - 1) < 0.70, (path.name, received, stats["tokens_received"])


def test_mini_swe_agent_one_turn_per_reply(imported: dict[str, Workload]) -> None:
    by_id = {s.session_id: s for s in imported["mini-swe-agent"].sessions}
    for path in sorted((TRACES / "mini_swe_agent").glob("*.traj.json")):
        messages = json.loads(path.read_text())
        assert len(by_id[path.name.removesuffix(".traj.json")].turns) == sum(m["role"] == "assistant" for m in messages)


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_openhands_usage_and_durations(imported: dict[str, Workload]) -> None:
    by_id = {s.session_id: s for s in imported["openhands"].sessions}
    for record in _jsonl(TRACES / "openhands_eval" / "multi_swe_bench_example_output.jsonl"):
        session = by_id[record["instance_id"]]
        usages = record["metrics"]["token_usages"]
        assert len(session.turns) == len(usages)
        assert [t.prompt_tokens for t in session.turns] == [u["prompt_tokens"] for u in usages]
        assert sum(t.output_tokens for t in session.turns) == record["metrics"]["accumulated_token_usage"]["completion_tokens"]
        assert sum(t.prompt_tokens or 0 for t in session.turns) == record["metrics"]["accumulated_token_usage"]["prompt_tokens"]
        actions = {e["id"]: e for e in record["history"] if "action" in e}
        durations = [
            _iso(e["timestamp"]) - _iso(actions[e["cause"]]["timestamp"])
            for e in record["history"]
            if e.get("cause") in actions and actions[e["cause"]].get("tool_call_metadata")
        ]
        recorded = [t.tool_duration_s for t in session.turns if t.tool_name not in ("finish",)]
        assert recorded == pytest.approx(durations, abs=1e-6)
        assert all(t.token_count_method == "usage" for t in session.turns)
    for i, record in enumerate(_jsonl(TRACES / "openhands_eval" / "resolver_mock_output.jsonl"), start=1):
        assert len(by_id[f"resolver_mock_output:{i}"].turns) == len(record["metrics"]["costs"])
    for path in sorted((TRACES / "openhands_eval").glob("runtime_traj_*.json")):
        events = json.loads(path.read_text())
        agent_calls = {
            (e.get("tool_call_metadata") or {}).get("model_response", {}).get("id") or f"event{e['id']}"
            for e in events
            if e.get("source") == "agent" and "action" in e and e["action"] not in ("system", "recall")
        }
        assert len(by_id[path.stem].turns) == len(agent_calls)


def test_spider2_is_one_de_session(imported: dict[str, Workload]) -> None:
    (rollout,) = json.loads((TRACES / "spider2_agent_tc" / "sf_bq024.json").read_text())
    (session,) = imported["spider2"].sessions
    assert session.agent_kind == "de"
    assert len(session.turns) == sum(m["role"] == "assistant" for m in rollout["conversation"])
    tools = {t.tool_name for t in session.turns}
    assert "execute_snowflake_sql" in tools or "execute_bash" in tools


def test_terminal_bench_totals(imported: dict[str, Workload]) -> None:
    path = TRACES / "terminal_bench_leaderboard" / "tbcore011_trial_summary.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    reported = [r for r in rows if r["total_input_tokens"] not in ("", "0", "0.0")]
    wl = imported["terminal-bench"]
    assert len(wl.sessions) == len(reported)
    assert sum(s.turns[0].prompt_tokens or 0 for s in wl.sessions) == sum(int(float(r["total_input_tokens"])) for r in reported)
    assert sum(s.turns[0].output_tokens for s in wl.sessions) == sum(int(float(r["total_output_tokens"])) for r in reported)
    trials = read_trials(path)
    assert len(trials) == len(rows) == 3143
    timed = [t for t in trials if t.agent_duration_s is not None]
    assert len(timed) == sum(1 for r in rows if r["agent_started_at"] and r["agent_ended_at"])
    assert all(t.agent_duration_s is not None and t.agent_duration_s >= 0 for t in timed)


def test_estimate_error_on_usage_turns(imported: dict[str, Workload]) -> None:
    """The documented estimate, on OpenHands turns that also carry usage: the error stays as documented."""
    from kairosbench.workload.tokencount import MESSAGE_OVERHEAD_TOKENS, EstimateCounter

    est = EstimateCounter()
    out_true = out_est = app_true = app_est = 0
    for s in imported["openhands"].sessions:
        for t, turn in enumerate(s.turns):
            if turn.token_count_method != "usage":
                continue
            out_true += turn.output_tokens
            out_est += est.count(turn.output_text or "")
            if t and turn.appended_tokens > 0 and turn.text:
                app_true += turn.appended_tokens
                messages = json.loads(turn.text)
                app_est += sum(est.count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + MESSAGE_OVERHEAD_TOKENS
    assert math.isclose(out_est, out_true, rel_tol=0.25), (out_est, out_true)
    assert math.isclose(app_est, app_true, rel_tol=0.25), (app_est, app_true)
