"""One record per Parquet column: its Arrow type, unit and meaning.

Every table kairosbench writes (requests, sessions, power, engine, control) declares its
columns with ``Column``, so the Parquet schema, the field metadata and the docs come from one
place and carry units.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["Column"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its Arrow type, its unit ("" when unitless) and what it means."""

    name: str
    type: pa.DataType
    unit: str
    doc: str
