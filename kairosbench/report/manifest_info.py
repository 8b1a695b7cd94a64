"""Header facts from a run's ``manifest.json``: workload, time scale, hardware, telemetry, versions.

The report compares these across runs (``metrics.comparability_warnings``) and shows them in
its header, so each is reduced to a value that is equal when the setting is: e.g. telemetry
sources become kinds (``emulator × 2``), because their URLs carry ports that differ per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run_info"]


def _endpoints(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoints a run drove: ``endpoints`` (kairosbench run) or ``endpoint`` (a Locust process)."""
    many = manifest.get("endpoints")
    if isinstance(many, list):
        return [e for e in many if isinstance(e, dict)]
    one = manifest.get("endpoint")
    return [one] if isinstance(one, dict) else []


def _hardware(manifest: dict[str, Any]) -> str:
    services = manifest.get("services") or {}
    emulator = services.get("emulator")
    config = manifest.get("config") or {}
    if emulator:
        return f"{emulator.get('instances', '?')} × emulated {emulator.get('gpu', '?')}"
    if "endpoint" in config and not config.get("endpoint") and config.get("emulator_gpu"):
        # the embedded emulator of a run killed before its services were recorded
        return f"{config.get('instances') or 1} × emulated {config['emulator_gpu']}"
    gpus = manifest.get("gpu") or []
    names = [str(g["name"]) for g in gpus if isinstance(g, dict) and g.get("name")]
    endpoints = len(config.get("endpoint") or []) or len(_endpoints(manifest))
    where = f"{endpoints} endpoint{'s' if endpoints != 1 else ''}"
    if names:
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        local = ", ".join(f"{c} × {n}" for n, c in counts.items())
        return f"{where}; this host: {local}"
    return f"{where} (GPU not recorded)"


def _telemetry_kinds(sources: list[Any]) -> str | None:
    """``["emulator:http://127.0.0.1:8001", "emulator:http://..."]`` -> ``emulator × 2`` (URLs differ per run)."""
    counts: dict[str, int] = {}
    for source in sources:
        kind = str(source).split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{k} × {n}" if n > 1 else k for k, n in counts.items()) or None


def run_info(manifest: dict[str, Any], run_dir: Path, policy: str, status: str) -> dict[str, Any]:
    """The header facts of one run (None where the manifest does not say)."""
    config = manifest.get("config") or {}
    effective = manifest.get("effective") or {}
    workload = manifest.get("workload") or {}
    services = manifest.get("services") or {}
    emulator = services.get("emulator") or {}
    endpoints = _endpoints(manifest)
    embedded = "endpoint" in config and not config.get("endpoint")  # no --endpoint: kairosbench run's own emulator
    model = (emulator.get("model") or (config.get("emulator_model") if embedded else None) or config.get("model")
             or next((e.get("model") for e in endpoints if e.get("model")), None))
    profiler = services.get("profiler") or {}
    meta = workload.get("meta") or {}
    return {
        "source": "run",
        "run_dir": str(run_dir),
        "policy": policy,
        "status": status,
        "error": manifest.get("error"),
        "workload_name": meta.get("name") or (Path(workload["path"]).stem if workload.get("path") else None),
        "workload_path": workload.get("path"),
        "workload_sha256": workload.get("sha256"),
        "workload_sessions": workload.get("sessions"),
        "time_scale": effective.get("time_scale", config.get("time_scale")),
        "arrival": effective.get("arrival", config.get("arrival")),
        "max_sessions": config.get("max_sessions"),
        "duration_limit_s": config.get("duration_s"),
        "instances": (emulator.get("instances") or (config.get("instances") if embedded else None)
                      or len(config.get("endpoint") or []) or len(endpoints) or None),
        "driver": manifest.get("driver") or "kairosbench run",
        "hardware": _hardware(manifest),
        "model": model,
        "slo_tok_s": effective.get("slo_tok_s", config.get("slo_tok_s")),
        "start": manifest.get("start"),
        "end": manifest.get("end"),
        "versions": manifest.get("versions") or {},
        "host": (manifest.get("host") or {}).get("hostname"),
        "telemetry": _telemetry_kinds(profiler.get("sources") or []),
        "epoch_s": config.get("epoch_s") if config.get("policy") else None,
    }
