"""The ``kairosbench`` command: one edge where errors become messages and exit codes.

Subcommands live next to the code they drive and are imported lazily, so ``kairosbench
--help`` stays fast and a missing optional dependency breaks only its own command. Every
option also reads ``KAIROSBENCH_<CMD>_<OPTION>`` from the environment (click's
``auto_envvar_prefix``).
"""

from __future__ import annotations

import importlib
import sys

import click

from kairosbench import __version__
from kairosbench.errors import KairosbenchError

__all__ = ["main", "cli", "LazyGroup"]

# name -> "module:attribute". Each module owns its command; this table is the only wiring.
COMMANDS: dict[str, str] = {
    "run": "kairosbench.replay.cli:run",
    "workload": "kairosbench.workload.cli:workload",
    "emulate": "kairosbench.emulator.cli:emulate",
    "profile": "kairosbench.profiler.cli:profile",
    "gateway": "kairosbench.gateway.cli:gateway",
    "sim": "kairosbench.sim.cli:sim",
    "policies": "controllers.cli:policies",
    "locust": "kairosbench.locust.cli:locust",
    "bench": "kairosbench.bench:bench",
    "report": "kairosbench.report.cli:report",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith(module_name.split(".")[0]):
                    return None  # not built yet in this checkout
                raise
            return getattr(module, attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kairosbench")
def cli() -> None:
    """Replay agent workloads against LLM endpoints, profile GPU power, compare power policies.

    With no endpoint, everything runs on the embedded default: emulated H100 serving
    instances on 127.0.0.1.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the only place that turns errors into exit codes."""
    rc = 0
    try:
        result = cli.main(args=argv, prog_name="kairosbench", standalone_mode=False, auto_envvar_prefix="KAIROSBENCH")
        # non-standalone click returns (not raises) the code of a `ctx.exit(n)` / `Exit(n)`
        rc = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except KairosbenchError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rc)


if __name__ == "__main__":
    main()
