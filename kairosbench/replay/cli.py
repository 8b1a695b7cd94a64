"""``kairosbench run``: replay a workload against endpoints (or the embedded emulator).

Thin shell: flags (and ``--config FILE``) → ``RunConfig`` → ``run_from_config``; signals →
a clean stop; the summary printed with rich. Errors are raised as ``KairosbenchError`` and
printed by the CLI edge (``kairosbench.cli``).
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from kairosbench.errors import UsageError
from kairosbench.replay.config import EOS_CONTROL_CHOICES, RunConfig, load_config_file
from kairosbench.replay.services import ServiceFactory, emulator_service

__all__ = ["run", "build_services", "profiler_notes"]


def build_services(config: RunConfig) -> list[ServiceFactory]:
    """The services this run starts, in order; they stop in reverse order.

    The embedded emulator when no ``--endpoint`` is given; then the profiler (GPU telemetry
    per ``--profile``, engine /metrics unless ``--no-engine-metrics``), which reads
    ``ctx.instance_endpoints``; then, with ``--policy``, the gateway, which replaces
    ``ctx.endpoints`` with its own URL. The profiler goes before the gateway so that it starts
    before and stops after it: the trace shows the gateway's clock restore at exit too.
    See ``kairosbench.replay.services``.
    """
    services: list[ServiceFactory] = []
    if not config.endpoint:
        services.append(emulator_service)
    if config.engine_metrics or [p.strip().lower() for p in config.profile] != ["none"]:
        from kairosbench.replay.profiling import profiler_service

        services.append(profiler_service)
    if config.policy:
        from kairosbench.gateway.service import gateway_service

        services.append(gateway_service)
    return services


def _config_from(ctx: click.Context, params: dict[str, Any]) -> RunConfig:
    """Defaults < config file < flags/env (click tells which were given)."""
    config_file = params.pop("config_file")
    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for name, value in params.items():
        source = ctx.get_parameter_source(name)
        explicit = source not in (click.core.ParameterSource.DEFAULT, None)
        if explicit or name not in values:
            values[name] = list(value) if isinstance(value, tuple) else value
    if isinstance(values.get("extra_body"), str):
        try:
            values["extra_body"] = json.loads(values["extra_body"])
        except ValueError as exc:
            raise UsageError(f"--extra-body is not valid JSON: {exc}") from None
    if values.get("extra_body") is None:
        values["extra_body"] = {}
    if not isinstance(values["extra_body"], dict):
        raise UsageError("--extra-body must be a JSON object")
    return RunConfig.from_mapping(values, source=str(config_file or "flags"))


@click.command("run", context_settings={"show_default": True})
@click.option("--workload", "-w", type=click.Path(dir_okay=False), default=None, help="Workload file (.parquet/.jsonl). Default: the bundled workloads/mixed-small.parquet, time-scaled.")
@click.option("--endpoint", "-e", multiple=True, help="OpenAI-compatible base URL (repeatable; sessions are spread round-robin, sticky). None: start the embedded emulator.")
@click.option("--model", default=None, help="Model name to request. Default: the first of GET /v1/models.")
@click.option("--api-key-env", default="OPENAI_API_KEY", help="Environment variable holding the API key (sent as a Bearer token; never logged).")
@click.option("--tokenizer", default="auto", help="auto | emulator | remote (/tokenize) | words | a Hugging Face tokenizer directory.")
@click.option("--arrival", type=click.Choice(["recorded", "poisson", "closed"]), default="recorded", help="Session arrivals: as recorded, Poisson at --rate, or closed loop at --concurrency.")
@click.option("--rate", type=float, default=None, help="Poisson arrival rate, sessions per second.")
@click.option("--concurrency", type=int, default=None, help="Closed loop: sessions kept in flight.")
@click.option("--time-scale", type=float, default=None, help="Multiply arrivals and tool delays (0.1 = ten times faster). Default 1, or 0.1 for the bundled workload.")
@click.option("--duration", "duration_s", type=float, default=None, help="Stop after this many seconds (in-flight requests are recorded as cancelled).")
@click.option("--max-sessions", type=int, default=None, help="Start at most this many sessions.")
@click.option("--seed", type=int, default=0, help="Seed for synthetic prompt text and Poisson arrivals.")
@click.option("--slo-tok-s", type=float, default=20.0, help="Per-agent output throughput SLO, tokens/s (KAIROS default 20).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run directory (must be new or empty). Default: <runs-dir>/<timestamp>-<name>.")
@click.option("--name", default=None, help="Run name used in the default run directory.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", help="Parent of default run directories.")
@click.option("--instances", type=int, default=1, help="Emulated instances to start when no --endpoint is given.")
@click.option("--emulator-gpu", default="h100-sxm", help="Emulated GPU preset.")
@click.option("--emulator-model", default="qwen3-coder-30b-a3b-fp8", help="Emulated model preset.")
@click.option("--emulator-in-process", is_flag=True, default=False, help="Run the emulator inside this process instead of a subprocess.")
@click.option("--max-retries", type=int, default=2, help="Retries per turn for retryable faults (connect, reset, 429/5xx, stall, timeout).")
@click.option("--retry-backoff-s", type=float, default=1.0, help="First retry backoff, doubled per attempt (not time-scaled).")
@click.option("--connect-timeout-s", type=float, default=10.0, help="TCP connect timeout.")
@click.option("--first-token-timeout-s", type=float, default=None, help="Stall if no first token within this (default: only the total timeout).")
@click.option("--idle-timeout-s", type=float, default=60.0, help="Stall if no bytes for this long after the first token.")
@click.option("--total-timeout-s", type=float, default=1800.0, help="Whole-request timeout.")
@click.option("--eos-control", type=click.Choice(list(EOS_CONTROL_CHOICES)), default="auto", help="How output length is held: auto tries ignore_eos, then min_tokens, then none.")
@click.option("--system-prompt-tokens", type=int, default=1024, help="Synthetic system prompt shared by sessions of one agent kind (0: none).")
@click.option("--extra-body", default=None, help='JSON object merged into every request body, e.g. \'{"temperature": 0}\'.')
@click.option("--strict-sse", is_flag=True, default=False, help="json-parse every SSE event (slow; for debugging servers).")
@click.option("--flush-interval-s", type=float, default=2.0, help="Parquet part flush interval (a crash loses at most this much).")
@click.option("--prepare-lead-s", type=float, default=1.0, help="Start a session task this early to build its first prompt before it arrives.")
@click.option("--progress/--no-progress", default=True, help="Live progress view.")
@click.option("--policy", default=None, help="Put the policy gateway in front of the instances with this policy (kairos, max, static:900, ...; see `kairosbench policies`).")
@click.option("--epoch-s", type=float, default=1.0, help="With --policy: the control epoch, seconds.")
@click.option("--actuator", type=click.Choice(["auto", "emulator", "dry-run", "nvml"]), default="auto", help="With --policy: how clocks are set (auto: the emulator's control, dry-run on real endpoints).")
@click.option("--allow-real-clock-changes", is_flag=True, default=False, help="With --actuator nvml: opt in to changing real GPU clocks (restored on exit).")
@click.option("--gpu-index", "gpu_index", type=int, multiple=True, help="With --policy and real endpoints: the local NVML GPU serving each --endpoint, in order (clock/power reads for the policy; the GPU a dry-run or nvml actuator targets). Default: GPU 0 when this host has exactly one GPU and one loopback endpoint.")
@click.option("--kv-capacity-tokens", type=int, default=None, help="With --policy: an instance's KV capacity in tokens (U_max) where the engine does not expose it (vLLM exposes it in /metrics).")
@click.option("--profile", "profile", multiple=True, default=["auto"], metavar="SPEC", help="GPU telemetry (repeatable): auto (the emulator's for emulated instances, else this host's NVML GPUs, else none), none, nvml, emulator:URL, prometheus:URL.")
@click.option("--engine-metrics/--no-engine-metrics", default=True, help="Scrape each instance's /metrics (vLLM, SGLang, the emulator) into engine.parquet when it answers.")
@click.option("--engine-interval-s", type=float, default=1.0, help="Engine /metrics scrape period, seconds.")
@click.option("--idle-baseline-s", type=float, default=2.0, help="Seconds of telemetry before the replay to measure GPU idle power where no emulator preset gives it (0: no measured baseline).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None, help="TOML/YAML/JSON file with the same keys as these flags (or a run's manifest.json).")
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Replay agent sessions against OpenAI-compatible endpoints and record everything.

    With no --endpoint, starts the embedded emulated H100 instances and replays the bundled
    mixed workload, time-scaled to finish in a few minutes.
    """
    from kairosbench.replay.orchestrate import run_from_config

    config = _config_from(ctx, params)
    console = Console(stderr=True)
    try:
        outcome = asyncio.run(_run_with_signals(config, console, run_from_config))
    except asyncio.CancelledError:  # a second Ctrl-C: the edge prints "Aborted!"
        raise KeyboardInterrupt from None
    out = Console()
    if outcome.summary is not None:
        out.print(outcome.summary)
    downgrades = [d for ep in outcome.manifest.get("endpoints", []) for d in ep.get("downgrades", [])]
    for d in downgrades:
        out.print(f"[yellow]note:[/] endpoint rejected {d['parameter']}; sent {d['to']} instead ({d['server_message']})")
    for note in profiler_notes(outcome.manifest):
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    out.print(f"run directory: [bold]{outcome.run_dir}[/]  (status: {outcome.status})")
    if outcome.status == "interrupted":
        out.print("[yellow]Interrupted:[/] the run stopped early; everything gathered so far is in the run directory.")
        raise click.exceptions.Exit(130)


def profiler_notes(manifest: dict[str, Any]) -> list[str]:
    """The profiler's and the gateway's one-line notes (what was not recorded or assumed, and why)."""
    info = (manifest.get("services") or {}).get("profiler") or {}
    notes = [info["nvml_scope"]] if info.get("nvml_scope") else []
    services = manifest.get("services") or {}
    gateway_notes = (services.get("gateway") or manifest.get("gateway") or {}).get("notes", [])
    return notes + [str(n) for n in info.get("notes", [])] + [str(n) for n in gateway_notes]


async def _run_with_signals(config: RunConfig, console: Console, run_from_config: Any) -> Any:
    """First Ctrl-C/SIGTERM: stop cleanly (manifest says interrupted). Second: abort now."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            console.print(f"{sig.name} again: aborting now")
            if main is not None:
                main.cancel()
            return
        console.print(f"{sig.name}: stopping — finishing records (press Ctrl-C again to abort)")
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    try:
        return await run_from_config(config, services=build_services(config), stop=stop, console=console)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
