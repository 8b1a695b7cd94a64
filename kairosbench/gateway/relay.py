"""The streaming relay: upstream bytes to the client's socket, usage found on the way.

Upstream requests go over the load generator's HTTP/1.1 pool (``kairosbench.replay.http``),
which parses the response inside the connection's ``data_received`` and feeds a sink.
``RelaySink`` is that sink: once the client's response is under way it frames each piece as
one HTTP chunk and writes it straight to the client's transport (no stream-reader buffer, no
task switch per token; docs/perf/gateway.md measures what that saved). ``UsageScanner``
watches the same bytes for the OpenAI ``usage`` object.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from kairosbench.clock import now_ns
from kairosbench.replay.http import ResponseSink, Target

__all__ = ["UsageScanner", "RelaySink", "upstream_head", "HOP_HEADERS", "HOP_RESPONSE_HEADERS", "MAX_CLIENT_BUFFER_BYTES", "MONO_TO_RUN_NS"]

HOP_RESPONSE_HEADERS = frozenset(("connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade", "trailers"))
HOP_HEADERS = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailers", "Transfer-Encoding", "Upgrade", "Host", "Content-Length")
)


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


MAX_CLIENT_BUFFER_BYTES = 8 << 20  # a client this far behind is dropped (its upstream request too)
MONO_TO_RUN_NS = now_ns() - time.monotonic_ns()


class RelaySink(ResponseSink):
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


def upstream_head(request: web.Request, target: Target, body_len: int) -> bytes:
    """The upstream request head: the client's method, path and headers (hop-by-hop ones
    dropped; identity encoding asked for, so usage stays readable in the stream)."""
    lines = [f"{request.method} {request.rel_url.raw_path_qs} HTTP/1.1".encode("latin-1"), b"Host: " + target.host_header]
    for k, v in request.headers.items():
        lk = k.lower()
        if lk in HOP_HEADERS or lk == "accept-encoding":
            continue
        lines.append(k.encode("latin-1") + b": " + v.encode("latin-1", "replace"))
    lines.append(b"Accept-Encoding: identity")
    lines.append(b"Content-Length: %d" % body_len)
    return b"\r\n".join(lines) + b"\r\n\r\n"
