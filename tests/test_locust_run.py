"""Locust runs end to end: locust in a subprocess against a loopback mock server or an emulator.

The test process never imports gevent or Locust: Locust runs as ``python -m locust`` with the
bundled locustfile, the mock server runs in a thread of this process (so the tests can read
what it received), and the assertions are on the run directory Locust leaves behind. Every
run ends by ``--max-sessions`` (``-t`` is only a safety net), so no test waits out a timer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from kairosbench import tokenizer as emu
from kairosbench.locust.cli import LOCUSTFILE
from kairosbench.locust.records import read_run, worker_dirs
from kairosbench.replay.manifest import read_manifest
from kairosbench.replay.mockserver import MockBehavior, MockServer
from kairosbench.workload.io import save_workload
from kairosbench.workload.model import Session, Turn, Workload

REPO = Path(__file__).resolve().parents[1]


class ThreadedMock:
    """``MockServer`` on its own event loop in a thread: ``with ThreadedMock(b) as url``."""

    def __init__(self, behavior: MockBehavior) -> None:
        self.behavior = behavior
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with MockServer(self.behavior) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(15), "mock server did not start"
        return self.url

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def tiny_workload(path: Path, n: int = 3, turns: int = 3) -> Workload:
    ss = []
    for i in range(n):
        ts = [Turn(appended_tokens=400 + 13 * i if j == 0 else 40 + 7 * j, output_tokens=6 + j, tool_duration_s=0.05) for j in range(turns)]
        ss.append(Session(f"agent-{i}", "swe" if i % 2 == 0 else "de", float(i), ts))
    wl = Workload(ss, {"name": "tiny"})
    save_workload(wl, path)
    return wl


def locust(args: list[str], cwd: Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-t", "40s", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LOCUST_HOST", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)


def stats_entries(json_file: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Locust's final statistics (``--json-file``; its CSVs are written only once a second)."""
    entries = json.loads(Path(f"{json_file}.json").read_text())
    return {(e["method"], e["name"]): e for e in entries}


@pytest.fixture
def workload_file(tmp_path: Path) -> Iterator[tuple[Path, Workload]]:
    path = tmp_path / "tiny.parquet"
    yield path, tiny_workload(path)


