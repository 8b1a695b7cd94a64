"""NVML errors translated once, here, into kairosbench's error tree.

    TelemetryError                     (kairosbench.errors)
    ├── NvmlUnavailable                no library, no driver, no GPU: run on without GPU telemetry
    ├── NvmlPermissionDenied           NVML_ERROR_NO_PERMISSION: the message names the call and the fix
    ├── NvmlSignalUnsupported          NVML_ERROR_NOT_SUPPORTED / FUNCTION_NOT_FOUND: stop reading that signal
    └── NvmlReadFailed                 anything else (GPU lost, timeout, unknown): counted, the poll goes on

``NVML_ERROR_NOT_FOUND`` from ``nvmlDeviceGetSamples`` is not an error at all (no sample newer
than the timestamp given); callers catch it through :func:`is_not_found` before translating.

Use :func:`translate` as a context manager around every NVML call::

    with translate("nvmlDeviceGetSamples", gpu=0):
        nvml.nvmlDeviceGetSamples(handle, nvml.NVML_TOTAL_POWER_SAMPLES, last_us)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pynvml

from kairosbench.errors import TelemetryError

__all__ = [
    "NvmlUnavailable",
    "NvmlPermissionDenied",
    "NvmlSignalUnsupported",
    "NvmlReadFailed",
    "translate",
    "is_not_found",
    "error_code",
]


class NvmlUnavailable(TelemetryError):
    """NVML cannot be used on this machine at all (no library, no driver, no GPU)."""


class NvmlPermissionDenied(TelemetryError):
    """The driver refused a read; the message says which call and what access is missing."""


class NvmlSignalUnsupported(TelemetryError):
    """This GPU or driver does not offer this signal; the sampler stops asking for it."""


class NvmlReadFailed(TelemetryError):
    """A read failed for another reason (GPU lost, timeout, unknown); counted, polling goes on."""


_UNAVAILABLE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found: install the NVIDIA driver, or use --source emulator:URL",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded (is this a machine with an NVIDIA GPU?)",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "the NVML library and the kernel driver versions differ: reboot or reload the driver",
    pynvml.NVML_ERROR_GPU_NOT_FOUND: "no GPU was found",
}
_UNSUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT}


def error_code(exc: BaseException) -> int | None:
    """The NVML return code carried by a pynvml exception (None for anything else)."""
    value = getattr(exc, "value", None)
    return value if isinstance(exc, pynvml.NVMLError) and isinstance(value, int) else None


def is_not_found(exc: BaseException) -> bool:
    """True for NVML_ERROR_NOT_FOUND: from nvmlDeviceGetSamples it means "nothing new yet"."""
    return error_code(exc) == pynvml.NVML_ERROR_NOT_FOUND


def _message(call: str, gpu: int | None, code: int | None, exc: BaseException) -> str:
    where = f"{call}" + (f" on GPU {gpu}" if gpu is not None else "")
    return f"NVML {where} failed: {exc} (NVML return code {code})"


@contextmanager
def translate(call: str, *, gpu: int | None = None) -> Iterator[None]:
    """Turn a pynvml exception raised inside the block into one of the classes above."""
    try:
        yield
    except pynvml.NVMLError as exc:
        code = error_code(exc)
        if code in _UNAVAILABLE:
            raise NvmlUnavailable(f"NVML is unavailable: {_UNAVAILABLE[code]} ({call})") from exc
        if code == pynvml.NVML_ERROR_NO_PERMISSION:
            raise NvmlPermissionDenied(
                f"NVML refused {call}" + (f" on GPU {gpu}" if gpu is not None else "")
                + ": no permission. Reading telemetry needs read/write access to /dev/nvidiactl and /dev/nvidia<N> "
                "(usually membership of the 'video' group, or the container started with the GPU exposed)"
            ) from exc
        if code in _UNSUPPORTED:
            raise NvmlSignalUnsupported(_message(call, gpu, code, exc)) from exc
        raise NvmlReadFailed(_message(call, gpu, code, exc)) from exc
    except OSError as exc:  # pynvml raises plain OSError variants if the shared library is broken
        raise NvmlUnavailable(f"NVML is unavailable: {exc} ({call})") from exc
