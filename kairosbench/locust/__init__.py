"""Locust integration: agent sessions replayed by Locust users, with kairosbench fields in the web UI.

Run it with ``kairosbench locust [locust options]`` (starts an emulator when no ``--host`` is
given) or ``locust -f kairosbench/locust/locustfile.py``. See docs/locust.md.

Two kinds of modules live here, and the split matters:

- **pure** (safe to import anywhere, no gevent): ``settings`` (the options, declared once),
  ``plan`` (which session each user replays), ``tally`` (the Agents tab's numbers),
  ``records`` (request/session rows in the ``kairosbench run`` schema), ``cli``;
- **gevent-land** (only inside a Locust process): ``user``, ``client``, ``runtime``, ``hooks``,
  ``web``, ``endpoint_setup``, ``locustfile``. Importing ``locust`` monkey-patches the standard
  library (sockets, threads, ``time.sleep``) for the whole process, which would break
  kairosbench's asyncio code. So this package imports nothing at import time, and the rest of
  kairosbench never imports the gevent-land modules; tests run Locust as a subprocess.
"""

from __future__ import annotations

__all__: list[str] = []
