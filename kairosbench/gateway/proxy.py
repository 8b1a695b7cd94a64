"""The OpenAI-compatible reverse proxy: identify the agent, hold or route it, stream the reply through.

Request path (``POST /v1/chat/completions`` and ``/v1/completions``):

1. **Identify** the agent: header ``X-Kairosbench-Agent`` (what kairosbench's load generator
   sends, with ``X-Kairosbench-Turn``), else the OpenAI ``user`` field, else the request is
   its own single-turn agent. Only in the last two cases is the body parsed as JSON.
2. **Estimate** the prompt size for admission (usage is known only afterwards): the header
   ``X-Kairosbench-Prompt-Tokens`` if the client sends it; else the agent's last prompt plus
   the body's growth in bytes at the agent's own measured bytes per token; for a first
   request, body bytes / ``CHARS_PER_TOKEN`` (4, typical of BPE tokenizers on English).
3. **Admit** through the tracker: dispatch now, or wait (an asyncio future, FIFO) until a
   completion or a control epoch releases it.
4. **Forward** to the instance's root + the client's path, all headers except hop-by-hop
   ones (the API key passes through untouched and is never logged), body bytes as received.
5. **Stream** the answer back chunk by chunk as it arrives (no buffering, no decompression:
   ``auto_decompress=False``); scan SSE lines for the usage chunk to learn the agent's real
   context. A client that disconnects closes the upstream request, so the engine frees it.
6. **Account**: the tracker gets prompt + output tokens and the turn's time; the request
   goes to gateway.parquet; released agents are dispatched.

Other routes: ``GET /v1/models`` (from the first endpoint), ``GET /health``,
``GET /kairosbench/gateway`` (live state as JSON), ``DELETE /kairosbench/agents/{id}``
(a client says the agent is done; ``X-Kairosbench-Final: 1`` on its last request does too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from itertools import count
from typing import Any, Callable

import aiohttp
from aiohttp import web

from kairosbench.clock import now_ns
from kairosbench.gateway.control_log import RequestLog
from kairosbench.replay.http import HTTPPool, ResponseSink, Target
from kairosbench.gateway.control_loop import GatewayInstance
from kairosbench.gateway.tracker import AgentTracker, Dispatch, Hold

__all__ = [
    "AGENT_HEADER",
    "TURN_HEADER",
    "FINAL_HEADER",
    "PROMPT_TOKENS_HEADER",
    "CHARS_PER_TOKEN",
    "UsageScanner",
    "ContextEstimator",
    "GatewayProxy",
]

log = logging.getLogger("kairosbench.gateway")

AGENT_HEADER = "X-Kairosbench-Agent"
TURN_HEADER = "X-Kairosbench-Turn"
FINAL_HEADER = "X-Kairosbench-Final"
PROMPT_TOKENS_HEADER = "X-Kairosbench-Prompt-Tokens"
CHARS_PER_TOKEN = 4.0

_HOP_RESPONSE = frozenset(("connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade", "trailers"))
_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailers", "Transfer-Encoding", "Upgrade", "Host", "Content-Length")
)


class GatewayClosing(Exception):
    """Set on held requests' futures when the gateway stops before releasing them."""


class UsageScanner:
    """Finds the OpenAI ``usage`` object in an SSE stream fed chunk by chunk (cheap per chunk).

    Only complete lines are inspected, and only those containing ``"usage"`` are parsed as
    JSON, so a chunk costs one ``rfind`` and one substring search. Without a usage chunk
    (the client did not ask for ``stream_options.include_usage``), ``choice_events`` counts
    events carrying choices, an approximation of output tokens (one token per event in vLLM).
    """

    __slots__ = ("_tail", "prompt_tokens", "completion_tokens", "choice_events")

    def __init__(self) -> None:
        self._tail = b""
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.choice_events = 0

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        nl = data.rfind(b"\n")
        if nl < 0:
            self._tail = data[-1_000_000:]
            return
        complete, self._tail = data[:nl], data[nl + 1 :]
        self.choice_events += complete.count(b'"choices":[{') + complete.count(b'"choices": [{')
        if b'"usage"' in complete:
            for line in complete.split(b"\n"):
                if line.startswith(b"data:") and b'"usage"' in line:
                    self._usage(line[5:])

    def _usage(self, payload: bytes) -> None:
        try:
            usage = json.loads(payload).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)

    def finish(self) -> None:
        if self._tail:
            self.feed(b"\n")


