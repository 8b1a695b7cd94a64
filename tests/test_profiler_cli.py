"""``kairosbench profile`` at the CLI edge, and the public API the run orchestrator calls."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

import kairosbench.profiler as profiler_api
from kairosbench.cli import main
from kairosbench.errors import UsageError
from kairosbench.profiler import detect_sources, start_profiler
from kairosbench.profiler.journal import TableJournal
from kairosbench.profiler.schema import POWER_SCHEMA


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_public_api_is_exactly_this() -> None:
    assert sorted(profiler_api.__all__) == sorted([
        "start_profiler", "detect_sources", "ProfilerHandle", "ProfileSummary", "GpuEnergy", "summarize_run_dir",
        "recover_run_dir", "read_metadata", "POWER_FILE", "ENGINE_FILE", "POWER_SCHEMA", "ENGINE_SCHEMA",
        "POWER_COLUMNS", "ENGINE_COLUMNS",
    ])
    for name in profiler_api.__all__:
        assert getattr(profiler_api, name) is not None


def test_detect_sources_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_sources() in ([], ["nvml"])

    def broken() -> None:
        raise RuntimeError("a driver in a strange state")

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    assert detect_sources() == []


def test_start_profiler_refuses_a_misspelt_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown source"):
        start_profiler(tmp_path, ["nvlm"])
    with pytest.raises(UsageError, match="needs a URL"):
        start_profiler(tmp_path, ["emulator"])


def test_no_source_is_a_warning_and_an_empty_summary(tmp_path: Path) -> None:
    with start_profiler(tmp_path, []) as handle:
        assert handle.pid is None and not handle.alive
    summary = handle.stop()
    assert summary.gpus == () and any("GPU telemetry" in w for w in summary.warnings)
    assert (tmp_path / "power_summary.json").exists()


def test_bad_flags_exit_2_with_the_flag_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["profile", "--out", str(tmp_path), "--source", "bogus:x"]) == 2
    assert "--source 'bogus:x': unknown source" in capsys.readouterr().err
    assert run_cli(["profile", "--out", str(tmp_path), "--duration", "1", "--", "true"]) == 2
    assert "--duration cannot be combined with a COMMAND" in capsys.readouterr().err


@pytest.mark.skipif(detect_sources() != [], reason="this machine has an NVML GPU")
def test_without_nvml_the_command_still_runs_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["profile", "--out", str(tmp_path), "--", "python", "-c", "print('hello from the command')"]) == 0
    err = capsys.readouterr().err
    assert "No NVML GPU found" in err and "No GPU telemetry was recorded." in err and "files in" in err
    assert err.count("profiling without GPU telemetry") == 1


def test_a_missing_command_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["profile", "--out", str(tmp_path), "--", "no-such-command-kb"]) == 2
    assert "command not found: no-such-command-kb" in capsys.readouterr().err


def test_recover_finishes_a_killed_profilers_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = TableJournal(tmp_path / "power.parquet", POWER_SCHEMA, {"sources": ["nvml"], "gpus": []})
    rows = [{"t_ns": i * 50_000_000, "host": "h", "gpu": 0, "source": "nvml", "kind": "poll", "power_w": 100.0,
             "power_avg_w": 100.0, "energy_j": 1000.0 + 5.0 * (i // 2)} for i in range(41)]
    journal.append(rows)
    journal.flush()  # ...and the process dies here: no close(), no Parquet footer
    assert run_cli(["profile", "--out", str(tmp_path), "--recover"]) == 0
    err = capsys.readouterr().err
    assert "h/0" in err and "power.parquet" in err
    assert (tmp_path / "power.parquet").exists() and not journal.journal_path.exists()
