"""Live run statistics (plain counters the runner bumps) and their rich live view.

The runner only increments integers and appends to a bounded deque, so keeping the view costs
nothing on the hot path; the rich ``Live`` thread renders at ``refresh_per_second``. Services
(the profiler, the gateway) add their own fields by appending callables to
``LiveStats.extra_fields``: each returns ``{"label": "value"}`` (e.g. power and clocks).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from statistics import median
from typing import Callable, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["LiveStats", "LiveView"]


@dataclass
class LiveStats:
    """Counters of a run in progress (read by the live view and by tests)."""

    sessions_total: int | None = None
    arrived: int = 0
    active: int = 0
    completed: int = 0
    abandoned: int = 0
    requests: int = 0
    requests_ok: int = 0
    errors: int = 0
    output_tokens: int = 0
    ttft_recent_s: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    extra_fields: list[Callable[[], Mapping[str, str]]] = field(default_factory=list)
    t0_mono: float = field(default_factory=time.monotonic)

    def record_request(self, ok: bool, output_tokens: int, ttft_s: float | None) -> None:
        self.requests += 1
        if ok:
            self.requests_ok += 1
        else:
            self.errors += 1
        self.output_tokens += output_tokens
        if ttft_s is not None:
            self.ttft_recent_s.append(ttft_s)


class LiveView:
    """A rich renderable with rates computed between refreshes."""

    def __init__(self, stats: LiveStats, title: str = "kairosbench run") -> None:
        self.stats = stats
        self.title = title
        self._last = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)

    def __rich__(self) -> Table:
        s = self.stats
        now = time.monotonic()
        t_prev, req_prev, tok_prev = self._last
        if now - t_prev >= 1.0:
            dt = now - t_prev
            self._rates = ((s.requests - req_prev) / dt, (s.output_tokens - tok_prev) / dt)
            self._last = (now, s.requests, s.output_tokens)
        rps, tps = self._rates
        ttft = median(s.ttft_recent_s) if s.ttft_recent_s else None
        table = Table(title=f"{self.title} — {now - s.t0_mono:,.0f} s", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        total = f" of {s.sessions_total}" if s.sessions_total is not None else ""
        table.add_row("sessions arrived / active / done", f"{s.arrived}{total} / {s.active} / {s.completed + s.abandoned} ({s.abandoned} abandoned)")
        table.add_row("requests/s", f"{rps:,.1f}  ({s.requests:,} sent)")
        table.add_row("output tokens/s", f"{tps:,.0f}  ({s.output_tokens:,} total)")
        table.add_row("errors", f"{s.errors:,}")
        table.add_row("TTFT p50 (recent)", "—" if ttft is None else f"{ttft * 1e3:,.1f} ms")
        for extra in s.extra_fields:
            try:
                items = extra()
            except Exception as exc:  # a service's field must not break the view
                items = {"(field error)": str(exc)[:60]}
            for k, v in items.items():
                table.add_row(k, v)
        return table

    def live(self, console: Console | None = None) -> Live:
        return Live(self, console=console, refresh_per_second=2, transient=True)
