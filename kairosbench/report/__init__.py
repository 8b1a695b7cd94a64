"""HTML comparison reports: run directories in, one self-contained HTML file out.

    kairosbench report runs/max runs/kairos runs/static_900 -o reports/cmp.html

From Python::

    from kairosbench.report import find_inputs, load_input, build_report, render_html, write_report

    runs = [load_input(p) for p in find_inputs([Path("runs/max"), Path("runs/kairos")])]
    model = build_report(runs, baseline="max")
    write_report(render_html(model), Path("reports/cmp.html"))

Modules: ``load`` (run directories → ``rundata.RunData``), ``sim_output`` (``kairosbench sim``
output → the same), ``manifest_info`` (header facts), ``metrics`` (the comparison math, pure),
``series`` (time-series shaping, pure), ``plotting``/``figures``/``figures_time`` (plotly),
``render`` (jinja2 → HTML), ``cli`` (the ``kairosbench report`` command), ``synthetic`` (small
run directories for tests). docs/reports.md has the definitions and decisions.
"""

from kairosbench.report.load import Energy, RunData, find_inputs, load_input, load_run, load_sim
from kairosbench.report.metrics import METRICS, Comparison, Metric, compare, run_values
from kairosbench.report.render import ReportModel, build_report, render_html, write_report

__all__ = [
    "Energy",
    "RunData",
    "find_inputs",
    "load_input",
    "load_run",
    "load_sim",
    "METRICS",
    "Metric",
    "Comparison",
    "compare",
    "run_values",
    "ReportModel",
    "build_report",
    "render_html",
    "write_report",
]
