"""Which agent session each Locust user replays next (pure: no clock, no gevent).

Locust's load model is a number of users; for kairosbench each user is one agent *slot*: it
replays a session from arrival to its last turn, then takes the next one (a closed loop with
``users`` sessions in flight, like ``kairosbench run --arrival closed --concurrency N``).

Every process that runs users (the local runner, or each worker) holds one ``SessionPlan``.
The plan numbers the sessions of an endless replay of the workload globally,

    global index g  ->  workload session g mod n, replay round g // n,

and gives process ``p`` of ``W`` the indexes ``p, p + W, p + 2W, ...``. So the W processes
partition one sequence: no two of them replay the same session at the same time, and the
session ids sent to the endpoint are unique across the whole test: the workload's id in
round 0, then ``<id>~r1``, ``<id>~r2``, ... (the ``kairosbench run`` convention), so the
engine sees every replayed session as a new agent.

``max_sessions`` caps the global index (g < max_sessions), so the cap holds over all
processes without them talking to each other. ``W`` is fixed when the test starts (the
master counts its workers); a worker that joins later (index >= W) takes slot ``p mod W``
with ``~w<p>`` appended to every id, so ids stay unique; under ``max_sessions`` it replays
nothing, since the cap was already shared out.

    >>> plan = SessionPlan(sessions, process_index=1, process_count=2)
    >>> [p.index for p in (plan.next(), plan.next(), plan.next())]
    [1, 3, 5]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kairosbench.workload.model import Session

__all__ = ["PlannedSession", "SessionPlan"]


@dataclass(frozen=True, slots=True)
class PlannedSession:
    """One session to replay: the workload session, the id to send, its global index."""

    session: Session
    session_id: str
    index: int


class SessionPlan:
    """Hands out sessions to the users of one process (see the module docstring)."""

    def __init__(self, sessions: Sequence[Session], *, process_index: int = 0, process_count: int = 1, max_sessions: int | None = None) -> None:
        if not sessions:
            raise ValueError("a plan needs at least one session")
        if process_count < 1 or process_index < 0:
            raise ValueError(f"bad process slot {process_index} of {process_count}")
        self.sessions = list(sessions)
        self.process_index = process_index
        self.process_count = process_count
        self.max_sessions = max_sessions
        self.late_joiner = process_index >= process_count
        self._slot = process_index % process_count
        self._suffix = f"~w{process_index}" if self.late_joiner else ""
        self._j = 0  # sessions this process has handed out
        self.exhausted = bool(self.late_joiner and max_sessions is not None)

    @property
    def handed_out(self) -> int:
        return self._j

    def next(self) -> PlannedSession | None:
        """The next session for a free user, or None when the cap is reached."""
        if self.exhausted:
            return None
        g = self._slot + self.process_count * self._j
        if self.max_sessions is not None and g >= self.max_sessions:
            self.exhausted = True
            return None
        self._j += 1
        n = len(self.sessions)
        session = self.sessions[g % n]
        rnd = g // n
        sid = session.session_id if rnd == 0 else f"{session.session_id}~r{rnd}"
        return PlannedSession(session, sid + self._suffix, g)

    def share(self) -> int | None:
        """How many sessions this process will hand out in all (None: unlimited)."""
        if self.max_sessions is None:
            return None
        if self.late_joiner:
            return 0
        m, w, p = self.max_sessions, self.process_count, self._slot
        return max(0, (m - p + w - 1) // w)
