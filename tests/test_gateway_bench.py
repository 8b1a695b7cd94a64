"""`kairosbench bench gateway` runs end to end (tiny sizes; the numbers themselves go to docs/perf)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kairosbench.gateway.bench import gateway

pytestmark = pytest.mark.timeout(120)


def test_bench_gateway_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(gateway, ["--streams", "4", "--tokens", "3", "--token-delay-s", "0.001", "--rounds", "1", "--loop", "asyncio", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (level,) = json.loads(out.read_text())
    assert level["streams"] == 4 and level["direct"]["errors"] == 0 and level["gateway"]["errors"] == 0
    assert level["gateway"]["requests"] == 8 and level["throughput_ratio"] > 0
    assert "added" in res.output
