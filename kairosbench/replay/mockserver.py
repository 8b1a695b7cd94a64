"""A fast, scriptable OpenAI-compatible streaming server: the load generator's test double.

Not the emulator (no engine model, no GPU): it answers ``/v1/chat/completions`` by streaming
``max_tokens`` tokens in vLLM's chunk format at a fixed inter-token delay, and can be told to
misbehave. Used by ``kairosbench bench loadgen`` (as a subprocess, so its CPU is not counted
against the client) and by the tests (in-process, recording what it received). Users can
drive it to check their own setups::

    python -m kairosbench.replay.mockserver --port 8100 --itl-s 0.02

Tokens are words ``" t<request>x<i>"`` (one token each for the emulator tokenizer).
``usage.prompt_tokens`` is the emulator tokenizer's count of the messages (``count_prompt``),
so replay fidelity can be checked exactly. Faults (``MockBehavior.fault``: a function of the
request number and body returning one of ``FAULTS`` or None):

    http:<code>   answer <code> with an OpenAI-style JSON error
    reset         stream a few tokens, then abort the TCP connection
    stall         stream a few tokens, then go silent (until the client gives up)
    stall_first   go silent before the first byte
    malformed     stream a few tokens, then an event that is not JSON
    truncate      stream a few tokens, then end the body without a finish_reason or [DONE]
    error_event   stream a few tokens, then an in-stream {"error": ...} event
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from kairosbench import tokenizer as emu_tok

__all__ = ["MockBehavior", "MockServer", "FAULTS", "make_app"]

FAULTS = ("reset", "stall", "stall_first", "malformed", "truncate", "error_event")  # plus http:<code>
_MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')


@dataclass
class MockBehavior:
    """How the mock answers. Mutable: tests change it between requests."""

    model: str = "mock-model"
    itl_s: float = 0.0  # delay between chunks
    ttft_s: float = 0.0  # delay before the first token
    tokens_per_chunk: int = 1
    count_prompt: bool = True  # parse the body and report exact emulator-tokenizer usage
    include_usage: bool = True  # honour stream_options.include_usage
    emulator_like: bool = False  # answer GET /kairosbench/engine (auto-detects the emulator tokenizer)
    reject_params: tuple[str, ...] = ()  # answer 400 naming the first of these present in a body
    fancy_text: bool = False  # tokens with quotes, newlines, backslashes and non-ASCII
    fault: Callable[[int, dict[str, Any] | None], str | None] | None = None
    fault_after_tokens: int = 3
    record: bool = False  # keep every received body (parsed) in ``received``
    received: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    sent_text: dict[int, str] = field(default_factory=dict)  # request number -> streamed reply
    requests: int = 0


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "BadRequestError" if status < 500 else "InternalServerError", "param": param, "code": status}}
    return web.json_response(body, status=status)


_FANCY = (' "quoted"', "\n", " back\\slash", " caf\u00e9", " \U0001f600", "\ttab", " plain")


def make_app(behavior: MockBehavior) -> web.Application:
    """The aiohttp application serving ``behavior``."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": behavior.model, "object": "model", "owned_by": "kairosbench-mock"}]})

    async def engine(_: web.Request) -> web.Response:
        if not behavior.emulator_like:
            raise web.HTTPNotFound()
        return web.json_response({"kv_capacity_tokens": 1_000_000, "block_size": 16, "model": behavior.model})

    async def tokenize(request: web.Request) -> web.Response:
        data = await request.json()
        if "messages" in data:
            n = emu_tok.chat_prompt_tokens(data["messages"])
            if not data.get("add_generation_prompt", True):
                n -= emu_tok.GENERATION_PROMPT_TOKENS
        else:
            n = emu_tok.count_tokens(str(data.get("prompt", "")))
        return web.json_response({"count": n, "max_model_len": 131072, "tokens": list(range(n))})

    async def chat(request: web.Request) -> web.StreamResponse:
        behavior.requests += 1
        index = behavior.requests
        raw = await request.read()
        data: dict[str, Any] | None = None
        if behavior.count_prompt or behavior.record or behavior.reject_params or behavior.fault is not None:
            try:
                data = json.loads(raw)
            except ValueError:
                return _error(400, "body is not JSON")
        if behavior.record:
            assert data is not None
            behavior.received.append(data)
            behavior.headers_seen.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-kairosbench")})
        if data is not None:
            for name in behavior.reject_params:
                if name in data:
                    return _error(400, f"Unrecognized request argument supplied: {name}", name)
        fault = behavior.fault(index, data) if behavior.fault is not None else None
        if fault and fault.startswith("http:"):
            code = int(fault.split(":", 1)[1])
            return _error(code, f"mock fault: HTTP {code}")
        if data is not None:
            max_tokens = int(data.get("max_tokens") or 16)
            include_usage = bool((data.get("stream_options") or {}).get("include_usage")) and behavior.include_usage
            prompt_tokens = emu_tok.chat_prompt_tokens(data.get("messages") or []) if behavior.count_prompt else 0
        else:
            m = _MAX_TOKENS.search(raw)
            max_tokens = int(m.group(1)) if m else 16
            include_usage = behavior.include_usage and _INCLUDE_USAGE.search(raw) is not None
            prompt_tokens = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            await _stream(request, resp, index, fault, max_tokens, include_usage, prompt_tokens)
        except ConnectionError:  # the client went away (a stall timeout, a cancelled run)
            pass
        return resp

    async def _stream(request: web.Request, resp: web.StreamResponse, index: int, fault: str | None, max_tokens: int, include_usage: bool, prompt_tokens: int) -> None:
        rid = f"chatcmpl-mock{index}"
        head = ('data: {"id":"' + rid + '","object":"chat.completion.chunk","created":' + str(int(time.time())) + ',"model":' + json.dumps(behavior.model) + ',"choices":[{"index":0,"delta":{').encode()
        tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        if fault == "stall_first":
            await asyncio.sleep(3600)
        await resp.write(head + b'"role":"assistant","content":""' + tail)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + behavior.ttft_s
        sent = 0
        chunk_no = 0
        while sent < max_tokens:
            if fault and sent >= behavior.fault_after_tokens:
                if fault == "reset":
                    assert request.transport is not None
                    request.transport.abort()
                    return
                if fault == "stall":
                    await asyncio.sleep(3600)
                if fault == "malformed":
                    await resp.write(b"data: {this is not json\n\n")
                    await resp.write_eof()
                    return
                if fault == "truncate":
                    await resp.write_eof()
                    return
                if fault == "error_event":
                    await resp.write(b'data: {"error":{"message":"mock fault: engine died","type":"InternalServerError","code":500}}\n\n')
                    await resp.write_eof()
                    return
            k = min(behavior.tokens_per_chunk, max_tokens - sent)
            if behavior.fancy_text:
                text = "".join(_FANCY[(sent + j) % len(_FANCY)] for j in range(k))
                content = json.dumps(text)[1:-1].encode()
            else:
                text = "".join(f" t{index}x{sent + j}" for j in range(k))
                content = text.encode()
            if behavior.record:
                behavior.sent_text[index] = behavior.sent_text.get(index, "") + text
            due = t0 + chunk_no * behavior.itl_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(head + b'"content":"' + content + b'"' + tail)
            sent += k
            chunk_no += 1
        await resp.write(head + b'"content":""},"logprobs":null,"finish_reason":"length"}]}\n\n')
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + sent, "completion_tokens": sent}
            await resp.write(('data: {"id":"' + rid + '","object":"chat.completion.chunk","created":0,"model":' + json.dumps(behavior.model) + ',"choices":[],"usage":' + json.dumps(usage, separators=(",", ":")) + "}\n\n").encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/kairosbench/engine", engine)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/chat/completions", chat)
    return app


class MockServer:
    """``async with MockServer(behavior) as url:`` — serves on 127.0.0.1 (a free port by default)."""

    def __init__(self, behavior: MockBehavior | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behavior = behavior or MockBehavior()
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> str:
        self._runner = web.AppRunner(make_app(self.behavior), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; write ``{"url": ...}`` to ``--ready-file`` once listening."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--itl-s", type=float, default=0.0)
    ap.add_argument("--tokens-per-chunk", type=int, default=1)
    ap.add_argument("--no-count-prompt", action="store_true", help="do not parse bodies (fastest)")
    ap.add_argument("--emulator-like", action="store_true")
    ap.add_argument("--ready-file", type=Path, default=None)
    args = ap.parse_args(argv)
    behavior = MockBehavior(itl_s=args.itl_s, tokens_per_chunk=args.tokens_per_chunk, count_prompt=not args.no_count_prompt, emulator_like=args.emulator_like)

    async def serve() -> None:
        async with MockServer(behavior, host=args.host, port=args.port) as url:
            if args.ready_file:
                tmp = args.ready_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"url": url}))
                tmp.replace(args.ready_file)
            else:
                print(url, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
