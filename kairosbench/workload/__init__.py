"""Workloads: the model, the Parquet/JSONL format, importers, the generator and statistics."""

from kairosbench.workload.model import TOKEN_COUNT_METHODS, Session, Turn, Workload

__all__ = ["Session", "Turn", "Workload", "TOKEN_COUNT_METHODS"]
