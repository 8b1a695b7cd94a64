"""Entry point of the sampler process: ``python -m kairosbench.profiler.sampler_main``.

Why a plain subprocess and not ``multiprocessing``: a spawned ``multiprocessing`` child
re-imports the parent's ``__main__`` module, which re-runs any user script that lacks an
``if __name__ == "__main__"`` guard; a subprocess runs only this module. And a pipe gives a
free dead-parent signal.

Protocol. The parent writes one pickled :class:`SamplerConfig` to stdin and keeps stdin open.
The child answers with JSON lines on stdout: ``{"type": "ready", "gpus": [...], "warnings":
[...]}`` once its sources are open, ``{"type": "live", ...}`` about every second, and
``{"type": "done", "stats": {...}}`` after the Parquet files are written. Closing stdin (or
the parent dying, which closes it too) or SIGTERM stops the child cleanly. SIGINT is ignored:
Ctrl-C in a terminal reaches the whole process group, and the parent decides when to stop so
that the last readings are taken. Logs go to stderr, which the parent points at
``<run_dir>/profiler.log``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

from kairosbench.profiler.sampler import Sampler, SamplerConfig

__all__ = ["main"]


def _emit(message: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(message, default=str) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the parent is gone; the stdin watcher stops us


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    loop.call_soon_threadsafe(stop.set)


async def _run(config: SamplerConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    threading.Thread(target=_watch_stdin, args=(loop, stop), name="stdin-watch", daemon=True).start()
    sampler = Sampler(config, emit=_emit)
    gpus = await sampler.open()
    _emit({"type": "ready", "gpus": [asdict(g) for g in gpus], "warnings": sampler.warnings,
           "engine_endpoints": [s.url for s in sampler.scrapers]})
    if sampler.sources or sampler.scrapers:
        await sampler.run(stop)
    stats = await sampler.close()
    _emit({"type": "done", "stats": stats})


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config: SamplerConfig = pickle.load(sys.stdin.buffer)
    asyncio.run(_run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
