"""The HTML report, checked as a structure (no browser): rows, figures' JSON, nothing fetched."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from kairosbench.errors import UsageError
from kairosbench.report import __all__ as report_all
from kairosbench.report.cli import default_out_path, report
from kairosbench.report.load import find_inputs, load_input
from kairosbench.report.render import build_report, render_html, resolve_baseline
from kairosbench.report.synthetic import SyntheticRun, write_run_dir, write_sim_dir


class _Scan(HTMLParser):
    """Collects what a browser would load or run: script srcs, links, table rows, figure data."""

    def __init__(self) -> None:
        super().__init__()
        self.script_srcs: list[str] = []
        self.link_hrefs: list[str] = []
        self.img_srcs: list[str] = []
        self.rows: list[str] = []
        self.data_scripts: dict[str, str] = {}
        self.plot_divs: list[str] = []
        self._in_data: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.script_srcs.append(a["src"] or "")
        if tag == "script" and a.get("type") == "application/json":
            self._in_data = (a.get("id") or "").removeprefix("data-")
            self.data_scripts[self._in_data] = ""
        if tag == "link" and a.get("href"):
            self.link_hrefs.append(a["href"] or "")
        if tag == "img" and a.get("src"):
            self.img_srcs.append(a["src"] or "")
        if tag == "tr" and a.get("data-run"):
            self.rows.append(a["data-run"] or "")
        if tag == "div" and (a.get("id") or "").startswith("plot-"):
            self.plot_divs.append((a.get("id") or "").removeprefix("plot-"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_data = None

    def handle_data(self, data: str) -> None:
        if self._in_data is not None:
            self.data_scripts[self._in_data] += data


def _runs(tmp_path: Path) -> list[Path]:
    return [
        write_run_dir(tmp_path / "r_max", SyntheticRun(policy="max", power_w=(500.0, 500.0), clock_mhz=(1980.0, 1980.0))),
        write_run_dir(tmp_path / "r_kairos", SyntheticRun(policy="kairos", power_w=(300.0, 200.0), clock_mhz=(1200.0, 345.0),
                                                           agent_tok_s=(40.0, 30.0, 25.0, 18.0, 9.0), preemptions=(2, 0))),
        write_run_dir(tmp_path / "r_direct", SyntheticRun(policy=None, with_power=False, with_engine=False, status="interrupted")),
    ]


def _scan(html: str) -> _Scan:
    scan = _Scan()
    scan.feed(html)
    return scan


def test_public_api_is_curated() -> None:
    import kairosbench.report as pkg

    import inspect

    public = [n for n in dir(pkg) if not n.startswith("_") and not inspect.ismodule(getattr(pkg, n))]
    assert sorted(report_all) == sorted(public)


def test_report_html_is_self_contained_and_complete(tmp_path: Path) -> None:
    runs = [load_input(p) for p in find_inputs(_runs(tmp_path))]
    model = build_report(runs)
    html = render_html(model)
    scan = _scan(html)
    assert scan.script_srcs == [] and scan.link_hrefs == [] and scan.img_srcs == []
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?https?://""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    assert scan.rows == ["max", "kairos", "none"]
    assert "Plotly.newPlot" in html and "plotly.js v" in html  # the library itself is inline
    # every figure with data has a div and parseable JSON with traces
    assert set(scan.plot_divs) == set(scan.data_scripts)
    for fig_id in ("tradeoff", "power", "clocks", "time-at-clock", "agent-cdf", "latency", "engine", "control"):
        spec = json.loads(scan.data_scripts[fig_id])
        assert spec["data"], fig_id
        assert "layout" in spec
    power = json.loads(scan.data_scripts["power"])
    assert {t["name"] for t in power["data"]} == {"max", "kairos"}
    # runs without data are named, never silently dropped
    assert "Not in this figure (no such data): none" in html
    assert "no power telemetry in this run" in html
    assert "interrupted" in html


def test_table_values_baseline_and_reading(tmp_path: Path) -> None:
    runs = [load_input(p) for p in find_inputs(_runs(tmp_path))]
    model = build_report(runs)
    assert model.baseline.label == "max"  # the default baseline is the max-clock run
    html = render_html(model)
    assert "1,000.0" in html  # max: 2 × 500 W
    assert "500.0" in html and "−50.0 %" in html  # kairos: 300 + 200 W
    assert "kairos vs max: saves 50.0 % average power and 50.0 % less energy per finished agent" in html
    assert "at a cost of 20.0 pp in SLO attainment (80.0 % → 60.0 % at ≥ 20 tok/s)" in html
    kairos_row = html[html.index('data-run="kairos"'):html.index('data-run="none"')]
    assert 'class="best"' in kairos_row  # lowest power
    assert model.values[1]["preemptions"] == pytest.approx(2.0)


def test_slo_override_recomputes_attainment_and_warns(tmp_path: Path) -> None:
    runs = [load_input(p) for p in find_inputs(_runs(tmp_path)[:2])]
    model = build_report(runs, slo_tok_s=35.0)
    assert model.values[0]["slo_attainment_frac"] == pytest.approx(0.4)  # 50 and 40 tok/s meet 35
    assert any("--slo-tok-s" in w for w in model.warnings)


def test_comparability_warning_for_different_workloads(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", SyntheticRun(policy="max"))
    b = write_run_dir(tmp_path / "b", SyntheticRun(policy="kairos", workload_sha256="cd" * 32))
    model = build_report([load_input(a), load_input(b)])
    assert any("differ in workload" in w for w in model.warnings)
    assert "Are these runs comparable?" in render_html(model)


def test_resolve_baseline(tmp_path: Path) -> None:
    runs = [load_input(p) for p in find_inputs(_runs(tmp_path))]
    build_report(runs)  # sets labels
    assert resolve_baseline(runs, None) == 0
    assert resolve_baseline(runs, "kairos") == 1
    assert resolve_baseline(runs, str(tmp_path / "r_direct")) == 2
    assert resolve_baseline(runs, "r_kairos") == 1
    assert resolve_baseline(runs, "3") == 2
    with pytest.raises(UsageError, match="matches no run"):
        resolve_baseline(runs, "static:900")
    no_max = [r for r in runs if r.policy != "max"]
    assert resolve_baseline(no_max, None) == 0


def test_sim_output_report(tmp_path: Path) -> None:
    sim = write_sim_dir(tmp_path / "sim", (("max", 500.0), ("kairos", 300.0)))
    model = build_report([load_input(p) for p in find_inputs([sim])])
    html = render_html(model)
    assert model.title.startswith("Simulated policy comparison")
    assert _scan(html).rows == ["max", "kairos"]
    assert "simulated" in html and "saves 40.0 % average power" in html


def test_cli_writes_the_report(tmp_path: Path) -> None:
    paths = _runs(tmp_path)
    out = tmp_path / "out" / "cmp.html"
    result = CliRunner().invoke(report, [*map(str, paths), "-o", str(out), "--baseline", "kairos", "--max-points", "50"])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.stat().st_size < 6_000_000
    assert "max vs kairos" in result.output or "max" in result.output
    assert "report:" in result.output
    html = out.read_text()
    assert "baseline</span>" in html and "kairos (--baseline)" in html
    assert "--baseline kairos" in html  # the command that makes it again
    assert "--max-points 50" in html


def test_cli_default_output_and_errors(tmp_path: Path) -> None:
    paths = _runs(tmp_path)[:2]
    result = CliRunner().invoke(report, [*map(str, paths), "--reports-dir", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "reports").glob("*-synthetic.html"))
    assert len(written) == 1
    bad = CliRunner().invoke(report, [*map(str, paths), "-o", str(tmp_path / "x.html"), "--baseline", "nope"])
    assert isinstance(bad.exception, UsageError)
    (tmp_path / "empty").mkdir()
    from kairosbench.errors import InputError

    empty = CliRunner().invoke(report, [str(tmp_path / "empty")])
    assert isinstance(empty.exception, InputError)


def test_default_out_path(tmp_path: Path) -> None:
    import datetime as dt

    runs = [load_input(p) for p in find_inputs(_runs(tmp_path)[:1])]
    when = dt.datetime(2026, 11, 27, 6, 0, 0, tzinfo=dt.timezone.utc)
    assert default_out_path(runs, Path("reports"), when) == Path("reports/20261127-060000-synthetic.html")


def test_report_command_is_wired() -> None:
    from kairosbench.cli import COMMANDS

    assert COMMANDS["report"] == "kairosbench.report.cli:report"


def test_figure_arrays_are_compact_float32(tmp_path: Path) -> None:
    import base64

    import numpy as np

    runs = [load_input(p) for p in find_inputs(_runs(tmp_path)[:1])]
    model = build_report(runs, max_points=500)
    power = next(f for f in model.figures if f.id == "power").figure
    assert power is not None
    fine = power["data"][1]  # the finest samples (hidden until the button is pressed)
    assert fine["x"]["dtype"] == "f4" and fine["y"]["dtype"] == "f4"
    t = np.frombuffer(base64.b64decode(fine["x"]["bdata"]), dtype="<f4")
    w = np.frombuffer(base64.b64decode(fine["y"]["bdata"]), dtype="<f4")
    assert len(t) <= 500 and np.all(np.diff(t) > 0)
    assert w.max() == pytest.approx(1000.0, rel=1e-6)  # 2 x 500 W during the replay


def test_power_view_averages_long_runs_more() -> None:
    from kairosbench.report.figures_time import mean_window_s

    assert mean_window_s(15.0, 2000) == 1.0
    assert mean_window_s(1700.0, 2000) == 5.0
    assert mean_window_s(3 * 3600.0, 2000) == 30.0
    assert mean_window_s(30 * 3600.0, 2000) == 300.0
    assert mean_window_s(1000.0, 10) == 120.0  # never more points than the budget
