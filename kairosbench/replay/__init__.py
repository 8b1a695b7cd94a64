"""Replay: the sans-IO agent planner, the aiohttp load generator and ``kairosbench run``.

The public names below are imported lazily, so ``import kairosbench.replay.flow`` (the
simulator's only need) does not pull in aiohttp, pyarrow or rich.

Entry points: ``run_from_config(RunConfig(...))`` runs what ``kairosbench run`` runs;
``Replay`` is the driver underneath (endpoints, prompt factories, a ``StreamClient``);
``read_table(run_dir, "requests")`` reads a run's records (also after a crash);
``MockServer`` is a scriptable OpenAI-compatible streaming test double.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "agent_flow": "flow",
    "FlowOptions": "flow",
    "Wait": "flow",
    "SendTurn": "flow",
    "TurnResult": "flow",
    "SessionOutcome": "flow",
    "RunConfig": "config",
    "load_config_file": "config",
    "run_from_config": "orchestrate",
    "RunOutcome": "orchestrate",
    "RunContext": "services",
    "ServiceFactory": "services",
    "emulator_service": "services",
    "profiler_service": "profiling",
    "RunEnergy": "run_energy",
    "energy_from_run_dir": "run_energy",
    "Replay": "runner",
    "ReplayOptions": "runner",
    "ReplayResult": "runner",
    "StreamClient": "client",
    "StreamOutcome": "client",
    "ClientTimeouts": "client",
    "Endpoint": "endpoint",
    "SSEParser": "sse",
    "MalformedStream": "sse",
    "itl_summary": "itl",
    "PromptFactory": "prompt",
    "PromptSettings": "prompt",
    "TokenModel": "tokens",
    "EmulatorTokenModel": "tokens",
    "HFTokenModel": "tokens",
    "RemoteTokenModel": "tokens",
    "WordsTokenModel": "tokens",
    "RunSummary": "metrics",
    "summarize": "metrics",
    "read_table": "records",
    "compact_parts": "records",
    "REQUEST_COLUMNS": "records",
    "SESSION_COLUMNS": "records",
    "MockServer": "mockserver",
    "MockBehavior": "mockserver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kairosbench.replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kairosbench.replay.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
