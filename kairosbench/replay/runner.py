"""The asyncio driver: runs ``agent_flow`` for every session against real endpoints.

One task per live session (spawned ``prepare_lead_s`` before its arrival so the first turn's
prompt is built ahead), one dispatcher that spawns them, one flusher that writes Parquet parts
off the event loop. Each session task, for each step of its flow:

- ``Wait`` (arrival / tool / backoff): build the next turn's messages *first* (so the send at
  the planned time costs only a POST), then sleep until the planned time;
- ``SendTurn``: assemble the body (bytes), stream the reply, record the request row, append
  the reply to the conversation, hand a ``TurnResult`` back to the flow.

Scheduling lag (``sched_lag_s``) is ``t_start - t_planned`` for every request: how late the
driver ran its plan, the clock error DESIGN.md asks to report.

The run ends when every session is done, when ``duration_s`` passes (in-flight requests are
recorded as ``cancelled``, their sessions as ``unfinished``: status ``completed``), or when
``stop`` is set (Ctrl-C / SIGTERM: same, status ``interrupted``). Parquet parts are compacted
on every one of these paths.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from kairosbench.clock import WallClock
from kairosbench.replay.arrivals import Arrival
from kairosbench.replay.client import StreamClient, StreamOutcome, agent_headers
from kairosbench.replay.endpoint import Endpoint
from kairosbench.replay.flow import FlowOptions, SendTurn, TurnResult, Wait, agent_flow
from kairosbench.replay.progress import LiveStats
from kairosbench.replay.prompt import PromptFactory, SessionPrompt
from kairosbench.replay.records import REQUEST_COLUMNS, SESSION_COLUMNS, PartWriter, request_row
from kairosbench.workload.model import Session

__all__ = ["ReplayOptions", "Replay", "ReplayResult"]

log = logging.getLogger("kairosbench.replay")
_HEADER_UNSAFE = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True)
class ReplayOptions:
    """What the driver needs beyond the endpoints (a subset of ``RunConfig``)."""

    time_scale: float = 1.0
    duration_s: float | None = None
    max_sessions: int | None = None
    concurrency: int | None = None  # closed loop: sessions in flight
    max_retries: int = 2
    retry_backoff_s: float = 1.0
    prepare_lead_s: float = 1.0
    flush_interval_s: float = 2.0
    flush_rows: int = 5000


@dataclass
class ReplayResult:
    status: str  # completed | interrupted
    t_start_ns: int
    t_end_ns: int
    sessions_started: int
    requests_path: Path
    sessions_path: Path
    stopped_by: str | None = None  # duration | signal | None
    max_sched_lag_s: float = 0.0


@dataclass
class _SessionTally:
    endpoint: str
    t_arrival_ns: int
    t_start_ns: int | None = None
    t_finish_ns: int | None = None
    turns_done: int = 0
    requests: int = 0
    output_tokens: int = 0
    llm_time_ns: int = 0
    status: str = "unfinished"
    error: str | None = None


@dataclass
class Replay:
    """Drive ``arrivals`` against ``endpoints`` and write the two tables into ``run_dir``."""

    run_dir: Path
    endpoints: Sequence[Endpoint]
    factories: Sequence[PromptFactory]  # one per endpoint (its tokenizer)
    client: StreamClient
    options: ReplayOptions = ReplayOptions()
    stats: LiveStats = field(default_factory=LiveStats)
    stop: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.clock = WallClock()  # restarted when run() begins: the plan's time zero
        self.requests = PartWriter(self.run_dir / "requests.parquet", REQUEST_COLUMNS, flush_rows=self.options.flush_rows, flush_s=self.options.flush_interval_s)
        self.sessions = PartWriter(self.run_dir / "sessions.parquet", SESSION_COLUMNS, flush_rows=self.options.flush_rows, flush_s=self.options.flush_interval_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_done = asyncio.Event()
        self._dispatch_done = False
        self._slots = asyncio.Semaphore(self.options.concurrency) if self.options.concurrency else None
        self._started = 0
        self._max_lag_s = 0.0
        self.requests.warm_up()  # first use of pyarrow costs ~0.3 s: pay it before the run

    # -- the run ---------------------------------------------------------------------------
    async def run(self, arrivals: Iterator[Arrival]) -> ReplayResult:
        # The workload (maybe millions of Turn objects) is long-lived: move it out of the
        # cyclic GC's reach, or every full collection walks it and stalls the event loop
        # for hundreds of ms (measured: p99 scheduling lag 560 ms at 1,000 sessions).
        gc.collect()
        gc.freeze()
        self.clock = WallClock()
        t0 = self.clock.t0_ns
        dispatcher = asyncio.create_task(self._dispatch(arrivals), name="kairosbench-dispatch")
        flusher = asyncio.create_task(self._flush_loop(), name="kairosbench-flush")
        stopped_by: str | None = None
        waiters = {asyncio.create_task(self._all_done.wait())}
        if self.stop is not None:
            waiters.add(asyncio.create_task(self.stop.wait()))
        timeout = self.options.duration_s
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                stopped_by = "duration"
            elif self.stop is not None and self.stop.is_set() and not self._all_done.is_set():
                stopped_by = "signal"
        finally:
            for w in waiters:
                w.cancel()
            dispatcher.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(dispatcher, *self._tasks, return_exceptions=True)
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await asyncio.to_thread(self.requests.finalize)
            await asyncio.to_thread(self.sessions.finalize)
            gc.unfreeze()
        return ReplayResult(
            status="interrupted" if stopped_by == "signal" else "completed",
            t_start_ns=t0,
            t_end_ns=self.clock.t0_ns + int(self.clock.now_s() * 1e9),
            sessions_started=self._started,
            requests_path=self.requests.path,
            sessions_path=self.sessions.path,
            stopped_by=stopped_by,
            max_sched_lag_s=self._max_lag_s,
        )

    async def _dispatch(self, arrivals: Iterator[Arrival]) -> None:
        opts = self.options
        try:
            for arrival in arrivals:
                if opts.max_sessions is not None and self._started >= opts.max_sessions:
                    break
                if arrival.at_s is None:
                    assert self._slots is not None, "closed-loop arrivals need options.concurrency"
                    await self._slots.acquire()
                    at_s = self.clock.now_s()
                else:
                    at_s = arrival.at_s
                    if opts.duration_s is not None and at_s >= opts.duration_s:
                        break
                    lead = at_s - opts.prepare_lead_s - self.clock.now_s()
                    if lead > 0:
                        await asyncio.sleep(lead)
                index = self._started
                self._started += 1
                task = asyncio.create_task(self._session(arrival, at_s, index), name=f"session-{arrival.session_id}")
                self._tasks.add(task)
                task.add_done_callback(self._session_finished)
        finally:
            self._dispatch_done = True
            if not self._tasks:
                self._all_done.set()

    def _session_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._slots is not None:
            self._slots.release()
        if self._dispatch_done and not self._tasks:
            self._all_done.set()

    async def _flush_loop(self) -> None:
        period = min(0.5, self.options.flush_interval_s / 2)
        while True:
            await asyncio.sleep(period)
            for writer in (self.requests, self.sessions):
                if writer.due():
                    table = await writer.to_table_async(writer.swap())
                    if table.num_rows:
                        await asyncio.to_thread(writer.write_part, table)  # pyarrow releases the GIL here

    # -- one session -----------------------------------------------------------------------
    async def _session(self, arrival: Arrival, at_s: float, index: int) -> None:
        session, sid = arrival.session, arrival.session_id
        k = index % len(self.endpoints)
        endpoint, factory = self.endpoints[k], self.factories[k]
        clock = self.clock
        tally = _SessionTally(endpoint=endpoint.base_url, t_arrival_ns=clock.t0_ns + int(at_s * 1e9))
        prompt = factory.session(session, sid)
        user_json = json.dumps(sid).encode()
        agent_header = _HEADER_UNSAFE.sub("_", sid)
        opts = self.options
        flow = agent_flow(session, FlowOptions(time_scale=opts.time_scale, max_retries=opts.max_retries, retry_backoff_s=opts.retry_backoff_s, arrival_override_s=at_s))
        arrived = False
        try:
            step = next(flow)
            while True:
                if isinstance(step, Wait):
                    if step.reason in ("arrival", "tool") and tally.turns_done < len(session.turns):
                        await prompt.prepare(tally.turns_done)
                    delay = step.until_s - clock.now_s()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if step.reason == "arrival":
                        arrived = True
                        self.stats.arrived += 1
                        self.stats.active += 1
                    step = flow.send(None)
                    continue
                assert isinstance(step, SendTurn)
                result = await self._turn(step, prompt, endpoint, tally, sid, user_json, agent_header, session.agent_kind, len(session.turns))
                if result.ok:
                    tally.turns_done = step.turn_index + 1
                step = flow.send(result)
        except StopIteration as stop:
            outcome = stop.value
            tally.status, tally.error = outcome.status, outcome.error
            tally.t_finish_ns = clock.t0_ns + int(clock.now_s() * 1e9)
        except asyncio.CancelledError:
            tally.status = "unfinished"
            tally.t_finish_ns = clock.t0_ns + int(clock.now_s() * 1e9)
            raise
        except Exception as exc:  # a bug in the driver must not end the run: record it
            log.exception("session %s failed inside kairosbench", sid)
            tally.status, tally.error = "abandoned", f"internal error: {type(exc).__name__}: {exc}"[:300]
            tally.t_finish_ns = clock.t0_ns + int(clock.now_s() * 1e9)
        finally:
            if arrived:
                self.stats.active -= 1
                if tally.status == "completed":
                    self.stats.completed += 1
                elif tally.status == "abandoned":
                    self.stats.abandoned += 1
            self._record_session(session, sid, tally)

    async def _turn(
        self,
        step: SendTurn,
        prompt: SessionPrompt,
        endpoint: Endpoint,
        tally: _SessionTally,
        sid: str,
        user_json: bytes,
        agent_header: str,
        agent_kind: str,
        n_turns: int = 0,
    ) -> TurnResult:
        prepared = await prompt.prepare(step.turn_index)
        clock = self.clock
        t_planned_ns = clock.t0_ns + int(step.planned_at_s * 1e9)
        headers = agent_headers(agent_header, step.turn_index, prepared.prompt_tokens_sent, final=step.turn_index == n_turns - 1)
        count_words = prompt.model.words_are_tokens
        while True:
            eos_control = endpoint.eos_control
            body = prepared.body(endpoint, step.max_tokens, user_json)
            outcome = StreamOutcome()
            try:
                await self.client.stream(endpoint.chat_url, body, headers, outcome, count_words=count_words)
            except asyncio.CancelledError:
                self._record_request(step, sid, agent_kind, endpoint, prepared.prompt_tokens_sent, prepared.target_prompt_tokens, t_planned_ns, outcome, eos_control, tally)
                raise
            if outcome.rejected_parameter and endpoint.downgrade(outcome.rejected_parameter, outcome.error or "", outcome.t_end_ns):
                log.warning("%s rejected %s; dropped it for this endpoint: %s", endpoint.base_url, outcome.rejected_parameter, outcome.error)
                continue
            break
        out_tokens = self._record_request(step, sid, agent_kind, endpoint, prepared.prompt_tokens_sent, prepared.target_prompt_tokens, t_planned_ns, outcome, eos_control, tally)
        ok = outcome.status == "ok"
        if ok:
            parser = outcome.parser
            assert parser is not None
            await prompt.add_reply(parser.content_json, parser.usage_prompt_tokens)
        return TurnResult(
            ok=ok,
            finished_at_s=(outcome.t_end_ns - clock.t0_ns) / 1e9,
            output_tokens=out_tokens,
            retryable=outcome.retryable,
            error=None if ok else f"{outcome.status}: {outcome.error}",
        )

    # -- records ---------------------------------------------------------------------------
    def _record_request(
        self,
        step: SendTurn,
        sid: str,
        agent_kind: str,
        endpoint: Endpoint,
        prompt_sent: int,
        prompt_expected: int,
        t_planned_ns: int,
        o: StreamOutcome,
        eos_control: str,
        tally: _SessionTally,
    ) -> int:
        clock = self.clock
        r = request_row(
            step,
            o,
            session_id=sid,
            agent_kind=agent_kind,
            endpoint_url=endpoint.base_url,
            prompt_tokens_expected=prompt_expected,
            prompt_tokens_sent=prompt_sent,
            t_planned_ns=t_planned_ns,
            eos_control=eos_control,
            now_ns=lambda: clock.t0_ns + int(clock.now_s() * 1e9),
            stopped_reason="run stopped before the request was sent",
        )
        if r.lag_s > self._max_lag_s:
            self._max_lag_s = r.lag_s
        self.requests.append(r.row)
        out_tokens, e2e_ns = r.output_tokens, r.e2e_ns
        if tally.t_start_ns is None:
            tally.t_start_ns = o.t_start_ns
        tally.requests += 1
        tally.output_tokens += out_tokens
        tally.llm_time_ns += e2e_ns
        self.stats.record_request(o.status == "ok", out_tokens, r.ttft_s)
        return out_tokens

    def _record_session(self, session: Session, sid: str, t: _SessionTally) -> None:
        llm_s = t.llm_time_ns / 1e9
        self.sessions.append(
            (
                sid,
                session.session_id,
                session.agent_kind,
                t.endpoint,
                t.t_arrival_ns,
                t.t_start_ns,
                t.t_finish_ns,
                t.turns_done,
                len(session.turns),
                t.requests,
                t.output_tokens,
                llm_s,
                t.output_tokens / llm_s if llm_s > 0 else None,
                t.status,
                t.error,
            )
        )
