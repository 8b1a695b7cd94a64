"""``kairosbench bench gateway``: what the gateway adds to TTFT and per-token latency, against a direct
connection to the same upstream, measured in the same run.

Three processes on loopback, so the gateway has its own interpreter as in a real deployment:
the upstream (``kairosbench.gateway.loopback``: a fast OpenAI streaming server, ``--tokens``
tokens ``--token-delay-s`` apart), the gateway (``kairosbench gateway``, dry-run actuator,
policy ``--policy``), and this process as the client. For each concurrency level N, a round
is N closed-loop workers sending two streams each, their starts spread over one stream's
duration so N streams are in flight at a steady rate (a synchronized burst of N would
measure queueing of N simultaneous arrivals, not the proxy). Rounds alternate direct /
through the gateway (direct, gateway, gateway, direct, ... so drift on a shared machine
hits both), after one unmeasured warm-up round of each that opens the connection pools.

Per stream: TTFT = first byte of the body after the request was sent; per-token time =
(last byte - first byte) / (tokens - 1). Reported: p50/p99 of each for both paths, their
differences ("added"), aggregate streamed tokens/s and its ratio, and the gateway process's
CPU seconds per 1,000 requests (from /proc).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table

__all__ = ["gateway", "BenchResult"]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass
class PathStats:
    ttft_s: list[float] = field(default_factory=list)
    per_token_s: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    requests: int = 0

    def row(self) -> dict[str, float]:
        return {
            "ttft_p50_ms": 1e3 * _pct(self.ttft_s, 0.5),
            "ttft_p99_ms": 1e3 * _pct(self.ttft_s, 0.99),
            "per_token_p50_ms": 1e3 * _pct(self.per_token_s, 0.5),
            "per_token_p99_ms": 1e3 * _pct(self.per_token_s, 0.99),
            "tokens_per_s": self.tokens / self.wall_s if self.wall_s else 0.0,
            "errors": self.errors,
            "requests": self.requests,
        }


@dataclass
class BenchResult:
    streams: int
    direct: PathStats
    gateway: PathStats

    def summary(self) -> dict[str, Any]:
        d, g = self.direct.row(), self.gateway.row()
        return {
            "streams": self.streams,
            "direct": d,
            "gateway": g,
            "added_ttft_p50_ms": g["ttft_p50_ms"] - d["ttft_p50_ms"],
            "added_ttft_p99_ms": g["ttft_p99_ms"] - d["ttft_p99_ms"],
            "added_per_token_p50_ms": g["per_token_p50_ms"] - d["per_token_p50_ms"],
            "added_per_token_p99_ms": g["per_token_p99_ms"] - d["per_token_p99_ms"],
            "throughput_ratio": g["tokens_per_s"] / d["tokens_per_s"] if d["tokens_per_s"] else float("nan"),
            "gateway_cpu_s_per_1k_requests": 1e3 * self.gateway.cpu_s / self.gateway.requests if self.gateway.requests else float("nan"),
        }


async def _stream(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stats: PathStats) -> None:
    t0 = time.perf_counter()
    first = last = None
    n = 0
    try:
        async with session.post(url, data=body, headers=headers) as r:
            if r.status != 200:
                stats.errors += 1
                await r.read()
                return
            async for chunk in r.content.iter_any():
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                n += chunk.count(b'"delta"')
    except (aiohttp.ClientError, asyncio.TimeoutError):
        stats.errors += 1
        return
    if first is None:
        stats.errors += 1
        return
    stats.ttft_s.append(first - t0)
    if n > 1 and last is not None:
        stats.per_token_s.append((last - first) / (n - 1))
    stats.tokens += n


async def _round(session: aiohttp.ClientSession, base: str, streams: int, tokens: int, stats: PathStats, tag: str, *, stream_s: float, per_worker: int = 2) -> None:
    """``streams`` workers, each sending ``per_worker`` streams back to back; worker i starts at
    i/streams of one stream's duration, so concurrency is steady at ``streams`` (arrivals
    spread as in serving, not one synchronized burst)."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "bench " * 64}], "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}).encode()
    url = base + "/v1/chat/completions"

    async def worker(i: int) -> None:
        await asyncio.sleep(stream_s * i / streams)
        for j in range(per_worker):
            headers = {"Content-Type": "application/json", "X-Kairosbench-Agent": f"{tag}-{i}", "X-Kairosbench-Turn": str(j)}
            if j == per_worker - 1:
                headers["X-Kairosbench-Final"] = "1"
            await _stream(session, url, body, headers, stats)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(streams)))
    stats.wall_s += time.perf_counter() - t0
    stats.requests += streams * per_worker


