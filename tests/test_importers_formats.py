"""Each importer on a small hand-written fixture: turns, tools, durations, counts, metadata."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from kairosbench.workload.importers import FORMATS, import_source, source_files
from kairosbench.workload.importers.openai_chat import group_requests, read_requests
from kairosbench.workload.importers.terminal_bench import read_trials
from kairosbench.workload.model import Workload
from kairosbench.workload.tokencount import MESSAGE_OVERHEAD_TOKENS, EstimateCounter

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
EST = EstimateCounter()


def _msg_tokens(*texts: str) -> int:
    return sum(EST.count(t) + MESSAGE_OVERHEAD_TOKENS for t in texts)


def _chain_ok(wl: Workload) -> None:
    """The growth chain reproduces every recorded prompt (no session may shrink)."""
    for s in wl.sessions:
        sizes = s.prompt_tokens()
        assert sizes == sorted(sizes), s.session_id
        for t, turn in enumerate(s.turns):
            if turn.prompt_tokens is not None and t == 0:
                assert turn.appended_tokens == turn.prompt_tokens


def test_formats_registry_describes_every_format() -> None:
    assert set(FORMATS) == {
        "mooncake", "azure", "swe-agent", "mini-swe-agent", "openhands", "spider2", "terminal-bench", "openai-chat",
    }  # fmt: skip
    assert all(isinstance(d, str) and d for d in FORMATS.values())


def test_swe_agent_history_and_trajectory() -> None:
    wl = import_source("swe-agent", FIXTURES / "swe_agent_small.traj")
    (s,) = wl.sessions
    assert s.session_id == "swe_agent_small" and s.agent_kind == "swe" and s.arrival_s == 0.0
    assert [t.tool_name for t in s.turns] == ["find_file", "bash", "submit"]
    assert [t.tool_duration_s for t in s.turns] == [0.25, 1.5, 0.1]
    first = s.turns[0]
    assert json.loads(first.text or "") == [
        {"role": "system", "content": "SETTING: You are an autonomous programmer."},
        {"role": "user", "content": "ISSUE: app.py crashes"},
    ]
    assert first.appended_tokens == _msg_tokens("SETTING: You are an autonomous programmer.", "ISSUE: app.py crashes")
    # the history stops before the last call; its trailing observation feeds that call
    assert json.loads(s.turns[2].text or "") == [{"role": "user", "content": "ok\n(Open file: n/a)"}]
    assert s.turns[2].output_text == "Submit.\nsubmit"
    counts = wl.meta["import"]["counts"]
    assert counts["turns_from_trajectory_steps_only"] == 1
    assert "trailing_messages_dropped" not in counts
    assert all(t.token_count_method == "estimate" for t in s.turns)
    _chain_ok(wl)


def test_mini_swe_agent_tools_and_unknown_durations() -> None:
    wl = import_source("mini-swe-agent", FIXTURES / "mini_swe_agent_small.traj.json")
    (s,) = wl.sessions
    assert s.session_id == "mini_swe_agent_small"
    assert [t.tool_name for t in s.turns] == ["bash", None, "bash"]
    assert all(t.tool_duration_s == 0.0 for t in s.turns)
    meta = wl.meta["import"]
    assert meta["sessions_without_tool_durations"] == ["mini_swe_agent_small"]
    assert meta["counts"]["tool_duration_unknown_turns"] == 1  # the first; the last turn has nothing after it
    assert meta["counts"]["trailing_messages_dropped"] == 1
    # turn 1 appends the command output plus the re-sent wrapper of turn 0's reply
    out0 = "Let me look.\n\n```bash\nls -la\n```"
    assert s.turns[0].output_tokens == EST.count(out0)
    assert s.turns[1].appended_tokens == _msg_tokens("<returncode>0</returncode>\n<output>\nREADME.md\n</output>") + (
        MESSAGE_OVERHEAD_TOKENS
    )


def test_spider2_is_data_engineering() -> None:
    wl = import_source("spider2", FIXTURES / "spider2_small.json")
    (s,) = wl.sessions
    assert (s.session_id, s.agent_kind) == ("sf_demo-r0", "de")
    assert [t.tool_name for t in s.turns] == ["execute_bash", "execute_snowflake_sql", "terminate"]
    assert s.turns[2].output_text == 'terminate({"answer": "SELECT COUNT(*) FROM T"})'


def test_openhands_groups_tool_calls_of_one_response() -> None:
    wl = import_source("openhands", FIXTURES / "openhands_small.json")
    (s,) = wl.sessions
    assert s.session_id == "openhands_small" and s.arrival_s == 0.0
    assert len(s.turns) == 2  # two actions share response resp-1: one LLM call
    first, last = s.turns
    assert (first.prompt_tokens, first.output_tokens, first.token_count_method) == (1000, 40, "usage")
    assert first.tool_name == "execute_bash"
    assert first.tool_duration_s == pytest.approx(3.5)  # 22:45:00 -> last observation 22:45:03.5
    assert [m["role"] for m in json.loads(first.text or "")] == ["system", "user"]
    assert [m["content"] for m in json.loads(last.text or "")] == ["README.md", "/workspace"]
    assert (last.prompt_tokens, last.appended_tokens, last.tool_name, last.tool_duration_s) == (1100, 60, "finish", 0.0)
    assert 'execute_bash({"command": "pwd"})' in (first.output_text or "")


def test_openhands_condensed_context_starts_a_new_session(tmp_path: Path) -> None:
    """A prompt smaller than the previous one cannot be replayed by appending: split."""
    def action(i: int, rid: str, prompt: int) -> dict[str, object]:
        return {
            "id": i, "timestamp": f"2025-01-01T00:00:{10 * i:02d}", "source": "agent", "action": "run",
            "args": {"command": "ls"},
            "tool_call_metadata": {"function_name": "execute_bash", "model_response": {"id": rid}},
        }  # fmt: skip

    history = [
        action(1, "r1", 0),
        {"id": 2, "timestamp": "2025-01-01T00:00:15", "source": "agent", "observation": "run", "cause": 1, "content": "x"},
        action(3, "r2", 0),
        {"id": 4, "timestamp": "2025-01-01T00:00:35", "source": "agent", "observation": "run", "cause": 3, "content": "y"},
        action(5, "r3", 0),
    ]
    usages = [
        {"response_id": "r1", "prompt_tokens": 5000, "completion_tokens": 50},
        {"response_id": "r2", "prompt_tokens": 9000, "completion_tokens": 50},
        {"response_id": "r3", "prompt_tokens": 3000, "completion_tokens": 50},
    ]
    path = tmp_path / "output.jsonl"
    path.write_text(json.dumps({"instance_id": "task-1", "history": history, "metrics": {"token_usages": usages}}) + "\n")
    wl = import_source("openhands", path)
    assert [s.session_id for s in wl.sessions] == ["task-1", "task-1~1"]
    first, second = wl.sessions
    assert [t.prompt_tokens for t in first.turns] == [5000, 9000]
    assert (second.turns[0].appended_tokens, second.turns[0].text) == (3000, None)
    assert second.arrival_s == pytest.approx(25.0)  # sent when the previous tool finished (00:00:35)
    assert wl.meta["import"]["counts"]["sessions_split_where_context_shrank"] == 1


def test_openai_chat_by_session_key() -> None:
    wl = import_source("openai-chat", FIXTURES / "openai_chat_keyed.jsonl")
    by_id = {s.session_id: s for s in wl.sessions}
    a, b = by_id["a"], by_id["b"]
    assert (a.arrival_s, b.arrival_s) == (0.0, 1.0)
    assert [t.prompt_tokens for t in a.turns] == [20, 40]
    assert [t.appended_tokens for t in a.turns] == [20, 40 - 20 - 5]
    assert a.turns[0].tool_name == "bash"
    assert a.turns[0].tool_duration_s == pytest.approx(3.0)  # 104 - 100 - latency 1.0
    assert json.loads(a.turns[1].text or "") == [{"role": "tool", "content": "file.txt", "tool_call_id": "t1"}]
    assert (b.turns[0].output_text, b.turns[0].token_count_method) == ("hi b", "estimate")


def test_openai_chat_by_prefix() -> None:
    requests = read_requests(FIXTURES / "openai_chat_prefix.jsonl")
    groups = group_requests(requests)
    assert [[r.where.line for r in g] for g in groups] == [[1, 3], [2, 4], [5]]
    wl = import_source("openai-chat", FIXTURES / "openai_chat_prefix.jsonl")
    second = next(s for s in wl.sessions if s.session_id == "openai_chat_prefix:2")
    # its reply was not logged: the next request re-sends it, which is where it comes from
    assert second.turns[0].output_text == "reply two"
    assert json.loads(second.turns[1].text or "") == [{"role": "user", "content": "more"}]
    assert all(math.isfinite(s.arrival_s) and s.arrival_s == 0.0 for s in wl.sessions)


def test_openai_chat_rewritten_history_starts_a_new_session(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [
        {"session_id": "s", "messages": [{"role": "user", "content": "one two three"}], "output": "four"},
        {"session_id": "s", "messages": [{"role": "user", "content": "summary"}, {"role": "user", "content": "next"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    wl = import_source("openai-chat", path)
    assert [s.session_id for s in wl.sessions] == ["s", "s~1"]
    assert wl.sessions[1].turns[0].appended_tokens == _msg_tokens("summary", "next")
    assert wl.meta["import"]["counts"]["sessions_split_where_history_was_rewritten"] == 1


def test_azure_one_session_per_request() -> None:
    wl = import_source("azure", FIXTURES / "azure_small_code.csv")
    assert [s.agent_kind for s in wl.sessions] == ["code"] * 3
    assert [round(s.arrival_s, 4) for s in wl.sessions] == [0.0, 0.052, 1.052]
    assert [(t.appended_tokens, t.output_tokens, t.prompt_tokens) for s in wl.sessions for t in s.turns] == [
        (4808, 10, 4808), (3180, 8, 3180), (110, 27, 110),
    ]  # fmt: skip


def test_terminal_bench_is_statistics_only() -> None:
    trials = read_trials(FIXTURES / "terminal_bench_small.csv")
    assert [t.total_input_tokens for t in trials] == [33409, None, None]  # 0 means "not reported"
    assert trials[2].agent_duration_s == pytest.approx(1200.067164)
    wl = import_source("terminal-bench", FIXTURES / "terminal_bench_small.csv")
    assert wl.meta["import"]["replayable"] is False
    (s,) = wl.sessions
    assert s.session_id == "20250902_orchestrator_x/hello-world.1-of-1"
    assert (s.turns[0].prompt_tokens, s.turns[0].output_tokens) == (33409, 18771)
    assert wl.meta["import"]["counts"]["trials_without_token_totals_left_out"] == 2


def test_directory_import_and_metadata(tmp_path: Path) -> None:
    for name in ("swe_agent_small.traj", "mini_swe_agent_small.traj.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "sub").mkdir()
    shutil.copy(FIXTURES / "swe_agent_small.traj", tmp_path / "sub" / "swe_agent_small.traj")
    assert [p.name for p in source_files("swe-agent", tmp_path)] == ["swe_agent_small.traj"] * 2
    wl = import_source("swe-agent", tmp_path)
    assert sorted(s.session_id for s in wl.sessions) == ["swe_agent_small", "swe_agent_small#2"]
    meta = wl.meta["import"]
    assert meta["format"] == "swe-agent" and meta["sessions"] == 2 and meta["turns"] == 6
    assert [len(src["sha256"]) for src in meta["sources"]] == [64, 64]
    assert meta["token_counts"]["turns_by_method"] == {"estimate": 6}
    assert "characters" in meta["token_counts"]["estimate"]
    json.dumps(wl.meta)  # the metadata must be JSON for the file header


def test_tokenizer_is_ignored_for_count_only_formats(tmp_path: Path) -> None:
    wl = import_source("azure", FIXTURES / "azure_small_code.csv", tokenizer=str(tmp_path / "absent"))
    assert any("--tokenizer ignored" in n for n in wl.meta["import"]["notes"])


def test_imported_workloads_save_and_validate(tmp_path: Path) -> None:
    """What the importers produce is a valid workload file for the format module."""
    io = pytest.importorskip("kairosbench.workload.io")
    validate = pytest.importorskip("kairosbench.workload.validate")
    for fmt, name in (
        ("mooncake", "mooncake_small.jsonl"), ("azure", "azure_small_code.csv"),
        ("swe-agent", "swe_agent_small.traj"), ("mini-swe-agent", "mini_swe_agent_small.traj.json"),
        ("openhands", "openhands_small.json"), ("spider2", "spider2_small.json"),
        ("terminal-bench", "terminal_bench_small.csv"), ("openai-chat", "openai_chat_keyed.jsonl"),
    ):  # fmt: skip
        wl = import_source(fmt, FIXTURES / name)
        out = tmp_path / f"{fmt}.parquet"
        io.save_workload(wl, out)
        report = validate.validate_file(out)
        assert report.ok, [str(e) for e in report.problems]
        back = io.load_workload(out)
        assert back.n_turns == wl.n_turns
        assert back.meta["import"]["format"] == fmt


def test_progress_is_reported_per_file(tmp_path: Path) -> None:
    for name in ("a.traj", "b.traj"):
        shutil.copy(FIXTURES / "swe_agent_small.traj", tmp_path / name)
    seen: list[tuple[int, int, str]] = []
    import_source("swe-agent", tmp_path, progress=lambda done, total, path: seen.append((done, total, path.name)))
    assert seen == [(0, 2, "a.traj"), (1, 2, "b.traj")]


def test_mooncake_tool_agent_trace_is_named_by_its_file(tmp_path: Path) -> None:
    path = tmp_path / "toolagent_trace.jsonl"
    shutil.copy(FIXTURES / "mooncake_small.jsonl", path)
    wl = import_source("mooncake", path)
    assert {s.agent_kind for s in wl.sessions} == {"tool"}
