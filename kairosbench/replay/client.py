"""The streaming client: one POST, the SSE bytes fed to the parser, faults as data.

The streaming POST goes through ``kairosbench.replay.http`` (bytes from the socket straight
into the SSE parser); the few JSON calls (``/v1/models``, ``/tokenize``) use aiohttp.

Every fault becomes a ``StreamOutcome`` with a ``status`` (never an exception to the caller,
except cancellation, which is re-raised after the outcome is filled in):

    ok          a complete stream ([DONE] or a finish_reason)
    connect     connection refused / DNS / connect timeout              retryable
    reset       connection reset or closed mid-response                 retryable
    http        non-200 answer (``http_status``); 429, 408 and 5xx      retryable, other 4xx not
    stall       no token for ``idle_timeout_s`` after the first one,
                or no first token within ``first_token_timeout_s``      retryable
    timeout     the whole request past ``total_timeout_s``              retryable
    truncated   the stream ended without [DONE] or a finish_reason      retryable
    malformed   bytes that are not an OpenAI SSE stream                 not retryable
    error       the server sent an error event inside the stream        not retryable
    cancelled   the run stopped (duration reached, Ctrl-C) mid-request  —

Stalls are detected by one watchdog task that sweeps in-flight requests every
``min(1 s, timeout / 4)`` (so a stall is declared up to that much late), instead of a timer
per read: a per-read ``asyncio.wait_for`` would cost more than parsing the chunk. The two
phases have separate limits because a request may legitimately wait long for its first token
(queued in the engine, or held by a gateway's admission control) while a stream that stops
mid-reply is stuck.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from kairosbench import __version__
from kairosbench.clock import now_ns
from kairosbench.errors import EndpointError
from kairosbench.replay.endpoint import rejected_parameter
from kairosbench.replay.http import ConnectError, HTTPPool, ProtocolError, ResponseSink, ResponseTimeout, StaleConnection, Target
from kairosbench.replay.sse import MalformedStream, SSEParser

__all__ = ["StreamClient", "StreamOutcome", "ClientTimeouts", "RETRYABLE_STATUSES", "classify_exception", "error_text", "agent_headers"]

RETRYABLE_STATUSES = frozenset({"connect", "reset", "stall", "timeout", "truncated"})
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})

# monotonic ns -> run-clock ns (kairosbench.clock.now_ns is anchor_wall + mono - anchor_mono)
_MONO_TO_RUN_NS = now_ns() - time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds; None disables. Defaults suit agent turns with queueing in front of the engine."""

    connect_s: float | None = 10.0
    first_token_s: float | None = None  # no first token in this long: stall (None: only total)
    idle_s: float | None = 60.0  # between tokens after the first
    total_s: float | None = 1800.0


@dataclass(slots=True)
class StreamOutcome:
    """What one request did; filled in progressively, so a cancelled request still has it."""

    status: str = "pending"
    error: str | None = None
    http_status: int | None = None
    retryable: bool = False
    t_start_ns: int = 0
    t_end_ns: int = 0
    parser: SSEParser | None = None
    rejected_parameter: str | None = None  # a 400/422 naming a parameter we may drop
    stalled: str | None = None  # set by the watchdog before it cancels the request

    @property
    def t_first_token_ns(self) -> int | None:
        p = self.parser
        return p.chunk_ns[0] if p is not None and p.chunk_ns else None


