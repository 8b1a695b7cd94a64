"""``kairosbench bench loadgen``: the load generator's CPU cost and timing accuracy, against a
minimal hand-written aiohttp streaming client measured in the same run.

A fast local streaming endpoint (``kairosbench.replay.mockserver``) runs in a *subprocess*, so
only the client's CPU is counted (``getrusage(RUSAGE_SELF)``: user + system, all threads).
Scenarios (docs/perf/loadgen.md has the numbers and the machine):

1. **cpu-0ms**: 128-token replies, no inter-token delay, ``concurrency`` streams in flight.
   CPU seconds per 1,000 requests and per 100,000 tokens; goal ≤ 0.65 per 1,000 requests.
2. **cpu-20ms**: the same at 20 ms between tokens; goal ≤ 1.3× the minimal client.
3. **lag-N** for N in 100 / 1,000 / 5,000 concurrent sessions: every session alive for the
   whole window, 32-token replies at 20 ms, tool waits sized so the aggregate load is about
   ``lag_rate`` requests/s; p50/p99/max scheduling lag. Goal: p99 < 5 ms at 1,000 sessions.
4. **ctx-64k**: sessions whose context is ~64k tokens and grows each turn; CPU per request
   and lag, against a minimal client that re-encodes its message list every turn (what
   clients without an incremental prefix do). **build-16k/64k/128k**: the CPU to build one
   turn's request body alone (first turn's synthesis included), incremental vs re-encoding.

The lag rows also show a bare ``asyncio.sleep`` loop's lateness measured just before, on the
same machine with the same mock running: the floor that noise from other processes sets.

kairosbench's side is the real driver (``Replay``: flow, prompt building, streaming client,
per-token ITL, Parquet records); the baseline does only POST, iterate lines, ``json.loads``
each event, and timestamp it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click
import numpy as np
from rich.console import Console
from rich.table import Table

from kairosbench.replay import arrivals as arr
from kairosbench.replay.client import ClientTimeouts, StreamClient
from kairosbench.replay.endpoint import Endpoint
from kairosbench.replay.prompt import PromptFactory, PromptSettings
from kairosbench.replay.records import read_table
from kairosbench.replay.runner import Replay, ReplayOptions
from kairosbench.replay.tokens import EmulatorTokenModel
from kairosbench.replay.wordpool import COMMON_WORDS, WordPool
from kairosbench.workload.model import Session, Turn

__all__ = ["loadgen"]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class MockProcess:
    """The mock endpoint in its own process; ``with MockProcess(itl_s) as url``."""

    def __init__(self, itl_s: float) -> None:
        self.itl_s = itl_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory()

    def __enter__(self) -> str:
        ready = Path(self._dir.name) / "ready.json"
        self.proc = subprocess.Popen([sys.executable, "-m", "kairosbench.replay.mockserver", "--itl-s", str(self.itl_s), "--no-count-prompt", "--ready-file", str(ready)])
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mock endpoint did not start")
            time.sleep(0.05)
        return json.loads(ready.read_text())["url"]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        self._dir.cleanup()


# -- the baseline ------------------------------------------------------------------------------
async def minimal_client(url: str, n_requests: int, concurrency: int, tokens: int, messages: list[dict[str, str]] | None = None, grow: int = 0) -> dict[str, float]:
    """A minimal hand-written aiohttp streaming client (the baseline).

    ``messages``/``grow``: resend (and re-encode) a message list that grows by ``grow`` words
    per request, as a client without an incremental prefix does.
    """
    remaining = n_requests
    ttfts: list[float] = []
    history = list(messages or [{"role": "user", "content": "hello " * 32}])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            nonlocal remaining
            msgs = list(history)
            while remaining > 0:
                remaining -= 1
                payload = {"model": "mock-model", "messages": msgs, "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}
                t0 = time.perf_counter()
                times: list[float] = []
                text: list[str] = []
                async with http.post(url + "/v1/chat/completions", json=payload) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                            obj = json.loads(line[6:])
                            choices = obj.get("choices")
                            if choices and choices[0]["delta"].get("content"):
                                times.append(time.perf_counter())
                                text.append(choices[0]["delta"]["content"])
                if times:
                    ttfts.append(times[0] - t0)
                if grow:
                    msgs = msgs + [{"role": "assistant", "content": "".join(text)}, {"role": "user", "content": "word " * grow}]

        cpu0, wall0 = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    return {"requests": n_requests, "cpu_s": cpu, "wall_s": wall, "tokens": n_requests * tokens}


# -- kairosbench ----------------------------------------------------------------------------
@dataclass
class _Driven:
    cpu_s: float
    wall_s: float
    requests: int
    tokens: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    ok_fraction: float


async def drive(url: str, sessions: list[Session], *, concurrency: int | None = None, spread_s: float = 0.0, duration_s: float | None = None, factory: PromptFactory | None = None) -> _Driven:
    """Run the real driver (``Replay``) against ``url`` and measure its CPU and lag."""
    factory = factory or PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=0))
    with tempfile.TemporaryDirectory() as d:
        async with StreamClient(ClientTimeouts(idle_s=30.0)) as client:
            endpoint = Endpoint(url, "mock-model")
            opts = ReplayOptions(concurrency=concurrency, duration_s=duration_s, prepare_lead_s=1.0)
            replay = Replay(Path(d), [endpoint], [factory], client, opts)
            if concurrency:
                arrivals = arr.closed_loop(sessions)
            else:
                rng = random.Random(1)
                arrivals = iter([arr.Arrival(s, s.session_id, rng.uniform(0, spread_s)) for s in sessions])
                arrivals = iter(sorted(arrivals, key=lambda a: a.at_s or 0.0))
            cpu0, wall0 = _cpu_s(), time.perf_counter()
            await replay.run(arrivals)
            cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
        req = read_table(d, "requests").to_pandas()
    sent = req[req["status"] != "cancelled"]
    lag = sent["sched_lag_s"].to_numpy() * 1e3
    return _Driven(
        cpu_s=cpu,
        wall_s=wall,
        requests=int(len(sent)),
        tokens=int(sent["output_tokens"].fillna(0).sum()),
        lag_p50_ms=float(np.percentile(lag, 50)) if lag.size else math.nan,
        lag_p99_ms=float(np.percentile(lag, 99)) if lag.size else math.nan,
        lag_max_ms=float(lag.max()) if lag.size else math.nan,
        ok_fraction=float((sent["status"] == "ok").mean()) if len(sent) else math.nan,
    )


async def loop_floor(duration_s: float = 3.0, period_s: float = 0.01) -> dict[str, float]:
    """Lateness of a bare ``asyncio.sleep`` loop: the floor any driver's lag sits on, now."""
    loop = asyncio.get_running_loop()
    lags = []
    end = loop.time() + duration_s
    while loop.time() < end:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        lags.append((loop.time() - due) * 1e3)
    a = np.array(lags)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def build_costs(context_tokens: int, turns: int = 8, grow: int = 512) -> dict[str, float]:
    """CPU ms per turn to build a request body at ``context_tokens``: incremental vs re-encode."""
    pool = WordPool(COMMON_WORDS, seed=0)
    factory = PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=0), pool)
    endpoint = Endpoint("http://127.0.0.1:1", "m")
    session = Session("b", "swe", 0.0, [Turn(context_tokens if j == 0 else grow, 64, 0.0) for j in range(turns)])
    reply = b" ".join(b"w%d" % i for i in range(64))

    async def ours() -> float:
        sp = factory.session(session)
        t0 = time.process_time()
        for t in range(turns):
            prep = await sp.prepare(t)
            prep.body(endpoint, 64, b'"b"')
            await sp.add_reply(reply, None)
        return (time.process_time() - t0) / turns * 1e3

    def naive() -> float:
        messages = [{"role": "user", "content": pool.slice(context_tokens, 0).decode()}]
        t0 = time.process_time()
        for _ in range(turns):
            json.dumps({"model": "m", "messages": messages, "max_tokens": 64, "stream": True}).encode()
            messages = messages + [{"role": "assistant", "content": reply.decode()}, {"role": "user", "content": pool.slice(grow, 7).decode()}]
        return (time.process_time() - t0) / turns * 1e3

    first_turn_ms = asyncio.run(ours())  # includes synthesising the first turn's context
    return {"kairosbench_ms_per_turn": first_turn_ms, "reencode_ms_per_turn": naive()}


