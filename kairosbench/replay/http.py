"""A minimal HTTP/1.1 client for the one hot request: POST a body, stream the SSE reply.

Why not aiohttp here (aiohttp still does every other call): at no inter-token delay every
token is its own TCP read, and aiohttp's path per read — C parser, ``StreamReader`` buffer,
waking the reading task, ``readany`` — cost more CPU than the whole budget (measured in
docs/perf/loadgen.md: 2-3x this client). Here the bytes go from ``data_received`` straight
into the SSE parser: no buffer object, no task switch per read. The awaiting task wakes once,
when the response is complete.

What it does: keep-alive connections pooled per (scheme, host, port); ``Content-Length``,
``chunked`` and read-until-close bodies; 1xx responses skipped; TLS for https; a pooled
connection that turns out to be closed before any byte of the response arrived is replaced
once, transparently (servers close idle keep-alive connections: uvicorn after 5 s). What it
does not do: proxies, redirects, compression (it asks for ``identity`` and reports anything
else as a malformed response), HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

__all__ = ["HTTPPool", "Target", "ResponseSink", "ProtocolError", "StaleConnection", "ConnectError", "ResponseTimeout"]


class ProtocolError(ValueError):
    """The server's bytes are not HTTP/1.1 we understand."""


class StaleConnection(ConnectionError):
    """A reused keep-alive connection closed before the response began (safe to resend)."""


class ConnectError(OSError):
    """The connection could not be established (refused, unreachable, DNS, connect timeout)."""


class ResponseTimeout(TimeoutError):
    """The whole request took longer than its total timeout."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes, parsed once per URL."""

    key: tuple[str, str, int]
    host: str
    port: int
    path: bytes
    host_header: bytes
    tls: bool

    @classmethod
    def parse(cls, url: str) -> "Target":
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        default = (tls and port == 443) or (not tls and port == 80)
        host = u.hostname
        host_header = host if ":" not in host else f"[{host}]"
        if not default:
            host_header += f":{port}"
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        return cls((u.scheme, host, port), host, port, path.encode(), host_header.encode(), tls)


