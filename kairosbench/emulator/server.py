"""The emulator's HTTP face: one aiohttp app per emulated instance, all in one process.

Routes (per instance, on its own port):

* ``POST /v1/chat/completions``, ``POST /v1/completions`` — OpenAI-compatible, streaming (SSE)
  or not; see ``openai_api`` for what is accepted.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (vLLM names, ``metrics.py``).
* ``GET /kairosbench/gpu``, ``GET /kairosbench/gpu/samples?since_us=N``,
  ``POST|DELETE /kairosbench/gpu/clocks``, ``POST|DELETE /kairosbench/gpu/power_limit``,
  ``GET /kairosbench/engine``, ``GET /kairosbench/lag``
  — the control/telemetry API documented in docs/emulator.md (others code against it).

Prompt tokens are counted with ``kairosbench.tokenizer`` (chat: ``render_chat_words``; raw
completions: whitespace words), so usage is exact and reproducible by the load generator. The
agent a request belongs to (for re-prefill accounting) comes from the ``X-Kairosbench-Agent``
header, else the OpenAI ``user`` field.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kairosbench.clock import now_ns
from kairosbench.emulator.engine import Engine, EngineConfig, RequestTooLong
from kairosbench.emulator.gpu import ClockError
from kairosbench.emulator.metrics import MetricsState, render_metrics
from kairosbench.emulator.openai_api import (
    ApiError,
    ChunkFormat,
    ParsedRequest,
    error_body,
    full_response,
    load_json,
    parse_chat,
    parse_completion,
    usage_dict,
)
from kairosbench.emulator.realtime import GcPacer, RealtimeEngine, TokenStream
from kairosbench.emulator.request import EngineRequest, RequestState
from kairosbench.emulator.prompt_cache import ChatPromptCache, RenderedPrompt, continue_hashes
from kairosbench.emulator.textgen import eos_length, output_words, request_seed

__all__ = ["EmulatorInstance", "EmulatorServer", "ServerOptions", "AGENT_HEADER"]

AGENT_HEADER = "X-Kairosbench-Agent"
_ids = itertools.count(1)
_PID = f"{os.getpid():x}"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Everything ``kairosbench emulate`` lets a user choose."""

    n_instances: int = 1
    gpu: str = "h100-sxm"
    model: str = "qwen3-coder-30b-a3b-fp8"
    host: str = "127.0.0.1"
    port: int = 0  # instance i listens on port + i; 0 = any free port per instance
    seed: int = 0
    default_max_tokens: int = 256  # chat requests that send no max_tokens
    engine: EngineConfig = EngineConfig()
    # Dedicated emulator processes pace Python's GC around the model clock (``GcPacer``);
    # in-process servers (tests, ``running_emulator``) leave the host's GC alone.
    pace_gc: bool = False


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status, content_type="application/json")


def _error(message: str, status: int, param: str | None = None, type_: str = "invalid_request_error") -> web.Response:
    return _json(error_body(message, type_=type_, param=param, code=status), status)


@web.middleware
async def _openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes, wrong methods and oversized bodies get OpenAI-shaped JSON errors too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(f"{exc.reason}: {request.method} {request.path}", exc.status, type_="invalid_request_error" if exc.status < 500 else "server_error")


