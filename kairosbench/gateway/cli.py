"""``kairosbench gateway``: serve the policy gateway; ``kairosbench gateway restore``: undo clocks after a kill."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kairosbench.errors import UsageError
from kairosbench.gateway.actuator_state import STATE_FILE_NAME
from kairosbench.gateway.actuators import ACTUATOR_KINDS, restore_from_state
from kairosbench.gateway.telemetry import TELEMETRY_KINDS

__all__ = ["gateway"]


async def _serve(console: Console, ready_file: Path | None, **kwargs) -> str:
    from kairosbench.gateway.launch import running_gateway  # noqa: PLC0415 - keeps --help fast

    stop = asyncio.Event()
    got: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    run_dir = kwargs["run_dir"]
    async with running_gateway(**kwargs) as url:
        table = Table(title=f"kairosbench gateway on {url} (OpenAI base URL {url}/v1)")
        for col in ("instance", "endpoint", "telemetry", "clock actuator"):
            table.add_column(col)
        info = json.loads((Path(run_dir) / "gateway.json").read_text())
        for i, (ep, tel, act) in enumerate(zip(info["endpoints"], info["telemetry"], info["actuators"])):
            table.add_row(f"i{i}", ep, tel, act)
        console.print(table)
        console.print(f"policy [bold]{info['policy']}[/bold], epoch {info['epoch_s']} s; logs in {run_dir}; Ctrl-C or SIGTERM stops and restores clocks")
        # Everything built so far (imports, app, pools) lives for the whole process: move it out of
        # the cyclic GC's reach, so a full collection scans only request garbage. Measured: a
        # 45 ms gen-2 pause in the gateway process becomes < 13 ms (docs/perf/gateway.md).
        gc.collect()
        gc.freeze()
        if ready_file is not None:
            tmp = ready_file.with_name(ready_file.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"url": url, "run_dir": str(run_dir)}))
            os.replace(tmp, ready_file)
        await stop.wait()
    return got[0] if got else "stop"


def _loop_factory(kind: str):  # noqa: ANN202 - a callable returning an event loop, or None (asyncio's)
    """uvloop's loop when asked for (or, with ``auto``, when installed); else asyncio's default."""
    if kind == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, not a dependency
    except ImportError:
        if kind == "uvloop":
            raise UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


@click.group("gateway", invoke_without_command=True)
@click.option("--endpoint", "-e", "endpoints", multiple=True, metavar="URL", help="Upstream OpenAI-compatible endpoint (repeat for several instances).")
@click.option("--policy", default="kairos", show_default=True, help="Policy spec; see `kairosbench policies`.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Where control.parquet, gateway.parquet and the clock state go [default: runs/gateway-<time>].")
@click.option("--epoch-s", type=float, default=1.0, show_default=True, help="Control epoch (seconds).")
@click.option("--actuator", type=click.Choice(ACTUATOR_KINDS), default="auto", show_default=True, help="auto: the emulator's clock control where the endpoint is an emulator, dry-run elsewhere.")
@click.option("--allow-real-clock-changes", is_flag=True, help="Opt in to --actuator nvml changing real GPU clocks (needs root; restored on exit).")
@click.option("--gpu-index", "gpu_indices", type=int, multiple=True, help="Local NVML GPU index serving each --endpoint, in order (power/clock reads; nvml actuator).")
@click.option("--telemetry", type=click.Choice(TELEMETRY_KINDS), default="auto", show_default=True)
@click.option("--slo-tok-s", type=float, default=20.0, show_default=True, help="Per-agent P5 output-rate SLO (tokens/s) the policies see.")
@click.option("--kv-capacity-tokens", type=int, default=0, help="U_max per instance where the engine does not expose it.")
@click.option("--idle-timeout-s", type=float, default=300.0, show_default=True, help="An agent silent in its tool this long is taken as finished.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8100, show_default=True, help="0 picks a free port.")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Write {\"url\": ...} here once listening.")
@click.option("--loop", "loop_kind", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto", show_default=True, help="Event loop: auto uses uvloop when it is installed (less CPU per streamed chunk; docs/perf/gateway.md).")
@click.option("--log-level", type=click.Choice(["warning", "info", "debug"]), default="warning", show_default=True)
@click.pass_context
def gateway(ctx: click.Context, endpoints: tuple[str, ...], run_dir: Path | None, ready_file: Path | None, log_level: str, loop_kind: str, gpu_indices: tuple[int, ...], **kwargs) -> None:
    """Serve an OpenAI-compatible gateway that runs a power policy over ENDPOINTs.

    Agents are identified by the X-Kairosbench-Agent header (kairosbench's load generator
    sends it) or the OpenAI `user` field; other requests are single-turn agents.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not endpoints:
        raise UsageError("give at least one --endpoint URL (or use `kairosbench run --policy ...`, which starts emulated instances)")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir = run_dir or Path("runs") / time.strftime("gateway-%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    with asyncio.Runner(loop_factory=_loop_factory(loop_kind)) as runner:
        why = runner.run(_serve(console, ready_file, endpoints=list(endpoints), run_dir=run_dir, gpu_indices=list(gpu_indices) or None, **kwargs))
    console.print(f"gateway stopped ({why}); every clock it changed was restored")


@gateway.command("restore")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), default=None, help=f"Run dir of the killed gateway (reads its {STATE_FILE_NAME}).")
@click.option("--state", "state_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="The state file itself.")
def restore(run_dir: Path | None, state_file: Path | None) -> None:
    """Reset GPU clocks a gateway changed and could not restore (it was SIGKILLed).

    SIGKILL runs no code, so the gateway writes every clock change to a state file *before*
    making it; this command undoes what that file lists.
    """
    if (run_dir is None) == (state_file is None):
        raise UsageError("give exactly one of --run-dir DIR or --state FILE")
    path = state_file if state_file is not None else Path(run_dir) / STATE_FILE_NAME  # type: ignore[arg-type]
    if not path.exists():
        click.echo(f"nothing to restore: {path} does not exist (the gateway restored its clocks or never changed any)")
        return
    for line in asyncio.run(restore_from_state(path)):
        click.echo(f"restored {line}")