class ResponseSink:
    """What a response is fed to. The pool calls these from ``data_received``."""

    def on_status(self, status: int, headers: dict[bytes, bytes]) -> None: ...

    def on_body(self, data: bytes, t_ns: int) -> None: ...

    def on_end(self, t_ns: int) -> None: ...


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one response parsed at a time, fed to a sink."""

    def __init__(self, on_idle: Callable[["_Connection"], None], clock_offset_ns: int) -> None:
        self._on_idle = on_idle
        self._offset = clock_offset_ns
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._sink: ResponseSink | None = None
        self._done: asyncio.Future[None] | None = None
        self._reset_response()

    def _reset_response(self) -> None:
        self._in_headers = True
        self._head = b""
        self._mode = "chunked"  # chunked | length | close
        self._remaining = 0  # length mode: bytes left; chunked: bytes left in this chunk
        self._cbuf = b""  # chunked framing bytes not yet complete
        self._chunk_state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._keep_alive = True
        self._got_bytes = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            if not self._in_headers and self._mode == "close":
                self._finish()
                return
            if not self._got_bytes and self.reused:
                self._fail(StaleConnection("keep-alive connection closed by the server before the response"))
            else:
                err = ConnectionResetError(f"server closed the connection mid-response{f' ({exc})' if exc else ''}")
                self._fail(err)

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost settles the response

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._done.done():
            return  # bytes after a response we gave up on: the connection will be closed
        self._got_bytes = True
        t_ns = time.monotonic_ns() + self._offset
        try:
            if self._in_headers:
                data = self._headers(data)
                if self._in_headers or self._done.done():
                    return
                if not data:
                    if self._mode == "length" and self._remaining == 0:
                        self._finish(t_ns)
                    return
            self._body(data, t_ns)
        except Exception as exc:  # a protocol error or the sink's (malformed SSE)
            self._fail(exc)

    # -- requests --------------------------------------------------------------------------
    def start(self, head: bytes, body: bytes, sink: ResponseSink) -> asyncio.Future[None]:
        assert self.transport is not None, "start() before the connection was made"
        self._reset_response()
        self._sink = sink
        self._done = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body))  # type: ignore[union-attr]
        return self._done

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        self.abort()
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def _finish(self, t_ns: int | None = None) -> None:
        sink = self._sink
        done = self._done
        self._sink = None
        if sink is not None:
            sink.on_end(t_ns if t_ns is not None else time.monotonic_ns() + self._offset)
        if done is not None and not done.done():
            done.set_result(None)
        if self._keep_alive and not self.closed:
            self._on_idle(self)
        elif not self.closed:
            self.abort()

    # -- parsing ---------------------------------------------------------------------------
    def _headers(self, data: bytes) -> bytes:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 65536:
                raise ProtocolError("response headers larger than 64 KiB")
            self._head = head
            return b""
        lines = head[:end].split(b"\r\n")
        rest = head[end + 4 :]
        self._head = b""
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # 100 Continue / 103 Early Hints: another header block follows
            return self._headers(rest) if rest else b""
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self._in_headers = False
        conn = headers.get(b"connection", b"").lower()
        self._keep_alive = parts[0] == b"HTTP/1.1" and b"close" not in conn
        te = headers.get(b"transfer-encoding", b"").lower()
        if b"chunked" in te:
            self._mode, self._chunk_state = "chunked", 0
        elif b"content-length" in headers:
            try:
                self._mode, self._remaining = "length", int(headers[b"content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers[b'content-length'][:40]!r}") from None
        else:
            self._mode, self._keep_alive = "close", False
        enc = headers.get(b"content-encoding", b"identity").lower()
        if enc not in (b"identity", b""):
            raise ProtocolError(f"the server compressed the response ({enc.decode(errors='replace')}) although we asked for identity")
        assert self._sink is not None
        self._sink.on_status(status, headers)
        return rest

    def _body(self, data: bytes, t_ns: int) -> None:
        sink = self._sink
        assert sink is not None
        mode = self._mode
        if mode == "length":
            if len(data) >= self._remaining:
                if self._remaining:
                    sink.on_body(data[: self._remaining], t_ns)
                self._remaining = 0
                self._finish(t_ns)
            else:
                self._remaining -= len(data)
                sink.on_body(data, t_ns)
            return
        if mode == "close":
            sink.on_body(data, t_ns)
            return
        # chunked. Fast loop over whole chunks "<hex>\r\n<data>\r\n" (every read but the odd
        # one that splits a chunk); the state machine below picks up any partial tail.
        buf = self._cbuf + data if self._cbuf else data
        self._cbuf = b""
        if self._chunk_state == 0 and buf.endswith(b"\r\n") and self._whole_chunks(buf, sink, t_ns):
            return
        out: list[bytes] = []
        pos, n = 0, len(buf)
        if self._chunk_state == 0:
            find = buf.find
            startswith = buf.startswith
            while True:
                eol = find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    size = int(buf[pos:eol], 16)
                except ValueError:  # chunk extensions or junk: the careful path decides
                    break
                end = eol + 2 + size
                if size == 0 or end + 2 > n:
                    break
                if not startswith(b"\r\n", end):
                    raise ProtocolError("chunk data not followed by CRLF")
                out.append(buf[eol + 2 : end])
                pos = end + 2
        while pos < n:
            state = self._chunk_state
            if state == 0:  # size line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > 1024:
                        raise ProtocolError("chunk size line too long")
                    self._cbuf = buf[pos:]
                    break
                size_field = buf[pos:eol].split(b";", 1)[0].strip()
                try:
                    size = int(size_field, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_field[:20]!r}") from None
                pos = eol + 2
                if size == 0:
                    self._chunk_state = 3
                    continue
                self._remaining = size
                self._chunk_state = 1
            elif state == 1:  # chunk data
                take = min(self._remaining, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = 2
            elif state == 2:  # CRLF after the data
                if n - pos < 2:
                    self._cbuf = buf[pos:]
                    break
                if not buf.startswith(b"\r\n", pos):
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._chunk_state = 0
            else:  # trailers, ended by an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    self._cbuf = buf[pos:]
                    break
                if eol == pos:
                    if out:
                        sink.on_body(out[0] if len(out) == 1 else b"".join(out), t_ns)
                    self._finish(t_ns)
                    return
                pos = eol + 2
        if out:
            sink.on_body(out[0] if len(out) == 1 else b"".join(out), t_ns)


    def _whole_chunks(self, buf: bytes, sink: ResponseSink, t_ns: int) -> bool:
        """The read is whole chunks (maybe ending with the last-chunk marker): decode in bulk.

        ``"h1\r\nd1\r\nh2\r\nd2\r\n"`` split on CRLF alternates sizes and data whenever
        no data holds a CRLF (SSE bodies use bare LF); checking every size against its data
        proves the framing. Anything else (CRLF in data, extensions, trailers, a partial
        chunk) returns False and the byte-wise path below handles it.
        """
        parts = buf[:-2].split(b"\r\n")
        if len(parts) % 2:
            return False
        datas = parts[1::2]
        try:
            sizes = [int(h, 16) for h in parts[0::2]]
        except ValueError:
            return False
        if sizes != [len(d) for d in datas]:
            return False
        last = sizes[-1] == 0
        if 0 in (sizes[:-1] if last else sizes):
            return False
        if last:
            datas.pop()
        if datas:
            sink.on_body(datas[0] if len(datas) == 1 else b"".join(datas), t_ns)
        if last:
            self._finish(t_ns)
        return True


class HTTPPool:
    """Keep-alive connections per (scheme, host, port), for the streaming POSTs of a run."""

    def __init__(self, *, connect_timeout_s: float | None = 10.0, clock_offset_ns: int = 0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._offset = clock_offset_ns
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        key = target.key

        def on_idle(conn: _Connection) -> None:
            conn.reused = True
            self._idle.setdefault(key, []).append(conn)

        ssl_ctx = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ssl_ctx = self._ssl
        coro = loop.create_connection(lambda: _Connection(on_idle, self._offset), target.host, target.port, ssl=ssl_ctx)
        try:
            _, conn = await asyncio.wait_for(coro, self.connect_timeout_s) if self.connect_timeout_s else await coro
        except asyncio.TimeoutError:
            raise ConnectError(f"connect to {target.host}:{target.port} timed out after {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectError(exc.errno, f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}") from exc
        self._all.add(conn)
        return conn

    def _pooled(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
            self._all.discard(conn)
        return None

    async def request(self, target: Target, head: bytes, body: bytes, sink: ResponseSink, *, timeout_s: float | None = None) -> None:
        """Send one request and feed the response to ``sink``; returns when it is complete.

        Raises ``ConnectError``, ``ConnectionResetError``, ``ResponseTimeout`` (past
        ``timeout_s``), ``ProtocolError`` or whatever the sink raised; cancellation aborts
        the connection (it is never reused).
        """
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = self._pooled(target)
            if conn is None:
                conn = await self._connect(target)
            done = conn.start(head, body, sink)
            timer = loop.call_later(timeout_s, conn._fail, ResponseTimeout(f"no complete response within {timeout_s:g} s")) if timeout_s else None
            try:
                await done
                return
            except StaleConnection:
                self._all.discard(conn)
                if attempt:
                    raise
            except BaseException:
                conn.abort()
                self._all.discard(conn)
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        self._idle.clear()
