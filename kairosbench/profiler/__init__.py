"""The power profiler: NVML, emulator and Prometheus sources to one Parquet schema.

Public API (the run orchestrator and users call these; everything else is internal)::

    start_profiler(run_dir, ["nvml"], engine_endpoints=[...], interval_s=None) -> ProfilerHandle
    ProfilerHandle.stop() -> ProfileSummary        # idempotent; also a context manager
    detect_sources() -> list[str]                  # ["nvml"] if a GPU is visible, else []
    summarize_run_dir(run_dir) -> ProfileSummary   # from power.parquet alone
    recover_run_dir(run_dir)                       # finish files a killed profiler left

See docs/profiler.md for the schema, the clocks and the measured H100 figures.
"""

from kairosbench.profiler.journal import read_metadata, recover_run_dir
from kairosbench.profiler.launch import ProfilerHandle, detect_sources, start_profiler, summarize_run_dir
from kairosbench.profiler.sampler import ENGINE_FILE, POWER_FILE
from kairosbench.profiler.schema import ENGINE_COLUMNS, ENGINE_SCHEMA, POWER_COLUMNS, POWER_SCHEMA
from kairosbench.profiler.summary import GpuEnergy, ProfileSummary

__all__ = [
    "start_profiler",
    "detect_sources",
    "ProfilerHandle",
    "ProfileSummary",
    "GpuEnergy",
    "summarize_run_dir",
    "recover_run_dir",
    "read_metadata",
    "POWER_FILE",
    "ENGINE_FILE",
    "POWER_SCHEMA",
    "ENGINE_SCHEMA",
    "POWER_COLUMNS",
    "ENGINE_COLUMNS",
]
