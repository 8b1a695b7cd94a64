"""The Locust web UI with kairosbench: form fields, form validation, the Agents tab and its CSV.

Locust runs as a subprocess with its web UI on a free loopback port; the test drives it the
way the browser does (GET /, POST /swarm, polling /stats/requests).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from test_locust_run import ThreadedMock, tiny_workload

from kairosbench.locust.cli import LOCUSTFILE
from kairosbench.locust.records import read_run
from kairosbench.replay.mockserver import MockBehavior


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def post(url: str, form: dict[str, str]) -> dict[str, Any]:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(fn: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = fn()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_web_ui_shows_the_kairosbench_fields_checks_them_and_fills_the_agents_tab(tmp_path: Path) -> None:
    path = tmp_path / "tiny.parquet"
    tiny_workload(path)
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    with ThreadedMock(MockBehavior(emulator_like=True)) as url:
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port", str(port), "--host", url, "--workload", str(path), "--out", str(tmp_path / "run")]
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            page = wait_for(lambda: get(web + "/")).decode()
            args = json.loads(page.split("window.templateArgs = ", 1)[1].split("\n", 1)[0])
            fields = args["extra_options"]
            assert {"workload", "time_scale", "slo_tok_s", "eos_control", "max_sessions", "tokenizer", "model", "out"} <= set(fields)
            assert "api_key_env" not in fields and "seed" not in fields
            assert fields["workload"]["default_value"] == str(path) and fields["time_scale"]["default_value"] == 1.0
            assert fields["eos_control"]["choices"] == ["auto", "ignore_eos", "min_tokens", "none"]
            assert "per-agent slo" in fields["slo_tok_s"]["help_text"].lower()
            assert args["extended_tabs"] == [{"title": "Agents", "key": "kairosbench-agents"}]

            bad = post(web + "/swarm", {"user_count": "2", "spawn_rate": "2", "host": url, "time_scale": "0"})
            assert bad["success"] is False and "--time-scale must be > 0" in bad["message"]

            ok = post(web + "/swarm", {"user_count": "2", "spawn_rate": "10", "host": url, "time_scale": "0.5", "max_sessions": "3"})
            assert ok["success"] is True

            def stopped() -> dict[str, Any] | None:  # --max-sessions ends the test; the UI goes back to "stopped"
                s = json.loads(get(web + "/stats/requests"))
                return s if s["state"] == "stopped" else None

            stats = wait_for(stopped)
            rows = {r["agent_kind"]: r for r in stats["extended_stats"][0]["data"]}
            assert stats["extended_stats"][0]["key"] == "kairosbench-agents"
            assert rows["All"]["agents"] == 3 and rows["All"]["completed"] == 3 and rows["All"]["slo_attainment_pct"] == 100.0
            assert {e["name"] for e in stats["stats"]} >= {"swe turn", "de turn", "Aggregated"}
            csv_text = get(web + "/kairosbench/agents.csv").decode()
            assert csv_text.splitlines()[0].startswith("Agent kind,Agents,Running") and csv_text.splitlines()[-1].startswith("All,3,0,3,0,0,9,0")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    requests, sessions = read_run(tmp_path / "run")
    assert sessions.num_rows == 3 and requests.num_rows == 9
    assert set(requests.column("status").to_pylist()) == {"ok"}
