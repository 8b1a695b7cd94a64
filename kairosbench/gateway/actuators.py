"""Clock actuators: the emulator's clock control, NVML (explicit opt-in only), and a dry run.

The base class owns every rule; subclasses supply only the three primitive operations
(read the lock, set a lock, reset), as Zeus's ``ZeusdNVIDIAGPU`` overrides only its setters:

* **Idempotent.** ``apply`` changes nothing when the requested clock is already in force, so
  a policy may repeat its decision every epoch at no cost.
* **Read before write.** The first change records what was there before, in memory and in
  the write-ahead state file (``actuator_state``), so ``restore`` puts back the original,
  not "some default", and a SIGKILLed gateway can be undone by ``kairosbench gateway restore``.
* **Logged.** Every change goes to the ``kairosbench.gateway`` logger with before and after.
* **Undone explicitly.** ``restore`` is called from the gateway's ``finally`` (never from
  ``__del__``); it is safe to call twice.

NVML changes need root (or CAP_SYS_ADMIN) and touch a real, possibly shared, GPU: the NVML
actuator refuses to exist without ``allow_real_clock_changes=True`` (CLI:
``--actuator nvml --allow-real-clock-changes``). Without it, a real GPU gets ``DryRunActuator``,
which logs what it would have set.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from typing import Any

import aiohttp

from kairosbench.errors import ActuatorError, UsageError
from kairosbench.gateway.actuator_state import ActuatorStateFile, StateEntry

__all__ = ["ClockActuator", "EmulatorClockActuator", "NvmlClockActuator", "DryRunActuator", "ACTUATOR_KINDS", "restore_from_state"]

log = logging.getLogger("kairosbench.gateway")

ACTUATOR_KINDS = ("auto", "emulator", "nvml", "dry-run")
_UNREAD = object()


class ClockActuator:
    """Locks one GPU's SM clock. Subclasses implement ``_read_locked``, ``_lock`` and ``_reset``."""

    kind = "abstract"
    changes_hardware = False  # True where a change reaches a real or emulated GPU

    def __init__(self, target: str, state: ActuatorStateFile | None = None) -> None:
        self.target = target
        self.state = state
        self._original: Any = _UNREAD  # the lock in force before our first change
        self._current: Any = _UNREAD  # what is in force now, as far as we know
        self.changes = 0

    # -- primitives -----------------------------------------------------------------------------
    async def _read_locked(self) -> int | None:
        raise NotImplementedError

    async def _lock(self, mhz: int) -> None:
        raise NotImplementedError

    async def _reset(self) -> None:
        raise NotImplementedError

    # -- rules ----------------------------------------------------------------------------------
    @property
    def current_mhz(self) -> int | None:
        return None if self._current is _UNREAD else self._current

    @property
    def touched(self) -> bool:
        return self._original is not _UNREAD

    async def apply(self, mhz: int | None) -> bool:
        """Lock ``mhz`` (None: reset to the default governor). Returns True if a change was made."""
        if self._current is _UNREAD:
            self._current = await self._read_locked()
        if mhz == self._current:
            return False
        if self._original is _UNREAD:
            self._original = self._current
        if self.state is not None and self.changes_hardware:
            self.state.record(StateEntry(self.kind, self.target, self._original, mhz, os.getpid()))
        before = self._current
        if mhz is None:
            await self._reset()
        else:
            await self._lock(mhz)
        self._current = mhz
        self.changes += 1
        log.info("%s %s: SM clock %s -> %s", self.kind, self.target, _show(before), _show(mhz))
        return True

    async def restore(self) -> None:
        """Put back the clock found before the first change (no-op if nothing was changed)."""
        if self._original is _UNREAD:
            return
        original = self._original
        if self._current != original:
            if original is None:
                await self._reset()
            else:
                await self._lock(original)
            log.info("%s %s: SM clock restored to %s", self.kind, self.target, _show(original))
            self._current = original
        if self.state is not None and self.changes_hardware:
            self.state.clear(self.kind, self.target)
        self._original = _UNREAD

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "changes": self.changes, "current_mhz": self.current_mhz}


def _show(mhz: int | None) -> str:
    return "default (unlocked)" if mhz is None else f"{mhz} MHz"


