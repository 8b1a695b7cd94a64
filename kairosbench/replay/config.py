"""The run configuration: one dataclass, filled from defaults, a config file, then flags.

Every key is a ``kairosbench run`` flag with dashes turned into underscores, so a config file
reads like the command line:

    # run.toml
    workload = "workloads/swe-kairos.parquet"
    endpoint = ["http://gpu1:8000", "http://gpu2:8000"]
    arrival = "poisson"
    rate = 0.08
    slo_tok_s = 20

Precedence: flag (or its ``KAIROSBENCH_RUN_*`` environment variable) > config file > default.
TOML (``.toml``), YAML (``.yaml``/``.yml``) and JSON are read; a run's ``manifest.json`` is
accepted too (its ``config`` section), so ``kairosbench run --config runs/X/manifest.json``
repeats a run exactly. The effective configuration is saved in the manifest. API keys are
never part of it: only the *name* of the environment variable holding one.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from kairosbench.errors import InputError, UsageError
from kairosbench.replay.arrivals import ARRIVAL_MODES

__all__ = ["RunConfig", "load_config_file", "EOS_CONTROL_CHOICES", "TOKENIZER_CHOICES"]

EOS_CONTROL_CHOICES = ("auto", "ignore_eos", "min_tokens", "none")
TOKENIZER_CHOICES = ("auto", "emulator", "remote", "words")  # or a tokenizer directory


@dataclass
class RunConfig:
    """Everything that decides what a run does (units in the names; see docs/replay.md)."""

    workload: str | None = None  # None: the bundled workloads/mixed-small.parquet
    endpoint: list[str] = field(default_factory=list)  # none: start the embedded emulator
    model: str | None = None  # None: the first model of GET /v1/models
    api_key_env: str = "OPENAI_API_KEY"
    tokenizer: str = "auto"
    arrival: str = "recorded"
    rate: float | None = None  # sessions/s, for arrival=poisson
    concurrency: int | None = None  # sessions in flight, for arrival=closed
    time_scale: float | None = None  # None: 1.0, or the bundled default's compression
    duration_s: float | None = None
    max_sessions: int | None = None
    seed: int = 0
    slo_tok_s: float = 20.0
    out: str | None = None
    name: str | None = None
    runs_dir: str = "runs"
    instances: int = 1
    emulator_gpu: str = "h100-sxm"
    emulator_model: str = "qwen3-coder-30b-a3b-fp8"
    emulator_in_process: bool = False
    max_retries: int = 2
    retry_backoff_s: float = 1.0
    connect_timeout_s: float = 10.0
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = 60.0
    total_timeout_s: float | None = 1800.0
    eos_control: str = "auto"
    system_prompt_tokens: int = 1024
    extra_body: dict[str, Any] = field(default_factory=dict)
    strict_sse: bool = False
    flush_interval_s: float = 2.0
    prepare_lead_s: float = 1.0
    progress: bool = True
    policy: str | None = None  # a gateway with this policy in front of the instances (kairosbench.gateway)
    epoch_s: float = 1.0  # the gateway's control epoch
    actuator: str = "auto"  # the gateway's clock actuator: auto | emulator | dry-run | nvml
    allow_real_clock_changes: bool = False  # opt-in for actuator=nvml
    gpu_index: list[int] = field(default_factory=list)  # local NVML GPU per --endpoint, for the gateway
    kv_capacity_tokens: int | None = None  # U_max for the gateway where the engine does not expose it
    profile: list[str] = field(default_factory=lambda: ["auto"])  # GPU telemetry: auto | none | nvml | emulator:URL | prometheus:URL
    engine_metrics: bool = True  # scrape each instance's /metrics into engine.parquet
    engine_interval_s: float = 1.0  # engine /metrics scrape period
    idle_baseline_s: float = 2.0  # lead-in measured before the replay where no preset idle power is known (0: none)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> "RunConfig":
        known = set(cls.keys())
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(unknown)}; known keys are the run flags: {', '.join(sorted(known))}", path=source)
        data = dict(values)
        for key in ("endpoint", "profile"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if isinstance(data.get("gpu_index"), int):
            data["gpu_index"] = [data["gpu_index"]]
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``UsageError`` naming the flag for any inconsistent setting."""
        if self.arrival not in ARRIVAL_MODES:
            raise UsageError(f"--arrival must be one of {', '.join(ARRIVAL_MODES)} (got {self.arrival!r})")
        if self.arrival == "poisson" and (self.rate is None or self.rate <= 0):
            raise UsageError("--arrival poisson needs --rate > 0 (sessions per second)")
        if self.arrival == "closed" and (self.concurrency is None or self.concurrency < 1):
            raise UsageError("--arrival closed needs --concurrency N (N >= 1 sessions in flight)")
        if self.rate is not None and self.arrival != "poisson":
            raise UsageError("--rate only applies to --arrival poisson")
        if self.concurrency is not None and self.arrival != "closed":
            raise UsageError("--concurrency only applies to --arrival closed")
        if self.time_scale is not None and self.time_scale <= 0:
            raise UsageError("--time-scale must be > 0 (0.1 replays ten times faster)")
        for name in ("duration_s", "first_token_timeout_s", "idle_timeout_s", "total_timeout_s"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise UsageError("--max-sessions must be >= 1")
        if self.instances < 1:
            raise UsageError("--instances must be >= 1")
        if self.max_retries < 0 or self.retry_backoff_s < 0:
            raise UsageError("--max-retries and --retry-backoff-s must be >= 0")
        if self.eos_control not in EOS_CONTROL_CHOICES:
            raise UsageError(f"--eos-control must be one of {', '.join(EOS_CONTROL_CHOICES)}")
        if self.tokenizer not in TOKENIZER_CHOICES and not Path(self.tokenizer).exists():
            raise UsageError(f"--tokenizer must be one of {', '.join(TOKENIZER_CHOICES)} or a tokenizer directory (no such path: {self.tokenizer})")
        if self.slo_tok_s <= 0:
            raise UsageError("--slo-tok-s must be > 0")
        if self.system_prompt_tokens < 0:
            raise UsageError("--system-prompt-tokens must be >= 0")
        if self.flush_interval_s <= 0:
            raise UsageError("--flush-interval-s must be > 0")
        if self.engine_interval_s <= 0:
            raise UsageError("--engine-interval-s must be > 0")
        if self.gpu_index and len(self.gpu_index) != len(self.endpoint):
            raise UsageError(f"--gpu-index: give one per --endpoint ({len(self.endpoint)} endpoints, {len(self.gpu_index)} GPU indices)")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < 1:
            raise UsageError("--kv-capacity-tokens must be >= 1")
        if self.idle_baseline_s < 0:
            raise UsageError("--idle-baseline-s must be >= 0 (0: no measured idle baseline)")
        from kairosbench.replay.profiling import check_profile_specs

        check_profile_specs(self.profile)
        for url in self.endpoint:
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"--endpoint {url}: expected an http:// or https:// base URL")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML / YAML / JSON config (or a run manifest) into run keys."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read config file: {exc.strerror}", path=str(path)) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(raw) or {}
        elif suffix == ".json":
            data = json.loads(raw)
        else:
            raise InputError("unknown config format; use .toml, .yaml/.yml or .json", path=str(path))
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        if line is None:
            line = getattr(exc, "lineno", None)
        else:
            line += 1
        raise InputError(f"not valid {suffix[1:].upper()}: {exc}", path=str(path), line=line) from exc
    if not isinstance(data, dict):
        raise InputError("a config file must hold a table/mapping of run keys", path=str(path))
    if "kairosbench_manifest_version" in data and isinstance(data.get("config"), dict):
        data = data["config"]
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    for alias, key in (("duration", "duration_s"),):
        if alias in out and key not in out:
            out[key] = out.pop(alias)
    known = set(RunConfig.keys())
    unknown = sorted(set(out) - known)
    if unknown:
        raise InputError(f"unknown key '{unknown[0]}'" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "") + "; keys are the run flags with '_' for '-'", path=str(path), field=unknown[0])
    return out
