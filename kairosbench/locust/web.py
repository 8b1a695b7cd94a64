"""The web UI's kairosbench parts: the Agents tab, its CSV, and start-form validation.

The kairosbench options appear in the start form by themselves (Locust shows every option
declared with ``include_in_web_ui``). This module adds what Locust's extension points allow
on top (Locust's ``extend_web_ui`` example shows the pattern):

- an **Agents** tab: ``extended_tabs`` / ``extended_tables`` in the page's template arguments,
  with the rows (``AgentTally.rows()``) appended to every ``/stats/requests`` poll as
  ``extended_stats``; on a master these are summed over the workers' reports;
- ``/kairosbench/agents.csv``, listed under the Download Data tab;
- a check of the kairosbench fields when the form is submitted (``POST /swarm``): a bad value
  comes back as the form's error message, naming the field, instead of a test that starts
  and fails in every user.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask import Response, jsonify, request
from locust.env import Environment

from kairosbench.errors import KairosbenchError
from kairosbench.locust.hooks import ProcessState
from kairosbench.locust.settings import OPTIONS, settings_from
from kairosbench.locust.tally import TABLE_COLUMNS

__all__ = ["install_web_extension", "AGENTS_TAB_KEY", "AGENTS_CSV_PATH"]

AGENTS_TAB_KEY = "kairosbench-agents"
AGENTS_CSV_PATH = "/kairosbench/agents.csv"


def install_web_extension(environment: Environment, state: ProcessState) -> None:
    web_ui = environment.web_ui
    assert web_ui is not None and web_ui.app is not None
    app = web_ui.app
    base = (environment.parsed_options.web_base_path or "") if environment.parsed_options is not None else ""
    web_ui.template_args.update(
        extended_tabs=[{"title": "Agents", "key": AGENTS_TAB_KEY}],
        extended_tables=[{"key": AGENTS_TAB_KEY, "structure": [{"key": c.key, "title": c.title} for c in TABLE_COLUMNS]}],
        extended_csv_files=[{"href": f"{base}{AGENTS_CSV_PATH}", "title": "Download kairosbench agents CSV"}],
    )

    @app.after_request
    def add_agents_rows(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200 or not response.is_json:
            return response
        data = response.get_json()
        if isinstance(data, dict):
            data["extended_stats"] = [{"key": AGENTS_TAB_KEY, "data": state.tally.rows()}]
            response.set_data(json.dumps(data))
        return response

    @app.before_request
    def check_kairosbench_fields() -> Any:
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        current = vars(environment.parsed_options) if environment.parsed_options is not None else {}
        values = {spec.dest: request.form.get(spec.dest, current.get(spec.dest, spec.default)) for spec in OPTIONS}
        try:
            settings_from(values)
        except KairosbenchError as exc:
            return jsonify({"success": False, "message": f"kairosbench: {exc}", "host": environment.host})
        return None

    @web_ui.auth_required_if_enabled
    def agents_csv() -> Response:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([c.title for c in TABLE_COLUMNS])
        for row in state.tally.rows():
            writer.writerow(["" if row[c.key] is None else row[c.key] for c in TABLE_COLUMNS])
        return Response(buf.getvalue(), mimetype="text/csv", headers={"Content-Disposition": "attachment; filename=kairosbench_agents.csv"})

    app.add_url_rule(f"{base}{AGENTS_CSV_PATH}", "kairosbench_agents_csv", agents_csv)
