"""kairosbench: replay agent workloads, profile GPU power, evaluate power policies (KAIROS)."""

from kairosbench.errors import (
    ActuatorError,
    EndpointError,
    InputError,
    KairosbenchError,
    TelemetryError,
    UsageError,
    WorkloadError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ActuatorError",
    "EndpointError",
    "InputError",
    "KairosbenchError",
    "TelemetryError",
    "UsageError",
    "WorkloadError",
]
