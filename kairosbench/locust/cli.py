"""``kairosbench locust [locust options]``: Locust with the bundled locustfile, and an emulator if no host.

A thin launcher: it runs ``python -m locust -f <bundled locustfile> ...`` as a child process
(Locust's gevent monkey-patching stays out of this process), passing every argument it does
not own through unchanged, and adds only defaults:

- no ``--host``/``-H`` (nor ``LOCUST_HOST``), not a ``--worker``, no ``--no-emulator``: it
  starts ``kairosbench emulate`` on 127.0.0.1 (one emulated H100 instance, a free port) and
  passes its URL as ``--host``; the emulator is stopped when Locust exits, on every path;
- ``--web-host 127.0.0.1`` and, for a master, ``--master-bind-host 127.0.0.1`` unless given
  (Locust binds every interface by default; kairosbench servers bind loopback unless asked);
- ``-f`` with the bundled locustfile unless ``-f``/``--locustfile`` is given.

Exit status: Locust's. Ctrl-C reaches Locust directly (same process group); SIGTERM to this
process is forwarded to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click

__all__ = ["locust", "LOCUSTFILE", "locust_command", "wants_emulator"]

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")


def _given(args: list[str], *names: str) -> bool:
    """Whether any of ``names`` (``--x``, ``-x``) appears in ``args`` (also as ``--x=v`` / ``-xV``)."""
    for a in args:
        if a == "--":
            break
        for n in names:
            if a == n or (n.startswith("--") and a.startswith(n + "=")) or (not n.startswith("--") and a.startswith(n) and len(a) > len(n)):
                return True
    return False


def wants_emulator(args: list[str], env: dict[str, str] | None = None) -> bool:
    """No host from the arguments or ``LOCUST_HOST``, and not a worker (workers get it from the master)."""
    env = dict(os.environ) if env is None else env
    if env.get("LOCUST_HOST"):
        return False
    return not _given(args, "--host", "-H", "--worker")


def locust_command(args: list[str], host: str | None) -> list[str]:
    """The child's command line (pure, tested)."""
    cmd = [sys.executable, "-m", "locust"]
    if not _given(args, "-f", "--locustfile"):
        cmd += ["-f", str(LOCUSTFILE)]
    if host is not None:
        cmd += ["--host", host]
    if not _given(args, "--web-host"):
        cmd += ["--web-host", "127.0.0.1"]
    if _given(args, "--master", "--processes") and not _given(args, "--master-bind-host"):
        cmd += ["--master-bind-host", "127.0.0.1"]
    return cmd + args


@click.command(
    "locust",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": ["--help"]},
)
@click.option("--no-emulator", is_flag=True, help="Never start an emulator (e.g. the host comes from a locust.conf).")
@click.option("--emulator-gpu", default="h100-sxm", show_default=True, help="GPU preset of the emulator started when no --host is given.")
@click.option("--emulator-model", default="qwen3-coder-30b-a3b-fp8", show_default=True, help="Model preset of that emulator.")
@click.option("--locust-help", is_flag=True, help="Show Locust's help, kairosbench options included (--workload, --time-scale, ...).")
@click.argument("locust_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def locust(ctx: click.Context, no_emulator: bool, emulator_gpu: str, emulator_model: str, locust_help: bool, locust_args: tuple[str, ...]) -> None:
    """Run Locust with kairosbench's agent users (web UI on 127.0.0.1:8089 unless --headless).

    Every other argument goes to Locust unchanged, e.g.

    \b
        kairosbench locust --headless -u 8 -r 8 -t 5m --workload workloads/swe-small.parquet

    Without --host an emulated H100 instance is started on 127.0.0.1 and used. Distributed:
    `kairosbench locust --master --host URL` and `kairosbench locust --worker --master-host H`
    (or `--processes N` on one machine). See docs/locust.md.
    """
    args = list(locust_args)
    if locust_help:
        args.append("--help")
    proc: subprocess.Popen[bytes] | None = None
    emulator = None
    host: str | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        if not no_emulator and not locust_help and wants_emulator(args):
            from kairosbench.emulator.launch import EmulatorProcess

            emulator = EmulatorProcess(1, gpu=emulator_gpu, model=emulator_model)
            host = emulator.start()[0]
            click.echo(f"kairosbench: emulated {emulator_gpu} serving {emulator_model} at {host} (stopped when Locust exits)", err=True)
        proc = subprocess.Popen(locust_command(args, host))
        # Only now: an ignored SIGINT would be inherited by the child. Ctrl-C reaches Locust
        # directly (same process group); we wait for it to finish and then clean up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        rc = proc.wait()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if emulator is not None:
            emulator.stop()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    ctx.exit(rc)
