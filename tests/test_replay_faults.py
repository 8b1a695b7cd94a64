"""Faults are data: every kind is recorded on its turn, retried or abandoned, and the run goes on."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

from kairosbench.replay.config import RunConfig
from kairosbench.replay.mockserver import MockBehavior, MockServer
from kairosbench.replay.orchestrate import run_from_config
from kairosbench.replay.records import read_table
from kairosbench.workload.model import Session, Turn, Workload

# session -> (fault on its first attempt of turn 1, expected final session status)
SCENARIOS = {
    "http500": ("http:500", "completed"),
    "http429": ("http:429", "completed"),
    "http400": ("http:400", "abandoned"),
    "reset": ("reset", "completed"),
    "stall": ("stall", "completed"),
    "stallfirst": ("stall_first", "completed"),
    "truncate": ("truncate", "completed"),
    "malformed": ("malformed", "abandoned"),
    "errorevent": ("error_event", "abandoned"),
    "healthy": (None, "completed"),
}


def workload() -> Workload:
    return Workload([Session(name, "swe", 0.0, [Turn(200, 8, 0.1), Turn(50, 8, 0.1), Turn(50, 8)]) for name in SCENARIOS])


def cfg(tmp: Path, url: str, **kw) -> RunConfig:
    base = dict(endpoint=[url], out=str(tmp / "run"), progress=False, time_scale=0.01, retry_backoff_s=0.01, idle_timeout_s=0.3, first_token_timeout_s=0.5, max_retries=2)
    base.update(kw)
    return RunConfig(**base)


async def test_each_fault_is_recorded_and_handled(tmp_path: Path) -> None:
    seen: Counter[tuple[str, int]] = Counter()

    def fault(_: int, body: dict | None) -> str | None:
        assert body is not None
        user = body["user"]
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        seen[(user, turn)] += 1
        if turn == 1 and seen[(user, turn)] == 1:
            return SCENARIOS[user][0]
        return None

    b = MockBehavior(emulator_like=True, fault=fault, fault_after_tokens=3, itl_s=0.001)
    async with MockServer(b) as url:
        out = await run_from_config(cfg(tmp_path, url), workload=workload())
    assert out.status == "completed"
    req = read_table(out.run_dir, "requests").to_pandas()
    ses = read_table(out.run_dir, "sessions").to_pandas().set_index("session_id")
    first_try = req[(req.turn_index == 1) & (req.attempt == 0)].set_index("session_id")
    expect_status = {"http500": "http", "http429": "http", "http400": "http", "reset": "reset", "stall": "stall", "stallfirst": "stall", "truncate": "truncated", "malformed": "malformed", "errorevent": "error", "healthy": "ok"}
    for name, (_, final) in SCENARIOS.items():
        row = first_try.loc[name]
        assert row["status"] == expect_status[name], (name, row["status"], row["error"])
        assert ses.loc[name, "status"] == final, name
        if name != "healthy":
            assert isinstance(row["error"], str) and row["error"]
    assert first_try.loc["http500", "http_status"] == 500
    assert first_try.loc["http429", "http_status"] == 429
    assert "mock fault" in first_try.loc["errorevent", "error"]
    assert "stalled" in first_try.loc["stall", "error"] and "first token" in first_try.loc["stallfirst", "error"]
    # retried turns went out again (attempt 1) and succeeded
    retried = req[(req.turn_index == 1) & (req.attempt == 1)].set_index("session_id")
    assert set(retried.index) == {n for n, (_, f) in SCENARIOS.items() if f == "completed" and n != "healthy"}
    assert (retried["status"] == "ok").all()
    assert ses.loc["malformed", "turns_done"] == 1 and "malformed" in ses.loc["malformed", "error"]
    assert out.summary is not None and out.summary.errors_by_kind["http"] == 3


async def test_persistent_429_abandons_after_max_retries(tmp_path: Path) -> None:
    b = MockBehavior(emulator_like=True, fault=lambda i, body: "http:429")
    wl = Workload([Session("s", "swe", 0.0, [Turn(100, 5)])])
    async with MockServer(b) as url:
        out = await run_from_config(cfg(tmp_path, url, max_retries=2), workload=wl)
    req = read_table(out.run_dir, "requests").to_pandas()
    assert list(req["attempt"]) == [0, 1, 2] and set(req["status"]) == {"http"}
    ses = read_table(out.run_dir, "sessions").to_pandas()
    assert list(ses["status"]) == ["abandoned"]


async def test_connection_refused_is_recorded_and_the_run_completes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    wl = Workload([Session(f"s{i}", "swe", 0.0, [Turn(100, 5)]) for i in range(3)])
    out = await run_from_config(cfg(tmp_path, url, model="m", tokenizer="emulator", max_retries=1), workload=wl)
    assert out.status == "completed"
    req = read_table(out.run_dir, "requests").to_pandas()
    assert len(req) == 6 and set(req["status"]) == {"connect"}
    assert req["http_status"].isna().all()
    ses = read_table(out.run_dir, "sessions").to_pandas()
    assert set(ses["status"]) == {"abandoned"}
