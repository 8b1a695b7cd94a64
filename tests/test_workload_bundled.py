"""The bundled workloads: valid, sized as documented, and regenerated exactly from their metadata."""

from __future__ import annotations

import shlex
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from kairosbench.workload.cli import workload
from kairosbench.workload.io import content_hash, load_workload, workload_hash
from kairosbench.workload.stats import workload_stats
from kairosbench.workload.validate import validate_file

WORKLOADS = Path(__file__).parents[1] / "workloads"
SMALL = ("swe-small", "de-small", "mixed-small")
KAIROS = ("swe-kairos", "de-kairos", "mixed-kairos")


def _regenerate(name: str, out: Path) -> None:
    command = load_workload(WORKLOADS / f"{name}.parquet").meta["command"]
    args = shlex.split(command)
    assert args[:3] == ["kairosbench", "workload", "generate"]
    result = CliRunner().invoke(workload, [*args[2:], "-o", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", SMALL + KAIROS)
def test_bundled_file_is_valid_and_documented(name: str) -> None:
    path = WORKLOADS / f"{name}.parquet"
    assert validate_file(path).ok
    assert path.stat().st_size < 5_000_000
    meta = load_workload(path).meta
    assert meta["name"] == name
    assert f"--name {name}" in meta["command"] and f"-o {name}.parquet" in (WORKLOADS / "regenerate.sh").read_text()
    assert name in (WORKLOADS / "README.md").read_text()


@pytest.mark.parametrize("name", SMALL)
def test_small_workloads_suit_a_live_run(name: str) -> None:
    st = workload_stats(load_workload(WORKLOADS / f"{name}.parquet"))
    assert 8 <= st.sessions <= 16
    assert st.turns_per_session.min >= 5 and st.turns_per_session.max <= 15
    assert st.context_last_turn_tokens.max <= 32_768


@pytest.mark.parametrize("name", KAIROS)
def test_kairos_workloads_match_the_kairos_setting(name: str) -> None:
    st = workload_stats(load_workload(WORKLOADS / f"{name}.parquet"))
    assert st.sessions == 300
    assert st.turns_per_session.mean == pytest.approx(37, rel=0.1)
    assert st.turns_per_session.max > 250  # heavy tail
    assert st.inter_arrival_s.mean == pytest.approx(1 / 0.08, rel=0.2)


@pytest.mark.parametrize("name", ["swe-small", "mixed-kairos"])
def test_regenerating_from_the_metadata_command_is_exact(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.parquet"
    _regenerate(name, out)
    bundled = WORKLOADS / f"{name}.parquet"
    assert content_hash(out) == content_hash(bundled)
    created_by = pq.ParquetFile(bundled).metadata.created_by
    if pyarrow.__version__ in created_by:  # byte identity holds for the same Parquet writer
        assert workload_hash(out) == workload_hash(bundled)


def test_readme_shows_the_fitted_parameters_in_the_code() -> None:
    from kairosbench.workload.fit import PARAMS

    text = (WORKLOADS / "README.md").read_text()
    for p in PARAMS.values():
        dists = [getattr(p, f) for f in ("turns", "first_turn_tokens", "appended_tokens", "output_tokens")]
        for d in [*dists, *p.tool_duration_s.values()]:
            assert f"| {d.median:g} | {d.sigma:g} |" in text, f"{p.kind}: median {d.median:g} sigma {d.sigma:g} not in README"
        for tool, share in p.tool_mix.items():
            assert f"`{tool}` (share {share:g})" in text