async def _measure(upstream: str, gateway_url: str, gateway_pid: int, streams: int, tokens: int, rounds: int, stream_s: float) -> BenchResult:
    direct, via = PathStats(), PathStats()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _round(session, upstream, streams, tokens, PathStats(), "warm-d", stream_s=stream_s, per_worker=1)
        await _round(session, gateway_url, streams, tokens, PathStats(), "warm-g", stream_s=stream_s, per_worker=1)
        order = ["d", "g", "g", "d"] * ((rounds + 1) // 2)
        done = {"d": 0, "g": 0}
        for which in order:
            if done[which] >= rounds:
                continue
            done[which] += 1
            if which == "d":
                await _round(session, upstream, streams, tokens, direct, f"d{done[which]}", stream_s=stream_s)
            else:
                c0 = _cpu_s(gateway_pid)
                await _round(session, gateway_url, streams, tokens, via, f"g{done[which]}", stream_s=stream_s)
                via.cpu_s += _cpu_s(gateway_pid) - c0
    return BenchResult(streams, direct, via)


def _wait_ready(path: Path, proc: subprocess.Popen, what: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout_s} s")


def run_bench(streams: list[int], *, tokens: int, token_delay_s: float, rounds: int, policy: str, loop: str = "auto") -> list[BenchResult]:
    """Start upstream and gateway subprocesses, measure every concurrency level, stop them."""
    with tempfile.TemporaryDirectory(prefix="kb-gw-bench-") as tmp:
        t = Path(tmp)
        up = subprocess.Popen([sys.executable, "-m", "kairosbench.gateway.loopback", "--token-delay-s", str(token_delay_s), "--ready-file", str(t / "up.json")])
        gw = None
        try:
            upstream = _wait_ready(t / "up.json", up, "loopback upstream")["endpoints"][0]
            gw = subprocess.Popen(
                [sys.executable, "-m", "kairosbench.cli", "gateway", "-e", upstream, "--policy", policy, "--actuator", "dry-run", "--port", "0",
                 "--run-dir", str(t / "gw"), "--ready-file", str(t / "gw.json"), "--idle-timeout-s", "60", "--loop", loop],
                stderr=subprocess.DEVNULL,
            )
            gateway_url = _wait_ready(t / "gw.json", gw, "gateway")["url"]
            return [asyncio.run(_measure(upstream, gateway_url, gw.pid, n, tokens, rounds, tokens * token_delay_s)) for n in streams]
        finally:
            for p in (gw, up):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()


def render(results: list[BenchResult], tokens: int, token_delay_s: float, what: str = "") -> Table:
    table = Table(title=f"Gateway vs direct: {tokens}-token streams, {token_delay_s * 1e3:g} ms between tokens (loopback upstream){'; ' + what if what else ''}")
    for col in ("streams", "path", "TTFT p50 ms", "TTFT p99 ms", "per-token p50 ms", "per-token p99 ms", "tokens/s", "errors", "gateway CPU s / 1k req"):
        table.add_column(col, justify="right")
    for r in results:
        s = r.summary()
        for name in ("direct", "gateway"):
            row = s[name]
            cpu = f"{s['gateway_cpu_s_per_1k_requests']:.2f}" if name == "gateway" else ""
            table.add_row(str(r.streams), name, f"{row['ttft_p50_ms']:.2f}", f"{row['ttft_p99_ms']:.2f}", f"{row['per_token_p50_ms']:.2f}", f"{row['per_token_p99_ms']:.2f}", f"{row['tokens_per_s']:,.0f}", str(row["errors"]), cpu)
        table.add_row(
            "", "added", f"{s['added_ttft_p50_ms']:+.2f}", f"{s['added_ttft_p99_ms']:+.2f}", f"{s['added_per_token_p50_ms']:+.2f}", f"{s['added_per_token_p99_ms']:+.2f}", f"x{s['throughput_ratio']:.3f}", "", "", end_section=True
        )
    return table


@click.command("gateway")
@click.option("--streams", default="100,1000", show_default=True, help="Comma-separated concurrency levels.")
@click.option("--tokens", type=int, default=32, show_default=True, help="Tokens per stream.")
@click.option("--token-delay-s", type=float, default=0.02, show_default=True, help="Upstream delay between tokens (and before the first).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Measured rounds per path and level.")
@click.option("--policy", default="kairos", show_default=True, help="Gateway policy (the admission path runs for every request).")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto", show_default=True, help="The gateway's event loop (auto: uvloop if installed).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the numbers here.")
def gateway(streams: str, tokens: int, token_delay_s: float, rounds: int, policy: str, loop: str, json_out: Path | None) -> None:
    """Gateway-added TTFT and per-token latency vs a direct connection, same run (goal: p99 added TTFT < 1 ms)."""
    levels = [int(x) for x in streams.split(",") if x.strip()]
    console = Console() if Console().is_terminal else Console(width=150)
    with console.status(f"measuring {levels} concurrent streams, {rounds} rounds per path ..."):
        results = run_bench(levels, tokens=tokens, token_delay_s=token_delay_s, rounds=rounds, policy=policy, loop=loop)
    console.print(render(results, tokens, token_delay_s, f"policy {policy}, gateway loop {loop}"))
    if json_out is not None:
        json_out.write_text(json.dumps([{"policy": policy, "loop": loop, "tokens": tokens, "token_delay_s": token_delay_s, **r.summary()} for r in results], indent=1))
