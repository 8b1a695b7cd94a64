"""Streaming chat completions over gevent: one keep-alive connection per Locust user.

Why not ``FastHttpUser``'s session or ``requests``: both fire Locust's ``request`` event per
HTTP call (we fire one per *turn*, with output tokens as the size, after the last token), and
``FastHttpSession(stream=True)`` times the request at its headers and reads the stream in
fixed-size blocks, which delays a token until the block fills. Here a turn is: write the
head and body in one ``sendall``; then each ``recv`` goes into geventhttpclient's C (llhttp)
response parser, the engine under ``FastHttpUser``, whose body callback hands the bytes
straight to kairosbench's SSE parser, stamped with the read's arrival time. No response
buffer, no per-chunk Python HTTP code. ``python -m kairosbench.locust.clientbench`` measures
this against ``requests`` (``stream=True``, ``iter_content``): docs/locust.md has the numbers.

Faults become a ``StreamOutcome`` status exactly as in the aiohttp client
(``kairosbench.replay.client``): connect, reset, http, stall, timeout, truncated, malformed,
error, cancelled. Timeouts: a socket timeout of ``first_token_s`` until the first token and
``idle_s`` after it (a stall), and a ``gevent.Timeout`` of ``total_s`` around the whole
request. A kept-alive connection that the server closed while idle (uvicorn does after 5 s;
tool calls between turns are often longer) is detected before any response byte and the
request is resent once on a fresh connection, as the aiohttp client does.

Only ever imported inside a Locust (gevent) process.
"""

from __future__ import annotations

import json
import socket as _stdlib_socket
from typing import Any, Callable

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl
from geventhttpclient.response import HTTPParseError, HTTPResponse

from kairosbench import __version__
from kairosbench.clock import now_ns
from kairosbench.errors import EndpointError
from kairosbench.replay.client import RETRYABLE_STATUSES, ClientTimeouts, StreamOutcome, classify_exception, error_text
from kairosbench.replay.endpoint import rejected_parameter
from kairosbench.replay.http import ConnectError, ProtocolError, ResponseTimeout, StaleConnection, Target
from kairosbench.replay.sse import MalformedStream, SSEParser

__all__ = ["GeventStreamClient", "RETRYABLE_STATUSES"]

_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_KEEP_BYTES = 65536


class _Stall(Exception):
    """No token within the phase's socket timeout."""


class _Response(HTTPResponse):
    """llhttp parsing one response; body bytes go to ``sink`` on a 200, else are kept (64 KiB)."""

    def __init__(self, sink: Callable[[bytes, int], None] | None, *, want_sse: bool) -> None:
        super().__init__(method="POST")
        self.sink = sink
        self.want_sse = want_sse
        self.t_ns = 0
        self.got_bytes = False
        self.kept: list[bytes] = []
        self._kept_n = 0
        self.bad_content_type: str | None = None
        self._to_sink = False

    def _on_headers_complete(self) -> int | bool | None:
        result = super()._on_headers_complete()
        if self.get_code() >= 200:
            ctype = str(self.get("content-type") or "")
            self._to_sink = self.get_code() == 200 and self.sink is not None
            if self._to_sink and self.want_sse and ctype and "event-stream" not in ctype:
                self.bad_content_type, self._to_sink = ctype, False
        return result

    def _on_body(self, buf: bytearray) -> None:
        if self._to_sink:
            assert self.sink is not None
            self.sink(bytes(buf), self.t_ns)
        elif self._kept_n < _KEEP_BYTES:
            self.kept.append(bytes(buf[: _KEEP_BYTES - self._kept_n]))
            self._kept_n += len(buf)

    @property
    def final(self) -> bool:
        """The (non-1xx) response is complete."""
        return bool(self.message_complete) and self.get_code() >= 200

    def kept_text(self) -> str:
        return b"".join(self.kept).decode("utf-8", "replace")


def _header_line(name: str, value: str) -> bytes:
    if any(c in name or c in value for c in "\r\n"):
        raise EndpointError(f"header {name!r} holds a line break")
    return name.encode("latin-1") + b": " + value.encode("latin-1", "replace")


