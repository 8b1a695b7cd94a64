"""``kairosbench policies``: every policy name, its knob, parameters with defaults, and source."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from controllers.registry import PRESETS, build_policy, components, param_defaults

__all__ = ["policies", "render_policies"]


def _fmt(value: object) -> str:
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_policies(console: Console, check: str | None = None) -> None:
    """Print the preset and component tables (or one spec, resolved) to ``console``."""
    if check is not None:
        policy = build_policy(check)
        console.print(f"[bold]{check}[/bold] -> {type(policy).__name__} {policy.name!r}")
        for part in ("clock", "admission", "routing"):
            strategy = getattr(policy, part, None)
            console.print(f"  {part}: {getattr(strategy, 'name', '?')}")
        for part in ("clock", "admission", "routing"):
            params = getattr(getattr(policy, part, None), "params", None)
            if params is not None:
                console.print(f"  parameters: {params}")
                break
        return
    presets = Table(title="Policies (pass to --policy)", show_lines=False)
    presets.add_column("name")
    presets.add_column("means")
    for name, means in PRESETS.items():
        presets.add_row(name, means)
    console.print(presets)
    comps = Table(title="Components (compose: clock=...,admission=...,routing=...)")
    for col in ("knob", "name", "what it does", "source"):
        comps.add_column(col, overflow="fold")
    params = Table(title="Parameters (name(key=value,...))")
    for col in ("component", "parameter", "default", "type"):
        params.add_column(col, overflow="fold")
    shown: set[type] = set()
    for c in components():
        comps.add_row(c.kind, f"{c.name}:<{c.arg}>" if c.arg else c.name, c.summary, c.source)
        if c.params is not None and c.params not in shown:
            shown.add(c.params)
            label = c.name if c.name == "kairos" else f"{c.kind}={c.name}"
            for n, d, t in param_defaults(c):
                params.add_row(label, n, _fmt(d), t)
    console.print(comps)
    console.print(params)
    console.print("Parameters: name(key=value,...), tuples with '/': kairos(alpha=0.8,level_fracs=0.5/0.6/0.7). Details: docs/policies.md")


@click.command("policies")
@click.option("--check", metavar="SPEC", default=None, help="Resolve one policy spec and show what it builds (errors if invalid).")
def policies(check: str | None) -> None:
    """List the power/admission/routing policies, their parameters and sources."""
    render_policies(Console(), check)
