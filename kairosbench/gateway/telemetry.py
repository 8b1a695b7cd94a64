"""Where the control loop's instance numbers come from: the emulator API, an engine's /metrics, NVML.

One ``InstanceTelemetry`` per instance per epoch, whatever the source:

* ``emulator``: ``GET /kairosbench/gpu`` and ``GET /kairosbench/engine`` (clocks, power, KV
  pool, queues, preemptions, prefix hits), read concurrently.
* ``metrics``: a real engine's Prometheus ``/metrics`` (vLLM or SGLang names, mapped by the
  profiler's ``engine_row``); U_max from ``vllm:cache_config_info{num_gpu_blocks, block_size}``
  (or SGLang's ``max_total_num_tokens``), or ``--kv-capacity-tokens`` where neither is
  exposed. Power and clocks come from NVML when the instance is mapped to a local GPU
  (``--gpu-index``); NVML is only *read* here.
* ``none``: no telemetry; policies see the gateway's own agent accounting only.

``detect`` probes an endpoint once at start: the emulator API first, then /metrics.
A failed read keeps the previous numbers and sets ``ok=False`` (logged in control.parquet),
so one slow scrape never stalls the control loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
from typing import Any

from kairosbench.errors import TelemetryError, UsageError
from kairosbench.gateway.tracker import InstanceTelemetry
from kairosbench.profiler.engine_scraper import engine_row, metrics_url
from kairosbench.profiler.http_fetch import HttpFetcher
from kairosbench.profiler.promtext import parse_prometheus_text

__all__ = ["TelemetrySource", "EmulatorTelemetry", "MetricsTelemetry", "NoTelemetry", "NvmlReader", "detect_telemetry", "endpoint_root"]

TELEMETRY_KINDS = ("auto", "emulator", "metrics", "none")


def endpoint_root(endpoint: str) -> str:
    """``http://h:p/v1`` or ``http://h:p/`` -> ``http://h:p`` (the gateway forwards the client's path)."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"endpoint {endpoint!r} is not an http(s) URL (e.g. http://127.0.0.1:8000)")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class TelemetrySource:
    """Reads one instance. ``read`` never raises for a failed scrape: it returns ``ok=False``."""

    kind = "none"

    def __init__(self) -> None:
        self.last = InstanceTelemetry(ok=False)
        self.errors = 0
        self.last_error: str | None = None

    async def _read(self) -> InstanceTelemetry:
        raise NotImplementedError

    async def read(self) -> InstanceTelemetry:
        try:
            self.last = await self._read()
        except TelemetryError as exc:
            self.errors += 1
            self.last_error = str(exc)
            self.last = dataclasses.replace(self.last, ok=False)
        return self.last

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "errors": self.errors, "last_error": self.last_error}


class NoTelemetry(TelemetrySource):
    """No engine or GPU numbers; a KV capacity given by the user still lets KAIROS cap admission."""

    kind = "none"

    def __init__(self, kv_capacity_tokens: int = 0, nvml: "NvmlReader | None" = None) -> None:
        super().__init__()
        self.kv_capacity_tokens = kv_capacity_tokens
        self.nvml = nvml

    async def _read(self) -> InstanceTelemetry:
        base = InstanceTelemetry(kv_capacity_tokens=self.kv_capacity_tokens, ok=True)
        return self.nvml.fill(base) if self.nvml is not None else base


class EmulatorTelemetry(TelemetrySource):
    """The emulator's JSON control/telemetry API (see docs/emulator.md)."""

    kind = "emulator"

    def __init__(self, root: str, fetcher: HttpFetcher) -> None:
        super().__init__()
        self.root = root
        self.fetcher = fetcher

    async def _read(self) -> InstanceTelemetry:
        gpu, engine = await asyncio.gather(
            self.fetcher.get_json(self.root + "/kairosbench/gpu"),
            self.fetcher.get_json(self.root + "/kairosbench/engine"),
        )
        return emulator_telemetry(gpu, engine)


def emulator_telemetry(gpu: dict[str, Any], engine: dict[str, Any]) -> InstanceTelemetry:
    """Map the emulator's two JSON documents onto ``InstanceTelemetry`` (pure)."""
    blocks = engine.get("num_gpu_blocks") or 0
    used = engine.get("kv_used_blocks") or 0
    util = gpu.get("gpu_util_pct")
    energy_mj = gpu.get("energy_mj")
    return InstanceTelemetry(
        supported_clocks_mhz=tuple(int(c) for c in gpu.get("supported_sm_clocks_mhz") or ()),
        sm_clock_mhz=float(gpu.get("sm_clock_mhz") or 0.0),
        locked_clock_mhz=gpu.get("locked_clock_mhz"),
        power_w=float(gpu.get("power_w") or 0.0),
        kv_capacity_tokens=int(engine.get("kv_capacity_tokens") or 0),
        kv_usage_frac=used / blocks if blocks else 0.0,
        num_running=int(engine.get("num_running") or 0),
        num_waiting=int(engine.get("num_waiting") or 0),
        preemptions_total=int(engine.get("preemptions_total") or 0),
        prefix_queries_tokens=int(engine.get("prefix_queries_tokens") or 0),
        prefix_hits_tokens=int(engine.get("prefix_hits_tokens") or 0),
        recomputed_tokens_total=int(engine.get("recomputed_tokens_total") or 0),
        gpu_util_frac=None if util is None else float(util) / 100.0,
        power_limit_w=gpu.get("power_limit_w"),
        energy_j=None if energy_mj is None else float(energy_mj) / 1000.0,
        ok=True,
    )


