"""Every error a user can cause, in one tree, translated to a message at the CLI edge.

    KairosbenchError                exit 1: a runtime problem the user can fix
    ├── UsageError                  exit 2: a bad flag or flag combination
    ├── InputError                  exit 1: a bad input file (names file, line/row, field)
    │   └── WorkloadError           a workload that cannot be read or is inconsistent
    ├── EndpointError               an endpoint that cannot be reached or answers nonsense
    ├── TelemetryError              NVML / exporter problems (permissions, missing GPU)
    └── ActuatorError               a clock change that was refused or could not be undone

Raise these anywhere; only ``kairosbench.cli`` prints them and exits. Messages say what is
wrong, where, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "KairosbenchError",
    "UsageError",
    "InputError",
    "WorkloadError",
    "EndpointError",
    "TelemetryError",
    "ActuatorError",
]


class KairosbenchError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(KairosbenchError):
    exit_code = 2


class InputError(KairosbenchError):
    """A bad input file. Carries where, so the message can point at the exact spot."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.line, self.row, self.field, self.reason = path, line, row, field, message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


class WorkloadError(InputError):
    pass


class EndpointError(KairosbenchError):
    pass


class TelemetryError(KairosbenchError):
    pass


class ActuatorError(KairosbenchError):
    pass
