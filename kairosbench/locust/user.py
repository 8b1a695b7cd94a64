"""``AgentUser``: a Locust user that replays recorded agent sessions, turn by turn.

Each user is one agent slot. Its one task takes the next session of the process's plan
(``kairosbench.locust.plan``) and runs it through the same sans-IO flow as the aiohttp load
generator and the simulator (``kairosbench.replay.flow.agent_flow``):

- ``Wait`` (arrival, tool, backoff): build the next turn's messages first, then
  ``gevent.sleep`` until the planned time, so the send at that time costs only a POST;
- ``SendTurn``: assemble the body with the same prompt builder ``kairosbench run`` uses
  (``kairosbench.replay.prompt``: whole history resent, trace prompt sizes, the assistant
  replies as the endpoint streamed them), send it with the identity headers
  (``X-Kairosbench-Agent``, ``-Turn``, ``-Prompt-Tokens``, ``-Final``; OpenAI ``user``), stream
  the reply, record it, hand the ``TurnResult`` back to the flow.

When Locust stops the user (end of ``--run-time``, the Stop button, a ramp-down), the
``GreenletExit`` lands wherever the user waits: an in-flight request is recorded as
``cancelled``, the session as ``unfinished``, and the exit goes on. With ``--stop-timeout``
Locust lets the user finish its current *session* first, because a session is one task.

To customise, subclass it in your own locustfile (import the module, so Locust does not also
pick up the base class)::

    from kairosbench.locust import user as kb

    class SlowAgents(kb.AgentUser):
        weight = 1
"""

from __future__ import annotations

import json
import logging
import re

import gevent
from locust import User, constant, task
from locust.exception import StopUser

from kairosbench.locust.client import GeventStreamClient
from kairosbench.locust.endpoint_setup import run_sync
from kairosbench.locust.hooks import state_of
from kairosbench.locust.plan import PlannedSession
from kairosbench.locust.records import TurnRecord, session_record, turn_record
from kairosbench.locust.runtime import LocustRun
from kairosbench.replay.client import StreamOutcome, agent_headers
from kairosbench.replay.flow import FlowOptions, SendTurn, TurnResult, Wait, agent_flow
from kairosbench.replay.prompt import PreparedTurn, SessionPrompt

__all__ = ["AgentUser", "replay_session"]

log = logging.getLogger("kairosbench.locust")
_HEADER_UNSAFE = re.compile(r"[^\x21-\x7e]")


class AgentUser(User):
    """One agent slot: replays workload sessions back to back (see the module docstring)."""

    wait_time = constant(0)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._client: GeventStreamClient | None = None

    @task
    def agent_session(self) -> None:
        """Replay one whole agent session (all its turns and tool waits)."""
        state = state_of(self.environment)
        run = state.run if state is not None else None
        if run is None:
            if state is not None:
                state.report_missing_run(self)
            raise StopUser()
        planned = run.next_session()
        if planned is None:
            raise StopUser()  # the plan is spent (--max-sessions)
        if self._client is None:
            self._client = run.new_client()
        replay_session(run, self._client, planned)

    def on_stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _Session:
    """Per-session counters for the ``sessions.parquet`` row."""

    __slots__ = ("t_arrival_ns", "t_start_ns", "t_finish_ns", "turns_done", "requests", "output_tokens", "llm_time_ns", "status", "error")

    def __init__(self, t_arrival_ns: int) -> None:
        self.t_arrival_ns = t_arrival_ns
        self.t_start_ns: int | None = None
        self.t_finish_ns: int | None = None
        self.turns_done = 0
        self.requests = 0
        self.output_tokens = 0
        self.llm_time_ns = 0
        self.status = "unfinished"
        self.error: str | None = None


