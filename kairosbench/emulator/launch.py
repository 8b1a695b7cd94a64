"""Start and stop emulated instances from code: in-process, or as a subprocess with its own core.

The run orchestrator uses exactly these two entry points::

    async with running_emulator(2, gpu="h100-sxm") as urls:      # same event loop, tests
        ...
    with EmulatorProcess(4, model="qwen3-14b") as proc:          # own process (own core)
        urls = proc.urls

``EmulatorProcess`` runs ``python -m kairosbench.cli emulate ... --ready-file F`` and waits
for ``F`` (JSON ``{"endpoints": [...]}``), which the server writes only once every instance
listens. ``stop()`` sends SIGTERM (the server shuts down cleanly), then SIGKILL after a grace
period; it is idempotent and also runs on context-manager exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

from kairosbench.emulator.engine import EngineConfig
from kairosbench.emulator.presets import gpu_preset, model_preset
from kairosbench.emulator.server import EmulatorServer, ServerOptions
from kairosbench.errors import EndpointError

__all__ = ["running_emulator", "EmulatorProcess"]


@contextlib.asynccontextmanager
async def running_emulator(
    n_instances: int = 1,
    *,
    gpu: str = "h100-sxm",
    model: str = "qwen3-coder-30b-a3b-fp8",
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    engine: EngineConfig | None = None,
) -> AsyncIterator[list[str]]:
    """In-process: yields base URLs like http://127.0.0.1:PORT (one per instance)."""
    gpu_preset(gpu)
    model_preset(model)  # fail fast with a UsageError naming the choices
    opts = ServerOptions(n_instances=n_instances, gpu=gpu, model=model, host=host, port=port, seed=seed, engine=engine or EngineConfig())
    server = EmulatorServer(opts)
    urls = await server.start()
    try:
        yield urls
    finally:
        await server.stop()


class EmulatorProcess:
    """``kairosbench emulate`` in a subprocess, so the emulator gets its own core."""

    def __init__(
        self,
        n_instances: int = 1,
        *,
        gpu: str = "h100-sxm",
        model: str = "qwen3-coder-30b-a3b-fp8",
        port: int = 0,
        seed: int = 0,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        cpu: int | None = None,
    ) -> None:
        gpu_preset(gpu)
        model_preset(model)
        self.n_instances, self.gpu, self.model, self.port, self.seed, self.host = n_instances, gpu, model, port, seed, host
        self.extra_args = list(extra_args or [])
        self.cpu = cpu  # pin to this core (Linux), e.g. for benchmarks
        self.urls: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 30) -> list[str]:
        """Start the subprocess and wait until every instance listens; returns base URLs."""
        if self._proc is not None:
            return self.urls
        self._tmpdir = tempfile.TemporaryDirectory(prefix="kairosbench-emu-")
        ready = Path(self._tmpdir.name) / "ready.json"
        self._log_path = Path(self._tmpdir.name) / "emulator.log"
        cmd = [
            sys.executable, "-m", "kairosbench.cli", "emulate",
            "--instances", str(self.n_instances), "--gpu", self.gpu, "--model", self.model,
            "--host", self.host, "--port", str(self.port), "--seed", str(self.seed),
            "--ready-file", str(ready), "--quiet", "--exit-with-parent", str(os.getpid()), *self.extra_args,
        ]  # fmt: skip
        log = open(self._log_path, "wb")
        preexec = None
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            cpu = self.cpu
            preexec = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=preexec)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready.exists():
                try:
                    self.urls = list(json.loads(ready.read_text())["endpoints"])
                    return self.urls
                except (ValueError, KeyError):
                    pass  # written non-atomically on some filesystems: retry
            rc = self._proc.poll()
            if rc is not None:
                out = self._log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise EndpointError(f"the emulator exited with status {rc} before listening:\n{out}")
            time.sleep(0.05)
        self.stop()
        raise EndpointError(f"the emulator did not become ready within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)
            except ProcessLookupError:
                pass
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self.urls = []

    def __enter__(self) -> "EmulatorProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
