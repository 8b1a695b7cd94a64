"""A fast loopback OpenAI-compatible streaming server with a fake GPU clock API.

A real implementation of the upstream interface the gateway talks to, for the gateway's
tests and for ``kairosbench bench gateway`` (where the upstream must cost as little CPU as
possible so the measurement is the gateway's). Not the emulator: no engine model, no power
model; each request streams ``max_tokens`` tokens (default 16), ``token_delay_s`` apart
(a body field ``kairosbench_break_after: N`` drops the connection after N tokens, for tests).

It also answers the emulator's clock/telemetry routes (``GET /kairosbench/gpu``,
``POST``/``DELETE /kairosbench/gpu/clocks``, ``GET /kairosbench/engine``) with the same JSON
shape, so the gateway's actuator and its exit-path restoration can be tested without the
engine model. Run standalone: ``python -m kairosbench.gateway.loopback --port 0 --ready-file F``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from kairosbench.clock import now_ns
from kairosbench.tokenizer import chat_prompt_tokens, count_tokens

__all__ = ["LoopbackUpstream", "running_loopback", "main"]

SXM_CLOCKS = list(range(345, 1981, 15))


class LoopbackUpstream:
    """State of one fake instance: its clock lock and request counters."""

    def __init__(self, *, token_delay_s: float = 0.0, default_max_tokens: int = 16, kv_capacity_tokens: int = 100_000) -> None:
        self.token_delay_s = token_delay_s
        self.default_max_tokens = default_max_tokens
        self.kv_capacity_tokens = kv_capacity_tokens
        self.locked_clock_mhz: int | None = None
        self.clock_changes = 0
        self.requests = 0
        self.running = 0
        self.prompt_tokens_seen: list[int] = []
        self.headers_seen: list[dict[str, str]] = []
        self._chunk = b'data: {"id":"lb","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/kairosbench/gpu", self._gpu)
        app.router.add_post("/kairosbench/gpu/clocks", self._lock)
        app.router.add_delete("/kairosbench/gpu/clocks", self._reset)
        app.router.add_get("/kairosbench/engine", self._engine)
        return app

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        if len(self.headers_seen) < 1000:
            self.headers_seen.append(dict(request.headers))
        n = int(body.get("max_tokens") or self.default_max_tokens)
        if "messages" in body:
            prompt = chat_prompt_tokens(body["messages"])
        else:
            prompt = count_tokens(str(body.get("prompt", "")))
        self.prompt_tokens_seen.append(prompt)
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        if not body.get("stream"):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s * n)
            return web.json_response({"id": "lb", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}], "usage": usage})
        self.running += 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            break_after = body.get("kairosbench_break_after")  # test hook: die mid-stream
            for i in range(n):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if break_after is not None and i >= int(break_after):
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(self._chunk)
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(b"data: " + json.dumps({"id": "lb", "object": "chat.completion.chunk", "choices": [], "usage": usage}).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.running -= 1

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "loopback", "object": "model"}]})

    async def _gpu(self, request: web.Request) -> web.Response:
        sm = self.locked_clock_mhz or SXM_CLOCKS[-1]
        return web.json_response(
            {
                "gpu": 0,
                "name": "loopback",
                "t_ns": now_ns(),
                "power_w": 100.0 + 0.2 * sm * (1 if self.running else 0.1),
                "power_avg_w": 100.0,
                "energy_mj": 0,
                "sm_clock_mhz": sm,
                "mem_clock_mhz": 2619,
                "gpu_util_pct": 100.0 if self.running else 0.0,
                "mem_util_pct": 0.0,
                "mem_used_mib": 0.0,
                "mem_total_mib": 81559.0,
                "temp_c": 40.0,
                "throttle_reasons": 0,
                "power_limit_w": 700.0,
                "locked_clock_mhz": self.locked_clock_mhz,
                "supported_sm_clocks_mhz": SXM_CLOCKS,
            }
        )

    async def _lock(self, request: web.Request) -> web.Response:
        mhz = (await request.json()).get("sm_clock_mhz")
        if mhz not in SXM_CLOCKS:
            return web.json_response({"error": {"message": f"unsupported SM clock {mhz}", "type": "invalid_request_error", "param": "sm_clock_mhz", "code": 400}}, status=400)
        self.locked_clock_mhz = int(mhz)
        self.clock_changes += 1
        return web.json_response({"locked_clock_mhz": self.locked_clock_mhz})

    async def _reset(self, request: web.Request) -> web.Response:
        self.locked_clock_mhz = None
        self.clock_changes += 1
        return web.json_response({"locked_clock_mhz": None})

    async def _engine(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kv_capacity_tokens": self.kv_capacity_tokens,
                "block_size": 16,
                "num_gpu_blocks": self.kv_capacity_tokens // 16,
                "kv_used_blocks": 0,
                "num_running": self.running,
                "num_waiting": 0,
                "preemptions_total": 0,
                "recomputed_tokens_total": 0,
                "prefix_queries_tokens": 0,
                "prefix_hits_tokens": 0,
                "model": "loopback",
                "gpu_preset": "loopback",
                "lag_s": 0.0,
            }
        )


@asynccontextmanager
async def running_loopback(n: int = 1, *, host: str = "127.0.0.1", **kwargs: Any) -> AsyncIterator[tuple[list[str], list[LoopbackUpstream]]]:
    """``n`` loopback upstreams in this event loop; yields (base URLs, their state objects)."""
    runners, urls, states = [], [], []
    try:
        for _ in range(n):
            state = LoopbackUpstream(**kwargs)
            runner = web.AppRunner(state.app(), access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, host, 0, backlog=4096)
            await site.start()
            runners.append(runner)
            states.append(state)
            urls.append(f"http://{host}:{runner.addresses[0][1]}")
        yield urls, states
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Serve loopback upstreams until SIGTERM/SIGINT; write {"endpoints": [...]} to --ready-file."""
    ap = argparse.ArgumentParser(prog="python -m kairosbench.gateway.loopback")
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--token-delay-s", type=float, default=0.0)
    ap.add_argument("--ready-file", type=Path, required=True)
    args = ap.parse_args(argv)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running_loopback(args.instances, token_delay_s=args.token_delay_s) as (urls, _):
            tmp = args.ready_file.with_name(args.ready_file.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"endpoints": urls}))
            os.replace(tmp, args.ready_file)
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
