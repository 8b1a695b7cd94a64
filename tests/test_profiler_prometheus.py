"""The Prometheus source against a loopback exporter serving recorded DCGM-exporter text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kairosbench.errors import TelemetryError
from kairosbench.profiler.launch import summarize_run_dir
from kairosbench.profiler.promtext import parse_prometheus_text
from kairosbench.profiler.sampler import Sampler, SamplerConfig
from kairosbench.profiler.source_prometheus import PrometheusSource, dcgm_rows

FIXTURES = Path(__file__).parent / "fixtures" / "profiler"
SCRAPES = [(FIXTURES / f"dcgm_scrape_{i}.txt").read_text() for i in (1, 2)]


class Exporter:
    """Serves the recorded scrapes in turn (the last one again once they run out)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.hits = 0

    async def metrics(self, request: web.Request) -> web.Response:
        text = self.texts[min(self.hits, len(self.texts) - 1)]
        self.hits += 1
        return web.Response(text=text, content_type="text/plain")


@pytest.fixture
async def exporter() -> AsyncIterator[tuple[str, Exporter]]:
    state = Exporter([SCRAPES[0], SCRAPES[0], SCRAPES[1]])  # open() and the first poll see scrape 1

    async def other(request: web.Request) -> web.Response:
        return web.Response(text="# nothing here\nup 1\n")

    app = web.Application()
    app.router.add_get("/metrics", state.metrics)
    app.router.add_get("/other", other)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", state
    finally:
        await server.close()


def test_dcgm_samples_map_onto_the_columns_and_skip_blanks() -> None:
    rows = dcgm_rows(parse_prometheus_text(SCRAPES[0]).samples, default_host="x", t_ns=5)
    assert [(r["host"], r["gpu"]) for r in rows] == [("gpu-node-07", 0), ("gpu-node-07", 1)]
    r0 = rows[0]
    assert r0["power_w"] == pytest.approx(702.331) and r0["power_avg_w"] == pytest.approx(688.512)
    assert r0["energy_j"] == pytest.approx(31035686.671)
    assert (r0["sm_clock_mhz"], r0["mem_clock_mhz"], r0["gpu_util_pct"], r0["mem_util_pct"]) == (1410, 2619, 97, 41)
    assert (r0["mem_used_mib"], r0["temp_c"], r0["throttle_reasons"]) == (74353, 44, 4)
    text = 'DCGM_FI_DEV_GPU_TEMP{gpu="0"} 2147483632\nDCGM_FI_DEV_SM_CLOCK{gpu="0"} 9223372036854775794\nDCGM_FI_DEV_POWER_USAGE{gpu="0"} 140737488355328\n'
    (blank,) = dcgm_rows(parse_prometheus_text(text).samples + parse_prometheus_text('DCGM_FI_DEV_FB_USED{gpu="0"} 5').samples, default_host="h", t_ns=0)
    assert blank == {"t_ns": 0, "host": "h", "gpu": 0, "source": "prometheus", "kind": "poll", "mem_used_mib": 5.0}


async def test_two_scrapes_give_rows_per_gpu_and_energy_from_the_counter(tmp_path: Path, exporter: tuple[str, Exporter]) -> None:
    base, state = exporter
    source = PrometheusSource(f"{base}/metrics")
    sampler = Sampler(SamplerConfig(run_dir=tmp_path), sources=[("prometheus", source)])
    gpus = await sampler.open()
    assert [(g.host, g.gpu, g.name) for g in gpus] == [("gpu-node-07", 0, "NVIDIA H100 80GB HBM3"), ("gpu-node-07", 1, "NVIDIA H100 80GB HBM3")]
    for _ in range(3):  # scrapes 1, 2, 2
        await sampler.poll_source(source)
    await sampler.close()
    assert state.hits == 4
    table = pq.read_table(tmp_path / "power.parquet").to_pandas()
    assert set(table.kind) == {"poll"} and len(table) == 6
    by_gpu = {g.gpu: g for g in summarize_run_dir(tmp_path).gpus}
    assert by_gpu[0].energy_counter_j == pytest.approx(31036376.183 - 31035686.671)
    assert by_gpu[1].energy_counter_j == pytest.approx(28841600.209 - 28841529.004)
    assert by_gpu[0].integrated_from == "power_w"  # no buffer: the polled instant power


async def test_a_url_without_dcgm_metrics_is_refused_with_a_clear_message(exporter: tuple[str, Exporter]) -> None:
    base, _ = exporter
    with pytest.raises(TelemetryError, match="no DCGM_FI_DEV_"):
        await PrometheusSource(f"{base}/other").open()
    with pytest.raises(TelemetryError, match="HTTP 404"):
        await PrometheusSource(f"{base}/missing").open()


async def test_an_exporter_going_away_mid_run_is_counted(tmp_path: Path, exporter: tuple[str, Exporter]) -> None:
    base, _ = exporter
    source = PrometheusSource(f"{base}/metrics")
    await source.open()
    source.url = "http://127.0.0.1:9/metrics"  # the exporter host went down
    assert await source.poll() == []
    assert source.describe()["read_errors"] == 1 and "failed" in source.warnings[0]
    await source.close()
