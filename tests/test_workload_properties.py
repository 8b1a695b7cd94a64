"""Property tests: any valid workload round-trips; any garbage is a WorkloadError, never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairosbench.errors import WorkloadError
from kairosbench.workload.io import load_workload, save_workload
from kairosbench.workload.model import TOKEN_COUNT_METHODS, Session, Turn, Workload

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
tokens = st.integers(min_value=0, max_value=2**40)
seconds = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)
short_text = st.text(max_size=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "tool", "system"]), "content": short_text}),
                    max_size=3).map(json.dumps)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def turns(draw: st.DrawFn) -> list[Turn]:
    n = draw(st.integers(min_value=1, max_value=5))
    out: list[Turn] = []
    prompt = 0
    for _ in range(n):
        prompt += draw(st.integers(min_value=0, max_value=10_000))
        out.append(Turn(
            appended_tokens=draw(tokens),
            output_tokens=draw(tokens),
            tool_duration_s=draw(seconds),
            tool_name=draw(st.none() | short_text),
            prompt_tokens=draw(st.none() | st.just(prompt)),  # recorded sizes never shrink
            text=draw(st.none() | messages),
            output_text=draw(st.none() | short_text),
            prefix_hashes=draw(st.none() | st.lists(int64, max_size=4)),
            token_count_method=draw(st.sampled_from(TOKEN_COUNT_METHODS)),
        ))
    return out


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    ids = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
    sessions = [Session(sid, draw(st.text(min_size=1, max_size=6)), draw(seconds), draw(turns()), draw(short_text)) for sid in ids]
    sessions.sort(key=lambda s: s.arrival_s)
    meta = draw(st.dictionaries(st.text(max_size=5), st.integers() | short_text | st.booleans(), max_size=3))
    return Workload(sessions, meta)


@SETTINGS
@given(wl=workloads(), suffix=st.sampled_from([".parquet", ".jsonl"]))
def test_valid_workloads_round_trip(wl: Workload, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"w{suffix}"
        save_workload(wl, path)
        back = load_workload(path)
    assert back.sessions == wl.sessions
    assert back.meta == wl.meta


def _load_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"w{suffix}"
        path.write_bytes(data)
        load_workload(path)


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".parquet", ".jsonl", ".bin"]), magic=st.booleans())
def test_garbage_bytes_are_a_workload_error(data: bytes, suffix: str, magic: bool) -> None:
    try:
        _load_bytes((b"PAR1" if magic else b"") + data, suffix)
    except WorkloadError:
        return
    raise AssertionError("garbage loaded as a workload")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)


@SETTINGS
@given(lines=st.lists(json_values, min_size=1, max_size=5))
def test_json_lines_of_anything_are_a_workload_error(lines: list[object]) -> None:
    try:
        _load_bytes("\n".join(json.dumps(v) for v in lines).encode(), ".jsonl")
    except WorkloadError:
        return
    raise AssertionError("arbitrary JSON loaded as a workload")


VALID_ROW = {"session_id": "s", "agent_kind": "swe", "arrival_s": 0.0, "turn_index": 0, "prompt_tokens": 10,
             "appended_tokens": 10, "output_tokens": 2, "tool_name": "bash", "tool_duration_s": 1.0,
             "token_count_method": "usage"}


@SETTINGS
@given(field=st.sampled_from(sorted(VALID_ROW)), value=json_values, row=st.integers(min_value=0, max_value=2))
def test_one_corrupted_field_loads_or_names_that_field(field: str, value: object, row: int) -> None:
    rows = [dict(VALID_ROW, turn_index=i, prompt_tokens=10 + 20 * i) for i in range(3)]
    rows[row][field] = value
    try:
        _load_bytes("\n".join(json.dumps(r) for r in rows).encode(), ".jsonl")
    except WorkloadError as err:
        assert err.path is not None and (err.line is not None or err.field is not None), str(err)


@SETTINGS
@given(wl=workloads(), cut=st.floats(min_value=0.0, max_value=0.99))
def test_truncated_parquet_is_a_workload_error(wl: Workload, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.parquet"
        save_workload(wl, path)
        data = path.read_bytes()
    try:
        _load_bytes(data[: int(len(data) * cut)], ".parquet")
    except WorkloadError:
        return
    raise AssertionError("a truncated Parquet file loaded")
