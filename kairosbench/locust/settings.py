"""The Locust user's options, declared once: CLI flags, ``KAIROSBENCH_LOCUST_*`` env vars, web-UI fields.

Each ``OptionSpec`` becomes one argument of Locust's parser (through
``events.init_command_line_parser``), so it is also a ``locust.conf`` key and, where ``web`` is
true, a field of the web UI's start form. Values arrive typed from the command line but as
strings from the web form (Locust converts a form value to the type of the parsed default, and
keeps strings where the default is ``None``), so ``settings_from`` parses every value itself
and raises ``UsageError`` naming the flag. Pure: no gevent, no Locust import; the tests use a
plain ``argparse`` parser.

Names and meanings follow ``kairosbench run`` (``--time-scale``, ``--slo-tok-s``,
``--eos-control``, ``--tokenizer``, ...), so a flag means the same thing on both surfaces.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from kairosbench.errors import UsageError

__all__ = [
    "OptionSpec",
    "OPTIONS",
    "AgentSettings",
    "add_arguments",
    "settings_from",
    "web_field_names",
    "run_dir_for",
    "EOS_CONTROL_CHOICES",
    "TOKENIZER_CHOICES",
]

EOS_CONTROL_CHOICES = ("auto", "ignore_eos", "min_tokens", "none")  # as kairosbench run's --eos-control
TOKENIZER_CHOICES = ("auto", "emulator", "remote", "words")  # or a Hugging Face tokenizer directory
ENV_PREFIX = "KAIROSBENCH_LOCUST_"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option. ``dest`` is the attribute on Locust's ``parsed_options``."""

    flags: tuple[str, ...]
    dest: str
    default: Any
    help: str
    web: bool = True  # a field of the web UI's start form
    choices: tuple[str, ...] | None = None

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(("--workload",), "workload", "", "workload file (.parquet/.jsonl) the agents replay; empty: the bundled mixed-small (each worker reads its own path)"),
    OptionSpec(("--time-scale",), "time_scale", 1.0, "tool-delay multiplier (0.1 = ten times faster)"),
    OptionSpec(("--slo-tok-s",), "slo_tok_s", 20.0, "per-agent SLO, output tokens/s over the agent's LLM time"),
    OptionSpec(("--eos-control", "--max-tokens-control"), "eos_control", "auto", "how output length is held to the trace: auto | ignore_eos | min_tokens | none", choices=EOS_CONTROL_CHOICES),
    OptionSpec(("--max-sessions",), "max_sessions", 0, "agent sessions in all (over all workers), then stop; 0: cycle the workload until stopped"),
    OptionSpec(("--model",), "model", "", "model to request; empty: the first of GET /v1/models"),
    OptionSpec(("--tokenizer",), "tokenizer", "auto", "prompt token counting: auto | emulator | remote | words | a Hugging Face tokenizer directory"),
    OptionSpec(("--out",), "out", "", "run directory for the Parquet records (workers: <out>/worker-<i>); empty: runs/<UTC time>-locust"),
    OptionSpec(("--system-prompt-tokens",), "system_prompt_tokens", 1024, "shared system prompt per agent kind, tokens (0: none)", web=False),
    OptionSpec(("--seed",), "seed", 0, "seed of the synthetic prompt text", web=False),
    OptionSpec(("--max-retries",), "max_retries", 2, "retries per turn for retryable faults (connect, reset, 5xx, 429, stall)", web=False),
    OptionSpec(("--retry-backoff-s",), "retry_backoff_s", 1.0, "first retry backoff, seconds (doubled each attempt)", web=False),
    OptionSpec(("--connect-timeout-s",), "connect_timeout_s", 10.0, "TCP connect timeout, seconds (0: none)", web=False),
    OptionSpec(("--first-token-timeout-s",), "first_token_timeout_s", 0.0, "no first token in this long is a stall, seconds (0: only the total timeout)", web=False),
    OptionSpec(("--idle-timeout-s",), "idle_timeout_s", 60.0, "no token for this long after the first is a stall, seconds (0: none)", web=False),
    OptionSpec(("--total-timeout-s",), "total_timeout_s", 1800.0, "whole-request limit, seconds (0: none)", web=False),
    OptionSpec(("--api-key-env",), "api_key_env", "OPENAI_API_KEY", "environment variable holding the API key (sent as a Bearer token; never logged)", web=False),
    OptionSpec(("--runs-dir",), "runs_dir", "runs", "parent of the default run directory", web=False),
    OptionSpec(("--flush-interval-s",), "flush_interval_s", 2.0, "seconds between Parquet part flushes (what a crash can lose)", web=False),
)


