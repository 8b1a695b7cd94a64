"""Virtual-time simulation of engines, agents and policies (no sockets, no sleeps).

``engine_sim`` drives emulated engines with agents from a workload (static clocks, simple
placement); ``cluster`` adds a policy on top of it.
"""

from kairosbench.sim.engine_sim import (
    EngineSimulation,
    PowerBin,
    RequestRecord,
    SessionRecord,
    SessionStream,
    SimAgent,
    SimConfig,
    SimResult,
    simulate,
)

__all__ = [
    "EngineSimulation",
    "PowerBin",
    "RequestRecord",
    "SessionRecord",
    "SessionStream",
    "SimAgent",
    "SimConfig",
    "SimResult",
    "simulate",
]
