"""`kairosbench run --policy ...` on the embedded default: the gateway sits between loadgen and emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kairosbench.replay.cli import build_services
from kairosbench.replay.config import RunConfig

pytestmark = pytest.mark.timeout(180)
orchestrate = pytest.importorskip("kairosbench.replay.orchestrate")
WORKLOAD = Path(__file__).resolve().parents[1] / "workloads" / "mixed-small.parquet"


@pytest.mark.skipif(not WORKLOAD.exists(), reason="bundled workload not built")
@pytest.mark.parametrize("policy", ["kairos", "static:900"])
async def test_run_with_policy_on_the_embedded_emulator(tmp_path: Path, policy: str) -> None:
    cfg = RunConfig(
        workload=str(WORKLOAD), policy=policy, max_sessions=3, time_scale=0.02, instances=2,
        emulator_in_process=True, out=str(tmp_path / "run"), progress=False, epoch_s=0.2,
    )
    outcome = await orchestrate.run_from_config(cfg, services=build_services(cfg))
    assert outcome.status == "completed"
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    gw = manifest["services"]["gateway"]
    assert gw["policy"] == policy and gw["actuators"] == ["emulator", "emulator"]
    assert gw["counters"]["agents_done"] == 3  # the load generator marks each session's last turn
    control = pd.read_parquet(run / "control.parquet")
    assert set(control["instance_id"]) == {"i0", "i1"} and control["clock_action"].eq("lock").all()
    if policy == "static:900":
        assert (control["target_clock_mhz"] == 900).all()
    requests = pd.read_parquet(run / "gateway.parquet")
    sessions = pd.read_parquet(run / "sessions.parquet")
    assert len(requests) == int(sessions["turns_done"].sum()) and requests["ok"].all()
    # the gateway learned each agent's context from usage: estimates equal the sent prompt sizes
    assert (requests["context_estimate_tokens"] == requests["prompt_tokens"]).mean() > 0.9
