"""What every telemetry source offers the sampler, and how a source is named on the command line.

A source is opened once, then polled (current values of every GPU it sees) and, if it has a
power-sample buffer, drained (new buffer samples since the last drain). Both return plain rows
in the columns of :mod:`kairosbench.profiler.schema`. Sources never sleep and never decide when
to read: the sampler does, so a fake clock can drive them in tests.

Names: ``nvml``, ``emulator:http://127.0.0.1:8001`` (the emulator's base URL) and
``prometheus:http://host:9400/metrics`` (a DCGM-exporter or any Prometheus text endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from kairosbench.errors import UsageError

__all__ = ["Row", "GpuInfo", "SourceSpec", "TelemetrySource", "SourceCounters", "parse_source", "SOURCE_KINDS"]

Row = dict[str, Any]
SOURCE_KINDS = ("nvml", "emulator", "prometheus")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU a source reports on: what it is and how it is read (written to file metadata)."""

    host: str
    gpu: int
    source: str
    name: str = ""
    uuid: str = ""
    notes: tuple[str, ...] = ()  # e.g. "power_w from nvmlDeviceGetPowerUsage (no instant field)"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed source name: ``kind`` plus, for HTTP sources, the URL."""

    kind: str
    url: str | None = None

    def __str__(self) -> str:
        return self.kind if self.url is None else f"{self.kind}:{self.url}"


class TelemetrySource(Protocol):
    """The edge interface the sampler drives. Implementations: NVML, emulator, Prometheus."""

    kind: str
    default_interval_s: float  # poll period that matches how fast the source's values change
    has_buffer: bool  # True when ``drain`` returns hardware power samples
    warnings: list[str]  # things the user should know (a signal missing, a permission refused)

    async def open(self) -> list[GpuInfo]:
        """Connect and list the GPUs. Raises a TelemetryError if the source cannot be used."""
        ...

    async def poll(self, *, full: bool = False) -> list[Row]:
        """Read the current values of every GPU: one ``kind="poll"`` row each.

        A source that reads some signals only every few polls reads them all when ``full``
        (the sampler asks at its last poll, so every signal reaches the stop time)."""
        ...

    async def drain(self) -> list[Row]:
        """New buffer samples since the last drain, each exactly once (``kind="buffer"``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the file metadata: counters, detected buffer clock, notes."""
        ...

    async def close(self) -> None:
        ...


@dataclass
class SourceCounters:
    """Small helper the sources share to count events and keep warnings without flooding."""

    stats: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    max_warnings: int = 20

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < self.max_warnings:
            self.warnings.append(message)


def parse_source(text: str) -> SourceSpec:
    """Parse ``nvml`` / ``emulator:URL`` / ``prometheus:URL``; bad names raise UsageError."""
    text = text.strip()
    kind, sep, url = text.partition(":")
    kind = kind.lower()
    if kind not in SOURCE_KINDS:
        raise UsageError(f"--source {text!r}: unknown source; use nvml, emulator:URL or prometheus:URL")
    if kind == "nvml":
        if sep:
            raise UsageError(f"--source {text!r}: nvml takes no URL")
        return SourceSpec("nvml")
    if not url:
        raise UsageError(f"--source {text!r}: {kind} needs a URL, e.g. {kind}:http://127.0.0.1:8001")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--source {text!r}: {url!r} is not an http(s) URL")
    return SourceSpec(kind, url.rstrip("/") if kind == "emulator" else url)
