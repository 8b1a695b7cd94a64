"""Drive an ``Engine`` on the wall clock and hand its tokens to waiting HTTP streams.

One asyncio task per engine: it advances the model to "now", dispatches the tokens of every
finished step to the streams waiting for them, and sleeps until the next step ends (or a new
request wakes it). Model time is seconds since the emulator process started (``t0_ns`` on the
run clock, ``kairosbench.clock.now_ns``), so a model time maps to a run-clock timestamp as
``t0_ns + t * 1e9``.

Busy steps are chained back to back in *model* time; if the process is slow, tokens go out
later than the model says. That lateness is the **lag**: measured at every step end as
``wall - model end``, kept as a histogram, a max, a recent window (``lag_s``) and a bounded
sample ring for the benchmark. When the engine goes idle, model time rejoins wall time, so
lag never accumulates across idle periods.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from kairosbench.clock import now_ns
from kairosbench.emulator.engine import Engine, StepOutput
from kairosbench.emulator.gpu import GpuReading
from kairosbench.emulator.metrics import MetricsState
from kairosbench.emulator.request import EngineRequest, RequestState

__all__ = ["RealtimeEngine", "TokenStream", "GcPacer"]

_LAG_WINDOW_S = 1.0
_LAG_RING = 200_000


class TokenStream:
    """What a request handler waits on: how many tokens are ready, and whether it is over."""

    __slots__ = ("ready", "finished", "waiter", "last_token_s")

    def __init__(self) -> None:
        self.ready = 0
        self.finished = False
        self.waiter: asyncio.Future[None] | None = None
        self.last_token_s = 0.0

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        """Sleep until the driver has something new for this stream."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class GcPacer:
    """Run Python's garbage collector when the model clock has slack, not whenever it likes.

    Automatic collection stops the event loop at arbitrary moments (measured: 20-100 ms pauses
    under 128 streams), which is lag. With a pacer the drivers collect the young generation
    when the next step is at least ``slack_s`` away, the middle one now and then, and the old one
    every ``full_every_s`` (then regardless of slack, to bound memory).
    """

    def __init__(self, *, slack_s: float = 0.004, young_threshold: int = 2000, full_every_s: float = 30.0) -> None:
        self.slack_s = slack_s
        self.young_threshold = young_threshold
        self.full_every_s = full_every_s
        self._young = 0
        self._last_full = 0.0
        self.pauses_s: deque[float] = deque(maxlen=10_000)

    def maybe_collect(self, now_s: float, slack_s: float) -> None:
        import gc
        import time

        if now_s - self._last_full >= self.full_every_s:
            gen = 2
            self._last_full = now_s
        elif slack_s < self.slack_s or gc.get_count()[0] < self.young_threshold:
            return
        else:
            self._young += 1
            gen = 1 if self._young % 10 == 0 else 0
        t = time.perf_counter()
        gc.collect(gen)
        self.pauses_s.append(time.perf_counter() - t)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RealtimeEngine:
    """The wall-clock driver of one engine (one emulated instance)."""

    def __init__(self, engine: Engine, *, t0_ns: int, metrics: MetricsState | None = None, gc_pacer: GcPacer | None = None) -> None:
        self.engine = engine
        self.gc_pacer = gc_pacer
        self.t0_ns = t0_ns
        self.metrics = metrics or MetricsState()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._closing = False
        self._recent_lag: deque[tuple[float, float]] = deque()
        self.lag_ring: deque[float] = deque(maxlen=_LAG_RING)

    # ---- clock -----------------------------------------------------------------------------
    def now_s(self) -> float:
        return (now_ns() - self.t0_ns) / 1e9

    def to_ns(self, t_s: float) -> int:
        return self.t0_ns + int(round(t_s * 1e9))

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"emulator-engine-{self.engine.index}")

    async def stop(self) -> None:
        self._closing = True
        self.kick()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def kick(self) -> None:
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    # ---- commands from handlers --------------------------------------------------------------
    def submit(self, req: EngineRequest) -> None:
        """Queue a request now (raises ``RequestTooLong``)."""
        self.engine.add_request(req, self.now_s())
        self.kick()

    def abort(self, req: EngineRequest) -> None:
        """The client went away: free the request's blocks (now, or at the current step's end)."""
        if not req.done and not req.abort_requested:
            self.engine.abort(req, self.now_s())
            self.metrics.success["abort"] = self.metrics.success.get("abort", 0) + 1
            self.kick()

    def set_clock(self, f_mhz: int | None) -> None:
        self.engine.set_clock(f_mhz, self.now_s())
        self.kick()

    def gpu_reading(self) -> GpuReading:
        return self.engine.gpu_reading(self.now_s())

    def lag_s(self) -> float:
        """Largest lag among steps that ended within the last second of wall time."""
        now = self.now_s()
        dq = self._recent_lag
        while dq and dq[0][0] < now - _LAG_WINDOW_S:
            dq.popleft()
        return max((lag for _, lag in dq), default=0.0)

    # ---- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        eng = self.engine
        while not self._closing:
            now = self.now_s()
            outs = eng.step_until(now)
            if outs:
                self._dispatch(outs, now)
            nxt = eng.next_event_time()
            if nxt is None:
                if self.gc_pacer is not None:
                    self.gc_pacer.maybe_collect(now, 1.0)
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            delay = nxt - self.now_s()
            if self.gc_pacer is not None:
                self.gc_pacer.maybe_collect(now, delay)
                delay = nxt - self.now_s()
            if delay > 0:
                self._wake = fut = loop.create_future()
                handle = loop.call_later(delay, _wake, fut)
                try:
                    await fut
                finally:
                    handle.cancel()
                    self._wake = None
            else:
                await asyncio.sleep(0)  # running late: still let the handlers write

    def _dispatch(self, outs: list[StepOutput], now: float) -> None:
        m = self.metrics
        ring = self.lag_ring
        recent = self._recent_lag
        for out in outs:
            lag = now - out.t_end
            if lag < 0:
                lag = 0.0
            m.lag.observe(lag)
            ring.append(lag)
            recent.append((now, lag))
            if lag > m.lag_max_s:
                m.lag_max_s = lag
            t = out.t_end
            for req in out.tokens:
                s: Any = req.payload
                if req.num_output == 1:
                    m.ttft.observe(t - req.arrival_s)
                elif s is not None:
                    m.itl.observe(t - s.last_token_s)
                if s is not None:
                    s.ready = req.num_output
                    s.last_token_s = t
                    s.wake()
            for req in out.finished:
                s = req.payload
                if req.state is RequestState.FINISHED:  # aborts are counted where they happen
                    m.e2e.observe(t - req.arrival_s)
                    m.success[req.finish_reason or "length"] = m.success.get(req.finish_reason or "length", 0) + 1
                if s is not None:
                    s.finished = True
                    s.wake()
