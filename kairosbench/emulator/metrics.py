"""Prometheus text exposition of an emulated instance, in vLLM's metric names.

Names, types and histogram buckets follow vLLM V1 ``vllm/v1/metrics/loggers.py`` (ANCHORS
§5.1), with labels ``model_name`` and ``engine``, so dashboards, routers and the kairosbench
profiler built for vLLM read the emulator unchanged. Latency histograms observe model time
(what the engine's steps produced); how far the server ran behind that is
``kairosbench:emulator_lag_seconds``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

__all__ = ["Histogram", "TTFT_BUCKETS_S", "ITL_BUCKETS_S", "E2E_BUCKETS_S", "LAG_BUCKETS_S", "render_metrics", "MetricsState"]

# [doc] vLLM v1/metrics/loggers.py
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
# kairosbench's own: fine at the bottom, where a healthy emulator lives.
LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Histogram:
    """A cumulative Prometheus histogram (counts per upper bound, sum, count)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        acc = 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {acc}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.sum!r}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out

    def quantile(self, q: float) -> float:
        """Bucket-interpolated quantile (as PromQL histogram_quantile does)."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        acc = 0
        lo = 0.0
        for b, c in zip(self.bounds, self.counts):
            if acc + c >= rank and c > 0:
                return lo + (b - lo) * (rank - acc) / c
            acc += c
            lo = b
        return self.bounds[-1]


class MetricsState:
    """Per-instance histograms and request counters the engine itself does not keep."""

    __slots__ = ("ttft", "itl", "e2e", "lag", "lag_max_s", "success")

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.itl = Histogram(ITL_BUCKETS_S)
        self.e2e = Histogram(E2E_BUCKETS_S)
        self.lag = Histogram(LAG_BUCKETS_S)
        self.lag_max_s = 0.0
        self.success: dict[str, int] = {"length": 0, "stop": 0, "abort": 0}


def render_metrics(*, model_name: str, engine: str, info: dict[str, object], kv_usage: float, st: MetricsState, lag_now_s: float, block_size: int, num_gpu_blocks: int) -> str:
    """The /metrics body. ``info`` is ``Engine.engine_info()`` plus scheduler counters."""
    lb = f'engine="{engine}",model_name="{model_name}"'
    L: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float | int) -> None:
        # prometheus_client names a counter's family without "_total" in HELP/TYPE lines
        family = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
        L.append(f"# HELP {family} {help_}")
        L.append(f"# TYPE {family} {kind}")
        L.append(f"{name}{{{lb}}} {value}")

    metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", info["num_running"])  # type: ignore[arg-type]
    metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", info["num_waiting"])  # type: ignore[arg-type]
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", round(kv_usage, 6))
    metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.", info["preemptions_total"])  # type: ignore[arg-type]
    metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.", info["prefix_queries_tokens"])  # type: ignore[arg-type]
    metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.", info["prefix_hits_tokens"])  # type: ignore[arg-type]
    metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", info["prompt_tokens_total"])  # type: ignore[arg-type]
    metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", info["generation_tokens_total"])  # type: ignore[arg-type]
    L.append("# HELP vllm:request_success Count of successfully processed requests.")
    L.append("# TYPE vllm:request_success counter")
    for reason in ("stop", "length", "abort"):
        L.append(f'vllm:request_success_total{{{lb},finished_reason="{reason}"}} {st.success.get(reason, 0)}')
    for name, help_, h in (
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", st.ttft),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", st.itl),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", st.e2e),
    ):
        L.append(f"# HELP {name} {help_}")
        L.append(f"# TYPE {name} histogram")
        L.extend(h.lines(name, lb))
    L.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
    L.append("# TYPE vllm:cache_config_info gauge")
    L.append(
        f'vllm:cache_config_info{{block_size="{block_size}",enable_prefix_caching="True",engine="{engine}",'
        f'gpu_memory_utilization="{info.get("gpu_memory_utilization", 0.9)}",num_gpu_blocks="{num_gpu_blocks}"}} 1.0'
    )
    metric("kairosbench:emulator_lag_seconds", "gauge", "How far the emulator ran behind its model clock at the latest step end (s).", round(lag_now_s, 6))
    metric("kairosbench:emulator_lag_max_seconds", "gauge", "Largest lag behind the model clock since start (s).", round(st.lag_max_s, 6))
    L.append("# HELP kairosbench:emulator_lag_step_seconds Lag behind the model clock per step end.")
    L.append("# TYPE kairosbench:emulator_lag_step_seconds histogram")
    L.extend(st.lag.lines("kairosbench:emulator_lag_step_seconds", lb))
    metric("kairosbench:recomputed_tokens_total", "counter", "Tokens prefilled again: preemption recompute + evicted agent context.", info["recomputed_tokens_total"])  # type: ignore[arg-type]
    metric("kairosbench:preempt_recompute_tokens_total", "counter", "Tokens recomputed after preemption.", info["preempt_recompute_tokens_total"])  # type: ignore[arg-type]
    metric("kairosbench:evicted_reprefill_tokens_total", "counter", "Tokens of an agent's earlier context re-prefilled after eviction.", info["evicted_reprefill_tokens_total"])  # type: ignore[arg-type]
    return "\n".join(L) + "\n"