class NvmlReader:
    """Read-only NVML for one local GPU: power, SM clock, utilisation, supported clocks.

    Reads are a few microseconds each and happen once per epoch, so they run inline.
    ``nvml`` is the ``pynvml`` module or a fake (tests).
    """

    def __init__(self, gpu_index: int, nvml: Any = None) -> None:
        from kairosbench.profiler.nvml_errors import translate  # noqa: PLC0415

        if nvml is None:
            nvml = importlib.import_module("pynvml")
        self._nvml, self._translate, self.gpu_index = nvml, translate, gpu_index
        with translate("nvmlInit", gpu=gpu_index):
            nvml.nvmlInit()
        with translate("nvmlDeviceGetHandleByIndex", gpu=gpu_index):
            self._h = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
        with translate("nvmlDeviceGetSupportedGraphicsClocks", gpu=gpu_index):
            mem = max(nvml.nvmlDeviceGetSupportedMemoryClocks(self._h))
            self.supported = tuple(sorted(int(c) for c in nvml.nvmlDeviceGetSupportedGraphicsClocks(self._h, mem)))

    def fill(self, t: InstanceTelemetry) -> InstanceTelemetry:
        n, h = self._nvml, self._h
        try:
            with self._translate("nvmlDeviceGetPowerUsage", gpu=self.gpu_index):
                power_w = n.nvmlDeviceGetPowerUsage(h) / 1000.0
                sm = float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
                util = n.nvmlDeviceGetUtilizationRates(h).gpu / 100.0
                limit_w = n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
        except TelemetryError:
            return dataclasses.replace(t, supported_clocks_mhz=self.supported, ok=False)
        return dataclasses.replace(t, supported_clocks_mhz=self.supported, power_w=power_w, sm_clock_mhz=sm, gpu_util_frac=util, power_limit_w=limit_w)


class MetricsTelemetry(TelemetrySource):
    """A real engine's Prometheus /metrics, plus NVML for power and clocks where mapped."""

    kind = "metrics"

    def __init__(self, root: str, fetcher: HttpFetcher, *, kv_capacity_tokens: int = 0, nvml: NvmlReader | None = None) -> None:
        super().__init__()
        self.url = metrics_url(root)
        self.fetcher = fetcher
        self.kv_capacity_override = kv_capacity_tokens
        self.nvml = nvml

    async def _read(self) -> InstanceTelemetry:
        text = await self.fetcher.get_text(self.url)
        t = metrics_telemetry(text, kv_capacity_tokens=self.kv_capacity_override)
        return self.nvml.fill(t) if self.nvml is not None else t


def metrics_telemetry(text: str, *, kv_capacity_tokens: int = 0) -> InstanceTelemetry:
    """Map one /metrics scrape onto ``InstanceTelemetry`` (pure)."""
    samples = parse_prometheus_text(text).samples
    row = engine_row(samples, endpoint="", t_ns=0)
    capacity = kv_capacity_tokens
    if not capacity:
        for s in samples:
            if s.name == "vllm:cache_config_info" and "num_gpu_blocks" in s.labels:
                try:
                    capacity = int(float(s.labels["num_gpu_blocks"])) * int(float(s.labels.get("block_size", "16")))
                except ValueError:
                    continue
                break
            if s.name == "sglang:max_total_num_tokens":
                capacity = int(s.value)
                break
    return InstanceTelemetry(
        kv_capacity_tokens=capacity,
        kv_usage_frac=float(row.get("kv_usage_frac", 0.0)),
        num_running=int(row.get("num_running", 0)),
        num_waiting=int(row.get("num_waiting", 0)),
        preemptions_total=int(row.get("preemptions_total") or row.get("retracted_reqs") or 0),
        prefix_queries_tokens=int(row.get("prefix_queries_tokens", 0)),
        prefix_hits_tokens=int(row.get("prefix_hits_tokens", 0)),
        ok=True,
    )


async def detect_telemetry(
    endpoint: str,
    fetcher: HttpFetcher,
    *,
    kind: str = "auto",
    kv_capacity_tokens: int = 0,
    nvml: NvmlReader | None = None,
) -> TelemetrySource:
    """The telemetry source for ``endpoint``: the one named, or (``auto``) the first that answers."""
    root = endpoint_root(endpoint)
    if kind not in TELEMETRY_KINDS:
        raise UsageError(f"--telemetry must be one of {', '.join(TELEMETRY_KINDS)} (got {kind!r})")
    if kind in ("auto", "emulator"):
        try:
            gpu = await fetcher.get_json(root + "/kairosbench/gpu")
            if isinstance(gpu, dict) and "supported_sm_clocks_mhz" in gpu:
                return EmulatorTelemetry(root, fetcher)
        except TelemetryError as exc:
            if kind == "emulator":
                raise TelemetryError(f"{endpoint} does not answer the emulator telemetry API: {exc}") from exc
    if kind in ("auto", "metrics"):
        source = MetricsTelemetry(root, fetcher, kv_capacity_tokens=kv_capacity_tokens, nvml=nvml)
        try:
            text = await fetcher.get_text(source.url)
            if "vllm:" in text or "sglang:" in text:
                return source
        except TelemetryError as exc:
            if kind == "metrics":
                raise TelemetryError(f"{endpoint} does not serve engine metrics: {exc}") from exc
    return NoTelemetry(kv_capacity_tokens, nvml)
