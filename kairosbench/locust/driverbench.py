"""The Locust driver's cost and timing, measured end to end against the replay's mock server.

    python -m kairosbench.locust.driverbench drivers [--sessions 160] [--concurrency 32] [--itl-s 0.005]
    python -m kairosbench.locust.driverbench scale [--users 1000] [--run-time 75s]

``drivers``: the same closed-loop replay (synthetic sessions of 10 turns, 128-token replies,
no tool time) driven by Locust (``-u N --max-sessions M``) and by ``kairosbench run
--arrival closed --concurrency N`` (no profiler, no engine metrics), against one mock server
in its own process. Each driver runs twice, with N and with M sessions, and the CPU of the
first run (start-up and one round of sessions) is subtracted from the second: what is left is
the marginal CPU per turn of the whole driver (agent flow, prompts, HTTP, SSE, records; for
Locust also its statistics). Prints the ratio Locust / ``kairosbench run``.

``scale``: one Locust process with many users (agents of 10 turns, 32-token replies at 20 ms
per token, 5 s tool calls), and the scheduling lag (``sched_lag_s``: how late each request
went out against its plan) after a 15 s ramp, plus the process's CPU time.

Runs only subprocesses (no gevent here); the numbers in docs/locust.md came from these.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kairosbench.locust.cli import LOCUSTFILE
from kairosbench.locust.records import read_run
from kairosbench.workload.io import save_workload
from kairosbench.workload.model import Session, Turn, Workload

__all__ = ["main"]


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(CPU s, wall s, result) of one child process."""
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return _children_cpu_s() - cpu0, time.perf_counter() - t0, out


class _Mock:
    """The replay's mock server in its own process (emulator-like: exact token counts)."""

    def __init__(self, tmp: Path, itl_s: float) -> None:
        ready = tmp / "mock-ready.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kairosbench.replay.mockserver", "--emulator-like", "--no-count-prompt", "--itl-s", str(itl_s), "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit("the mock server did not start")
            time.sleep(0.05)
        self.url = str(json.loads(ready.read_text())["url"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _locust(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "--tokenizer", "emulator", *args]


def drivers(ns: argparse.Namespace, tmp: Path) -> None:
    wl = [Session(f"a{i}", "swe" if i % 2 else "de", 0.0, [Turn(2000 if j == 0 else 300, 128, 0.0) for j in range(10)]) for i in range(ns.sessions)]
    save_workload(Workload(wl, {"name": "driverbench"}), tmp / "w.parquet")
    mock = _Mock(tmp, ns.itl_s)
    n, c = ns.sessions, ns.concurrency
    try:

        def locust(sessions: int, out: str) -> tuple[float, float]:
            cpu, wall, _ = _timed(_locust(["-u", str(c), "-r", "1000", "-t", "1h", "--host", mock.url, "--workload", "w.parquet", "--max-sessions", str(sessions), "--out", out, "--system-prompt-tokens", "0"]), tmp)
            return cpu, wall

        def run(sessions: int, out: str) -> tuple[float, float]:
            cmd = [sys.executable, "-m", "kairosbench.cli", "run", "--endpoint", mock.url, "--workload", "w.parquet", "--arrival", "closed", "--concurrency", str(c),
                   "--max-sessions", str(sessions), "--out", out, "--tokenizer", "emulator", "--profile", "none", "--no-engine-metrics", "--no-progress", "--system-prompt-tokens", "0"]  # fmt: skip
            cpu, wall, _ = _timed(cmd, tmp)
            return cpu, wall

        results = {}
        for name, fn in (("locust", locust), ("kairosbench run", run)):
            fixed, _ = fn(c, f"{name[:3]}-fixed")
            total, wall = fn(n, f"{name[:3]}-all")
            results[name] = (fixed, total, wall)
    finally:
        mock.close()
    turns = (n - c) * 10
    print(f"{n} sessions x 10 turns, {c} in flight, 128-token replies, mock inter-token delay {ns.itl_s:g} s")
    for name, (fixed, total, wall) in results.items():
        print(f"{name:16} CPU {total:6.2f} s (wall {wall:5.1f} s), of which start-up + {c} sessions {fixed:5.2f} s: {(total - fixed) / turns * 1000:6.3f} CPU-s per 1,000 turns")
    a, b = results["locust"], results["kairosbench run"]
    print(f"locust / kairosbench run, CPU per turn: {(a[1] - a[0]) / (b[1] - b[0]):.2f}x")


def scale(ns: argparse.Namespace, tmp: Path) -> None:
    wl = [Session(f"a{i}", "swe" if i % 2 else "de", 0.0, [Turn(2000 if j == 0 else 200, 32, 5.0) for j in range(10)]) for i in range(200)]
    save_workload(Workload(wl, {"name": "driverbench-scale"}), tmp / "w.parquet")
    mock = _Mock(tmp, 0.02)
    try:
        cpu, wall, _ = _timed(_locust(["-u", str(ns.users), "-r", "200", "-t", ns.run_time, "--host", mock.url, "--workload", "w.parquet", "--out", "scale"]), tmp)
    finally:
        mock.close()
    d = read_run(tmp / "scale")[0].to_pandas()
    t0 = d["t_start_ns"].min()
    steady = d[d["t_start_ns"] > t0 + 15e9]
    span_s = (steady["t_start_ns"].max() - steady["t_start_ns"].min()) / 1e9
    lag_ms = steady["sched_lag_s"].to_numpy() * 1e3
    print(f"{ns.users} users, {len(d)} requests; after the 15 s ramp {len(steady)} at {len(steady) / span_s:.0f} requests/s; status ok {100 * (d['status'] == 'ok').mean():.1f} % (the rest cut by the end of the test)")
    print(f"scheduling lag p50 {np.percentile(lag_ms, 50):.2f} ms, p99 {np.percentile(lag_ms, 99):.2f} ms, max {lag_ms.max():.1f} ms; TTFT p50 {steady['ttft_s'].median() * 1e3:.1f} ms")
    print(f"Locust process CPU {cpu:.1f} s over {wall:.0f} s wall ({cpu / wall:.2f} cores)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("drivers", help="CPU per turn: Locust vs kairosbench run")
    d.add_argument("--sessions", type=int, default=160)
    d.add_argument("--concurrency", type=int, default=32)
    d.add_argument("--itl-s", type=float, default=0.005)
    s = sub.add_parser("scale", help="scheduling lag with many users in one Locust process")
    s.add_argument("--users", type=int, default=1000)
    s.add_argument("--run-time", default="75s")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kairosbench-driverbench-") as tmp:
        (drivers if ns.what == "drivers" else scale)(ns, Path(tmp))


if __name__ == "__main__":
    main()
