"""``kairosbench bench emulator``: can one emulator process keep its model clock in real time?

The emulator runs in its own process (``EmulatorProcess``, pinned to one core when the machine
has two or more), serving ``--instances`` instances. This process drives ``--streams``
concurrent agent-like streams against it for ``--duration`` seconds: each stream is a chat
session whose context grows every turn (the next turn resends prompt + reply + new text, so
the prefix cache works as in a replay), streaming, ``ignore_eos``, with reply lengths and
tool pauses drawn per turn (seeded), so agents do not move in lockstep.

Reported, all measured in this run:

* **lag** p50 / p99 / max: how far behind its model clock the emulator emitted each step's
  tokens (``GET /kairosbench/lag`` on every instance, reset after a warm-up);
* **emulator CPU**: user + system seconds of the emulator process (``/proc``), per wall second
  (1.0 = one core saturated) and per 1,000 streamed tokens;
* the same load against a **baseline**: a minimal aiohttp SSE server (no engine model, no
  tokenizer, no KV cache) that streams the same number of tokens per request at the emulator's
  measured mean inter-token time, also in its own process. The ratio is the cost of the model.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
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
from rich.progress import Progress
from rich.table import Table

from kairosbench.emulator.launch import EmulatorProcess
from kairosbench.emulator.presets import MODEL_PRESETS
from kairosbench.errors import EndpointError

__all__ = ["emulator", "run_bench", "BenchResult"]


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadStats:
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    gaps_s: list[float] = field(default_factory=list)


async def _stream_agent(session: aiohttp.ClientSession, url: str, idx: int, stop_at: float, stats: LoadStats, first: int, grow: int, out: int, tool_s: float) -> None:
    """One agent: turns of ``out`` tokens on average (uniform 0.5x-1.5x), tool pauses of
    ``tool_s`` on average (exponential), context growing by ``grow`` tokens per turn."""
    rng = random.Random(idx)
    words = [f"w{idx}x{i}" for i in range(first)]
    messages: list[dict[str, str]] = [{"role": "user", "content": " ".join(words)}]
    turn = 0
    lockstep = tool_s < 0  # the worst case: identical replies, no pauses, all start together
    if not lockstep:
        await asyncio.sleep(rng.uniform(0, 2 * tool_s))  # agents do not start in lockstep
    while time.monotonic() < stop_at:
        n_out = out if lockstep else max(1, int(out * rng.uniform(0.5, 1.5)))
        body = {"messages": messages, "max_tokens": n_out, "ignore_eos": True, "stream": True}
        parts: list[str] = []
        last = None
        try:
            async with session.post(url + "/v1/chat/completions", json=body, headers={"X-Kairosbench-Agent": f"bench{idx}"}) as r:
                if r.status != 200:
                    stats.errors += 1
                    await asyncio.sleep(0.5)
                    continue
                async for raw in r.content:
                    if not raw.startswith(b"data: {"):
                        continue
                    now = time.monotonic()
                    if last is not None and len(stats.gaps_s) < 2_000_000:
                        stats.gaps_s.append(now - last)
                    last = now
                    ev = json.loads(raw[6:])
                    ch = ev.get("choices") or []
                    if ch:
                        piece = ch[0].get("delta", {}).get("content")
                        if piece:
                            parts.append(piece)
                            stats.tokens += 1
        except aiohttp.ClientError:
            stats.errors += 1
            continue
        stats.requests += 1
        turn += 1
        if tool_s > 0:
            await asyncio.sleep(rng.expovariate(1.0 / tool_s))
        messages.append({"role": "assistant", "content": "".join(parts)})
        messages.append({"role": "user", "content": " ".join(f"t{idx}y{turn}z{i}" for i in range(grow))})
        if len(messages) > 200:  # keep contexts bounded (~first + 100 turns)
            messages = messages[:1]


async def _drive(urls: list[str], pid: int, streams: int, duration_s: float, warmup_s: float, first: int, grow: int, out: int, tool_s: float, progress: Progress | None) -> tuple[LoadStats, float, float]:
    """Drive the streams; returns (stats over the window, window seconds, server CPU seconds)."""
    stats = LoadStats()
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        t0 = time.monotonic()
        stop_at = t0 + warmup_s + duration_s
        tasks = [asyncio.create_task(_stream_agent(s, urls[i % len(urls)], i, stop_at, stats, first, grow, out, tool_s)) for i in range(streams)]
        task = progress.add_task("driving streams", total=warmup_s + duration_s) if progress else None
        await asyncio.sleep(warmup_s)
        for u in urls:  # measurement window starts now
            async with s.get(u + "/kairosbench/lag", params={"reset": "1"}) as r:
                await r.read()
        tokens0 = stats.tokens
        stats.gaps_s.clear()
        w0 = time.monotonic()
        c0 = _proc_cpu_s(pid)
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(0.5, max(0.0, stop_at - time.monotonic())))
            if progress and task is not None:
                progress.update(task, completed=time.monotonic() - t0)
        c1 = _proc_cpu_s(pid)
        w1 = time.monotonic()
        tokens = stats.tokens - tokens0
        await asyncio.gather(*tasks, return_exceptions=True)
        stats.tokens = tokens
    return stats, w1 - w0, c1 - c0


async def _lag(urls: list[str]) -> dict[str, float]:
    out: dict[str, float] = {"n": 0, "p50_s": 0.0, "p99_s": 0.0, "max_s": 0.0}
    async with aiohttp.ClientSession() as s:
        rows = []
        for u in urls:
            async with s.get(u + "/kairosbench/lag") as r:
                rows.append(await r.json())
    out["n"] = sum(r["n"] for r in rows)
    out["p50_s"] = max(r["p50_s"] for r in rows)
    out["p99_s"] = max(r["p99_s"] for r in rows)
    out["max_s"] = max(r["max_s"] for r in rows)
    return out


@dataclass
class BenchResult:
    """One benchmark run (units in the names)."""

    instances: int
    streams: int
    duration_s: float
    model: str
    tokens_per_s: float
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    lag_samples: int
    emulator_cpu_per_wall_s: float
    emulator_cpu_s_per_1k_tokens: float
    client_itl_p50_s: float
    baseline_tokens_per_s: float
    baseline_cpu_per_wall_s: float
    baseline_cpu_s_per_1k_tokens: float
    errors: int

    @property
    def cpu_ratio(self) -> float:
        return self.emulator_cpu_s_per_1k_tokens / self.baseline_cpu_s_per_1k_tokens if self.baseline_cpu_s_per_1k_tokens else float("nan")


_BASELINE = r'''
import asyncio, json, sys, time
from aiohttp import web
ITL = float(sys.argv[2])
async def chat(request):
    body = await request.json()
    n = int(body.get("max_tokens", 16))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    head = b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"'
    tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
    t = time.monotonic()
    for i in range(n):
        t += ITL
        d = t - time.monotonic()
        if d > 0:
            await asyncio.sleep(d)
        await resp.write(head + (b"w" if i == 0 else b" w") + tail)
    await resp.write(b"data: [DONE]\n\n")
    return resp
async def main():
    app = web.Application(client_max_size=2**30)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/kairosbench/lag", lambda r: web.json_response({"n": 0, "p50_s": 0, "p99_s": 0, "max_s": 0}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    urls = []
    for _ in range(int(sys.argv[3])):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        urls.append("http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1])
    open(sys.argv[1] + ".tmp", "w").write(json.dumps({"endpoints": urls}))
    import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    await asyncio.Event().wait()
asyncio.run(main())
'''


def _start_baseline(itl_s: float, n: int, cpu: int | None) -> tuple[subprocess.Popen[bytes], list[str], Path]:
    tmp = Path(tempfile.mkdtemp(prefix="kairosbench-bench-"))
    ready = tmp / "ready.json"
    script = tmp / "baseline.py"
    script.write_text(_BASELINE)
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None and hasattr(os, "sched_setaffinity") else None  # noqa: E731
    proc = subprocess.Popen([sys.executable, str(script), str(ready), repr(itl_s), str(n)], preexec_fn=pre, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise EndpointError("the baseline streaming server did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["endpoints"], tmp


def run_bench(*, instances: int = 4, streams: int = 128, duration_s: float = 30.0, warmup_s: float = 5.0, model: str = "qwen3-coder-30b-a3b-fp8", first_tokens: int = 2000, grow_tokens: int = 300, output_tokens: int = 200, tool_s: float = 1.0, baseline: bool = True, console: Console | None = None) -> BenchResult:
    """Run the benchmark (blocking). See the module docstring for what is measured."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    server_cpu = 0 if ncpu >= 2 else None
    if ncpu >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(1, ncpu)))  # the client stays off the emulator's core
    console = console or Console()
    with EmulatorProcess(instances, model=model, cpu=server_cpu) as proc:
        assert proc.pid is not None
        with Progress(console=console, transient=True) as progress:
            stats, wall, emu_cpu = asyncio.run(_drive(proc.urls, proc.pid, streams, duration_s, warmup_s, first_tokens, grow_tokens, output_tokens, tool_s, progress))
        lag = asyncio.run(_lag(proc.urls))
    itl = statistics.median(stats.gaps_s) if stats.gaps_s else 0.02
    b_tok = b_cpu = 0.0
    bwall = 1.0
    if baseline:
        bproc, burls, tmp = _start_baseline(max(itl, 0.001), instances, server_cpu)
        try:
            with Progress(console=console, transient=True) as progress:
                bstats, bwall, b_cpu = asyncio.run(_drive(burls, bproc.pid, streams, duration_s, warmup_s, first_tokens, grow_tokens, output_tokens, tool_s, progress))
        finally:
            bproc.kill()
            bproc.wait()
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
        b_tok = bstats.tokens / bwall
    return BenchResult(
        instances=instances,
        streams=streams,
        duration_s=wall,
        model=model,
        tokens_per_s=stats.tokens / wall,
        lag_p50_s=lag["p50_s"],
        lag_p99_s=lag["p99_s"],
        lag_max_s=lag["max_s"],
        lag_samples=int(lag["n"]),
        emulator_cpu_per_wall_s=emu_cpu / wall,
        emulator_cpu_s_per_1k_tokens=emu_cpu / max(1, stats.tokens) * 1000,
        client_itl_p50_s=itl,
        baseline_tokens_per_s=b_tok,
        baseline_cpu_per_wall_s=b_cpu / bwall if baseline else 0.0,
        baseline_cpu_s_per_1k_tokens=(b_cpu / max(1.0, bstats.tokens) * 1000) if baseline else 0.0,
        errors=stats.errors,
    )


