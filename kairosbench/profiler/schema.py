"""The one telemetry shape: every source (NVML, emulator, Prometheus) writes these columns.

A row is either a **poll** (what the source reported when we asked, stamped with the run-clock
midpoint of the read, or with the time the values were produced where the source says it:
the emulator) or a **buffer** sample (one entry of the driver's ~20 ms power-sample
ring, stamped with its own hardware timestamp mapped onto the run clock; only ``power_w`` is
set). A null means "not read in this row", never zero: slow signals are read every few polls,
and a source that lacks a signal leaves it null throughout.

Every column is declared once as a :class:`Column` record (name, unit, meaning), so the docs
table, the Arrow schema and the reports iterate over one registry.
"""

from __future__ import annotations

import pyarrow as pa

from kairosbench.table_schema import Column

__all__ = [
    "SCHEMA_VERSION",
    "Column",
    "POWER_COLUMNS",
    "ENGINE_COLUMNS",
    "POWER_SCHEMA",
    "ENGINE_SCHEMA",
    "METADATA_KEY",
    "KIND_POLL",
    "KIND_BUFFER",
    "SIGNAL_COLUMNS",
    "VALUE_TIMED_SOURCES",
]

SCHEMA_VERSION = 1
# Parquet key-value metadata key holding the JSON description of the file (sources, GPUs,
# measured update period per column, profiler CPU use).
METADATA_KEY = b"kairosbench.telemetry"

KIND_POLL = "poll"
KIND_BUFFER = "buffer"
# Sources whose poll rows carry the time their values were produced (not the read time), so a
# counter change is dated at its row exactly rather than between two reads.
VALUE_TIMED_SOURCES = frozenset({"emulator"})




POWER_COLUMNS: tuple[Column, ...] = (
    Column("t_ns", pa.int64(), "ns", "run clock (kairosbench.clock.now_ns): poll rows: midpoint of the read (emulator: its value time); buffer rows: the sample's own timestamp"),
    Column("host", pa.string(), "", "host the GPU is in: hostname (nvml), endpoint host:port (emulator), Hostname label (prometheus)"),
    Column("gpu", pa.int32(), "", "GPU index on that host"),
    Column("source", pa.string(), "", "nvml | emulator | prometheus"),
    Column("kind", pa.string(), "", "poll (a read of the current values) | buffer (a driver power sample, ~20 ms apart)"),
    Column("power_w", pa.float64(), "W", "instant board power (NVML_FI_DEV_POWER_INSTANT; buffer rows: the sample's value)"),
    Column("power_avg_w", pa.float64(), "W", "1 s moving-average power (NVML_FI_DEV_POWER_AVERAGE = nvmlDeviceGetPowerUsage on Ampere+)"),
    Column("energy_j", pa.float64(), "J", "energy counter since driver load (or exporter/emulator start); differences give energy"),
    Column("sm_clock_mhz", pa.float64(), "MHz", "current SM clock"),
    Column("mem_clock_mhz", pa.float64(), "MHz", "current memory clock"),
    Column("gpu_util_pct", pa.float64(), "%", "percent of the last sample period a kernel was running"),
    Column("mem_util_pct", pa.float64(), "%", "percent of the last sample period device memory was read or written"),
    Column("mem_used_mib", pa.float64(), "MiB", "device memory in use"),
    Column("temp_c", pa.float64(), "degC", "GPU core temperature"),
    Column("throttle_reasons", pa.int64(), "bitmask", "clock-event reasons (NVML bits: 0x1 idle, 0x4 SW power cap, 0x8 HW slowdown, ...)"),
)

# The measured signals (everything after the identifying columns).
SIGNAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in POWER_COLUMNS[5:])

ENGINE_COLUMNS: tuple[Column, ...] = (
    Column("t_ns", pa.int64(), "ns", "run clock at the midpoint of the scrape"),
    Column("endpoint", pa.string(), "", "the /metrics URL scraped"),
    Column("engine", pa.string(), "", "vllm | sglang | unknown (from the metric names seen)"),
    Column("kv_usage_frac", pa.float64(), "fraction", "KV-cache use, 0-1 (vllm:kv_cache_usage_perc | vllm:gpu_cache_usage_perc | sglang:token_usage)"),
    Column("num_running", pa.float64(), "requests", "requests running (vllm:num_requests_running | sglang:num_running_reqs)"),
    Column("num_waiting", pa.float64(), "requests", "requests queued (vllm:num_requests_waiting | sglang:num_queue_reqs)"),
    Column("preemptions_total", pa.float64(), "preemptions", "counter: vllm:num_preemptions_total"),
    Column("retracted_reqs", pa.float64(), "requests", "SGLang's preemption analogue (sglang:num_retracted_reqs)"),
    Column("prefix_queries_tokens", pa.float64(), "tokens", "counter: vllm:prefix_cache_queries_total"),
    Column("prefix_hits_tokens", pa.float64(), "tokens", "counter: vllm:prefix_cache_hits_total | sglang:cached_tokens_total"),
    Column("prefix_queries_blocks", pa.float64(), "blocks", "counter, older vLLM V1: vllm:gpu_prefix_cache_queries_total"),
    Column("prefix_hits_blocks", pa.float64(), "blocks", "counter, older vLLM V1: vllm:gpu_prefix_cache_hits_total"),
    Column("cache_hit_rate", pa.float64(), "fraction", "sglang:cache_hit_rate"),
    Column("evicted_tokens", pa.float64(), "tokens", "counter: sglang:evicted_tokens_total"),
    Column("prompt_tokens", pa.float64(), "tokens", "counter: vllm:prompt_tokens_total | sglang:prompt_tokens_total"),
    Column("generation_tokens", pa.float64(), "tokens", "counter: vllm:generation_tokens_total | sglang:generation_tokens_total"),
    Column("emulator_lag_s", pa.float64(), "s", "kairosbench:emulator_lag_seconds (the emulator only)"),
    Column("recomputed_tokens_total", pa.float64(), "tokens", "counter: kairosbench:recomputed_tokens_total, tokens prefilled again after preemption or eviction (the emulator only; vLLM exposes no such counter)"),
)


def _schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(c.name, c.type, nullable=c.name not in ("t_ns",), metadata={b"unit": c.unit.encode()}) for c in columns]
    )


POWER_SCHEMA: pa.Schema = _schema(POWER_COLUMNS)
ENGINE_SCHEMA: pa.Schema = _schema(ENGINE_COLUMNS)
