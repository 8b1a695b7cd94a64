"""The report's comparison math: counters, deltas, best cells, the reading, comparability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairosbench.report.metrics import (
    METRIC_GROUPS,
    METRICS,
    best_runs,
    comparability_warnings,
    compare,
    counter_increase,
    engine_counters,
    metric,
    point_change,
    reading,
    relative_change,
)


def test_every_metric_is_declared_with_a_unit_in_its_key_or_a_count() -> None:
    keys = [m.key for m in METRICS]
    assert len(keys) == len(set(keys))
    for m in METRICS:
        assert m.group in METRIC_GROUPS
        assert m.better in ("lower", "higher", "")
        assert m.delta in ("rel", "pp", "")
        assert m.doc.endswith(".")
        assert m.key.endswith(("_w", "_kj", "_s", "_frac", "_tok_s", "_per_min")) or m.key in ("finished_agents", "preemptions", "recomputed_tokens", "errors")


def test_metric_formatting() -> None:
    assert metric("ttft_p50_s").format(0.0123) == "12.3"
    assert metric("slo_attainment_frac").format(0.875) == "87.5"
    assert metric("avg_power_w").format(None) == "—"
    assert metric("avg_power_w").format(float("nan")) == "—"
    assert metric("recomputed_tokens").format(12345.0) == "12,345"
    assert metric("avg_power_w").format_delta(300.0, 400.0) == "−25.0 %"
    assert metric("slo_attainment_frac").format_delta(0.9, 1.0) == "−10.0 pp"
    assert metric("errors").format_delta(3.0, 1.0) == ""


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=50))
def test_counter_increase_of_a_monotone_counter_is_last_minus_first(steps: list[int]) -> None:
    values = np.cumsum(steps).astype(float)
    assert counter_increase(values) == pytest.approx(values[-1] - values[0])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_counter_increase_is_never_negative(values: list[float]) -> None:
    inc = counter_increase(values)
    assert inc is not None and inc >= 0


def test_counter_increase_counts_a_restart_and_skips_nan() -> None:
    assert counter_increase([10, 20, 5, 8]) == pytest.approx(10 + 5 + 3)
    assert counter_increase([np.nan, 3, np.nan, 7]) == pytest.approx(4)
    assert counter_increase([]) is None
    assert counter_increase([np.nan]) is None


def test_relative_and_point_changes() -> None:
    assert relative_change(75.0, 100.0) == pytest.approx(-0.25)
    assert relative_change(1.0, 0.0) is None
    assert relative_change(None, 1.0) is None
    assert point_change(0.9, 0.95) == pytest.approx(-5.0)
    assert point_change(None, 0.5) is None


def test_best_runs() -> None:
    assert best_runs([300.0, 250.0, 250.0, None], "lower") == {1, 2}
    assert best_runs([1.0, 2.0], "higher") == {1}
    assert best_runs([5.0, 5.0], "lower") == set()  # nothing stands out
    assert best_runs([5.0, None], "lower") == set()  # one value is no comparison
    assert best_runs([1.0, 2.0], "") == set()


def test_reading_spells_out_savings_and_slo_cost() -> None:
    base = {"avg_power_w": 500.0, "energy_per_agent_kj": 2.0, "slo_attainment_frac": 1.0, "p5_agent_tok_s": 40.0}
    run = {"avg_power_w": 350.0, "energy_per_agent_kj": 1.6, "slo_attainment_frac": 0.97, "p5_agent_tok_s": 21.0}
    text = reading("kairos", "max", run, base, 20.0)
    assert text.startswith("kairos vs max: saves 30.0 % average power and 20.0 % less energy per finished agent")
    assert "at a cost of 3.0 pp in SLO attainment (100.0 % → 97.0 % at ≥ 20 tok/s)" in text
    assert "P5 per-agent throughput 40.0 → 21.0 tok/s." in text


def test_reading_more_power_less_energy_and_no_cost() -> None:
    base = {"avg_power_w": 300.0, "energy_per_agent_kj": 2.0, "slo_attainment_frac": 0.9}
    run = {"avg_power_w": 330.0, "energy_per_agent_kj": 1.5, "slo_attainment_frac": 0.95}
    text = reading("a", "b", run, base, 20.0)
    assert "draws 10.0 % more average power, but 25.0 % less energy per finished agent" in text
    assert "gains 5.0 pp SLO attainment" in text
    same = reading("a", "b", base, base, 20.0)
    assert "draws the same average power" in same and "at no SLO cost" in same


def test_reading_without_power() -> None:
    text = reading("a", "b", {"slo_attainment_frac": None}, {"avg_power_w": 1.0}, 20.0)
    assert "power cannot be compared" in text and "SLO attainment cannot be compared" in text


def test_comparability_warnings_name_what_differs() -> None:
    infos = [
        {"source": "run", "workload_sha256": "aa", "time_scale": 0.2, "hardware": "2 × emulated h100-sxm"},
        {"source": "run", "workload_sha256": "bb", "time_scale": 0.2, "hardware": None},
    ]
    warnings = comparability_warnings(["max", "kairos"], infos)
    assert len(warnings) == 1
    assert "workload (aa: max; bb: kairos)" in warnings[0]
    assert comparability_warnings(["a", "b"], [infos[0], infos[0]]) == []


def test_compare_marks_best_and_deltas() -> None:
    values = [
        {"avg_power_w": 500.0, "p5_agent_tok_s": 40.0, "slo_attainment_frac": 1.0, "energy_per_agent_kj": 2.0},
        {"avg_power_w": 350.0, "p5_agent_tok_s": 30.0, "slo_attainment_frac": 1.0, "energy_per_agent_kj": 1.5},
    ]
    comp = compare(["max", "kairos"], values, baseline=0, slo_tok_s=20.0)
    assert comp.best["avg_power_w"] == {1}
    assert comp.best["p5_agent_tok_s"] == {0}
    assert comp.best["slo_attainment_frac"] == set()
    assert comp.delta("avg_power_w", 1) == "−30.0 %"
    assert comp.delta("avg_power_w", 0) == ""
    assert len(comp.readings) == 1
    with pytest.raises(ValueError):
        compare(["a"], values[:1], baseline=3, slo_tok_s=20.0)


def test_engine_counters_prefer_engine_parquet_and_trust_only_real_telemetry() -> None:
    engine = pd.DataFrame({"t_s": [0, 1, 2, 0, 1, 2], "instance": ["i0"] * 3 + ["i1"] * 3,
                           "preemptions_total": [5, 6, 9, 0, 0, 2]})
    control = pd.DataFrame({"t_s": [0, 1, 0, 1], "instance_id": ["i0", "i0", "i1", "i1"], "telemetry": ["emulator"] * 4,
                            "preemptions_total": [0, 100, 0, 100], "recomputed_tokens_total": [0, 500, 10, 30]})
    assert engine_counters(engine, control) == {"preemptions": 6.0, "recomputed_tokens": 520.0}
    assert engine_counters(None, control) == {"preemptions": 200.0, "recomputed_tokens": 520.0}
    unknown = control.assign(telemetry="none")
    assert engine_counters(None, unknown) == {"preemptions": None, "recomputed_tokens": None}
    vllm = control.assign(telemetry="metrics")
    assert engine_counters(None, vllm) == {"preemptions": 200.0, "recomputed_tokens": None}
    assert engine_counters(None, None) == {"preemptions": None, "recomputed_tokens": None}
    assert engine_counters(engine.assign(preemptions_total=np.nan), None)["preemptions"] is None