def classify_exception(exc: BaseException) -> tuple[str, bool, str]:
    """Map a transport exception to (status, retryable, message): the one translation table."""
    msg = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, MalformedStream):
        return "malformed", False, f"malformed SSE: {exc}"[:300]
    if isinstance(exc, ProtocolError):
        return "malformed", False, f"malformed HTTP response: {exc}"[:300]
    if isinstance(exc, (ConnectError, aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect", True, msg
    if isinstance(exc, ResponseTimeout):
        return "timeout", True, msg
    if isinstance(exc, (StaleConnection, ConnectionError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "reset", True, msg
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", True, msg
    if isinstance(exc, (aiohttp.ClientOSError, aiohttp.ServerConnectionError, OSError)):
        return "reset", True, msg
    return "client", False, msg


def _header_line(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        raise EndpointError(f"header {name!r} holds a line break")
    return name.encode("latin-1") + b": " + value.encode("latin-1", "replace")


class _SSESink(ResponseSink):
    """Feeds a 200 response to the SSE parser; keeps (up to 64 KiB of) any other body."""

    __slots__ = ("outcome", "parser", "error_body", "_kept", "on_body")

    def __init__(self, outcome: StreamOutcome, parser: SSEParser) -> None:
        self.outcome = outcome
        self.parser = parser
        self.error_body: list[bytes] = []
        self._kept = 0

    def on_status(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.outcome.http_status = status
        if status == 200:
            ctype = headers.get(b"content-type", b"")
            if ctype and b"event-stream" not in ctype:
                raise MalformedStream(f"expected text/event-stream, got {ctype.decode(errors='replace')!r}")
            self.on_body = self.parser.feed  # the hot path: bytes straight into the parser
        else:
            self.on_body = self._keep

    def _keep(self, data: bytes, t_ns: int) -> None:
        if self._kept < 65536:
            self.error_body.append(data[: 65536 - self._kept])
            self._kept += len(data)

    def on_end(self, t_ns: int) -> None:
        if self.outcome.http_status == 200:
            self.parser.close(t_ns)


@dataclass
class _Inflight:
    outcome: StreamOutcome
    task: asyncio.Task[Any]


class StreamClient:
    """One aiohttp session for the whole run (connection reuse, unlimited pool)."""

    def __init__(self, timeouts: ClientTimeouts = ClientTimeouts(), *, headers: dict[str, str] | None = None, strict_sse: bool = False) -> None:
        self.timeouts = timeouts
        self.strict_sse = strict_sse
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[int, _Inflight] = {}
        self._targets: dict[str, tuple[Target, bytes]] = {}
        self.pool = HTTPPool(connect_timeout_s=timeouts.connect_s, clock_offset_ns=_MONO_TO_RUN_NS)
        self._watchdog: asyncio.Task[None] | None = None
        self._next_id = 0

    async def __aenter__(self) -> "StreamClient":
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(self._headers),
            timeout=aiohttp.ClientTimeout(total=self.timeouts.total_s, sock_connect=self.timeouts.connect_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            read_bufsize=1 << 16,
        )
        if self.timeouts.idle_s or self.timeouts.first_token_s:
            self._watchdog = asyncio.create_task(self._watch(), name="kairosbench-stall-watchdog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
        self.pool.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("StreamClient used outside 'async with'")
        return self._session

    # -- streaming ------------------------------------------------------------------------
    def _head_prefix(self, url: str) -> tuple[Target, bytes]:
        hit = self._targets.get(url)
        if hit is None:
            target = Target.parse(url)
            lines = [
                b"POST " + target.path + b" HTTP/1.1",
                b"Host: " + target.host_header,
                b"User-Agent: kairosbench/" + __version__.encode(),
                b"Content-Type: application/json",
                b"Accept: text/event-stream",
                b"Accept-Encoding: identity",
            ]
            lines += [_header_line(k, v) for k, v in self._headers.items()]
            hit = self._targets[url] = (target, b"\r\n".join(lines) + b"\r\nContent-Length: ")
        return hit

    async def stream(self, url: str, body: bytes, headers: dict[str, str], outcome: StreamOutcome, *, count_words: bool) -> StreamOutcome:
        """POST ``body`` and consume the SSE reply into ``outcome`` (filled in as it goes)."""
        parser = SSEParser(count_words=count_words, strict=self.strict_sse)
        outcome.parser = parser
        target, prefix = self._head_prefix(url)
        head = prefix + str(len(body)).encode() + b"\r\n" + b"".join(_header_line(k, v) + b"\r\n" for k, v in headers.items()) + b"\r\n"
        sink = _SSESink(outcome, parser)
        rid = self._next_id = self._next_id + 1
        task = asyncio.current_task()
        assert task is not None
        self._inflight[rid] = _Inflight(outcome, task)
        outcome.t_start_ns = time.monotonic_ns() + _MONO_TO_RUN_NS
        try:
            await self.pool.request(target, head, body, sink, timeout_s=self.timeouts.total_s)
            if outcome.http_status != 200:
                text = b"".join(sink.error_body).decode("utf-8", "replace")
                outcome.status = "http"
                outcome.retryable = outcome.http_status in _RETRYABLE_HTTP
                outcome.error = f"HTTP {outcome.http_status}: {error_text(text)}"[:500]
                outcome.rejected_parameter = rejected_parameter(outcome.http_status or 0, text)
            elif parser.error is not None:
                outcome.status, outcome.error = "error", f"server error event: {parser.error}"
            elif parser.done or parser.finish_reason is not None:
                outcome.status = "ok"
            else:
                outcome.status, outcome.retryable = "truncated", True
                outcome.error = "stream ended without [DONE] or a finish_reason"
        except asyncio.CancelledError:
            if outcome.stalled is not None and task.cancelling() <= 1:
                task.uncancel()
                outcome.status, outcome.retryable, outcome.error = "stall", True, outcome.stalled
            else:
                outcome.status, outcome.error = "cancelled", "run stopped mid-request"
                raise
        except Exception as exc:  # every transport/protocol fault is data
            outcome.status, outcome.retryable, outcome.error = classify_exception(exc)
        finally:
            outcome.t_end_ns = time.monotonic_ns() + _MONO_TO_RUN_NS
            del self._inflight[rid]
        return outcome

    async def _watch(self) -> None:
        idle = self.timeouts.idle_s
        first = self.timeouts.first_token_s
        period = min(1.0, min(x for x in (idle, first) if x) / 4)
        while True:
            await asyncio.sleep(period)
            t = now_ns()
            for flight in list(self._inflight.values()):
                o = flight.outcome
                p = o.parser
                if o.stalled is not None or p is None:
                    continue
                if p.chunk_ns:
                    if idle and t - p.chunk_ns[-1] > idle * 1e9:
                        o.stalled = f"stalled: no token for {idle:g} s after token {len(p.chunk_ns)}"
                    else:
                        continue
                elif first and t - o.t_start_ns > first * 1e9:
                    o.stalled = f"stalled: no first token within {first:g} s"
                else:
                    continue
                flight.task.cancel()

    # -- small JSON calls (discovery, /tokenize) -------------------------------------------
    async def get_json(self, url: str, *, timeout_s: float = 10.0) -> Any:
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise EndpointError(f"GET {url}: HTTP {resp.status}: {error_text(text)}")
                return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise EndpointError(f"GET {url}: {classify_exception(exc)[2]}") from exc

    async def post_json(self, url: str, payload: dict[str, Any], *, timeout_s: float = 30.0) -> Any:
        try:
            data = json.dumps(payload).encode()
            async with self.session.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise EndpointError(f"POST {url}: HTTP {resp.status}: {error_text(text)}")
                return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise EndpointError(f"POST {url}: {classify_exception(exc)[2]}") from exc


def agent_headers(agent_id: str, turn_index: int, prompt_tokens_sent: int, *, final: bool) -> dict[str, str]:
    """The agent identity every driver sends with a turn (docs/replay.md; the gateway reads them).

    ``X-Kairosbench-Final`` marks a session's last turn, so a policy gateway frees the agent's
    context at once instead of after its idle timeout.
    """
    headers = {"X-Kairosbench-Agent": agent_id, "X-Kairosbench-Turn": str(turn_index), "X-Kairosbench-Prompt-Tokens": str(prompt_tokens_sent)}
    if final:
        headers["X-Kairosbench-Final"] = "1"
    return headers


def error_text(text: str) -> str:
    """The message of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        if isinstance(obj.get("detail"), (str, list)):
            return str(obj["detail"])[:300]
        return str(err)[:300]
    return str(obj)[:300]
