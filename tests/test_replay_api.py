"""The curated public API of kairosbench.replay resolves, and stays light to import."""

from __future__ import annotations

import subprocess
import sys

import kairosbench.replay as replay


def test_every_exported_name_resolves() -> None:
    for name in replay.__all__:
        assert getattr(replay, name) is not None, name


def test_flow_import_stays_light() -> None:
    code = "import sys, kairosbench.replay.flow; print('aiohttp' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
