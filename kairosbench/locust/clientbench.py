"""Which streaming client is leaner under gevent: ours (geventhttpclient's parser) or ``requests``?

    python -m kairosbench.locust.clientbench [--requests 1500] [--concurrency 32] [--tokens 128]

Both clients feed the same SSE parser (``kairosbench.replay.sse.SSEParser``) from inside Locust's
world (gevent, monkey-patched), against the replay's mock server in a separate process (so its
CPU is not counted), with the same request bodies. Measured per client, in the same run:
CPU time of this process per request (user + system), wall time, and a check that every
stream was complete with the expected token count. The ratio printed is requests' CPU per
request over ours; docs/locust.md records a measurement. Rounds alternate (ours, requests,
ours, requests, ...) so drift on a shared machine hits both.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402

from kairosbench.clock import now_ns  # noqa: E402
from kairosbench.locust.client import GeventStreamClient  # noqa: E402
from kairosbench.replay.client import ClientTimeouts, StreamOutcome  # noqa: E402
from kairosbench.replay.sse import SSEParser  # noqa: E402

__all__ = ["main"]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _body(tokens: int, prompt_words: int, i: int) -> bytes:
    words = " ".join(f"w{i}x{k}" for k in range(prompt_words))
    return json.dumps({"model": "mock-model", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": tokens, "messages": [{"role": "user", "content": words}]}).encode()


def _ours(url: str) -> Callable[[bytes], int]:
    client = GeventStreamClient(ClientTimeouts())

    def one(body: bytes) -> int:
        o = client.stream(url, body, {}, StreamOutcome(), count_words=True)
        if o.status != "ok" or o.parser is None:
            raise RuntimeError(f"ours: {o.status}: {o.error}")
        return sum(o.parser.chunk_tokens)

    return one


def _requests(url: str) -> Callable[[bytes], int]:
    session = requests.Session()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", "Accept-Encoding": "identity"}

    def one(body: bytes) -> int:
        parser = SSEParser(count_words=True)
        with session.post(url, data=body, headers=headers, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"requests: HTTP {resp.status_code}")
            for chunk in resp.iter_content(chunk_size=None):
                parser.feed(chunk, now_ns())
        parser.close(now_ns())
        if not parser.done:
            raise RuntimeError("requests: stream incomplete")
        return sum(parser.chunk_tokens)

    return one


def _round(make: Callable[[str], Callable[[bytes], int]], url: str, bodies: list[bytes], concurrency: int, tokens: int) -> tuple[float, float]:
    """(CPU s, wall s) for sending every body once, ``concurrency`` users at a time."""
    per_user = [bodies[u::concurrency] for u in range(concurrency)]
    clients = [make(url) for _ in range(concurrency)]
    for c in clients:  # connect and warm up outside the measurement
        c(bodies[0])
    counted: list[int] = []

    def user(c: Callable[[bytes], int], mine: list[bytes]) -> None:
        for b in mine:
            counted.append(c(b))

    cpu0, t0 = _cpu_s(), time.perf_counter()
    pool = gevent.pool.Pool(concurrency)
    for c, mine in zip(clients, per_user):
        pool.spawn(user, c, mine)
    pool.join(raise_error=True)
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - t0
    if len(counted) != len(bodies) or any(n != tokens for n in counted):
        raise RuntimeError(f"token counts off: {len(counted)} streams, counts {sorted(set(counted))}")
    return cpu, wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1500, help="requests per client per round")
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent users (greenlets)")
    ap.add_argument("--tokens", type=int, default=128, help="output tokens per request (one SSE event each)")
    ap.add_argument("--prompt-words", type=int, default=2000, help="words in each request's prompt")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per client")
    ap.add_argument("--itl-s", type=float, default=0.0, help="mock server inter-token delay")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "kairosbench.replay.mockserver", "--no-count-prompt", "--itl-s", str(args.itl_s), "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the mock server did not start")
                time.sleep(0.05)
            url = json.loads(ready.read_text())["url"] + "/v1/chat/completions"
            bodies = [_body(args.tokens, args.prompt_words, i) for i in range(args.requests)]
            totals = {"ours (geventhttpclient parser)": [0.0, 0.0], "requests (stream=True)": [0.0, 0.0]}
            makers = {"ours (geventhttpclient parser)": _ours, "requests (stream=True)": _requests}
            for _ in range(args.rounds):
                for name, make in makers.items():
                    cpu, wall = _round(make, url, bodies, args.concurrency, args.tokens)
                    totals[name][0] += cpu
                    totals[name][1] += wall
        finally:
            server.terminate()
            server.wait(timeout=10)
    n = args.requests * args.rounds
    print(f"{n} requests per client, {args.concurrency} concurrent, {args.tokens} tokens each, prompt {args.prompt_words} words; mock server itl {args.itl_s:g} s")
    print(f"{'client':34} {'CPU µs/request':>15} {'CPU µs/token':>13} {'requests/s':>11}")
    for name, (cpu, wall) in totals.items():
        print(f"{name:34} {cpu / n * 1e6:15.0f} {cpu / (n * args.tokens) * 1e6:13.2f} {n / wall:11.0f}")
    ours, theirs = totals["ours (geventhttpclient parser)"][0], totals["requests (stream=True)"][0]
    print(f"requests / ours, CPU per request: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
