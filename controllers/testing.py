"""Snapshot builders for testing policies (yours and ours) without a gateway or a simulator.

    from controllers.testing import instance, agent, snapshot
    s = snapshot(instance(0, context_tokens=60_000, agents=6), instance(1), agents=(agent("a", 0, rate=12.0),))
    actions = my_policy.decide(s)

Defaults model an H100 NVL as KAIROS configured it (clocks up to 1680 MHz in 15 MHz steps)
with a 100k-token KV pool; every field can be overridden.
"""

from __future__ import annotations

from typing import Any

from controllers.snapshot import AgentPhase, AgentView, InstanceView, Snapshot

__all__ = ["H100_NVL_CLOCKS_MHZ", "H100_SXM_CLOCKS_MHZ", "instance", "agent", "snapshot"]

H100_NVL_CLOCKS_MHZ: tuple[int, ...] = tuple(range(210, 1681, 15))  # max 1680 as configured in KAIROS [2nd]
H100_SXM_CLOCKS_MHZ: tuple[int, ...] = tuple(range(345, 1981, 15))  # 110 clocks, measured (ANCHORS §3.1)


def instance(
    k: int,
    context_tokens: int = 0,
    agents: int = 0,
    *,
    capacity_tokens: int = 100_000,
    clocks_mhz: tuple[int, ...] = H100_NVL_CLOCKS_MHZ,
    sm_clock_mhz: float | None = None,
    running: int | None = None,
    waiting: int = 0,
    **overrides: Any,
) -> InstanceView:
    """Instance ``i{k}`` holding ``context_tokens`` of ``agents`` active agents (KV usage to match)."""
    fields: dict[str, Any] = dict(
        instance_id=f"i{k}",
        supported_clocks_mhz=clocks_mhz,
        sm_clock_mhz=float(clocks_mhz[-1] if sm_clock_mhz is None else sm_clock_mhz),
        locked_clock_mhz=None,
        power_w=100.0,
        kv_capacity_tokens=capacity_tokens,
        kv_usage_frac=context_tokens / capacity_tokens if capacity_tokens else 0.0,
        resident_context_tokens=context_tokens,
        resident_agents=agents,
        num_running=agents if running is None else running,
        num_waiting=waiting,
    )
    fields.update(overrides)
    return InstanceView(**fields)


def agent(
    name: str,
    k: int | None,
    context_tokens: int = 1000,
    *,
    rate: float | None = 50.0,
    phase: AgentPhase = AgentPhase.IN_TOOL,
    turns: int = 3,
) -> AgentView:
    """Agent ``name`` on instance ``i{k}`` (None: not placed), between turns by default."""
    return AgentView(name, phase, context_tokens, turns, None if k is None else f"i{k}", turns_on_instance=turns, output_tok_s=rate)


def snapshot(*instances: InstanceView, agents: tuple[AgentView, ...] = (), slo_tok_s: float = 20.0, t_s: float = 0.0) -> Snapshot:
    return Snapshot(t_s=t_s, epoch=0, instances=instances, agents=agents, slo_tok_s=slo_tok_s)
