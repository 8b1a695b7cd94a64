"""HTTP GETs for the emulator, Prometheus and engine-metrics sources, with aiohttp errors translated once.

Every failure (refused connection, timeout, non-2xx status, body that is not JSON) becomes a
:class:`~kairosbench.errors.TelemetryError` naming the URL, so the sampler can count it, warn
once and keep going. One ``ClientSession`` per sampler process, opened on first use.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from kairosbench.errors import TelemetryError

__all__ = ["HttpFetcher"]


class HttpFetcher:
    """A shared aiohttp session with a per-request timeout (seconds)."""

    def __init__(self, *, timeout_s: float = 2.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def _get(self, url: str) -> bytes:
        if self._session is None or self._session.closed:
            # trust_env=False: a telemetry scrape of 127.0.0.1 must not go through an HTTP proxy.
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        try:
            async with self._session.get(url) as response:
                body = await response.read()
                if response.status >= 400:
                    raise TelemetryError(f"GET {url} answered HTTP {response.status}: {body[:200]!r}")
                return body
        except aiohttp.ClientError as exc:
            raise TelemetryError(f"GET {url} failed: {exc.__class__.__name__}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise TelemetryError(f"GET {url} timed out after {self._timeout.total} s") from exc

    async def get_text(self, url: str) -> str:
        return (await self._get(url)).decode("utf-8", errors="replace")

    async def get_json(self, url: str) -> Any:
        body = await self._get(url)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TelemetryError(f"GET {url} did not return JSON: {body[:200]!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