def _sessions(n: int, turns: int, *, first: int, appended: int, output: int, tool_s: float, prefix: str = "s") -> list[Session]:
    return [Session(f"{prefix}{i}", "swe", 0.0, [Turn(first if j == 0 else appended, output, tool_s) for j in range(turns)]) for i in range(n)]


# -- the command ----------------------------------------------------------------------------
@click.command("loadgen")
@click.option("--requests", "n_requests", type=int, default=2000, help="Requests per client in the CPU scenarios.")
@click.option("--concurrency", type=int, default=32, help="Streams in flight in cpu-0ms.")
@click.option("--concurrency-20ms", type=int, default=128, help="Streams in flight in cpu-20ms.")
@click.option("--levels", default="100,1000,5000", help="Concurrent-session levels for the lag scenarios.")
@click.option("--lag-rate", type=float, default=250.0, help="Aggregate requests/s the lag scenarios aim at.")
@click.option("--skip", multiple=True, type=click.Choice(["cpu-0ms", "cpu-20ms", "lag", "ctx-64k"]), help="Scenarios to skip.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the results as JSON.")
def loadgen(n_requests: int, concurrency: int, concurrency_20ms: int, levels: str, lag_rate: float, skip: tuple[str, ...], json_out: str | None) -> None:
    """Client CPU per 1,000 requests / 100,000 tokens and scheduling lag, vs a minimal client."""
    console = Console(width=None if sys.stdout.isatty() else 130)
    results: dict[str, Any] = {"machine": {"cpu_count": __import__("os").cpu_count(), "python": sys.version.split()[0]}}
    tokens = 128
    turns = 4

    def cpu_rows(name: str, itl_s: float, conc: int, n: int) -> None:
        with MockProcess(itl_s) as url:
            # warm-up both clients (imports, connection pools, JIT-free but cache-warm)
            asyncio.run(minimal_client(url, min(50, n), min(conc, 8), tokens))
            asyncio.run(drive(url, _sessions(8, 2, first=64, appended=16, output=tokens, tool_s=0.0, prefix="w"), concurrency=8))
            base = asyncio.run(minimal_client(url, n, conc, tokens))
            sessions = _sessions(math.ceil(n / turns), turns, first=64, appended=16, output=tokens, tool_s=0.0)
            ours = asyncio.run(drive(url, sessions, concurrency=conc))
        per_req = lambda cpu, r: cpu / r * 1000  # noqa: E731
        per_tok = lambda cpu, t: cpu / t * 100_000  # noqa: E731
        results[name] = {
            "itl_s": itl_s,
            "concurrency": conc,
            "kairosbench": {"requests": ours.requests, "cpu_s": ours.cpu_s, "wall_s": ours.wall_s, "cpu_s_per_1k_requests": per_req(ours.cpu_s, ours.requests), "cpu_s_per_100k_tokens": per_tok(ours.cpu_s, ours.tokens), "ok_fraction": ours.ok_fraction},
            "minimal": {"requests": base["requests"], "cpu_s": base["cpu_s"], "wall_s": base["wall_s"], "cpu_s_per_1k_requests": per_req(base["cpu_s"], base["requests"]), "cpu_s_per_100k_tokens": per_tok(base["cpu_s"], base["tokens"])},
        }
        results[name]["ratio"] = results[name]["kairosbench"]["cpu_s_per_1k_requests"] / results[name]["minimal"]["cpu_s_per_1k_requests"]

    if "cpu-0ms" not in skip:
        console.print("[bold]cpu-0ms[/]: 128-token replies, no inter-token delay …")
        cpu_rows("cpu-0ms", 0.0, concurrency, n_requests)
    if "cpu-20ms" not in skip:
        n20 = max(concurrency_20ms * 4, n_requests // 4)
        console.print(f"[bold]cpu-20ms[/]: 128-token replies at 20 ms, {n20} requests …")
        cpu_rows("cpu-20ms", 0.02, concurrency_20ms, n20)
    if "lag" not in skip:
        for n in (int(x) for x in levels.split(",") if x):
            llm_s = 32 * 0.02
            cycle = max(1.0 + llm_s, n / lag_rate)
            tool = cycle - llm_s
            window = max(10.0, 1.5 * cycle)
            console.print(f"[bold]lag-{n}[/]: {n} sessions, tool {tool:.1f} s, window {window:.0f} s …")
            with MockProcess(0.02) as url:
                floor = asyncio.run(loop_floor())
                turns = math.ceil(window / cycle) + 2
                sessions = _sessions(n, turns, first=256, appended=32, output=32, tool_s=tool, prefix=f"l{n}-")
                d = asyncio.run(drive(url, sessions, spread_s=cycle, duration_s=window))
            results[f"lag-{n}"] = {"sessions": n, "tool_s": tool, "window_s": window, "requests": d.requests, "requests_per_s": d.requests / d.wall_s, "cpu_fraction": d.cpu_s / d.wall_s, "lag_p50_ms": d.lag_p50_ms, "lag_p99_ms": d.lag_p99_ms, "lag_max_ms": d.lag_max_ms, "ok_fraction": d.ok_fraction, "loop_floor": floor}
    if "ctx-64k" not in skip:
        n_sessions, ctx_turns, grow = 32, 8, 512
        console.print(f"[bold]ctx-64k[/]: {n_sessions} sessions × {ctx_turns} turns, 64k-token contexts growing {grow}/turn …")
        with MockProcess(0.0) as url:
            pool = WordPool(COMMON_WORDS, seed=0)
            big = pool.slice(64_000, 0).decode()
            factory = PromptFactory(EmulatorTokenModel(), PromptSettings(system_prompt_tokens=0), pool)
            asyncio.run(minimal_client(url, 4, 2, 64, messages=[{"role": "user", "content": big}], grow=grow))  # warm-up
            asyncio.run(drive(url, _sessions(2, 2, first=64_000, appended=grow, output=64, tool_s=0.0, prefix="w"), spread_s=0.1, factory=factory))
            base = asyncio.run(minimal_client(url, n_sessions * ctx_turns, n_sessions, 64, messages=[{"role": "user", "content": big}], grow=grow))
            sessions = _sessions(n_sessions, ctx_turns, first=64_000, appended=grow, output=64, tool_s=0.5, prefix="c")
            d = asyncio.run(drive(url, sessions, spread_s=1.0, factory=factory))
        results["ctx-64k"] = {
            "sessions": n_sessions,
            "turns": ctx_turns,
            "kairosbench": {"requests": d.requests, "cpu_ms_per_request": d.cpu_s / d.requests * 1e3, "lag_p50_ms": d.lag_p50_ms, "lag_p99_ms": d.lag_p99_ms, "lag_max_ms": d.lag_max_ms},
            "minimal": {"requests": base["requests"], "cpu_ms_per_request": base["cpu_s"] / base["requests"] * 1e3},
        }
        results["ctx-64k"]["ratio"] = results["ctx-64k"]["kairosbench"]["cpu_ms_per_request"] / results["ctx-64k"]["minimal"]["cpu_ms_per_request"]
    if "ctx-64k" not in skip:
        for ctx in (16_000, 64_000, 128_000):
            results[f"build-{ctx // 1000}k"] = build_costs(ctx)
    console.print(_table(results))
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2) + "\n")