class EmulatorInstance:
    """One emulated GPU serving instance: engine, wall-clock driver and its aiohttp app."""

    def __init__(self, index: int, opts: ServerOptions, *, t0_ns: int, gc_pacer: GcPacer | None = None) -> None:
        self.index = index
        self.opts = opts
        self.engine = Engine(opts.gpu, opts.model, opts.engine, index=index)
        self.rt = RealtimeEngine(self.engine, t0_ns=t0_ns, metrics=MetricsState(), gc_pacer=gc_pacer)
        self.prompts = ChatPromptCache(self.engine.layout.block_size)
        self.model_name = self.engine.model.name
        self._aliases = {self.model_name, self.engine.model.hf_id}
        self.base_url: str | None = None
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2, middlewares=[_openai_errors])
        r = app.router
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.models)
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.metrics)
        r.add_get("/kairosbench/gpu", self.gpu)
        r.add_get("/kairosbench/gpu/samples", self.gpu_samples)
        r.add_post("/kairosbench/gpu/clocks", self.lock_clocks)
        r.add_delete("/kairosbench/gpu/clocks", self.reset_clocks)
        r.add_post("/kairosbench/gpu/power_limit", self.set_power_limit)
        r.add_delete("/kairosbench/gpu/power_limit", self.reset_power_limit)
        r.add_get("/kairosbench/engine", self.engine_info)
        r.add_get("/kairosbench/lag", self.lag)
        return app

    # ---- OpenAI endpoints ----------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    def _admit(self, request: web.Request, parsed: ParsedRequest) -> tuple[EngineRequest, list[str], str]:
        if parsed.model is not None and parsed.model not in self._aliases:
            raise ApiError(f"The model `{parsed.model}` does not exist.", status=404, param="model", type_="NotFoundError", code="model_not_found")
        bs = self.engine.layout.block_size
        if parsed.messages is not None:
            rendered = self.prompts.render(parsed.messages)
        else:
            words = parsed.prompt_words
            rendered = RenderedPrompt(len(words), [], 0, [], words[-32:])
            rendered.h_last, rendered.tail = continue_hashes(0, [], words, bs, rendered.hashes)
        parsed.messages = None  # a long conversation must not outlive admission (GC pauses)
        parsed.prompt_words = []
        p = rendered.n_tokens
        limit = self.engine.max_model_len
        max_tokens = parsed.max_tokens
        if max_tokens is None:
            max_tokens = min(self.opts.default_max_tokens, limit - p)
        if max_tokens < 1 or p + max_tokens > limit:
            raise ApiError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{p + max(max_tokens, 0)} tokens ({p} in the messages, {max(max_tokens, 0)} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="max_tokens" if p < limit else "messages",
            )
        seed = self.opts.seed
        rseed = request_seed(seed, rendered.last_words, p)
        n_out = eos_length(seed, rseed, max_tokens, parsed.min_tokens, parsed.ignore_eos)
        words = output_words(rseed, n_out)
        hashes = rendered.hashes
        continue_hashes(rendered.h_last, rendered.tail, words, bs, hashes)
        prefix = "chatcmpl-" if parsed.kind == "chat" else "cmpl-"
        rid = f"{prefix}{_PID}{self.index:x}{next(_ids):010x}"
        agent = request.headers.get(AGENT_HEADER) or parsed.user
        req = EngineRequest(rid, p, n_out, hashes, stream_key=agent, payload=TokenStream())
        if n_out < max_tokens:
            req.finish_reason = "stop"
        try:
            self.rt.submit(req)
        except RequestTooLong as exc:  # pragma: no cover - checked above with the same limit
            raise ApiError(str(exc)) from None
        return req, words, rid

    def _parse(self, body: bytes, kind: str) -> ParsedRequest:
        obj = load_json(body)  # dropped on return: a long conversation must not outlive its parse
        return parse_chat(obj) if kind == "chat" else parse_completion(obj)

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            parsed = self._parse(await request.read(), kind)
            req, words, rid = self._admit(request, parsed)
        except ApiError as exc:
            return _json(exc.body(), exc.status)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, req, words, rid)
            return await self._complete(parsed, req, words, rid)
        finally:
            if not req.done:  # client went away (handler cancelled) or write failed
                self.rt.abort(req)

    async def _complete(self, parsed: ParsedRequest, req: EngineRequest, words: list[str], rid: str) -> web.StreamResponse:
        s: TokenStream = req.payload
        while not s.finished:
            await s.wait()
        if req.state is not RequestState.FINISHED:
            return _error("the request was aborted by the engine", 500, type_="server_error")
        usage = usage_dict(req.prompt_len, req.num_output, req.cached_tokens)
        text = " ".join(words[: req.num_output])
        return _json(full_response(parsed.kind, rid, int(time.time()), self.model_name, text, req.finish_reason or "length", usage))

    async def _stream(self, request: web.Request, parsed: ParsedRequest, req: EngineRequest, words: list[str], rid: str) -> web.StreamResponse:
        s: TokenStream = req.payload
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        fmt = ChunkFormat(parsed.kind, rid, int(time.time()), self.model_name, parsed.include_usage)
        n_out = req.max_tokens
        reason = req.finish_reason or "length"
        sent = 0
        try:
            while True:
                k = s.ready
                if k == sent and not s.finished:
                    await s.wait()
                    continue
                parts: list[bytes] = []
                for i in range(sent, k):
                    text = words[i] if i == 0 else " " + words[i]
                    if i == n_out - 1:
                        parts.append(fmt.last_token(text, i == 0, reason))
                    else:
                        parts.append(fmt.token(text, i == 0))
                sent = k
                if s.finished:
                    if req.state is not RequestState.FINISHED:
                        err = error_body("the request was aborted by the engine", type_="server_error", code=500)
                        parts.append(b"data: " + json.dumps(err).encode() + b"\n\n")
                    elif parsed.include_usage:
                        parts.append(fmt.usage_chunk(usage_dict(req.prompt_len, req.num_output, req.cached_tokens)))
                    parts.append(b"data: [DONE]\n\n")
                    await resp.write(b"".join(parts))
                    break
                await resp.write(b"".join(parts))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.rt.abort(req)
        return resp

    async def models(self, request: web.Request) -> web.Response:
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "kairosbench",
                        "root": self.engine.model.hf_id,
                        "parent": None,
                        "max_model_len": self.engine.max_model_len,
                    }
                ],
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    # ---- telemetry and control -----------------------------------------------------------------
    def engine_dict(self) -> dict[str, Any]:
        d = self.engine.engine_info()
        d["lag_s"] = self.rt.lag_s()
        return d

    async def metrics(self, request: web.Request) -> web.Response:
        self.engine.sync(self.rt.now_s())
        info = self.engine.engine_info()
        st = self.engine.stats
        info["prompt_tokens_total"] = st.prompt_tokens
        info["generation_tokens_total"] = st.generation_tokens
        info["gpu_memory_utilization"] = self.engine.layout.gpu_memory_utilization
        body = render_metrics(
            model_name=self.model_name,
            engine="0",
            info=info,
            kv_usage=self.engine.kv_usage,
            st=self.rt.metrics,
            lag_now_s=self.rt.lag_s(),
            block_size=self.engine.layout.block_size,
            num_gpu_blocks=self.engine.layout.num_gpu_blocks,
        )
        return web.Response(text=body, content_type="text/plain", charset="utf-8", headers={"X-Prometheus-Version": "0.0.4"})

    def gpu_dict(self) -> dict[str, Any]:
        r = self.rt.gpu_reading()
        g = self.engine.gpu
        preset = self.engine.gpu_preset
        lay = self.engine.layout
        model = self.engine.model
        used = (model.weight_bytes + model.reserve_bytes + lay.kv_pool_bytes) / 1024**2
        return {
            "gpu": self.index,
            "name": preset.marketing_name,
            "t_ns": self.rt.to_ns(r.t_s),
            "power_w": round(r.power_w, 3),
            "power_avg_w": round(r.power_avg_w, 3),
            "energy_mj": int(r.energy_j * 1000.0),
            "sm_clock_mhz": r.sm_clock_mhz,
            "mem_clock_mhz": preset.mem_clock_mhz,
            "gpu_util_pct": round(r.gpu_util_pct, 2),
            "mem_util_pct": round(r.mem_util_pct, 2),
            "mem_used_mib": round(min(used, preset.memory_mib), 1),
            "mem_total_mib": round(preset.memory_mib, 1),
            "temp_c": round(r.temp_c, 1),
            "throttle_reasons": r.throttle_reasons,
            "power_limit_w": g.power_limit_w,
            "locked_clock_mhz": g.locked_clock_mhz,
            "supported_sm_clocks_mhz": list(g.supported),
        }

    async def gpu(self, request: web.Request) -> web.Response:
        return _json(self.gpu_dict())

    async def gpu_samples(self, request: web.Request) -> web.Response:
        raw = request.query.get("since_us", "0")
        try:
            since_us = int(raw)
        except ValueError:
            return _error(f"since_us must be an integer (µs on the run clock), got {raw!r}", 400, "since_us")
        now = self.rt.now_s()
        self.engine.sync(now)
        since_s = (since_us * 1000 - self.rt.t0_ns) / 1e9 - 0.001  # float slack; filtered exactly below
        out = []
        for t, p in self.engine.gpu.samples(since_s, now):
            t_us = self.rt.to_ns(t) // 1000
            if t_us > since_us:
                out.append({"t_us": t_us, "power_w": round(p, 3)})
        return _json({"samples": out})

    async def lock_clocks(self, request: web.Request) -> web.Response:
        try:
            obj = load_json(await request.read())
        except ApiError as exc:
            return _json(exc.body(), exc.status)
        f = obj.get("sm_clock_mhz")
        if f is None:
            return _error("body must be {\"sm_clock_mhz\": <int>}", 400, "sm_clock_mhz")
        try:
            self.rt.set_clock(f)
        except ClockError as exc:
            return _error(str(exc), 400, "sm_clock_mhz")
        return _json({"locked_clock_mhz": self.engine.gpu.locked_clock_mhz})

    async def reset_clocks(self, request: web.Request) -> web.Response:
        self.rt.set_clock(None)
        return _json({"locked_clock_mhz": None})

    async def set_power_limit(self, request: web.Request) -> web.Response:
        """``nvmlDeviceSetPowerManagementLimit``: takes effect from the next step."""
        try:
            obj = load_json(await request.read())
        except ApiError as exc:
            return _json(exc.body(), exc.status)
        w = obj.get("power_limit_w")
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            return _error("body must be {\"power_limit_w\": <number>}", 400, "power_limit_w")
        try:
            self.engine.gpu.set_power_limit(float(w))
        except ClockError as exc:
            return _error(str(exc), 400, "power_limit_w")
        return _json({"power_limit_w": self.engine.gpu.power_limit_w})

    async def reset_power_limit(self, request: web.Request) -> web.Response:
        self.engine.gpu.set_power_limit(self.engine.gpu_preset.power_limit_w)
        return _json({"power_limit_w": self.engine.gpu.power_limit_w})

    async def engine_info(self, request: web.Request) -> web.Response:
        return _json(self.engine_dict())

    async def lag(self, request: web.Request) -> web.Response:
        """Lag percentiles over the step ends recorded so far (``?reset=1`` clears them)."""
        ring = sorted(self.rt.lag_ring)
        n = len(ring)

        def q(p: float) -> float:
            return ring[min(n - 1, int(p * n))] if n else 0.0

        body = {"n": n, "p50_s": q(0.5), "p99_s": q(0.99), "max_s": ring[-1] if n else 0.0}
        if request.query.get("reset") in ("1", "true"):
            self.rt.lag_ring.clear()
        return _json(body)