class GeventStreamClient:
    """One user's HTTP client: a single kept-alive connection (a user sends one turn at a time)."""

    def __init__(self, timeouts: ClientTimeouts = ClientTimeouts(), *, headers: dict[str, str] | None = None, strict_sse: bool = False) -> None:
        self.timeouts = timeouts
        self.strict_sse = strict_sse
        self._headers = dict(headers or {})
        self._targets: dict[str, tuple[Target, bytes]] = {}
        self._sock: Any = None
        self._sock_key: tuple[str, str, int] | None = None
        self._tls: gssl.SSLContext | None = None

    # -- connections -----------------------------------------------------------------------
    def close(self) -> None:
        sock, self._sock, self._sock_key = self._sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _connect(self, target: Target) -> Any:
        try:
            sock = gsocket.create_connection((target.host, target.port), timeout=self.timeouts.connect_s)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
        if target.tls:
            if self._tls is None:
                self._tls = gssl.create_default_context()
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=target.host)
            except OSError as exc:
                sock.close()
                raise ConnectError(f"TLS handshake with {target.host}:{target.port} failed: {exc}") from exc
        return sock

    def _socket(self, target: Target) -> tuple[Any, bool]:
        """A connection to ``target`` and whether it was reused (kept alive)."""
        if self._sock is not None and self._sock_key == target.key:
            return self._sock, True
        self.close()
        self._sock, self._sock_key = self._connect(target), target.key
        return self._sock, False

    # -- one exchange ----------------------------------------------------------------------
    def _exchange(self, target: Target, data: bytes, make_response: Callable[[], _Response], first_timeout_s: float | None, idle_timeout_s: float | None, first_token: Callable[[], bool]) -> _Response:
        """Send ``data``, parse the response; resend once if a kept-alive connection was stale."""
        for attempt in (0, 1):
            sock, reused = self._socket(target)
            resp = make_response()
            try:
                sock.settimeout(first_timeout_s)
                sock.sendall(data)
                self._read(sock, resp, idle_timeout_s, first_token, reused)
            except StaleConnection:
                self.close()
                if attempt == 0:
                    continue
                raise
            except (BrokenPipeError, ConnectionResetError):
                self.close()
                if reused and not resp.got_bytes and attempt == 0:
                    continue  # the server dropped the idle connection as we wrote to it
                raise
            except BaseException:
                self.close()  # mid-response: the connection cannot be reused
                raise
            if not resp.should_keep_alive():
                self.close()
            return resp
        raise AssertionError("unreachable")

    @staticmethod
    def _read(sock: Any, resp: _Response, idle_timeout_s: float | None, first_token: Callable[[], bool], reused: bool) -> None:
        streaming = False
        while not resp.final:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if streaming:
                    raise _Stall(f"stalled: no token for {idle_timeout_s:g} s after the first") from None
                raise _Stall(f"stalled: no first token within {sock.gettimeout():g} s") from None
            if not data:
                if not resp.got_bytes:
                    if reused:
                        raise StaleConnection("keep-alive connection closed by the server before the response")
                    raise ConnectionResetError("server closed the connection before responding")
                try:
                    resp.feed(b"")  # EOF completes a read-until-close body
                except HTTPParseError:
                    pass
                if not resp.final:
                    raise ConnectionResetError("server closed the connection mid-response")
                return
            resp.t_ns = now_ns()
            resp.got_bytes = True
            try:
                resp.feed(data)
            except HTTPParseError as exc:
                raise ProtocolError(str(exc)) from exc
            if resp.bad_content_type is not None:
                raise MalformedStream(f"expected text/event-stream, got {resp.bad_content_type!r}")
            if not streaming and first_token():
                streaming = True
                sock.settimeout(idle_timeout_s)

    # -- the turn --------------------------------------------------------------------------
    def _head_prefix(self, url: str) -> tuple[Target, bytes]:
        hit = self._targets.get(url)
        if hit is None:
            target = Target.parse(url)
            lines = [
                b"POST " + target.path + b" HTTP/1.1",
                b"Host: " + target.host_header,
                b"User-Agent: kairosbench/" + __version__.encode() + b" (locust)",
                b"Content-Type: application/json",
                b"Accept: text/event-stream",
                b"Accept-Encoding: identity",
            ]
            lines += [_header_line(k, v) for k, v in self._headers.items()]
            hit = self._targets[url] = (target, b"\r\n".join(lines) + b"\r\nContent-Length: ")
        return hit

    def stream(self, url: str, body: bytes, headers: dict[str, str], outcome: StreamOutcome, *, count_words: bool) -> StreamOutcome:
        """POST ``body`` and consume the SSE reply into ``outcome`` (filled in as it goes).

        A ``GreenletExit`` (Locust stopping the user) is re-raised after the outcome is marked
        ``cancelled``; every other fault is data in ``outcome``.
        """
        parser = SSEParser(count_words=count_words, strict=self.strict_sse)
        outcome.parser = parser
        target, prefix = self._head_prefix(url)
        head = prefix + str(len(body)).encode() + b"\r\n" + b"".join(_header_line(k, v) + b"\r\n" for k, v in headers.items()) + b"\r\n"
        t = self.timeouts
        total = gevent.Timeout(t.total_s, ResponseTimeout(f"request took longer than {t.total_s:g} s")) if t.total_s else None
        resp: _Response | None = None
        outcome.t_start_ns = now_ns()
        try:
            if total is not None:
                total.start()
            resp = self._exchange(target, head + body, lambda: _Response(parser.feed, want_sse=True), t.first_token_s, t.idle_s, lambda: bool(parser.chunk_ns))
            outcome.http_status = resp.get_code()
            if outcome.http_status != 200:
                text = resp.kept_text()
                outcome.status = "http"
                outcome.retryable = outcome.http_status in _RETRYABLE_HTTP
                outcome.error = f"HTTP {outcome.http_status}: {error_text(text)}"[:500]
                outcome.rejected_parameter = rejected_parameter(outcome.http_status, text)
            else:
                parser.close(now_ns())
                if parser.error is not None:
                    outcome.status, outcome.error = "error", f"server error event: {parser.error}"
                elif parser.done or parser.finish_reason is not None:
                    outcome.status = "ok"
                else:
                    outcome.status, outcome.retryable = "truncated", True
                    outcome.error = "stream ended without [DONE] or a finish_reason"
        except gevent.GreenletExit:
            outcome.status, outcome.error = "cancelled", "test stopped mid-request"
            raise
        except _Stall as exc:
            outcome.status, outcome.retryable, outcome.error = "stall", True, str(exc)
        except Exception as exc:  # every transport/protocol fault is data
            outcome.status, outcome.retryable, outcome.error = classify_exception(exc)
        finally:
            if total is not None:
                total.close()
            outcome.t_end_ns = now_ns()
        return outcome

    # -- small JSON calls (model discovery, /tokenize) -------------------------------------
    def request_json(self, method: str, url: str, payload: dict[str, Any] | None = None, *, timeout_s: float = 30.0) -> Any:
        """GET or POST JSON; raises ``EndpointError`` naming the URL on any failure."""
        target = Target.parse(url)
        body = json.dumps(payload).encode() if payload is not None else b""
        lines = [
            method.encode() + b" " + target.path + b" HTTP/1.1",
            b"Host: " + target.host_header,
            b"User-Agent: kairosbench/" + __version__.encode() + b" (locust)",
            b"Accept: application/json",
            b"Accept-Encoding: identity",
            b"Content-Length: " + str(len(body)).encode(),
        ]
        if payload is not None:
            lines.append(b"Content-Type: application/json")
        lines += [_header_line(k, v) for k, v in self._headers.items()]
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        chunks: list[bytes] = []
        try:
            with gevent.Timeout(timeout_s, ResponseTimeout(f"no answer within {timeout_s:g} s")):
                resp = self._exchange(target, data, lambda: _Response(lambda b, _t: chunks.append(b), want_sse=False), timeout_s, timeout_s, lambda: False)
        except Exception as exc:  # _Stall included
            raise EndpointError(f"{method} {url}: {classify_exception(exc)[2]}") from None
        if resp.get_code() != 200:
            raise EndpointError(f"{method} {url}: HTTP {resp.get_code()}: {error_text(resp.kept_text())}")
        try:
            return json.loads(b"".join(chunks))
        except ValueError as exc:
            raise EndpointError(f"{method} {url}: answer is not JSON ({exc})") from None
