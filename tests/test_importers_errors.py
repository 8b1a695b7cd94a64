"""Importers on bad input: every error names the file, the line or field path, and what is wrong.

Each hand-written fixture in ``tests/fixtures/importers/errors`` holds one mistake real logs
make; the table below says where the message must point. The hypothesis tests feed arbitrary
bytes and arbitrary JSON to every format: the only exception allowed out is ``WorkloadError``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairosbench.errors import UsageError, WorkloadError
from kairosbench.workload.importers import FORMATS, import_source, source_files

ERRORS = Path(__file__).parent / "fixtures" / "importers" / "errors"

# (format, fixture, line, field, words the message must contain)
CASES = [
    ("mooncake", "mooncake_bad_json.jsonl", 2, None, "not valid JSON"),
    ("mooncake", "mooncake_missing_field.jsonl", 3, "output_length", "missing field"),
    ("mooncake", "mooncake_out_of_order.jsonl", 2, "timestamp", "out of order"),
    ("mooncake", "mooncake_negative_timestamp.jsonl", 1, "timestamp", ">= 0"),
    ("mooncake", "mooncake_hash_count.jsonl", 2, "hash_ids", "needs ceil(2000/512) = 4"),
    ("mooncake", "mooncake_wrong_type.jsonl", 1, "input_length", "expected an integer"),
    ("azure", "azure_missing_column.csv", 1, "GeneratedTokens", "missing column"),
    ("azure", "azure_bad_time.csv", 3, "TIMESTAMP", "not a date-time"),
    ("azure", "azure_out_of_order.csv", 4, "TIMESTAMP", "out of order"),
    ("azure", "azure_negative_tokens.csv", 3, "GeneratedTokens", "non-negative integer"),
    ("swe-agent", "swe_agent_not_json.traj", 2, None, "not valid JSON"),
    ("swe-agent", "swe_agent_no_history.traj", None, "history", "missing field"),
    ("swe-agent", "swe_agent_bad_execution_time.traj", None, "trajectory[0].execution_time", "expected a number"),
    ("mini-swe-agent", "mini_swe_agent_no_role.traj.json", None, "[1].role", "missing field"),
    ("spider2", "spider2_bad_content.json", None, "[0].conversation[0].content", "string or a list"),
    ("openhands", "openhands_bad_line.jsonl", 2, None, "not valid JSON"),
    ("openhands", "openhands_out_of_order.json", None, "[1].timestamp", "goes back 6.000000 s"),
    ("openhands", "openhands_bad_usage.jsonl", 1, "metrics.token_usages[0].prompt_tokens", ">= 0"),
    ("terminal-bench", "terminal_bench_missing_column.csv", 1, "total_output_tokens", "missing column"),
    ("terminal-bench", "terminal_bench_end_before_start.csv", 2, "agent_ended_at", "before agent_started_at"),
    ("terminal-bench", "terminal_bench_bad_tokens.csv", 2, "total_input_tokens", "expected a token count"),
    ("openai-chat", "openai_chat_bad_json.jsonl", 2, None, "not valid JSON"),
    ("openai-chat", "openai_chat_no_messages.jsonl", 1, "messages", "missing field"),
    ("openai-chat", "openai_chat_out_of_order.jsonl", 2, "timestamp", "6.000 s before"),
    ("openai-chat", "openai_chat_bad_usage.jsonl", 1, "usage.completion_tokens", "missing field"),
]


@pytest.mark.parametrize(("fmt", "name", "line", "field", "words"), CASES, ids=[c[1] for c in CASES])
def test_bad_input_names_the_place(fmt: str, name: str, line: int | None, field: str | None, words: str) -> None:
    path = ERRORS / name
    with pytest.raises(WorkloadError) as info:
        import_source(fmt, path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(str(path))


def test_every_format_has_an_error_fixture() -> None:
    assert {c[0] for c in CASES} == set(FORMATS)


def test_unknown_format_lists_the_formats() -> None:
    with pytest.raises(UsageError) as info:
        import_source("sharegpt", ERRORS)
    for name in FORMATS:
        assert name in str(info.value)


def test_missing_source_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no such file or directory"):
        import_source("mooncake", tmp_path / "nope.jsonl")
    with pytest.raises(WorkloadError, match=r"no \*\.traj files"):
        source_files("swe-agent", tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"timestamp": 0}\n\xff\xfe\x00garbage\n')
    with pytest.raises(WorkloadError, match="not UTF-8"):
        import_source("mooncake", path)


def test_file_with_no_llm_call_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "only_user.traj.json"
    path.write_text(json.dumps([{"role": "user", "content": "hello"}]))
    with pytest.raises(WorkloadError, match="no sessions with an LLM call"):
        import_source("mini-swe-agent", path)


# --- garbage in, WorkloadError out -------------------------------------------------------

_SUFFIX = {
    "mooncake": ".jsonl",
    "azure": ".csv",
    "swe-agent": ".traj",
    "mini-swe-agent": ".traj.json",
    "openhands": ".jsonl",
    "spider2": ".json",
    "terminal-bench": ".csv",
    "openai-chat": ".jsonl",
}

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["role", "content", "messages", "history", "trajectory", "timestamp", "input_length", "output_length",
             "hash_ids", "action", "observation", "cause", "id", "source", "tool_calls", "usage", "metrics",
             "conversation", "execution_time", "response", "session_id", "token_usages", "args"]
        ),
        inner,
        max_size=6,
    ),
    max_leaves=25,
)  # fmt: skip


def _import_or_workload_error(fmt: str, path: Path) -> None:
    try:
        import_source(fmt, path)
    except WorkloadError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(FORMATS)), data=st.binary(max_size=300))
def test_arbitrary_bytes_give_workload_error(tmp_path: Path, fmt: str, data: bytes) -> None:
    path = tmp_path / f"garbage{_SUFFIX[fmt]}"
    path.write_bytes(data)
    _import_or_workload_error(fmt, path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(FORMATS)), value=_json_values, lines=st.integers(1, 3))
def test_arbitrary_json_gives_workload_error(tmp_path: Path, fmt: str, value: object, lines: int) -> None:
    path = tmp_path / f"garbage{_SUFFIX[fmt]}"
    text = json.dumps(value)
    path.write_text("\n".join([text] * lines) if path.suffix == ".jsonl" else text)
    _import_or_workload_error(fmt, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
            optional={"content": _json_values, "tool_calls": _json_values, "usage": _json_values, "extra": _json_values},
        ),
        max_size=6,
    )
)
def test_message_lists_with_odd_fields_give_workload_error(tmp_path: Path, value: list[object]) -> None:
    """Near-valid transcripts reach deeper code than random JSON does."""
    for fmt, name, doc in (
        ("mini-swe-agent", "m.traj.json", value),
        ("spider2", "s.json", [{"instance_id": "x", "conversation": value}]),
        ("openai-chat", "o.jsonl", {"messages": value, "response": value[-1] if value else None}),
    ):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        _import_or_workload_error(fmt, path)
