"""The bundled locustfile: agent sessions from a kairosbench workload, one per Locust user.

    locust -f kairosbench/locust/locustfile.py --host http://127.0.0.1:8000 --workload W.parquet
    kairosbench locust --headless -u 8 -r 8 -t 5m      # the same, with an emulator if no --host

Importing ``kairosbench.locust.user`` registers the options (web-UI fields), the Agents tab
and the record writers (``kairosbench.locust.hooks``); ``AgentUser`` is the one user class.
See docs/locust.md.
"""

from kairosbench.locust.user import AgentUser

__all__ = ["AgentUser"]
