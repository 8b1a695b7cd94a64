"""The emulator: an engine model, a GPU power model, and OpenAI-compatible servers around them.

Public names are imported lazily, so ``import kairosbench.emulator`` stays cheap and the pure
model (``Engine``) can be used without loading aiohttp::

    from kairosbench.emulator import Engine, EngineConfig, EngineRequest      # the model
    from kairosbench.emulator import running_emulator, EmulatorProcess       # the servers
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineRequest",
    "StepOutput",
    "RequestTooLong",
    "GPU_PRESETS",
    "MODEL_PRESETS",
    "cache_layout",
    "running_emulator",
    "EmulatorProcess",
]

_WHERE = {
    "Engine": "kairosbench.emulator.engine",
    "EngineConfig": "kairosbench.emulator.engine",
    "StepOutput": "kairosbench.emulator.engine",
    "RequestTooLong": "kairosbench.emulator.engine",
    "EngineRequest": "kairosbench.emulator.request",
    "GPU_PRESETS": "kairosbench.emulator.presets",
    "MODEL_PRESETS": "kairosbench.emulator.presets",
    "cache_layout": "kairosbench.emulator.presets",
    "running_emulator": "kairosbench.emulator.launch",
    "EmulatorProcess": "kairosbench.emulator.launch",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'kairosbench.emulator' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
