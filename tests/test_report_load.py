"""Reading run directories and sim output into the report's shape (synthetic dirs: fast, exact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairosbench.errors import InputError
from kairosbench.report.load import find_inputs, load_input, load_run, unique_labels
from kairosbench.report.metrics import run_values
from kairosbench.report.synthetic import SyntheticRun, write_run_dir, write_sim_dir


def test_complete_run_energy_power_and_agents(tmp_path: Path) -> None:
    run = load_run(write_run_dir(tmp_path / "r", SyntheticRun(power_w=(400.0, 300.0), duration_s=20.0)))
    assert run.policy == "max" and run.status == "completed" and run.source == "run"
    assert run.duration_s == pytest.approx(20.0)
    assert run.energy is not None and run.energy.method == "counter" and run.energy.finest == "buffer"
    assert run.energy.avg_power_w == pytest.approx(700.0, rel=1e-6)
    assert run.energy.energy_j == pytest.approx(14_000.0, rel=1e-6)
    assert run.energy.idle_power_w == pytest.approx(152.0)  # preset idle of both GPUs
    assert run.notes == []
    assert set(run.power["gpu"]) == {"i0", "i1"}  # emulator hosts mapped to the gateway's instance ids
    assert run.power["t_s"].min() == pytest.approx(-2.0)  # the idle lead-in is before 0
    assert set(run.engine["instance"]) == {"i0", "i1"}
    v = run_values(run, 20.0)
    assert v["energy_kj"] == pytest.approx(14.0, rel=1e-6)
    assert v["energy_per_agent_kj"] == pytest.approx(14.0 / 5, rel=1e-6)
    assert v["finished_agents"] == 5
    assert v["slo_attainment_frac"] == pytest.approx(0.8)  # 10 tok/s misses 20
    assert v["p5_agent_tok_s"] == pytest.approx(12.0)  # linear interpolation between 10 and 20
    assert v["ttft_p50_s"] == pytest.approx(0.05)


def test_engine_counters_come_from_the_files(tmp_path: Path) -> None:
    spec = SyntheticRun(preemptions=(4, 6), recomputed_tokens=(1000, 234))
    v = run_values(load_run(write_run_dir(tmp_path / "r", spec)), 20.0)
    assert v["preemptions"] == pytest.approx(10.0)  # engine.parquet
    assert v["recomputed_tokens"] == pytest.approx(1234.0)  # control.parquet (emulator telemetry)


def test_missing_telemetry_is_a_note_not_an_error(tmp_path: Path) -> None:
    spec = SyntheticRun(policy=None, with_power=False, with_engine=False, with_control=False)
    run = load_run(write_run_dir(tmp_path / "r", spec))
    assert run.policy == "none"
    assert run.power is None and run.energy is None and run.engine is None and run.control is None
    assert any("no power telemetry in this run" in n for n in run.notes)
    v = run_values(run, 20.0)
    assert v["avg_power_w"] is None and v["energy_per_agent_kj"] is None
    assert v["preemptions"] is None and v["recomputed_tokens"] is None
    assert v["p5_agent_tok_s"] is not None


def test_killed_run_journals_and_parts_are_read_without_changing_the_dir(tmp_path: Path) -> None:
    spec = SyntheticRun(status="running", with_summary=False, as_journal=("power", "engine", "control"), requests_as_parts=True)
    d = write_run_dir(tmp_path / "r", spec)
    before = sorted(p.name for p in d.iterdir())
    run = load_run(d)
    assert sorted(p.name for p in d.iterdir()) == before  # a report never rewrites a run
    assert run.status == "running"
    assert any("killed" in n for n in run.notes)
    assert any("power.parquet.journal" in n for n in run.notes)
    assert any("requests.parts" in n for n in run.notes)
    assert run.requests.num_rows == 15
    assert run.energy is not None and run.energy.avg_power_w is not None
    # no replay window in the manifest: it is the span of the records, from the first planned request
    first = min(run.requests["t_planned_ns"].to_pylist())
    last = max(run.sessions["t_finish_ns"].to_pylist() + run.requests["t_end_ns"].to_pylist())
    assert run.duration_s == pytest.approx((last - first) / 1e9)


def test_failed_and_interrupted_runs_are_flagged(tmp_path: Path) -> None:
    failed = load_run(write_run_dir(tmp_path / "f", SyntheticRun(status="failed", extra_manifest={"error": "RuntimeError: boom"})))
    assert any("boom" in n for n in failed.notes)
    interrupted = load_run(write_run_dir(tmp_path / "i", SyntheticRun(status="interrupted")))
    assert any("interrupted" in n for n in interrupted.notes)


def test_run_without_records(tmp_path: Path) -> None:
    d = write_run_dir(tmp_path / "r", SyntheticRun(with_summary=False))
    (d / "requests.parquet").unlink()
    (d / "sessions.parquet").unlink()
    run = load_run(d)
    assert run.requests.num_rows == 0 and run.sessions.num_rows == 0
    assert any("no requests.parquet" in n for n in run.notes)
    v = run_values(run, 20.0)
    assert v["p5_agent_tok_s"] is None and v["finished_agents"] == 0


def test_bad_manifest_names_the_file_and_line(tmp_path: Path) -> None:
    d = write_run_dir(tmp_path / "r")
    (d / "manifest.json").write_text('{"status": "completed",\n  oops}')
    with pytest.raises(InputError) as exc:
        load_run(d)
    assert "manifest.json, line 2" in str(exc.value) and "not valid JSON" in str(exc.value)


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    d = write_run_dir(tmp_path / "r")
    (d / "power.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError) as exc:
        load_run(d)
    assert "power.parquet" in str(exc.value)


def test_find_inputs_expands_parents_and_sim_output(tmp_path: Path) -> None:
    write_run_dir(tmp_path / "runs" / "b", SyntheticRun(policy="kairos"))
    write_run_dir(tmp_path / "runs" / "a", SyntheticRun(policy="max"))
    (tmp_path / "runs" / "not-a-run").mkdir()
    found = find_inputs([tmp_path / "runs", tmp_path / "runs" / "a"])
    assert [p.name for p in found] == ["a", "b"]  # sorted, duplicates dropped
    sim = write_sim_dir(tmp_path / "sim", (("kairos", 300.0), ("static:900", 250.0)))
    assert [p.name for p in find_inputs([sim])] == ["kairos", "static_900"]  # summary.csv order


def test_find_inputs_rejects_what_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no run here"):
        find_inputs([tmp_path / "empty"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        find_inputs([tmp_path / "file.txt"])


def test_sim_output_maps_onto_the_same_shape(tmp_path: Path) -> None:
    sim = write_sim_dir(tmp_path / "sim", (("max", 500.0), ("kairos", 300.0)), sessions=4, duration_s=30.0, instances=2)
    runs = [load_input(p) for p in find_inputs([sim])]
    assert [r.policy for r in runs] == ["max", "kairos"]
    assert all(r.status == "simulated" and r.source == "sim" for r in runs)
    v = run_values(runs[1], 20.0)
    assert v["avg_power_w"] == pytest.approx(600.0)
    assert v["energy_per_agent_kj"] == pytest.approx(300.0 * 2 * 30.0 / 4 / 1e3)
    assert v["p5_agent_tok_s"] == pytest.approx(100.0)
    assert v["itl_p50_s"] is None  # the simulator records no per-token times
    assert v["ttft_p50_s"] == pytest.approx(0.02)
    assert v["preemptions"] == pytest.approx(58.0) and v["recomputed_tokens"] == pytest.approx(580.0)
    assert set(runs[0].power["gpu"]) == {"i0", "i1"}


def test_unique_labels(tmp_path: Path) -> None:
    a = load_run(write_run_dir(tmp_path / "x" / "a", SyntheticRun(policy="kairos")))
    b = load_run(write_run_dir(tmp_path / "x" / "b", SyntheticRun(policy="kairos")))
    c = load_run(write_run_dir(tmp_path / "x" / "c", SyntheticRun(policy="max")))
    d = load_run(write_run_dir(tmp_path / "y" / "a", SyntheticRun(policy="kairos")))
    assert unique_labels([a, b, c, d]) == ["kairos (a)", "kairos (b)", "max", "kairos (a) #2"]


def test_manifest_from_a_real_run_shape(tmp_path: Path) -> None:
    """Header facts come from the manifest keys kairosbench run writes."""
    run = load_run(write_run_dir(tmp_path / "r"))
    info = run.info
    assert info["workload_name"] == "synthetic" and info["workload_sha256"] == "ab" * 32
    assert info["time_scale"] == 0.2 and info["hardware"] == "2 × emulated h100-sxm"
    assert info["telemetry"] == "emulator × 2"
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"] == "completed"


def test_header_facts_of_a_killed_embedded_run_and_a_locust_process(tmp_path: Path) -> None:
    from kairosbench.report.manifest_info import run_info

    killed = {"status": "running", "config": {"endpoint": [], "instances": 2, "emulator_gpu": "h100-sxm", "emulator_model": "m"}}
    info = run_info(killed, tmp_path, "none", "running")
    assert info["hardware"] == "2 × emulated h100-sxm" and info["model"] == "m" and info["instances"] == 2
    locust = {"driver": "locust", "endpoint": {"base_url": "http://h:8000", "model": "mock-model"}, "config": {"time_scale": 1.0}}
    info = run_info(locust, tmp_path, "none", "completed")
    assert info["hardware"] == "1 endpoint (GPU not recorded)" and info["model"] == "mock-model" and info["driver"] == "locust"


def test_a_run_without_sessions_has_no_throughput(tmp_path: Path) -> None:
    d = write_run_dir(tmp_path / "r", SyntheticRun(status="failed"))
    (d / "requests.parquet").unlink()
    (d / "sessions.parquet").unlink()
    v = run_values(load_run(d), 20.0)
    assert v["job_throughput_per_min"] is None and v["errors"] is None


def test_nvml_gpus_are_named_by_host_and_idle_is_measured(tmp_path: Path) -> None:
    spec = SyntheticRun(power_source="nvml", power_w=(400.0, 300.0), idle_power_w=60.0, lead_in_s=2.0)
    run = load_run(write_run_dir(tmp_path / "r", spec))
    assert set(run.power["gpu"]) == {"gpu-node/gpu0", "gpu-node/gpu1"}
    assert run.energy is not None and run.energy.avg_power_w == pytest.approx(700.0, rel=1e-6)
    assert run.energy.idle_origin == "measured"  # no preset: the lowest 1 s mean of the lead-in
    assert run.energy.idle_power_w == pytest.approx(120.0, rel=1e-3)
    assert run.info["telemetry"] == "nvml"
