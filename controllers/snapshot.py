"""What a policy sees and what it may do. Pure records: no sockets, no NVML, no wall clock.

A policy is called in two places, live (the gateway's control loop) and in simulated time
(``kairosbench.sim``), with the same records:

* ``decide(snapshot) -> Actions`` once per control epoch: clocks and admission caps.
* ``place(agent, snapshot) -> Placement`` whenever an agent's next turn is ready to go:
  where it runs (sticky unless the router moves it at a turn boundary).

The gateway enforces ``AdmissionCap`` mechanically: a turn is dispatched to its instance only
while the cap allows; otherwise the agent waits at the gateway (never preempted in the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "AgentPhase",
    "InstanceView",
    "AgentView",
    "Snapshot",
    "SetClock",
    "AdmissionCap",
    "Actions",
    "Placement",
]


class AgentPhase(str, Enum):
    """Where an agent is. PENDING -> IN_LLM <-> IN_TOOL -> DONE; HELD: ready but capped."""

    PENDING = "pending"  # arrived, never admitted to an instance
    HELD = "held"  # resident agent whose next turn waits at the gateway under a cap
    IN_LLM = "in_llm"  # a request is at an engine
    IN_TOOL = "in_tool"  # between turns, running its tool
    DONE = "done"


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One serving instance (one GPU) as of the snapshot."""

    instance_id: str
    supported_clocks_mhz: tuple[int, ...]  # ascending
    sm_clock_mhz: float  # effective clock now (after power-cap throttling)
    locked_clock_mhz: int | None  # what the actuator last set; None = default governor
    power_w: float
    kv_capacity_tokens: int  # U_max: num_gpu_blocks * block_size
    kv_usage_frac: float  # engine's KV usage, 0..1 (vllm:kv_cache_usage_perc)
    resident_context_tokens: int  # U_k: context of the agents active here (in LLM or in tool), not held
    resident_agents: int  # agents active here (in LLM or in tool); held agents are counted apart
    num_running: int
    num_waiting: int
    preemptions_total: int = 0
    prefix_queries_tokens: int = 0
    prefix_hits_tokens: int = 0
    cap: "AdmissionCap | None" = None  # in force now
    recomputed_tokens_total: int = 0
    gpu_util_frac: float | None = None  # busy fraction 0..1 (NVML utilization.gpu / 100); None if unknown
    power_limit_w: float | None = None
    held_agents: int = 0  # resident agents whose next turn waits at the gateway
    held_context_tokens: int = 0  # their context (not in U_k while they wait)
    telemetry_ok: bool = True  # False: the last telemetry read failed and the numbers are stale

    @property
    def max_clock_mhz(self) -> int:
        return self.supported_clocks_mhz[-1]

    @property
    def min_clock_mhz(self) -> int:
        return self.supported_clocks_mhz[0]

    @property
    def context_frac(self) -> float:
        """U_k / U_max."""
        return self.resident_context_tokens / self.kv_capacity_tokens if self.kv_capacity_tokens else 0.0


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the gateway tracks it."""

    agent_id: str
    phase: AgentPhase
    context_tokens: int  # tokens its next request will carry, best estimate (last usage + appended)
    turn_index: int  # turns completed so far
    instance_id: str | None  # where its context lives (sticky placement); None if never placed
    turns_on_instance: int = 0  # turns completed on the current instance
    output_tok_s: float | None = None  # recent output rate over its LLM time; None before a first turn
    arrived_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a policy may look at; ``t_s`` is seconds on the run (or virtual) clock."""

    t_s: float
    epoch: int
    instances: tuple[InstanceView, ...]
    agents: tuple[AgentView, ...] = ()
    slo_tok_s: float = 20.0

    def instance(self, instance_id: str) -> InstanceView:
        for inst in self.instances:
            if inst.instance_id == instance_id:
                return inst
        raise KeyError(instance_id)

    def agents_on(self, instance_id: str) -> list[AgentView]:
        return [a for a in self.agents if a.instance_id == instance_id and a.phase is not AgentPhase.DONE]


@dataclass(frozen=True, slots=True)
class SetClock:
    """Lock an instance's SM clock to ``sm_clock_mhz`` (a supported value), or reset it (None)."""

    instance_id: str
    sm_clock_mhz: int | None


@dataclass(frozen=True, slots=True)
class AdmissionCap:
    """Gateway admission limits for one instance; None means unlimited.

    U_k is the context of the agents *active* on the instance (a request in the engine, or
    running their tool between turns). An agent held at the gateway leaves U_k until it is
    released: holding is what lets U_k fall again, so a hold rule can never deadlock itself.

    * ``admit_below_tokens``: a PENDING agent (or one moving here) is admitted only while
      U_k < this (KAIROS γ·U_max).
    * ``hold_above_tokens``: a resident agent's next turn goes out only if U_k, counted with
      that turn's context, stays ≤ this; otherwise the agent is HELD (KAIROS β·U_max).
    * ``max_agents``: at most this many active agents (AIMD / CONCUR-style); new agents
      wait and resident agents are paused at their turn boundary while the instance is full.

    Liveness: an instance with no active agent always takes the head of its queue, even when
    that one agent alone exceeds a token limit (otherwise it would wait forever).
    """

    instance_id: str
    admit_below_tokens: int | None = None
    hold_above_tokens: int | None = None
    max_agents: int | None = None


@dataclass(frozen=True, slots=True)
class Actions:
    """What a policy wants this epoch. Omitted instances keep their clock and cap."""

    clocks: tuple[SetClock, ...] = ()
    caps: tuple[AdmissionCap, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)  # instance_id -> why, for control.parquet


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an agent's next turn goes. ``migrate`` is True when it leaves its old instance."""

    instance_id: str
    migrate: bool = False
    reason: str = ""