def result_table(r: BenchResult) -> Table:
    t = Table(title=f"bench emulator: {r.instances} instances, {r.streams} streams, {r.duration_s:.0f} s, {r.model}")
    t.add_column("metric")
    t.add_column("emulator", justify="right")
    t.add_column("baseline (bare SSE server)", justify="right")
    t.add_row("streamed tokens/s", f"{r.tokens_per_s:,.0f}", f"{r.baseline_tokens_per_s:,.0f}")
    t.add_row("server CPU (cores busy)", f"{r.emulator_cpu_per_wall_s:.2f}", f"{r.baseline_cpu_per_wall_s:.2f}")
    t.add_row("server CPU s / 1,000 tokens", f"{r.emulator_cpu_s_per_1k_tokens:.3f}", f"{r.baseline_cpu_s_per_1k_tokens:.3f}")
    t.add_row("CPU ratio emulator / baseline", f"{r.cpu_ratio:.2f}x", "1.00x")
    t.add_row("lag p50 / p99 / max (ms)", f"{r.lag_p50_s * 1e3:.2f} / {r.lag_p99_s * 1e3:.2f} / {r.lag_max_s * 1e3:.1f}", "-")
    t.add_row("lag samples (step ends)", f"{r.lag_samples:,}", "-")
    t.add_row("client inter-token p50 (ms)", f"{r.client_itl_p50_s * 1e3:.2f}", "-")
    t.add_row("errors", str(r.errors), "-")
    return t


