"""The CLI edge: every subcommand is wired, errors become messages with exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kairosbench.cli import COMMANDS, cli, main
from kairosbench.errors import InputError, UsageError


def test_every_declared_command_imports() -> None:
    import click

    ctx = click.Context(cli)
    for name in COMMANDS:
        assert cli.get_command(ctx, name) is not None, f"command {name} is not built"


def test_input_error_names_the_place() -> None:
    err = InputError("duration is negative (-3.0)", path="w.jsonl", line=7, field="tool_duration_s")
    assert str(err) == "w.jsonl, line 7, field 'tool_duration_s': duration is negative (-3.0)"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    import click

    @cli.command("_boom", hidden=True)
    def boom() -> None:
        raise UsageError("--foo cannot be combined with --bar")

    try:
        with pytest.raises(SystemExit) as exc:
            main(["_boom"])
        assert exc.value.code == 2
        assert "Error: --foo cannot be combined with --bar" in capsys.readouterr().err
    finally:
        cli.commands.pop("_boom")
    del click


def test_console_script_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "kairosbench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "workload" in out.stdout