class EmulatorClockActuator(ClockActuator):
    """The emulator's control API: ``POST /kairosbench/gpu/clocks`` and ``DELETE`` to reset."""

    kind = "emulator"
    changes_hardware = True

    def __init__(self, base_url: str, session: aiohttp.ClientSession, state: ActuatorStateFile | None = None, *, timeout_s: float = 5.0) -> None:
        super().__init__(base_url.rstrip("/"), state)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _call(self, method: str, path: str, json_body: dict | None = None) -> Any:
        url = self.target + path
        try:
            async with self._session.request(method, url, json=json_body, timeout=self._timeout) as r:
                body = await r.json(content_type=None)
                if r.status >= 400:
                    msg = (body or {}).get("error", {}).get("message", body) if isinstance(body, dict) else body
                    raise ActuatorError(f"{method} {url} refused (HTTP {r.status}): {msg}")
                return body
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ActuatorError(f"{method} {url} failed: {exc.__class__.__name__}: {exc}") from exc

    async def _read_locked(self) -> int | None:
        gpu = await self._call("GET", "/kairosbench/gpu")
        locked = gpu.get("locked_clock_mhz")
        return int(locked) if locked is not None else None

    async def _lock(self, mhz: int) -> None:
        await self._call("POST", "/kairosbench/gpu/clocks", {"sm_clock_mhz": int(mhz)})

    async def _reset(self) -> None:
        await self._call("DELETE", "/kairosbench/gpu/clocks")


class NvmlClockActuator(ClockActuator):
    """``nvmlDeviceSetGpuLockedClocks(h, f, f)`` / ``nvmlDeviceResetGpuLockedClocks(h)``; opt-in only.

    NVML has no getter for a locked-clock range, so the state before our first change is
    taken to be "unlocked" and ``restore`` resets; this is what Zeus does too. ``nvml`` is
    the ``pynvml`` module or a fake with the same three functions (tests).
    """

    kind = "nvml"
    changes_hardware = True

    def __init__(self, gpu_index: int, *, allow_real_clock_changes: bool = False, state: ActuatorStateFile | None = None, nvml: Any = None) -> None:
        if not allow_real_clock_changes:
            raise UsageError(
                "the NVML actuator changes a real GPU's clocks (root needed; other users of the GPU are affected): "
                "pass --allow-real-clock-changes to opt in, or use --actuator dry-run"
            )
        super().__init__(str(gpu_index), state)
        if nvml is None:
            nvml = importlib.import_module("pynvml")  # only on the opt-in path
        self._nvml = nvml
        self.gpu_index = gpu_index
        from kairosbench.profiler.nvml_errors import translate  # noqa: PLC0415

        self._translate = translate
        with translate("nvmlInit", gpu=gpu_index):
            nvml.nvmlInit()
        with translate("nvmlDeviceGetHandleByIndex", gpu=gpu_index):
            self._handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)

    async def _read_locked(self) -> int | None:
        return None

    def _call(self, name: str, *args: Any) -> None:
        try:
            with self._translate(name, gpu=self.gpu_index):
                getattr(self._nvml, name)(self._handle, *args)
        except Exception as exc:  # translated NVML error -> the actuator's error class
            raise ActuatorError(f"GPU {self.gpu_index}: {exc}") from exc

    async def _lock(self, mhz: int) -> None:
        self._call("nvmlDeviceSetGpuLockedClocks", int(mhz), int(mhz))

    async def _reset(self) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks")


class DryRunActuator(ClockActuator):
    """Changes nothing; logs what it would have set. The default wherever a real GPU is involved."""

    kind = "dry-run"

    async def _read_locked(self) -> int | None:
        return None

    async def _lock(self, mhz: int) -> None:
        log.info("dry-run %s: would lock SM clock at %d MHz", self.target, mhz)

    async def _reset(self) -> None:
        log.info("dry-run %s: would reset SM clock", self.target)


async def restore_from_state(state_path: "os.PathLike[str] | str", *, nvml: Any = None) -> list[str]:
    """Undo every clock change a state file lists (after a SIGKILLed gateway). Returns what was done.

    Restoring only undoes what kairosbench itself recorded having changed, so it needs no
    opt-in flag of its own; for NVML entries it still needs the privileges the change needed.
    """
    state = ActuatorStateFile(state_path)  # type: ignore[arg-type]
    done: list[str] = []
    async with aiohttp.ClientSession(trust_env=False) as session:
        for entry in state.load():
            actuator: ClockActuator
            if entry.kind == "emulator":
                actuator = EmulatorClockActuator(entry.target, session, state)
            elif entry.kind == "nvml":
                actuator = NvmlClockActuator(int(entry.target), allow_real_clock_changes=True, state=state, nvml=nvml)
            else:
                raise ActuatorError(f"{state.path}: unknown actuator kind {entry.kind!r} for {entry.target}")
            actuator._original = entry.original_locked_mhz
            actuator._current = entry.applied_mhz
            await actuator.restore()
            done.append(f"{entry.kind} {entry.target}: SM clock back to {_show(entry.original_locked_mhz)} (was {_show(entry.applied_mhz)})")
    return done
