"""``kairosbench emulate``: start N emulated GPU serving instances and serve until stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kairosbench.emulator.engine import EngineConfig
from kairosbench.emulator.presets import GPU_PRESETS, MODEL_PRESETS, gpu_preset, model_preset
from kairosbench.emulator.server import EmulatorServer, ServerOptions
from kairosbench.errors import UsageError

__all__ = ["emulate", "endpoints_table"]


def endpoints_table(server: EmulatorServer) -> Table:
    """The table ``emulate`` prints: one row per instance."""
    t = Table(title="kairosbench emulator", show_lines=False)
    for col in ("instance", "base URL", "GPU", "model", "KV capacity (tokens)", "max_model_len"):
        t.add_column(col)
    for inst in server.instances:
        e = inst.engine
        t.add_row(
            str(inst.index),
            inst.base_url or "-",
            e.gpu_preset.name,
            e.model.name,
            f"{e.layout.kv_capacity_tokens:,}",
            f"{e.layout.max_model_len:,}",
        )
    return t


def _write_ready(path: Path, urls: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"endpoints": urls, "pid": os.getpid()}))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


async def _watch_parent(parent_pid: int, stop: asyncio.Event, period_s: float = 0.5) -> None:
    """Stop when the process that started us is gone (it was SIGKILLed, say, and could not stop
    us): an emulator must never outlive the run that owns it. Orphans are re-parented, so a
    changed parent pid is the signal; polling is cheap and portable where PR_SET_PDEATHSIG is not."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            stop.set()
            return
        await asyncio.sleep(period_s)


async def _serve(opts: ServerOptions, ready_file: Path | None, quiet: bool, parent_pid: int | None = None) -> None:
    server = EmulatorServer(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watchdog = asyncio.ensure_future(_watch_parent(parent_pid, stop)) if parent_pid else None
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    try:
        urls = await server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc} (pick another --port, or 0 for free ports)") from None
    try:
        if ready_file is not None:
            _write_ready(ready_file, urls)
        if not quiet:
            console = Console()
            console.print(endpoints_table(server))
            console.print(f"Point any OpenAI client at a base URL + /v1 (e.g. {urls[0]}/v1). Ctrl-C stops.")
        await stop.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await server.stop()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


@click.command("emulate")
@click.option("--instances", "n_instances", type=click.IntRange(1, 64), default=1, show_default=True, help="Emulated GPU serving instances (one port each).")
@click.option("--gpu", type=click.Choice(sorted(GPU_PRESETS)), default="h100-sxm", show_default=True, help="GPU preset.")
@click.option("--model", type=click.Choice(sorted(MODEL_PRESETS)), default="qwen3-coder-30b-a3b-fp8", show_default=True, help="Model preset.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Instance i listens on PORT+i; 0 picks free ports.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for output text and EOS lengths.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help='Write {"endpoints": [...]} here once listening.')
@click.option("--max-num-seqs", type=click.IntRange(1), default=256, show_default=True, help="vLLM max_num_seqs.")
@click.option("--max-num-batched-tokens", type=click.IntRange(16), default=8192, show_default=True, help="Per-step token budget (chunked prefill).")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0.05, 1.0), default=0.9, show_default=True, help="Fraction of GPU memory vLLM may use.")
@click.option("--kv-capacity-tokens", type=click.IntRange(16), default=None, help="Override the KV pool size (tokens) instead of the preset arithmetic.")
@click.option("--no-prefix-caching", is_flag=True, help="Disable automatic prefix caching.")
@click.option("--default-max-tokens", type=click.IntRange(1), default=256, show_default=True, help="Output length for chat requests that send no max_tokens.")
@click.option("--quiet", is_flag=True, help="Do not print the endpoint table.")
@click.option("--exit-with-parent", "parent_pid", type=int, default=None, help="Stop when process PID (the one that started this emulator) is gone.")
def emulate(
    n_instances: int,
    gpu: str,
    model: str,
    host: str,
    port: int,
    seed: int,
    ready_file: Path | None,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    gpu_memory_utilization: float,
    kv_capacity_tokens: int | None,
    no_prefix_caching: bool,
    default_max_tokens: int,
    quiet: bool,
    parent_pid: int | None,
) -> None:
    """Serve emulated H100 instances with OpenAI-compatible APIs until Ctrl-C / SIGTERM."""
    gpu_preset(gpu)
    model_preset(model)
    if port and port + n_instances - 1 > 65535:
        raise UsageError(f"--port {port} with --instances {n_instances} runs past port 65535")
    engine = EngineConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_capacity_tokens=kv_capacity_tokens,
        enable_prefix_caching=not no_prefix_caching,
    )
    opts = ServerOptions(
        n_instances=n_instances,
        gpu=gpu,
        model=model,
        host=host,
        port=port,
        seed=seed,
        default_max_tokens=default_max_tokens,
        engine=engine,
        pace_gc=True,  # this process is the emulator's alone
    )
    asyncio.run(_serve(opts, ready_file, quiet, parent_pid))
