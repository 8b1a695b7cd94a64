"""How often each signal really changed: the measured update period written into power.parquet.

Polling faster than a signal updates only repeats values, so the file says, per column, how
often it was read (``poll_period_s``: median spacing of the rows that carry it) and how often
the value actually moved (``update_period_s``: median spacing between observed changes). For
a signal that moves at every hardware update (instant power) the latter is the update period;
for one that can hold still (clocks at a lock, temperature) it is an upper bound. Buffer rows
get ``sample_period_s`` (median spacing of the driver's samples).

Pure: a pyarrow table in, a JSON-able dict out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kairosbench.profiler.schema import KIND_BUFFER, SIGNAL_COLUMNS

__all__ = ["update_periods", "gpu_groups"]


def gpu_groups(table: pa.Table) -> tuple[np.ndarray, list[tuple[str, int, str]]]:
    """Row -> group code, and the (host, gpu, source) of each code, in first-seen order."""
    key = pc.binary_join_element_wise(table["host"], pc.cast(table["gpu"], pa.string()), table["source"], "\x1f")
    encoded = (key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key).dictionary_encode()
    groups = []
    for name in encoded.dictionary.to_pylist():
        host, gpu, source = name.split("\x1f")
        groups.append((host, int(gpu), source))
    return encoded.indices.to_numpy(zero_copy_only=False), groups


def _median_diff_s(t_ns: np.ndarray) -> float | None:
    if len(t_ns) < 2:
        return None
    return float(np.median(np.diff(t_ns))) / 1e9


def _column_periods(t_ns: np.ndarray, values: np.ndarray) -> dict[str, Any] | None:
    present = ~np.isnan(values)
    ts, vs = t_ns[present], values[present]
    if len(ts) == 0:
        return None
    changed = np.nonzero(vs[1:] != vs[:-1])[0] + 1
    span_s = (ts[-1] - ts[0]) / 1e9 if len(ts) > 1 else 0.0
    return {
        "poll_period_s": _median_diff_s(ts),
        "update_period_s": _median_diff_s(ts[changed]),
        "changes_per_s": (len(changed) / span_s) if span_s > 0 else None,
        "rows": int(len(ts)),
    }


def update_periods(table: pa.Table) -> dict[str, Any]:
    """Measured periods per GPU and column, plus the median over GPUs per column."""
    if table.num_rows == 0:
        return {"update_periods": {"columns": {}, "per_gpu": {}}}
    codes, groups = gpu_groups(table)
    names = [f"{host}/{gpu}/{source}" for host, gpu, source in groups]
    t_ns = table["t_ns"].to_numpy()
    is_buffer = pc.equal(table["kind"], KIND_BUFFER).to_numpy(zero_copy_only=False)
    columns = {c: pc.cast(table[c], pa.float64()).to_numpy(zero_copy_only=False) for c in SIGNAL_COLUMNS}

    per_gpu: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(names):
        in_group = codes == code
        poll = in_group & ~is_buffer
        entry: dict[str, Any] = {}
        for column, values in columns.items():
            periods = _column_periods(t_ns[poll], values[poll])
            if periods is not None:
                entry[column] = periods
        buffer_t = t_ns[in_group & is_buffer]
        if len(buffer_t):
            entry["buffer"] = {"sample_period_s": _median_diff_s(buffer_t), "rows": int(len(buffer_t))}
        per_gpu[name] = entry

    summary: dict[str, Any] = {}
    for column in (*SIGNAL_COLUMNS, "buffer"):
        found = [g[column] for g in per_gpu.values() if column in g]
        if not found:
            continue
        out: dict[str, Any] = {}
        for stat in ("poll_period_s", "update_period_s", "sample_period_s"):
            vals = [f[stat] for f in found if f.get(stat) is not None]
            if vals:
                out[stat] = float(np.median(vals))
        summary[column] = out
    return {"update_periods": {"columns": summary, "per_gpu": per_gpu}}
