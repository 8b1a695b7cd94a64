"""An emulator started by a process that dies without stopping it (SIGKILL) exits by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_emulator_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "emulator.pid"
    owner = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from kairosbench.emulator.launch import EmulatorProcess
        emu = EmulatorProcess(1)
        emu.start(timeout_s=60)
        Path({str(pid_file)!r}).write_text(str(emu.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", owner])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            assert parent.poll() is None, "the owner process died before starting the emulator"
            time.sleep(0.1)
        emu_pid = int(pid_file.read_text())
        assert _alive(emu_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(emu_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(emu_pid), "the orphaned emulator kept running after its owner was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