@click.command("emulator")
@click.option("--instances", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--streams", type=click.IntRange(1, 10000), default=128, show_default=True, help="Concurrent agent streams (spread round-robin).")
@click.option("--duration", "duration_s", type=click.FloatRange(1.0), default=30.0, show_default=True, help="Measured seconds (after the warm-up).")
@click.option("--warmup", "warmup_s", type=click.FloatRange(0.0), default=5.0, show_default=True)
@click.option("--model", type=click.Choice(sorted(MODEL_PRESETS)), default="qwen3-coder-30b-a3b-fp8", show_default=True)
@click.option("--first-tokens", type=click.IntRange(1), default=2000, show_default=True, help="First prompt of each stream (tokens).")
@click.option("--grow-tokens", type=click.IntRange(1), default=300, show_default=True, help="New tokens per turn.")
@click.option("--output-tokens", type=click.IntRange(1), default=200, show_default=True, help="Mean tokens per reply (uniform 0.5x-1.5x).")
@click.option("--tool-s", type=click.FloatRange(0.0), default=1.0, show_default=True, help="Mean tool pause between turns (exponential); 0 = back to back.")
@click.option("--lockstep", is_flag=True, help="Worst case: identical reply lengths, no tool pauses, all streams start together.")
@click.option("--no-baseline", is_flag=True, help="Skip the bare-SSE-server baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def emulator(instances: int, streams: int, duration_s: float, warmup_s: float, model: str, first_tokens: int, grow_tokens: int, output_tokens: int, tool_s: float, lockstep: bool, no_baseline: bool, as_json: bool) -> None:
    """Real-time check: lag and CPU of one emulator process under concurrent streams."""
    console = Console()
    if lockstep:
        tool_s = -1.0
    r = run_bench(
        instances=instances, streams=streams, duration_s=duration_s, warmup_s=warmup_s, model=model,
        first_tokens=first_tokens, grow_tokens=grow_tokens, output_tokens=output_tokens, tool_s=tool_s, baseline=not no_baseline, console=console,
    )  # fmt: skip
    if as_json:
        d = dict(r.__dict__)
        d["cpu_ratio"] = r.cpu_ratio
        click.echo(json.dumps(d, indent=2))
    else:
        console.print(result_table(r))


if __name__ == "__main__":  # pragma: no cover
    emulator()
