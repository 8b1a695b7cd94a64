"""Workloads: the model, the Parquet/JSONL format, importers, the generator and statistics.

The data model (``Turn``, ``Session``, ``Workload``) is imported eagerly; everything else on
first use, so that code needing only the model (the replay flow, the simulator) does not pay
for pandas and pyarrow at import time.

    from kairosbench.workload import load_workload, workload_stats
    wl = load_workload("workloads/swe-small.parquet")
"""

from __future__ import annotations

import importlib
from typing import Any

from kairosbench.workload.model import TOKEN_COUNT_METHODS, Session, Turn, Workload

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "load_workload": "kairosbench.workload.io",
    "save_workload": "kairosbench.workload.io",
    "workload_hash": "kairosbench.workload.io",
    "content_hash": "kairosbench.workload.io",
    "validate_file": "kairosbench.workload.validate",
    "ValidationReport": "kairosbench.workload.validate",
    "GenerateSpec": "kairosbench.workload.generate",
    "generate": "kairosbench.workload.generate",
    "workload_stats": "kairosbench.workload.stats",
    "WorkloadStats": "kairosbench.workload.stats",
    "render_stats": "kairosbench.workload.stats",
    "AgentParams": "kairosbench.workload.fit",
    "PARAMS": "kairosbench.workload.fit",
    "SCHEMA_VERSION": "kairosbench.workload.schema",
    "COLUMNS": "kairosbench.workload.schema",
}

__all__ = ["Session", "Turn", "Workload", "TOKEN_COUNT_METHODS", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kairosbench.workload' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
