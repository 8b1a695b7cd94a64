"""The streaming HTTP/1.1 client: framing under any split, keep-alive, stale connections, errors."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.replay.http import ConnectError, HTTPPool, ProtocolError, ResponseSink, ResponseTimeout, Target, _Connection


class Sink(ResponseSink):
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.ended = False

    def on_status(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.status, self.headers = status, headers

    def on_body(self, data: bytes, t_ns: int) -> None:
        self.body += data

    def on_end(self, t_ns: int) -> None:
        self.ended = True


class FakeTransport:
    """A transport double: records writes, closing just flags."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def writelines(self, data) -> None:
        self.written.extend(data)

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n" + trailer + b"\r\n"


RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def feed(raw: bytes, cuts: list[int]) -> tuple[Sink, asyncio.Future, list[_Connection]]:
    idle: list[_Connection] = []
    conn = _Connection(idle.append, 0)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    sink = Sink()
    done = conn.start(b"POST / HTTP/1.1\r\n\r\n", b"{}", sink)
    prev = 0
    for c in sorted(set(cuts)) + [len(raw)]:
        if c > prev:
            conn.data_received(raw[prev:c])
            prev = c
    return sink, done, idle


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(min_size=1, max_size=40), max_size=8), cuts=st.lists(st.integers(0, 600), max_size=20))
async def test_chunked_body_under_any_split(parts: list[bytes], cuts: list[int]) -> None:
    raw = RESPONSE_HEAD + chunked(parts)
    sink, done, idle = await feed(raw, [c % (len(raw) + 1) for c in cuts])
    assert done.done() and done.exception() is None
    assert sink.status == 200 and sink.body == b"".join(parts) and sink.ended
    assert len(idle) == 1  # back in the pool for the next request


async def test_chunk_extensions_and_trailers() -> None:
    raw = RESPONSE_HEAD + b"5;name=x\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
    sink, done, _ = await feed(raw, [len(RESPONSE_HEAD) + 3])
    assert done.exception() is None and sink.body == b"hello"


async def test_content_length_and_1xx() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nContent-Length: 11\r\n\r\nslow down!!"
    sink, done, idle = await feed(raw, [10, 30, 70])
    assert done.exception() is None and sink.status == 429 and sink.body == b"slow down!!"
    assert len(idle) == 1


async def test_connection_close_response_is_not_pooled() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    sink, done, idle = await feed(raw, [])
    assert done.exception() is None and idle == []


async def test_read_until_close() -> None:
    idle: list[_Connection] = []
    conn = _Connection(idle.append, 0)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    sink = Sink()
    done = conn.start(b"", b"", sink)
    conn.data_received(b"HTTP/1.0 200 OK\r\n\r\npart one, ")
    conn.data_received(b"part two")
    assert not done.done()
    conn.connection_lost(None)
    assert done.exception() is None and sink.body == b"part one, part two" and sink.ended


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx", "compressed"),
    ],
)
async def test_protocol_errors(raw: bytes, message: str) -> None:
    _, done, _ = await feed(raw, [])
    with pytest.raises(ProtocolError, match=message):
        done.result()


async def test_reset_mid_response() -> None:
    idle: list[_Connection] = []
    conn = _Connection(idle.append, 0)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    done = conn.start(b"", b"", Sink())
    conn.data_received(RESPONSE_HEAD + b"5\r\nhel")
    conn.connection_lost(ConnectionResetError("peer reset"))
    with pytest.raises(ConnectionResetError, match="mid-response"):
        done.result()


def test_target_parsing() -> None:
    t = Target.parse("http://127.0.0.1:8000/v1/chat/completions")
    assert (t.host, t.port, t.path, t.host_header, t.tls) == ("127.0.0.1", 8000, b"/v1/chat/completions", b"127.0.0.1:8000", False)
    t = Target.parse("https://api.example.com/v1/chat/completions?x=1")
    assert (t.port, t.host_header, t.path, t.tls) == (443, b"api.example.com", b"/v1/chat/completions?x=1", True)
    with pytest.raises(ValueError):
        Target.parse("ftp://x")


# -- against real loopback sockets ------------------------------------------------------------
async def _server(responses: list[bytes], close_after_each: bool = False):
    """A scripted HTTP server: answers the i-th request with responses[i]."""
    count = {"connections": 0, "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
                await reader.readexactly(length)
                writer.write(responses[count["requests"]])
                count["requests"] += 1
                await writer.drain()
                if close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, count


async def test_keep_alive_reuse_and_stale_connection_retry() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, port, count = await _server([ok, ok, ok], close_after_each=True)
    pool = HTTPPool()
    target = Target.parse(f"http://127.0.0.1:{port}/x")
    try:
        for _ in range(3):
            sink = Sink()
            await pool.request(target, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", b"{}", sink)
            assert sink.body == b"ok"
            # no pause: the server's close may not have arrived when the next request reuses
            # the connection; the pool must then resend on a fresh one, transparently
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
    assert count["requests"] == 3 and count["connections"] == 3


async def test_keep_alive_reuses_one_connection() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, port, count = await _server([ok] * 4)
    pool = HTTPPool()
    target = Target.parse(f"http://127.0.0.1:{port}/x")
    try:
        for _ in range(4):
            await pool.request(target, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", b"{}", Sink())
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
    assert count["connections"] == 1 and count["requests"] == 4


async def test_connect_refused_and_total_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = HTTPPool()
    with pytest.raises(ConnectError):
        await pool.request(Target.parse(f"http://127.0.0.1:{port}/"), b"", b"", Sink())
    never = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    server, port, _ = await _server([never])
    try:
        with pytest.raises(ResponseTimeout):
            await pool.request(Target.parse(f"http://127.0.0.1:{port}/"), b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"", Sink(), timeout_s=0.2)
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("parts", [[b"a\r\nb", b"\r\n\r\n", b"3\r\nabc"], [b"data: {}\r\n\r\n"] * 3, [b"x" * 300, b"\r\n"]])
async def test_crlf_inside_chunk_data(parts: list[bytes]) -> None:
    raw = RESPONSE_HEAD + chunked(parts)
    for cuts in ([], [len(RESPONSE_HEAD)], [len(RESPONSE_HEAD) + 4, len(raw) - 3]):
        sink, done, _ = await feed(raw, cuts)
        assert done.exception() is None and sink.body == b"".join(parts)