@dataclass(frozen=True)
class AgentSettings:
    """The parsed, validated options (units in the names; see docs/locust.md)."""

    workload: str | None = None
    time_scale: float = 1.0
    slo_tok_s: float = 20.0
    eos_control: str = "auto"
    max_sessions: int | None = None
    model: str | None = None
    tokenizer: str = "auto"
    out: str | None = None
    system_prompt_tokens: int = 1024
    seed: int = 0
    max_retries: int = 2
    retry_backoff_s: float = 1.0
    connect_timeout_s: float | None = 10.0
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = 60.0
    total_timeout_s: float | None = 1800.0
    api_key_env: str = "OPENAI_API_KEY"
    runs_dir: str = "runs"
    flush_interval_s: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def add_arguments(parser: argparse.ArgumentParser, *, locust: bool = False) -> None:
    """Declare every option on ``parser``; ``locust=True`` adds the web-UI and env-var keywords.

    Locust's parser (configargparse) takes ``include_in_web_ui`` and ``env_var``; a plain
    ``argparse`` parser does not, hence the switch.
    """
    for spec in OPTIONS:
        kwargs: dict[str, Any] = {"dest": spec.dest, "default": spec.default, "help": spec.help, "type": type(spec.default)}
        if spec.choices:
            kwargs["choices"] = spec.choices
        if locust:
            kwargs["include_in_web_ui"] = spec.web
            kwargs["env_var"] = spec.env_var
        parser.add_argument(*spec.flags, **kwargs)


def web_field_names() -> list[str]:
    """``dest`` of every option shown in the web UI's start form."""
    return [s.dest for s in OPTIONS if s.web]


# -- parsing -------------------------------------------------------------------------------
def _flag(dest: str) -> str:
    for spec in OPTIONS:
        if spec.dest == dest:
            return spec.flags[0]
    return "--" + dest.replace("_", "-")


def _text(values: Mapping[str, Any], dest: str) -> str | None:
    v = values.get(dest)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _number(values: Mapping[str, Any], dest: str, *, integer: bool, minimum: float, strict: bool = False, zero_is_none: bool = False) -> Any:
    raw: Any = values.get(dest)
    spec_default = next((s.default for s in OPTIONS if s.dest == dest), None)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raw = spec_default
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
        if integer:
            if not value.is_integer():
                raise ValueError
            value = int(value)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{_flag(dest)} must be {kind} (got {raw!r})") from None
    if not math.isfinite(value):
        raise UsageError(f"{_flag(dest)} must be finite (got {raw!r})")
    if zero_is_none and value == 0:
        return None
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise UsageError(f"{_flag(dest)} must be {bound} (got {raw!r})")
    return value


def settings_from(values: Mapping[str, Any] | argparse.Namespace) -> AgentSettings:
    """Parse and validate ``values`` (a ``parsed_options`` namespace, or a mapping of dests)."""
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    eos = _text(values, "eos_control") or "auto"
    if eos not in EOS_CONTROL_CHOICES:
        raise UsageError(f"--eos-control must be one of {', '.join(EOS_CONTROL_CHOICES)} (got {eos!r})")
    tokenizer = _text(values, "tokenizer") or "auto"
    api_key_env = _text(values, "api_key_env") or ""
    return AgentSettings(
        workload=_text(values, "workload"),
        time_scale=_number(values, "time_scale", integer=False, minimum=0.0, strict=True),
        slo_tok_s=_number(values, "slo_tok_s", integer=False, minimum=0.0, strict=True),
        eos_control=eos,
        max_sessions=_number(values, "max_sessions", integer=True, minimum=1, zero_is_none=True),
        model=_text(values, "model"),
        tokenizer=tokenizer,
        out=_text(values, "out"),
        system_prompt_tokens=_number(values, "system_prompt_tokens", integer=True, minimum=0),
        seed=_number(values, "seed", integer=True, minimum=0),
        max_retries=_number(values, "max_retries", integer=True, minimum=0),
        retry_backoff_s=_number(values, "retry_backoff_s", integer=False, minimum=0.0),
        connect_timeout_s=_number(values, "connect_timeout_s", integer=False, minimum=0.0, strict=True, zero_is_none=True),
        first_token_timeout_s=_number(values, "first_token_timeout_s", integer=False, minimum=0.0, strict=True, zero_is_none=True),
        idle_timeout_s=_number(values, "idle_timeout_s", integer=False, minimum=0.0, strict=True, zero_is_none=True),
        total_timeout_s=_number(values, "total_timeout_s", integer=False, minimum=0.0, strict=True, zero_is_none=True),
        api_key_env=api_key_env,
        runs_dir=_text(values, "runs_dir") or "runs",
        flush_interval_s=_number(values, "flush_interval_s", integer=False, minimum=0.0, strict=True),
    )


def run_dir_for(settings: AgentSettings, *, stamp: str, test_number: int, worker_index: int | None) -> Path:
    """Where one process writes one test's records.

    ``--out DIR`` names the first test's directory; a later test started from the same web UI
    gets ``DIR-2``, ``DIR-3``, ... Without ``--out``: ``<runs-dir>/<stamp>-locust`` (the stamp
    is the UTC start time, chosen by the master in a distributed test so all workers agree).
    A worker writes into ``worker-<index>`` under it.
    """
    if settings.out:
        base = Path(settings.out)
        if test_number > 1:
            base = base.with_name(f"{base.name}-{test_number}")
    else:
        base = Path(settings.runs_dir) / f"{stamp}-locust"
    return base / f"worker-{worker_index}" if worker_index is not None else base
