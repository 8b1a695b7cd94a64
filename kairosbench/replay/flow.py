"""What an agent does next, as a generator: sans-IO, no sockets, no sleeps.

``agent_flow(session)`` yields steps and receives results, like an httpx auth flow or a
SimPy process. Three drivers run it unchanged: the aiohttp load generator, the Locust user
and the virtual-time simulator.

    flow = agent_flow(session, options)
    step = next(flow)                      # Wait(until_s=arrival)
    step = flow.send(None)                 # SendTurn(turn 0)
    step = flow.send(TurnResult(...))      # Wait(tool delay) or a retry, ...
    ...                                    # StopIteration.value is the SessionOutcome

Times are seconds from the start of the run; ``time_scale`` divides arrivals and tool delays
(0.1 replays ten times faster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Union

from kairosbench.workload.model import Session

__all__ = ["FlowOptions", "Wait", "SendTurn", "TurnResult", "SessionOutcome", "Step", "agent_flow"]


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """How sessions are paced and how faults are handled (documented in docs/replay.md)."""

    time_scale: float = 1.0
    max_retries: int = 2  # per turn, for retryable faults (connection errors, 5xx, 429, stalls)
    retry_backoff_s: float = 1.0  # doubled each attempt
    arrival_override_s: float | None = None  # Poisson/closed-loop drivers set the arrival here


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep until ``until_s`` on the run clock. ``reason``: arrival, tool or backoff."""

    until_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class SendTurn:
    """Send turn ``turn_index``: the whole history so far plus ``appended_tokens`` new tokens."""

    turn_index: int
    appended_tokens: int
    expected_prompt_tokens: int
    max_tokens: int
    attempt: int
    planned_at_s: float  # when the plan wanted it sent; the driver records lateness against it


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What came back. ``finished_at_s`` is on the run clock."""

    ok: bool
    finished_at_s: float
    output_tokens: int = 0
    retryable: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    status: str  # completed | abandoned
    turns_done: int
    error: str | None = None


Step = Union[Wait, SendTurn]


def agent_flow(session: Session, options: FlowOptions = FlowOptions()) -> Generator[Step, TurnResult | None, SessionOutcome]:
    """Replay one session: arrive, then for each turn send, wait for the reply, run the tool."""
    scale = options.time_scale
    arrival = options.arrival_override_s if options.arrival_override_s is not None else session.arrival_s * scale
    now = yield Wait(until_s=arrival, reason="arrival")
    t = arrival
    prompts = session.prompt_tokens()
    for i, turn in enumerate(session.turns):
        attempt = 0
        while True:
            result = yield SendTurn(
                turn_index=i,
                appended_tokens=turn.appended_tokens,
                expected_prompt_tokens=prompts[i],
                max_tokens=max(1, turn.output_tokens),
                attempt=attempt,
                planned_at_s=t,
            )
            assert isinstance(result, TurnResult), "driver must send a TurnResult after SendTurn"
            if result.ok:
                break
            if not result.retryable or attempt >= options.max_retries:
                return SessionOutcome(status="abandoned", turns_done=i, error=result.error)
            t = result.finished_at_s + options.retry_backoff_s * (2**attempt)
            attempt += 1
            yield Wait(until_s=t, reason="backoff")
        t = result.finished_at_s
        if i + 1 < len(session.turns) and turn.tool_duration_s > 0:
            t = t + turn.tool_duration_s * scale
            yield Wait(until_s=t, reason="tool")
    del now
    return SessionOutcome(status="completed", turns_done=len(session.turns))
