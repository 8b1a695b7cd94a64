"""Engine metrics: vLLM (current and older names) and SGLang /metrics into engine.parquet columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kairosbench.errors import UsageError
from kairosbench.profiler.engine_scraper import EngineScraper, engine_row, metrics_url
from kairosbench.profiler.promtext import parse_prometheus_text
from kairosbench.profiler.sampler import Sampler, SamplerConfig

FIXTURES = Path(__file__).parent / "fixtures" / "profiler"


def row_of(name: str) -> dict[str, object]:
    return engine_row(parse_prometheus_text((FIXTURES / name).read_text()).samples, endpoint="e", t_ns=1)


def test_vllm_current_names() -> None:
    row = row_of("vllm_metrics.txt")
    assert row["engine"] == "vllm"
    assert row["kv_usage_frac"] == pytest.approx(0.9132)
    assert (row["num_running"], row["num_waiting"], row["preemptions_total"]) == (37.0, 5.0, 12.0)
    assert (row["prefix_queries_tokens"], row["prefix_hits_tokens"]) == (1.84512e6, 1.60256e6)
    assert (row["prompt_tokens"], row["generation_tokens"]) == (1.851904e6, 84213.0)
    assert "prefix_queries_blocks" not in row and "cache_hit_rate" not in row


def test_vllm_legacy_names_and_two_engine_cores() -> None:
    row = row_of("vllm_legacy_metrics.txt")
    assert row["kv_usage_frac"] == pytest.approx(0.6)  # mean over the cores
    assert (row["num_running"], row["num_waiting"], row["preemptions_total"]) == (38.0, 3.0, 7.0)  # sums
    assert (row["prefix_queries_blocks"], row["prefix_hits_blocks"]) == (10000.0, 3500.0)
    assert "prefix_queries_tokens" not in row


def test_sglang_names() -> None:
    row = row_of("sglang_metrics.txt")
    assert row["engine"] == "sglang"
    assert (row["kv_usage_frac"], row["num_running"], row["num_waiting"]) == (0.97, 48.0, 9.0)
    assert (row["retracted_reqs"], row["cache_hit_rate"], row["prefix_hits_tokens"]) == (3.0, 0.81, 2.2e6)
    assert (row["evicted_tokens"], row["prompt_tokens"], row["generation_tokens"]) == (310000.0, 2.7e6, 130000.0)


def test_metrics_url_normalisation() -> None:
    assert metrics_url("http://h:8000") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/metrics") == "http://h:8000/metrics"
    with pytest.raises(UsageError):
        metrics_url("h:8000")


async def test_scraper_against_a_loopback_engine_writes_engine_parquet(tmp_path: Path) -> None:
    texts = [(FIXTURES / "vllm_metrics.txt").read_text(), (FIXTURES / "sglang_metrics.txt").read_text() + "bad line\n"]

    async def engine_a(request: web.Request) -> web.Response:
        return web.Response(text=texts[0])

    async def engine_b(request: web.Request) -> web.Response:
        return web.Response(text=texts[1])

    app = web.Application()
    app.router.add_get("/a/metrics", engine_a)
    app.router.add_get("/b/metrics", engine_b)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = f"http://127.0.0.1:{server.port}"
        sampler = Sampler(SamplerConfig(run_dir=tmp_path, engine_endpoints=[f"{base}/a/metrics", f"{base}/b/metrics"]), sources=[])
        await sampler.open()
        for _ in range(2):
            for scraper in sampler.scrapers:
                await sampler.scrape_engine(scraper)
        await sampler.close()
    finally:
        await server.close()
    table = pq.read_table(tmp_path / "engine.parquet").to_pandas()
    assert len(table) == 4 and sorted(set(table.engine)) == ["sglang", "vllm"]
    assert not (tmp_path / "power.parquet").exists()
    assert any("line" in w and "not Prometheus text" in w for w in sampler.warnings)


async def test_an_unreachable_engine_is_counted_not_raised() -> None:
    scraper = EngineScraper("http://127.0.0.1:9")
    assert await scraper.scrape() is None
    assert scraper.describe()["scrape_errors"] == 1
    await scraper.close()


def test_emulator_recompute_counter_lands_in_its_column() -> None:
    """The emulator's thrashing counter reaches engine.parquet (reports show recomputed tokens)."""
    from kairosbench.profiler.schema import ENGINE_SCHEMA

    text = (
        "# TYPE kairosbench:recomputed_tokens_total counter\n"
        "kairosbench:recomputed_tokens_total 12345\n"
        "# TYPE vllm:num_preemptions_total counter\n"
        'vllm:num_preemptions_total{model_name="m",engine="0"} 3\n'
    )
    row = engine_row(parse_prometheus_text(text).samples, endpoint="e", t_ns=1)
    assert row["recomputed_tokens_total"] == 12345 and row["preemptions_total"] == 3
    assert "recomputed_tokens_total" in ENGINE_SCHEMA.names
