"""Every exit path undoes the clock changes, proven against the emulator: normal end, exception,
cancellation, SIGTERM, SIGINT (Ctrl-C); after SIGKILL, `kairosbench gateway restore` does."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pandas as pd
import pytest

from kairosbench.gateway.launch import running_gateway

pytestmark = pytest.mark.timeout(120)
launch = pytest.importorskip("kairosbench.emulator.launch")


async def locked_clock(url: str) -> int | None:
    async with aiohttp.ClientSession() as s, s.get(url + "/kairosbench/gpu") as r:
        return (await r.json())["locked_clock_mhz"]


async def wait_for(predicate, timeout_s: float = 30.0) -> None:
    """Poll an async predicate (bounded); the subprocess needs a moment to import and start."""
    for _ in range(int(timeout_s / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_normal_end_and_exception_restore(tmp_path: Path) -> None:
    async with launch.running_emulator(2) as urls:
        async with running_gateway(urls, "static:900", tmp_path / "a", epoch_s=0.05):
            assert [await locked_clock(u) for u in urls] == [900, 900]
        assert [await locked_clock(u) for u in urls] == [None, None]
        with pytest.raises(RuntimeError, match="boom"):
            async with running_gateway(urls, "static:810", tmp_path / "b", epoch_s=0.05):
                assert await locked_clock(urls[0]) == 810
                raise RuntimeError("boom")
        assert [await locked_clock(u) for u in urls] == [None, None]
        assert not (tmp_path / "b" / "actuator-state.json").exists()


async def test_cancellation_restores(tmp_path: Path) -> None:
    async with launch.running_emulator(1) as urls:
        entered = asyncio.Event()

        async def serve() -> None:
            async with running_gateway(urls, "static:900", tmp_path, epoch_s=0.05):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(serve())
        await asyncio.wait_for(entered.wait(), 30)
        assert await locked_clock(urls[0]) == 900
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await locked_clock(urls[0]) is None


async def start_gateway_process(url: str, run_dir: Path, policy: str = "static:900") -> asyncio.subprocess.Process:
    ready = run_dir.parent / (run_dir.name + ".ready")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kairosbench.cli", "gateway", "-e", url, "--policy", policy, "--epoch-s", "0.1",
        "--port", "0", "--run-dir", str(run_dir), "--ready-file", str(ready),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )

    async def up() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"gateway exited early: {(await proc.stderr.read()).decode()[-2000:]}")
        return ready.exists() and await locked_clock(url) == 900

    await wait_for(up)
    assert json.loads(ready.read_text())["url"].startswith("http://127.0.0.1:")
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_restores_clock(tmp_path: Path, sig: signal.Signals) -> None:
    async with launch.running_emulator(1) as urls:
        run_dir = tmp_path / "run"
        proc = await start_gateway_process(urls[0], run_dir)
        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 60)
        err = (await proc.stderr.read()).decode()
        assert rc == 0, err
        assert "clocks" in err and "restored" in err
        assert await locked_clock(urls[0]) is None
        assert not (run_dir / "actuator-state.json").exists()
        control = pd.read_parquet(run_dir / "control.parquet")
        assert (control["target_clock_mhz"] == 900).all() and control["clock_changed"].any()


async def test_sigkill_leaves_a_state_file_that_restore_undoes(tmp_path: Path) -> None:
    async with launch.running_emulator(1) as urls:
        run_dir = tmp_path / "run"
        proc = await start_gateway_process(urls[0], run_dir)
        proc.kill()  # SIGKILL: no code runs, the clock stays locked ...
        await asyncio.wait_for(proc.wait(), 30)
        assert await locked_clock(urls[0]) == 900
        state = json.loads((run_dir / "actuator-state.json").read_text())
        assert state["entries"][0]["applied_mhz"] == 900 and state["entries"][0]["original_locked_mhz"] is None
        # ... until `kairosbench gateway restore` reads the write-ahead state file.
        restore = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kairosbench.cli", "gateway", "restore", "--run-dir", str(run_dir), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(restore.communicate(), 60)
        assert restore.returncode == 0 and b"restored emulator" in out
        assert await locked_clock(urls[0]) is None
        assert not (run_dir / "actuator-state.json").exists()
