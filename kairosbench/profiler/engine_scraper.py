"""Engine metrics: scrape vLLM / SGLang ``/metrics`` into ``engine.parquet`` on the run clock.

The policies care about KV-cache pressure (usage, preemptions, prefix-cache hits) next to
power, so these land in one row per scrape per endpoint, with the metric names of both
engines mapped onto shared columns (see :data:`ENGINE_METRICS`). Where an engine exposes a
metric once per engine core or model (vLLM's ``engine`` label under data parallelism), counts
are summed and fractions averaged, so each endpoint has one row per scrape.

Counters keep their raw cumulative values (``*_total`` or not: vLLM's Python client appends
``_total``); rates are a report's job. Older vLLM V1 counts prefix-cache queries and hits in
blocks, newer in tokens: they go to separate columns with the unit in the name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kairosbench.clock import now_ns as run_now_ns
from kairosbench.errors import TelemetryError, UsageError
from kairosbench.profiler.http_fetch import HttpFetcher
from kairosbench.profiler.promtext import PromSample, parse_prometheus_text
from kairosbench.profiler.sources import Row, SourceCounters

__all__ = ["ENGINE_METRICS", "engine_row", "metrics_url", "EngineScraper"]

# column -> (aggregation across label sets, metric names in order of preference)
ENGINE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kv_usage_frac": ("mean", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")),
    "num_running": ("sum", ("vllm:num_requests_running", "sglang:num_running_reqs")),
    "num_waiting": ("sum", ("vllm:num_requests_waiting", "sglang:num_queue_reqs")),
    "preemptions_total": ("sum", ("vllm:num_preemptions_total", "vllm:num_preemptions")),
    "retracted_reqs": ("sum", ("sglang:num_retracted_reqs",)),
    "prefix_queries_tokens": ("sum", ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries")),
    "prefix_hits_tokens": ("sum", ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits", "sglang:cached_tokens_total")),
    "prefix_queries_blocks": ("sum", ("vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries")),
    "prefix_hits_blocks": ("sum", ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits")),
    "cache_hit_rate": ("mean", ("sglang:cache_hit_rate",)),
    "evicted_tokens": ("sum", ("sglang:evicted_tokens_total",)),
    "prompt_tokens": ("sum", ("vllm:prompt_tokens_total", "vllm:prompt_tokens", "sglang:prompt_tokens_total")),
    "generation_tokens": ("sum", ("vllm:generation_tokens_total", "vllm:generation_tokens", "sglang:generation_tokens_total")),
    "emulator_lag_s": ("max", ("kairosbench:emulator_lag_seconds",)),
    "recomputed_tokens_total": ("sum", ("kairosbench:recomputed_tokens_total",)),
}


def metrics_url(endpoint: str) -> str:
    """``http://h:8000`` or ``http://h:8000/v1`` -> ``http://h:8000/metrics``; a /metrics URL is kept."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"engine endpoint {endpoint!r} is not an http(s) URL")
    if parts.path.rstrip("/").endswith("/metrics"):
        return endpoint
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def engine_row(samples: list[PromSample], *, endpoint: str, t_ns: int) -> Row:
    """One engine.parquet row from a scrape's samples (pure)."""
    by_name: dict[str, list[float]] = {}
    engine = "unknown"
    for s in samples:
        by_name.setdefault(s.name, []).append(s.value)
        if engine == "unknown":
            if s.name.startswith("vllm:"):
                engine = "vllm"
            elif s.name.startswith("sglang:"):
                engine = "sglang"
    row: Row = {"t_ns": t_ns, "endpoint": endpoint, "engine": engine}
    for column, (how, names) in ENGINE_METRICS.items():
        for name in names:
            values = by_name.get(name)
            if values:
                if how == "sum":
                    row[column] = float(sum(values))
                elif how == "max":
                    row[column] = float(max(values))
                else:
                    row[column] = float(sum(values) / len(values))
                break
    return row


class EngineScraper:
    """Scrapes one engine endpoint."""

    def __init__(self, endpoint: str, *, now_ns: Callable[[], int] = run_now_ns, fetcher: HttpFetcher | None = None) -> None:
        self.url = metrics_url(endpoint)
        self._now_ns = now_ns
        self._fetcher = fetcher or HttpFetcher(timeout_s=5.0)
        self._own_fetcher = fetcher is None
        self._counters = SourceCounters()
        self.warnings = self._counters.warnings

    async def scrape(self) -> Row | None:
        t0 = self._now_ns()
        try:
            text = await self._fetcher.get_text(self.url)
        except TelemetryError as exc:
            self._counters.count("scrape_errors")
            self._counters.warn(str(exc))
            return None
        t_ns = (t0 + self._now_ns()) // 2
        parsed = parse_prometheus_text(text)
        if parsed.bad_lines:
            self._counters.count("bad_lines", len(parsed.bad_lines))
            number, why = parsed.bad_lines[0]
            self._counters.warn(f"{self.url}: line {number} is not Prometheus text ({why}); such lines are skipped")
        self._counters.count("scrapes")
        return engine_row(parsed.samples, endpoint=self.url, t_ns=t_ns)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, **self._counters.stats}

    async def close(self) -> None:
        if self._own_fetcher:
            await self._fetcher.close()