class EmulatorServer:
    """N instances in one process, each on its own 127.0.0.1 port."""

    def __init__(self, opts: ServerOptions) -> None:
        if opts.n_instances < 1:
            raise ValueError("n_instances must be >= 1")
        self.opts = opts
        self.t0_ns = now_ns()
        self.gc_pacer = GcPacer() if opts.pace_gc else None
        self.instances = [EmulatorInstance(i, opts, t0_ns=self.t0_ns, gc_pacer=self.gc_pacer) for i in range(opts.n_instances)]
        self._runners: list[web.AppRunner] = []
        self._gc_was_enabled = gc.isenabled()

    @property
    def urls(self) -> list[str]:
        return [i.base_url for i in self.instances if i.base_url]

    async def start(self) -> list[str]:
        if self.gc_pacer is not None:
            # A dedicated process: everything built so far lives for the whole run, so keep it
            # out of GC passes, and let the drivers collect when the model clock has slack
            # (GcPacer) instead of whenever an allocation count says so.
            gc.collect()
            gc.freeze()
            gc.disable()
        try:
            for inst in self.instances:
                inst.rt.start()
                runner = web.AppRunner(inst.app, handler_cancellation=True, access_log=None)
                await runner.setup()
                self._runners.append(runner)
                port = self.opts.port + inst.index if self.opts.port else 0
                site = web.TCPSite(runner, self.opts.host, port, reuse_address=True)
                await site.start()
                sock = site._server.sockets[0]  # type: ignore[union-attr]
                host, bound = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                inst.base_url = f"http://{shown}:{bound}"
        except BaseException:
            await self.stop()
            raise
        return self.urls

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await asyncio.gather(*(inst.rt.stop() for inst in self.instances), return_exceptions=True)
        if self.gc_pacer is not None:
            gc.unfreeze()
            if self._gc_was_enabled:
                gc.enable()