class ContextEstimator:
    """Per-agent prompt-size estimate before the server's usage is known (see module docstring)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # agent -> (body bytes, prompt tokens) of its last request

    def estimate(self, agent_id: str, body_len: int, header_tokens: str | None) -> int:
        if header_tokens:
            try:
                return max(0, int(header_tokens))
            except ValueError:
                pass
        last = self._last.get(agent_id)
        if last is None or last[1] <= 0:
            return int(body_len / CHARS_PER_TOKEN)
        bytes_per_token = last[0] / last[1]
        return int(last[1] + max(0, body_len - last[0]) / max(bytes_per_token, 0.5))

    def observe(self, agent_id: str, body_len: int, prompt_tokens: int | None) -> None:
        if prompt_tokens:
            self._last[agent_id] = (body_len, prompt_tokens)

    def forget(self, agent_id: str) -> None:
        self._last.pop(agent_id, None)


MAX_CLIENT_BUFFER_BYTES = 8 << 20  # a client this far behind is dropped (its upstream request too)
_MONO_TO_RUN_NS = now_ns() - time.monotonic_ns()


class _RelaySink(ResponseSink):
    """Receives the upstream response inside the upstream connection's ``data_received``.

    Until the client's response is under way (headers and the first bytes sent through
    aiohttp), body bytes wait in ``pending``; from then on each piece is framed as one HTTP
    chunk and written straight to the client's transport, with no task switch per chunk.
    """

    __slots__ = ("scanner", "status", "headers", "streaming", "started", "got_data", "pending", "body", "transport", "task", "gone", "first_ns")

    def __init__(self, scanner: UsageScanner, loop: asyncio.AbstractEventLoop) -> None:
        self.scanner = scanner
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.streaming = False
        self.started: asyncio.Future[None] = loop.create_future()  # status line and headers in
        self.got_data: asyncio.Future[None] = loop.create_future()  # first body bytes in
        self.pending: list[bytes] = []
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Future[None] | None = None
        self.gone = False
        self.first_ns: int | None = None

    def on_status(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.status, self.headers = status, headers
        self.streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        if not self.started.done():
            self.started.set_result(None)

    def on_body(self, data: bytes, t_ns: int) -> None:
        if self.first_ns is None:
            self.first_ns = t_ns
        if not self.streaming:
            self.body.append(data)
            return
        self.scanner.feed(data)
        tr = self.transport
        if tr is None:
            self.pending.append(data)
            if not self.got_data.done():
                self.got_data.set_result(None)
            return
        if tr.is_closing() or tr.get_write_buffer_size() > MAX_CLIENT_BUFFER_BYTES:
            if not self.gone and self.task is not None:
                self.gone = True
                self.task.cancel()  # aborts the upstream connection: the engine frees the request
            return
        tr.write(b"%x\r\n%b\r\n" % (len(data), data))

    def on_end(self, t_ns: int) -> None:
        if not self.got_data.done():
            self.got_data.set_result(None)


def _error(status: int, message: str, kind: str = "gateway_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status)


class GatewayProxy:
    """The aiohttp application around one tracker and its upstream instances."""

    def __init__(
        self,
        tracker: AgentTracker,
        instances: list[GatewayInstance],
        *,
        run_clock_s: Callable[[], float],
        request_log: RequestLog | None = None,
        upstream_timeout_s: float = 1800.0,
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.tracker = tracker
        self.instances = {i.instance_id: i for i in instances}
        self._first = instances[0]
        self.run_clock_s = run_clock_s
        self.request_log = request_log
        self.estimator = ContextEstimator()
        self._waiters: dict[str, list[asyncio.Future[Dispatch]]] = {}
        self._anon = count()
        self._timeout = aiohttp.ClientTimeout(total=60.0, sock_connect=10.0)  # the passthrough GETs
        self.upstream_timeout_s = upstream_timeout_s  # a whole proxied request (the load generator's default total)
        self._session: aiohttp.ClientSession | None = None  # the few non-streaming GETs
        self._pool: HTTPPool | None = None  # every proxied POST (see _forward)
        self._targets = {i.instance_id: Target.parse(i.root + "/") for i in instances}
        self._describe = describe
        self.closing = False
        self.inflight = 0

    # ------------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)  # 100k-token prompts are megabytes
        app.router.add_post("/v1/chat/completions", self._completion)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/v1/models", self._passthrough)
        app.router.add_get("/health", self._health)
        app.router.add_get("/kairosbench/gateway", self._state)
        app.router.add_delete("/kairosbench/agents/{agent_id}", self._agent_done)
        return app

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False)
        self._pool = HTTPPool(connect_timeout_s=10.0, clock_offset_ns=_MONO_TO_RUN_NS)

    async def close(self) -> None:
        """Fail every request still held (503), then close upstream connections."""
        self.closing = True
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(GatewayClosing())
        self._waiters.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ releases
    def dispatch_released(self, released: list[Dispatch]) -> None:
        """Wake the requests of agents the tracker just released."""
        for d in released:
            for fut in self._waiters.pop(d.agent_id, ()):
                if not fut.done():
                    fut.set_result(d)

    def _release_now(self) -> None:
        released = self.tracker.release(self.run_clock_s())
        if released:
            self.dispatch_released(released)

    # ------------------------------------------------------------------ handlers
    def _identify(self, request: web.Request, body: bytes) -> tuple[str, str]:
        agent = request.headers.get(AGENT_HEADER)
        if agent:
            return agent, "header"
        try:
            user = json.loads(body).get("user") if body else None
        except (ValueError, AttributeError):
            user = None
        if isinstance(user, str) and user:
            return user, "user"
        return f"anon-{next(self._anon)}", "anonymous"

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        if self.closing or self._session is None:
            return _error(503, "the kairosbench gateway is shutting down")
        t_arrive_ns = now_ns()
        body = await request.read()
        agent_id, source = self._identify(request, body)
        estimate = self.estimator.estimate(agent_id, len(body), request.headers.get(PROMPT_TOKENS_HEADER))
        decision = self.tracker.turn_ready(agent_id, self.run_clock_s(), estimate)
        held = isinstance(decision, Hold)
        if isinstance(decision, Hold):
            fut: asyncio.Future[Dispatch] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(agent_id, []).append(fut)
            self._release_now()  # a held agent leaves U_k: that may let others (or itself) go now
            try:
                decision = await fut
            except (GatewayClosing, asyncio.CancelledError):
                self.tracker.withdraw(agent_id, self.run_clock_s())
                if not self.closing:
                    self._release_now()
                if self.closing:
                    return _error(503, "the kairosbench gateway stopped while this request was held")
                raise
        inst = self.instances[decision.instance_id]
        row: dict[str, Any] = {
            "t_arrive_ns": t_arrive_ns,
            "t_dispatch_ns": now_ns(),
            "t_first_byte_ns": None,
            "agent_id": agent_id,
            "agent_source": source,
            "turn_header": request.headers.get(TURN_HEADER),
            "instance_id": inst.instance_id,
            "migrated": decision.migrated,
            "held": held,
            "waited_s": decision.waited_s,
            "context_estimate_tokens": estimate,
            "prompt_tokens": None,
            "output_tokens": None,
            "http_status": None,
            "ok": False,
            "error": None,
        }
        self.inflight += 1
        scanner = UsageScanner()
        try:
            return await self._forward(request, body, inst, scanner, row)
        finally:
            self.inflight -= 1
            self._finish(agent_id, source, request, len(body), scanner, row)

    def _head(self, request: web.Request, target: Target, body_len: int) -> bytes:
        """The upstream request head: the client's method, path and headers (hop-by-hop ones
        dropped; identity encoding asked for, so usage stays readable in the stream)."""
        lines = [f"{request.method} {request.rel_url.raw_path_qs} HTTP/1.1".encode("latin-1"), b"Host: " + target.host_header]
        for k, v in request.headers.items():
            lk = k.lower()
            if lk in _HOP or lk == "accept-encoding":
                continue
            lines.append(k.encode("latin-1") + b": " + v.encode("latin-1", "replace"))
        lines.append(b"Accept-Encoding: identity")
        lines.append(b"Content-Length: %d" % body_len)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _forward(self, request: web.Request, body: bytes, inst: GatewayInstance, scanner: UsageScanner, row: dict[str, Any]) -> web.StreamResponse:
        """Send the request upstream and relay the answer (see ``_RelaySink``)."""
        assert self._pool is not None
        target = self._targets[inst.instance_id]
        loop = asyncio.get_running_loop()
        sink = _RelaySink(scanner, loop)
        head = self._head(request, target, len(body))
        task = sink.task = asyncio.ensure_future(self._pool.request(target, head, body, sink, timeout_s=self.upstream_timeout_s))
        prepared: web.StreamResponse | None = None
        try:
            await asyncio.wait((sink.started, task), return_when=asyncio.FIRST_COMPLETED)
            if not sink.started.done():
                task.result()  # failed before any response: raises
            row["http_status"] = sink.status
            out_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in sink.headers.items() if k.decode("latin-1") not in _HOP_RESPONSE}
            if not sink.streaming:
                await task
                data = b"".join(sink.body)
                row["t_first_byte_ns"] = sink.first_ns
                if sink.status == 200:
                    try:
                        usage = json.loads(data).get("usage") or {}
                        scanner.prompt_tokens = usage.get("prompt_tokens")
                        scanner.completion_tokens = usage.get("completion_tokens")
                    except (ValueError, AttributeError):
                        pass
                    row["ok"] = True
                else:
                    row["error"] = f"upstream HTTP {sink.status}"
                return web.Response(body=data, status=sink.status, headers=out_headers)
            resp = web.StreamResponse(status=sink.status, headers=out_headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            prepared = resp
            await asyncio.wait((sink.got_data, task), return_when=asyncio.FIRST_COMPLETED)
            row["t_first_byte_ns"] = sink.first_ns
            first, sink.pending = b"".join(sink.pending), []
            await resp.write(first)  # headers and the first bytes through aiohttp ...
            transport = request.transport
            if transport is None or transport.is_closing():
                sink.gone = True
                task.cancel()
            else:
                rest, sink.pending = b"".join(sink.pending), []  # ... then straight to the socket
                if rest:
                    transport.write(b"%x\r\n%b\r\n" % (len(rest), rest))
                sink.transport = transport  # type: ignore[assignment]
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not sink.gone or (current is not None and current.cancelling()):
                    raise
            if sink.gone:
                row["error"] = "client went away"
                return resp
            await resp.write_eof()
            row["ok"] = sink.status == 200
            if sink.status != 200:
                row["error"] = f"upstream HTTP {sink.status}"
            return resp
        except (ConnectionError, OSError, ValueError, asyncio.TimeoutError) as exc:
            if not task.done():
                task.cancel()
            if sink.started.done() and sink.streaming:
                # mid-stream: the status is sent; break the client's connection so it sees a reset
                row["error"] = f"upstream stream broke: {exc.__class__.__name__}: {exc}"
                if request.transport is not None:
                    request.transport.abort()
                if prepared is not None:
                    return prepared
                raise
            row["error"] = f"upstream {inst.endpoint} unreachable: {exc.__class__.__name__}: {exc}"
            row["http_status"] = 502
            return _error(502, f"kairosbench gateway: upstream {inst.endpoint} failed: {exc.__class__.__name__}", "upstream_error")

    def _finish(self, agent_id: str, source: str, request: web.Request, body_len: int, scanner: UsageScanner, row: dict[str, Any]) -> None:
        scanner.finish()
        out = scanner.completion_tokens if scanner.completion_tokens is not None else scanner.choice_events
        row["prompt_tokens"], row["output_tokens"] = scanner.prompt_tokens, out
        row["t_end_ns"] = now_ns()
        t_s = self.run_clock_s()
        self.tracker.turn_finished(agent_id, t_s, ok=bool(row["ok"]), prompt_tokens=scanner.prompt_tokens, output_tokens=out or 0)
        if source == "anonymous" or request.headers.get(FINAL_HEADER, "").lower() in ("1", "true", "yes"):
            self.tracker.agent_done(agent_id, t_s)
            self.estimator.forget(agent_id)
        else:
            self.estimator.observe(agent_id, body_len, scanner.prompt_tokens)
        if self.request_log is not None:
            self.request_log.append([row])
        if not self.closing:
            self._release_now()

    async def _passthrough(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            async with self._session.get(self._first.root + request.rel_url.path_qs, headers=headers) as up:
                data = await up.read()
                return web.Response(body=data, status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in _HOP})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return _error(502, f"kairosbench gateway: upstream {self._first.endpoint} failed: {exc.__class__.__name__}", "upstream_error")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if not self.closing else "stopping"})

    async def _state(self, request: web.Request) -> web.Response:
        snap = self.tracker.snapshot(self.run_clock_s())
        body: dict[str, Any] = {
            "policy": self.tracker.policy.name,
            "inflight": self.inflight,
            "pending_agents": self.tracker.pending_count,
            "held_agents": self.tracker.held_count,
            "live_agents": self.tracker.live_agents,
            "counters": {k: getattr(self.tracker.counters, k) for k in self.tracker.counters.__slots__},
            "instances": [
                {
                    "instance_id": i.instance_id,
                    "endpoint": self.instances[i.instance_id].endpoint,
                    "sm_clock_mhz": i.sm_clock_mhz,
                    "locked_clock_mhz": i.locked_clock_mhz,
                    "power_w": i.power_w,
                    "kv_capacity_tokens": i.kv_capacity_tokens,
                    "resident_context_tokens": i.resident_context_tokens,
                    "resident_agents": i.resident_agents,
                    "held_agents": i.held_agents,
                    "cap": None if i.cap is None else {"admit_below_tokens": i.cap.admit_below_tokens, "hold_above_tokens": i.cap.hold_above_tokens, "max_agents": i.cap.max_agents},
                }
                for i in snap.instances
            ],
        }
        if self._describe is not None:
            body.update(self._describe())
        return web.json_response(body)

    async def _agent_done(self, request: web.Request) -> web.Response:
        agent_id = request.match_info["agent_id"]
        view = self.tracker.agent(agent_id)
        if view is not None and agent_id in self._waiters:
            return _error(409, f"agent {agent_id!r} has a request waiting at the gateway; end it after that request")
        known = view is not None
        self.tracker.agent_done(agent_id, self.run_clock_s())
        self.estimator.forget(agent_id)
        self._release_now()
        return web.json_response({"agent_id": agent_id, "known": known})