def replay_session(run: LocustRun, client: GeventStreamClient, planned: PlannedSession) -> None:
    """Drive ``agent_flow`` for one session, recording every request and the session itself."""
    session, sid = planned.session, planned.session_id
    clock = run.clock
    s = run.settings
    arrival_s = clock.now_s()
    tally = _Session(clock.t0_ns + int(arrival_s * 1e9))
    prompt = run.factory.session(session, sid)
    user_json = json.dumps(sid).encode()
    agent_header = _HEADER_UNSAFE.sub("_", sid)
    flow = agent_flow(session, FlowOptions(time_scale=s.time_scale, max_retries=s.max_retries, retry_backoff_s=s.retry_backoff_s, arrival_override_s=arrival_s))
    n_turns = len(session.turns)
    try:
        step = next(flow)
        while True:
            if isinstance(step, Wait):
                if step.reason in ("arrival", "tool") and tally.turns_done < n_turns:
                    run_sync(prompt.prepare(tally.turns_done))
                delay = step.until_s - clock.now_s()
                if delay > 0:
                    gevent.sleep(delay)
                step = flow.send(None)
                continue
            assert isinstance(step, SendTurn)
            result = _turn(run, client, step, prompt, tally, sid, user_json, agent_header, session.agent_kind, n_turns)
            if result.ok:
                tally.turns_done = step.turn_index + 1
            step = flow.send(result)
    except StopIteration as stop:
        tally.status, tally.error = stop.value.status, stop.value.error
    except gevent.GreenletExit:
        tally.status = "unfinished"
        raise
    except Exception as exc:  # a bug in the driver must not end the test: record it
        log.exception("session %s failed inside kairosbench", sid)
        tally.status, tally.error = "abandoned", f"internal error: {type(exc).__name__}: {exc}"[:300]
    finally:
        tally.t_finish_ns = clock.t0_ns + int(clock.now_s() * 1e9)
        run.record_session(
            session_record(
                session_id=sid,
                workload_session_id=session.session_id,
                agent_kind=session.agent_kind,
                endpoint_url=run.endpoint.base_url,
                t_arrival_ns=tally.t_arrival_ns,
                t_start_ns=tally.t_start_ns,
                t_finish_ns=tally.t_finish_ns,
                turns_done=tally.turns_done,
                turns_total=n_turns,
                requests=tally.requests,
                output_tokens=tally.output_tokens,
                llm_time_ns=tally.llm_time_ns,
                status=tally.status,
                error=tally.error,
            )
        )


def _turn(
    run: LocustRun,
    client: GeventStreamClient,
    step: SendTurn,
    prompt: SessionPrompt,
    tally: _Session,
    sid: str,
    user_json: bytes,
    agent_header: str,
    agent_kind: str,
    n_turns: int,
) -> TurnResult:
    prepared = run_sync(prompt.prepare(step.turn_index))
    endpoint = run.endpoint
    t_planned_ns = run.clock.t0_ns + int(step.planned_at_s * 1e9)
    headers = agent_headers(agent_header, step.turn_index, prepared.prompt_tokens_sent, final=step.turn_index == n_turns - 1)
    count_words = prompt.model.words_are_tokens
    while True:
        eos_control = endpoint.eos_control
        body = prepared.body(endpoint, step.max_tokens, user_json)
        outcome = StreamOutcome()
        try:
            client.stream(endpoint.chat_url, body, headers, outcome, count_words=count_words)
        except gevent.GreenletExit:
            _record(run, step, prepared, t_planned_ns, outcome, eos_control, tally, sid, agent_kind)
            raise
        if outcome.rejected_parameter and endpoint.downgrade(outcome.rejected_parameter, outcome.error or "", outcome.t_end_ns):
            log.warning("%s rejected %s; dropped it for this endpoint: %s", endpoint.base_url, outcome.rejected_parameter, outcome.error)
            continue  # nothing reached the model: resent at once, not a retry
        break
    rec = _record(run, step, prepared, t_planned_ns, outcome, eos_control, tally, sid, agent_kind)
    if rec.ok:
        parser = outcome.parser
        assert parser is not None
        run_sync(prompt.add_reply(parser.content_json, parser.usage_prompt_tokens))
    return TurnResult(
        ok=rec.ok,
        finished_at_s=(outcome.t_end_ns - run.clock.t0_ns) / 1e9,
        output_tokens=rec.output_tokens,
        retryable=outcome.retryable,
        error=None if rec.ok else f"{outcome.status}: {outcome.error}",
    )


def _record(run: LocustRun, step: SendTurn, prepared: PreparedTurn, t_planned_ns: int, outcome: StreamOutcome, eos_control: str, tally: _Session, sid: str, agent_kind: str) -> TurnRecord:
    rec = turn_record(
        step,
        outcome,
        session_id=sid,
        agent_kind=agent_kind,
        endpoint_url=run.endpoint.base_url,
        prompt_tokens_sent=prepared.prompt_tokens_sent,
        t_planned_ns=t_planned_ns,
        eos_control=eos_control,
        now_ns=run.clock.t0_ns + int(run.clock.now_s() * 1e9),
    )
    if tally.t_start_ns is None:
        tally.t_start_ns = rec.t_start_ns
    tally.requests += 1
    tally.output_tokens += rec.output_tokens
    tally.llm_time_ns += rec.e2e_ns
    run.record_turn(rec)
    return rec
