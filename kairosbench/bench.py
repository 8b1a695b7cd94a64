"""``kairosbench bench ...``: speed and memory targets, measured against a baseline in the same run."""

from __future__ import annotations

import click

from kairosbench.cli import LazyGroup

BENCHES: dict[str, str] = {
    "loadgen": "kairosbench.replay.bench:loadgen",
    "gateway": "kairosbench.gateway.bench:gateway",
    "emulator": "kairosbench.emulator.bench:emulator",
    "generate": "kairosbench.workload.bench:generate",
}


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks that print ratios against a baseline measured in the same run."""
