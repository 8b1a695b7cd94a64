"""kairosbench's own Locust event hooks, declared in one place with typed payloads.

Locust's ``events.request`` carries one number per request (we send the turn's end-to-end
time, with output tokens as the size). Everything else about a turn or an agent session
comes through these two hooks, fired in the process that ran the user (a worker, in a
distributed test) after the record is written::

    from kairosbench.locust import events as kb_events

    @kb_events.turn.add_listener
    def on_turn(record, environment, **kw):      # record: kairosbench.locust.records.TurnRecord
        if record.ttft_s is not None and record.ttft_s > 2.0:
            print("slow first token", record.session_id, record.turn_index)

Listeners get keyword arguments (take ``**kw`` so new ones do not break you), as with
Locust's own events.
"""

from __future__ import annotations

from locust.event import EventHook

__all__ = ["turn", "session"]

turn = EventHook()
"""A request of a turn finished (any status). Arguments: ``record`` (``TurnRecord``), ``environment``."""

session = EventHook()
"""An agent session ended (completed, abandoned, or cut by the end of the test). Arguments:
``record`` (``SessionRecord``), ``environment``."""
