"""``manifest.json``: what ran, on what, with which settings, and how it ended.

Written twice: at the start with ``status: "running"`` (so a killed run is recognisable) and
at the end with ``completed``, ``interrupted`` or ``failed``. Always written atomically (temp
file + rename). Host and GPU probes never raise: a field they cannot fill is ``null``.
API keys never appear (only the environment variable's name, inside ``config``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_VERSION", "write_manifest", "read_manifest", "host_info", "gpu_info", "versions", "file_sha256", "iso_from_ns"]

MANIFEST_VERSION = 1
_PACKAGES = ("kairosbench", "aiohttp", "pyarrow", "pandas", "numpy", "rich", "click", "tokenizers", "nvidia-ml-py")


def iso_from_ns(t_ns: int) -> str:
    return dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    mem_bytes: int | None = None
    try:
        mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_bytes": mem_bytes,
        "python_executable": sys.executable,
    }


def gpu_info() -> list[dict[str, Any]] | None:
    """The local NVIDIA GPUs via NVML, or None where there is no NVML/GPU (never raises)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            entry: dict[str, Any] = {"index": i, "name": pynvml.nvmlDeviceGetName(h), "driver": driver}
            for key, fn in (("uuid", pynvml.nvmlDeviceGetUUID), ("power_limit_mw", pynvml.nvmlDeviceGetPowerManagementLimit)):
                try:
                    entry[key] = fn(h)
                except Exception:
                    entry[key] = None
            gpus.append(entry)
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """Atomically write ``run_dir/manifest.json``."""
    path = Path(run_dir) / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"kairosbench_manifest_version": MANIFEST_VERSION, **manifest}, indent=2, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "manifest.json").read_text())