def test_each_user_replays_sessions_with_the_replays_prompts_and_headers(tmp_path: Path, workload_file: tuple[Path, Workload]) -> None:
    path, wl = workload_file
    b = MockBehavior(record=True, emulator_like=True, fancy_text=True, itl_s=0.001)
    with ThreadedMock(b) as url:
        out = locust(["-u", "3", "-r", "10", "--host", url, "--workload", str(path), "--max-sessions", "3", "--out", str(tmp_path / "run"), "--json-file", str(tmp_path / "stats")], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    requests, sessions = read_run(tmp_path / "run")
    assert requests.num_rows == sum(len(s.turns) for s in wl.sessions) == 9
    r = requests.to_pandas()
    assert (r["status"] == "ok").all()
    assert (r["prompt_tokens"] == r["prompt_tokens_expected"]).all() and (r["prompt_tokens_sent"] == r["prompt_tokens_expected"]).all()
    assert (r["output_tokens"] == r["output_tokens_expected"]).all() and r["ttft_s"].notna().all()
    s = sessions.to_pandas()
    assert sorted(s["session_id"]) == ["agent-0", "agent-1", "agent-2"] and (s["status"] == "completed").all()
    # the same conversation a real agent sends: whole history, replies as streamed, identity headers
    by_agent: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
    for i, (body, headers) in enumerate(zip(b.received, b.headers_seen), start=1):
        by_agent.setdefault(body["user"], []).append((i, body, headers))
    for sess in wl.sessions:
        reqs = by_agent[sess.session_id]
        targets = sess.prompt_tokens()
        for t, (index, body, headers) in enumerate(reqs):
            assert headers["X-Kairosbench-Agent"] == sess.session_id and headers["X-Kairosbench-Turn"] == str(t)
            assert headers["X-Kairosbench-Prompt-Tokens"] == str(emu.chat_prompt_tokens(body["messages"]))
            assert headers.get("X-Kairosbench-Final") == ("1" if t == len(sess.turns) - 1 else None)
            assert emu.chat_prompt_tokens(body["messages"]) == targets[t]
            assert body["max_tokens"] == sess.turns[t].output_tokens and body["ignore_eos"] is True
            if t:
                prev_index, prev_body, _ = reqs[t - 1]
                n = len(prev_body["messages"])
                assert body["messages"][:n] == prev_body["messages"]
                assert body["messages"][n] == {"role": "assistant", "content": b.sent_text[prev_index]}
    # Locust's statistics: one chat entry per turn (e2e, output tokens as size); TTFT its own entry
    stats = stats_entries(tmp_path / "stats")
    assert sum(e["num_requests"] for k, e in stats.items() if k[0] == "chat") == 9
    assert stats[("TTFT", "swe turn")]["num_requests"] == 6 and stats[("TTFT", "de turn")]["num_requests"] == 3
    out_tokens = r.groupby("agent_kind")["output_tokens"].sum()
    assert stats[("chat", "swe turn")]["total_content_length"] == out_tokens["swe"]
    prompt_tokens = r.groupby("agent_kind")["prompt_tokens_sent"].sum()
    assert stats[("TTFT", "de turn")]["total_content_length"] == prompt_tokens["de"]
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "completed" and m["driver"] == "locust" and m["summary"]["sessions_completed"] == 3
    assert m["endpoint"]["tokenizer"]["name"] == "emulator" and m["locust"]["role"] == "local"
    assert "kairosbench run summary" in out.stderr


def test_faults_are_retried_recorded_and_shown_as_locust_failures(tmp_path: Path, workload_file: tuple[Path, Workload]) -> None:
    path, _ = workload_file
    b = MockBehavior(emulator_like=True, reject_params=("ignore_eos",), fault=lambda n, body: "http:503" if n == 3 else None)  # n=1 is the rejected ignore_eos
    with ThreadedMock(b) as url:
        out = locust(["-u", "1", "-r", "10", "--host", url, "--workload", str(path), "--max-sessions", "1", "--retry-backoff-s", "0.01", "--out", str(tmp_path / "run")], tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr  # Locust's exit code when a request failed
    r = read_run(tmp_path / "run")[0].to_pandas()
    assert list(r["status"]) == ["ok", "http", "ok", "ok"] and list(r["attempt"]) == [0, 0, 1, 0]
    assert (r["eos_control"] == "min_tokens").all()  # ignore_eos was rejected once, then dropped
    assert r["error"][1].startswith("HTTP 503")
    assert "http: HTTP 503: mock fault: HTTP 503" in out.stdout + out.stderr  # Locust's error report
    m = read_manifest(tmp_path / "run")
    assert m["endpoint"]["eos_control"] == "min_tokens" and m["endpoint"]["downgrades"][0]["parameter"] == "ignore_eos"


def test_distributed_workers_share_one_plan_and_write_their_own_records(tmp_path: Path, workload_file: tuple[Path, Workload]) -> None:
    path, _ = workload_file
    with ThreadedMock(MockBehavior(emulator_like=True)) as url:
        out = locust(["--processes", "2", "-u", "4", "-r", "10", "--host", url, "--workload", str(path), "--max-sessions", "7", "--out", str(tmp_path / "run")], tmp_path, timeout_s=90)
    assert out.returncode == 0, out.stdout + out.stderr
    dirs = worker_dirs(tmp_path / "run")
    assert [d.name for d in dirs] == ["worker-0", "worker-1"]
    requests, sessions = read_run(tmp_path / "run")
    ids = sessions.column("session_id").to_pylist()
    assert sorted(ids) == sorted(["agent-0", "agent-1", "agent-2", "agent-0~r1", "agent-1~r1", "agent-2~r1", "agent-0~r2"])
    assert requests.num_rows == 21 and set(requests.column("status").to_pylist()) == {"ok"}
    for d in dirs:
        m = read_manifest(d)
        assert m["locust"]["role"] == "worker" and m["locust"]["process_count"] == 2 and m["status"] == "completed"
    assert "all 2 workers replayed their share" in out.stderr
    assert "kairosbench agents (all workers)" in out.stderr


def test_bad_options_and_missing_workloads_fail_with_the_flag_named(tmp_path: Path) -> None:
    out = locust(["-u", "1", "--host", "http://127.0.0.1:9", "--time-scale", "0"], tmp_path)
    assert out.returncode == 2 and "--time-scale must be > 0" in out.stderr
    out = locust(["-u", "1", "--host", "http://127.0.0.1:9", "--workload", str(tmp_path / "nope.parquet")], tmp_path)
    assert out.returncode == 2 and "nope.parquet: file not found" in out.stderr


CLIENT_SCRIPT = r'''
import json, sys
from gevent import monkey; monkey.patch_all()
import gevent
from gevent.server import StreamServer
from kairosbench.locust.client import GeventStreamClient
from kairosbench.replay.client import ClientTimeouts, StreamOutcome

EVENT = b'data: {"choices":[{"delta":{"content":" tok"}}]}\n\n'
DONE = b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
conns = []

def chunk(b):
    return b"%x\r\n" % len(b) + b + b"\r\n"

def handle(sock, addr):
    conns.append(addr)
    f = sock.makefile("rb")
    while True:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return
            head += line
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        body = f.read(n)
        mode = json.loads(body)["mode"]
        if mode == "http":
            msg = b'{"error":{"message":"slow down"}}'
            sock.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
            continue
        ctype = b"text/html" if mode == "html" else b"text/event-stream"
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(chunk(EVENT))
        if mode == "stall":
            gevent.sleep(30)
        if mode == "reset":
            sock.close()
            return
        sock.sendall(chunk(EVENT) + chunk(DONE) + b"0\r\n\r\n")
        if mode == "close_after":  # a keep-alive connection the server then drops while idle
            gevent.sleep(0.05)
            sock.close()
            return

server = StreamServer(("127.0.0.1", 0), handle)
server.start()
url = "http://127.0.0.1:%d/v1/chat/completions" % server.server_port
c = GeventStreamClient(ClientTimeouts(connect_s=2, idle_s=0.3, total_s=5))
out = {}
def run(mode):
    o = c.stream(url, json.dumps({"mode": mode}).encode(), {"X-Kairosbench-Agent": "a"}, StreamOutcome(), count_words=True)
    return {"status": o.status, "retryable": o.retryable, "error": o.error, "tokens": sum(o.parser.chunk_tokens) if o.parser else 0, "http": o.http_status}
out["ok"] = run("close_after")
gevent.sleep(0.2)
out["after_idle_close"] = run("ok")
out["conns_after_idle"] = len(conns)
out["stall"] = run("stall")
out["http"] = run("http")
out["html"] = run("html")
out["reset"] = run("reset")
dead = GeventStreamClient(ClientTimeouts(connect_s=1))
o = dead.stream("http://127.0.0.1:9/v1/chat/completions", b"{}", {}, StreamOutcome(), count_words=True)
out["connect"] = {"status": o.status, "retryable": o.retryable}
print(json.dumps(out))
'''


def test_gevent_client_turns_faults_into_outcomes_and_resends_on_stale_connections() -> None:
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] == {"status": "ok", "retryable": False, "error": None, "tokens": 2, "http": 200}
    assert out["after_idle_close"]["status"] == "ok" and out["conns_after_idle"] == 2  # resent on a fresh connection
    assert out["stall"]["status"] == "stall" and out["stall"]["retryable"] and "after the first" in out["stall"]["error"]
    assert out["http"] == {"status": "http", "retryable": True, "error": "HTTP 429: slow down", "tokens": 0, "http": 429}
    assert out["html"]["status"] == "malformed" and "text/html" in out["html"]["error"]
    assert out["reset"]["status"] in ("reset", "truncated") and out["reset"]["retryable"]
    assert out["connect"] == {"status": "connect", "retryable": True}


def test_kairosbench_locust_starts_an_emulator_when_no_host_is_given(tmp_path: Path, workload_file: tuple[Path, Workload]) -> None:
    path, wl = workload_file
    cmd = [sys.executable, "-m", "kairosbench.cli", "locust", "--headless", "--only-summary", "-u", "2", "-r", "10", "-t", "40s", "--workload", str(path), "--max-sessions", "2", "--out", str(tmp_path / "run")]
    env = dict(os.environ)
    env.pop("LOCUST_HOST", None)
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kairosbench: emulated h100-sxm serving qwen3-coder-30b-a3b-fp8 at http://127.0.0.1:" in out.stderr
    r = read_run(tmp_path / "run")[0].to_pandas()
    assert len(r) == 6 and (r["status"] == "ok").all()
    assert (r["prompt_tokens"] == r["prompt_tokens_expected"]).all()  # the emulator's tokenizer is exact
    m = read_manifest(tmp_path / "run")
    assert m["endpoint"]["model"] == "qwen3-coder-30b-a3b-fp8" and m["endpoint"]["tokenizer"]["name"] == "emulator"


def test_ctrl_c_keeps_every_record_and_marks_the_run_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "long.parquet"
    turns = [Turn(appended_tokens=300, output_tokens=5, tool_duration_s=60.0) for _ in range(3)]
    save_workload(Workload([Session(f"a{i}", "swe", 0.0, list(turns)) for i in range(2)]), path)
    b = MockBehavior(emulator_like=True)
    with ThreadedMock(b) as url:
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-u", "2", "-r", "10", "-t", "60s", "--host", url, "--workload", str(path), "--out", str(tmp_path / "run")]
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while b.requests < 2 and time.monotonic() < deadline:  # both agents are in their first tool call
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert b.requests == 2, err
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "interrupted"
    requests, sessions = read_run(tmp_path / "run")
    assert requests.num_rows == 2 and sessions.column("status").to_pylist() == ["unfinished", "unfinished"]
    # a reply still streaming when the signal came is recorded as cancelled, its turn not done
    status = dict(zip(requests.column("session_id").to_pylist(), requests.column("status").to_pylist()))
    done = dict(zip(sessions.column("session_id").to_pylist(), sessions.column("turns_done").to_pylist()))
    assert set(status) == set(done) == {"a0", "a1"}
    assert all(status[s] in ("ok", "cancelled") and done[s] == (1 if status[s] == "ok" else 0) for s in status)
