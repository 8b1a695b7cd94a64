"""The write-ahead record of every clock the gateway has locked, for undoing them after a SIGKILL.

An actuator writes an entry here *before* it changes a clock and removes it after it has
restored the clock, so at any instant the file lists every clock that may be left changed.
Normal exit, exceptions, Ctrl-C and SIGTERM restore clocks in the gateway's own ``finally``;
only SIGKILL (or a power cut, or an OOM kill) leaves entries behind, and
``kairosbench gateway restore --run-dir DIR`` (``restore_from_state``) undoes them.

Writes are atomic (temporary file + ``os.replace``), so a kill mid-write leaves the old,
still-valid file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from kairosbench.errors import InputError

__all__ = ["StateEntry", "ActuatorStateFile", "STATE_FILE_NAME"]

STATE_FILE_NAME = "actuator-state.json"


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One clock the gateway changed: how to reach it and what to put back."""

    kind: str  # emulator | nvml
    target: str  # emulator base URL, or the NVML GPU index as a string
    original_locked_mhz: int | None  # None: the clock was unlocked (default governor) before we touched it
    applied_mhz: int | None  # what we last set
    pid: int  # the gateway process that wrote it


class ActuatorStateFile:
    """The JSON file of outstanding clock changes (``{"entries": [...]}``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[StateEntry]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [StateEntry(**e) for e in data.get("entries", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"not a kairosbench actuator state file ({exc})", path=str(self.path)) from None

    def _save(self, entries: list[StateEntry]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"entries": [asdict(e) for e in entries]}, indent=1))
        os.replace(tmp, self.path)

    def record(self, entry: StateEntry) -> None:
        """Add or replace the entry for (kind, target); call before changing the clock."""
        entries = [e for e in self.load() if (e.kind, e.target) != (entry.kind, entry.target)]
        entries.append(entry)
        self._save(entries)

    def clear(self, kind: str, target: str) -> None:
        """Drop the entry for (kind, target); call after the clock is restored."""
        entries = self.load()
        kept = [e for e in entries if (e.kind, e.target) != (kind, target)]
        if len(kept) != len(entries):
            self._save(kept)
