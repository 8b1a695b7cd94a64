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
from itertools import count
from typing import Any, Callable

import aiohttp
from aiohttp import web

from kairosbench.clock import now_ns
from kairosbench.gateway.control_log import RequestLog
from kairosbench.gateway.control_loop import GatewayInstance
from kairosbench.gateway.identity import AGENT_HEADER, FINAL_HEADER, PROMPT_TOKENS_HEADER, TURN_HEADER, ContextEstimator
from kairosbench.gateway.relay import HOP_HEADERS, HOP_RESPONSE_HEADERS, MONO_TO_RUN_NS, RelaySink, UsageScanner, upstream_head
from kairosbench.gateway.tracker import AgentTracker, Dispatch, Hold
from kairosbench.replay.http import HTTPPool, Target

__all__ = ["GatewayProxy", "GatewayClosing"]

log = logging.getLogger("kairosbench.gateway")

class GatewayClosing(Exception):
    """Set on held requests' futures when the gateway stops before releasing them."""


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
        self._pool = HTTPPool(connect_timeout_s=10.0, clock_offset_ns=MONO_TO_RUN_NS)

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

    async def _forward(self, request: web.Request, body: bytes, inst: GatewayInstance, scanner: UsageScanner, row: dict[str, Any]) -> web.StreamResponse:
        """Send the request upstream and relay the answer (see ``_RelaySink``)."""
        assert self._pool is not None
        target = self._targets[inst.instance_id]
        loop = asyncio.get_running_loop()
        sink = RelaySink(scanner, loop)
        head = upstream_head(request, target, len(body))
        task = sink.task = asyncio.ensure_future(self._pool.request(target, head, body, sink, timeout_s=self.upstream_timeout_s))
        prepared: web.StreamResponse | None = None
        try:
            await asyncio.wait((sink.started, task), return_when=asyncio.FIRST_COMPLETED)
            if not sink.started.done():
                task.result()  # failed before any response: raises
            row["http_status"] = sink.status
            out_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in sink.headers.items() if k.decode("latin-1") not in HOP_RESPONSE_HEADERS}
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
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            async with self._session.get(self._first.root + request.rel_url.path_qs, headers=headers) as up:
                data = await up.read()
                return web.Response(body=data, status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in HOP_HEADERS})
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
