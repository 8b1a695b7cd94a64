"""When sessions arrive: recorded, Poisson, or closed loop — small pure generators.

Each yields ``Arrival(session, session_id, at_s)`` in order, ``at_s`` being seconds on the run
clock (``None`` for closed loop: the driver starts the session when a slot frees). The driver
applies ``--duration`` and ``--max-sessions``; these functions never look at a clock, so tests
just list them:

    >>> [round(a.at_s, 3) for a in recorded(sessions, time_scale=0.5)]
    [0.0, 1.5, 4.0]

- ``recorded``: the workload's ``arrival_s``, shifted so the first session arrives at 0, times
  ``time_scale``. Each session once.
- ``poisson``: exponential gaps at ``rate_per_s`` (seeded), sessions in workload order.
- ``closed_loop``: sessions in workload order; the driver keeps ``concurrency`` in flight.

With ``cycle=True`` (Poisson and closed loop, when ``--duration`` or ``--max-sessions`` asks for
more sessions than the workload holds) the workload is replayed again with fresh ids
``<id>~r1``, ``<id>~r2``, ..., so every replayed session is a new agent to the engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

from kairosbench.workload.model import Session

__all__ = ["Arrival", "recorded", "poisson", "closed_loop", "session_stream", "ARRIVAL_MODES"]

ARRIVAL_MODES = ("recorded", "poisson", "closed")


@dataclass(frozen=True, slots=True)
class Arrival:
    session: Session
    session_id: str  # the id sent to the endpoint (differs from the workload's when cycling)
    at_s: float | None  # run-clock seconds; None: start when a closed-loop slot frees


def session_stream(sessions: Sequence[Session], *, cycle: bool) -> Iterator[tuple[Session, str]]:
    """Sessions in order, then (``cycle``) again and again with ``~rN`` suffixed ids."""
    if not sessions:
        return
    round_ = 0
    while True:
        for s in sessions:
            yield s, s.session_id if round_ == 0 else f"{s.session_id}~r{round_}"
        if not cycle:
            return
        round_ += 1


def recorded(sessions: Sequence[Session], *, time_scale: float = 1.0) -> Iterator[Arrival]:
    """The workload's own arrival times (first at 0), compressed by ``time_scale``."""
    if not sessions:
        return
    ordered = sorted(sessions, key=lambda s: s.arrival_s)
    t0 = ordered[0].arrival_s
    for s in ordered:
        yield Arrival(s, s.session_id, (s.arrival_s - t0) * time_scale)


def poisson(sessions: Sequence[Session], *, rate_per_s: float, seed: int = 0, cycle: bool = False) -> Iterator[Arrival]:
    """Poisson arrivals at ``rate_per_s`` sessions per second (first at one exponential gap)."""
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be > 0")
    rng = random.Random(seed)
    t = 0.0
    for s, sid in session_stream(sessions, cycle=cycle):
        t += rng.expovariate(rate_per_s)
        yield Arrival(s, sid, t)


def closed_loop(sessions: Sequence[Session], *, cycle: bool = False) -> Iterator[Arrival]:
    """Sessions for a closed loop: the driver starts one whenever one finishes."""
    for s, sid in session_stream(sessions, cycle=cycle):
        yield Arrival(s, sid, None)
