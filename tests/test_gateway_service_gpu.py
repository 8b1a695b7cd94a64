"""Which local GPU a real endpoint's policy reads and (dry-)actuates: explicit or the one safe guess."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kairosbench.errors import UsageError
from kairosbench.gateway.service import local_gpu_indices
from kairosbench.replay.config import RunConfig


def _cfg(endpoint: list[str], gpu_index: list[int] | None = None) -> SimpleNamespace:
    return SimpleNamespace(endpoint=endpoint, gpu_index=gpu_index or [])


def test_explicit_indices_win() -> None:
    notes: list[str] = []
    eps = ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    assert local_gpu_indices(_cfg(eps, [3, 1]), eps, notes, gpu_count=lambda: 4) == [3, 1]
    assert notes == []


def test_single_loopback_endpoint_on_a_one_gpu_host_is_guessed_and_noted() -> None:
    notes: list[str] = []
    eps = ["http://127.0.0.1:8000"]
    assert local_gpu_indices(_cfg(eps), eps, notes, gpu_count=lambda: 1) == [0]
    assert len(notes) == 1 and "--gpu-index" in notes[0]


@pytest.mark.parametrize(
    ("eps", "gpus"),
    [
        (["http://127.0.0.1:8000"], 2),  # which of two GPUs? no guess
        (["http://127.0.0.1:8000"], 0),  # no local GPU
        (["http://gpu-host.example:8000"], 1),  # a remote endpoint is not this host's GPU
        (["http://127.0.0.1:8000", "http://127.0.0.1:8001"], 1),
    ],
)
def test_ambiguous_cases_map_nothing(eps: list[str], gpus: int) -> None:
    notes: list[str] = []
    assert local_gpu_indices(_cfg(eps), eps, notes, gpu_count=lambda: gpus) is None
    assert notes == []


def test_emulated_instances_need_no_mapping() -> None:
    """No --endpoint: the run started the emulator, whose instances carry their own clocks."""
    assert local_gpu_indices(_cfg([]), ["http://127.0.0.1:9000"], [], gpu_count=lambda: 1) is None


def test_run_config_checks_one_index_per_endpoint() -> None:
    cfg = RunConfig.from_mapping({"endpoint": ["http://127.0.0.1:8000"], "gpu_index": [0, 1], "policy": "kairos"})
    with pytest.raises(UsageError, match="--gpu-index"):
        cfg.validate()
    assert RunConfig.from_mapping({"gpu_index": 2}).gpu_index == [2]


def test_gateway_notes_are_printed_with_the_run() -> None:
    from kairosbench.replay.cli import profiler_notes

    manifest = {"services": {"profiler": {"notes": ["no engine metrics"]}, "gateway": {"notes": ["gateway: GPU 0 assumed"]}}}
    assert profiler_notes(manifest) == ["no engine metrics", "gateway: GPU 0 assumed"]