def _table(results: dict[str, Any]) -> Table:
    t = Table(title="kairosbench bench loadgen (client CPU: user+sys, all threads)")
    for col in ("scenario", "kairosbench", "minimal client", "ratio", "goal"):
        t.add_column(col, justify="right" if col != "scenario" else "left")
    for name in ("cpu-0ms", "cpu-20ms"):
        if name in results:
            r = results[name]
            k, m = r["kairosbench"], r["minimal"]
            goal = "≤ 0.65 CPU-s / 1k req" if name == "cpu-0ms" else "ratio ≤ 1.3"
            ok = k["cpu_s_per_1k_requests"] <= 0.65 if name == "cpu-0ms" else r["ratio"] <= 1.3
            t.add_row(f"{name}: CPU-s / 1,000 requests", f"{k['cpu_s_per_1k_requests']:.3f}", f"{m['cpu_s_per_1k_requests']:.3f}", f"{r['ratio']:.2f}", f"{goal} {'✓' if ok else '✗'}")
            t.add_row(f"{name}: CPU-s / 100,000 tokens", f"{k['cpu_s_per_100k_tokens']:.3f}", f"{m['cpu_s_per_100k_tokens']:.3f}", "", "")
    for name, r in results.items():
        if name.startswith("lag-"):
            goal = "p99 < 5 ms" if r["sessions"] == 1000 else ""
            ok = "" if not goal else (" ✓" if r["lag_p99_ms"] < 5 else " ✗")
            f = r["loop_floor"]
            t.add_row(
                f"{name}: sched lag p50 / p99 / max (ms)",
                f"{r['lag_p50_ms']:.2f} / {r['lag_p99_ms']:.2f} / {r['lag_max_ms']:.1f}",
                f"bare loop: {f['p50_ms']:.2f} / {f['p99_ms']:.2f} / {f['max_ms']:.1f}",
                f"{r['requests_per_s']:.0f} req/s, CPU {r['cpu_fraction'] * 100:.0f}%",
                goal + ok,
            )
    if "ctx-64k" in results:
        r = results["ctx-64k"]
        t.add_row("ctx-64k: CPU ms / request", f"{r['kairosbench']['cpu_ms_per_request']:.2f}", f"{r['minimal']['cpu_ms_per_request']:.2f}", f"{r['ratio']:.2f}", "")
        t.add_row("ctx-64k: sched lag p50 / p99 (ms)", f"{r['kairosbench']['lag_p50_ms']:.2f} / {r['kairosbench']['lag_p99_ms']:.2f}", "", "", "")
    for name, r in results.items():
        if name.startswith("build-"):
            t.add_row(f"{name}: body build CPU ms / turn (vs re-encode)", f"{r['kairosbench_ms_per_turn']:.3f}", f"{r['reencode_ms_per_turn']:.3f}", f"{r['kairosbench_ms_per_turn'] / r['reencode_ms_per_turn']:.2f}", "")
    return t
