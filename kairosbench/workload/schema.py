"""The on-disk workload schema: one row per turn, session columns repeated on every row.

Why one flat table: a researcher should be able to open a workload with nothing but pandas
or duckdb (``SELECT agent_kind, avg(output_tokens) FROM 'w.parquet' GROUP BY 1``), so the
file holds no nesting beyond the optional ``prefix_hashes`` list and no kairosbench types.
Repeating the four session columns costs little: Parquet dictionary-encodes them.

Every column is declared once here, with its unit and meaning; the reader, the writer, the
validator and docs/workload-format.md all follow this table. Bump ``SCHEMA_VERSION`` when a
column changes meaning or type; adding an optional column does not need a bump.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "META_SCHEMA_VERSION",
    "META_WORKLOAD",
    "ColumnSpec",
    "COLUMNS",
    "COLUMN_BY_NAME",
    "REQUIRED_COLUMNS",
    "SESSION_COLUMNS",
    "ARROW_SCHEMA",
    "DEFAULT_TOKEN_COUNT_METHOD",
]

SCHEMA_VERSION = "1"
# Parquet key-value metadata keys (JSONL: keys of the optional header line).
META_SCHEMA_VERSION = "kairosbench.schema_version"
META_WORKLOAD = "kairosbench.workload"

# What a file without a token_count_method column is assumed to hold: the least trustworthy
# label, so nothing downstream claims more precision than the file can back.
DEFAULT_TOKEN_COUNT_METHOD = "estimate"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: its name (unit suffixed), logical kind, nullability, unit and meaning.

    ``kind`` is one of ``str``, ``int``, ``float``, ``int_list``; it drives both the Parquet
    type check and the JSONL value check. ``required`` columns must be present in a file;
    optional ones are filled with ``default`` when absent.
    """

    name: str
    kind: str
    arrow_type: pa.DataType
    nullable: bool
    required: bool
    unit: str
    description: str
    session_level: bool = False
    default: Any = None


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("session_id", "str", pa.string(), False, True, "-",
               "Stable id of the agent session, unique within the workload.", session_level=True),
    ColumnSpec("agent_kind", "str", pa.string(), False, True, "-",
               "What kind of agent: swe, de, chat, ... (free text, lower case by convention).",
               session_level=True),
    ColumnSpec("arrival_s", "float", pa.float64(), False, True, "s",
               "When the session's first request is due, seconds from workload start.",
               session_level=True),
    ColumnSpec("source", "str", pa.string(), False, False, "-",
               "Where the session came from: an importer format and file, or 'generated:<kind>'.",
               session_level=True, default=""),
    ColumnSpec("turn_index", "int", pa.int32(), False, True, "-",
               "0-based position of the turn in its session; 0, 1, 2, ... with no gaps."),
    ColumnSpec("prompt_tokens", "int", pa.int64(), True, False, "tokens",
               "Prompt size the real request had (whole context); null: derive from the chain "
               "prompt[t] = prompt[t-1] + output[t-1] + appended[t]."),
    ColumnSpec("appended_tokens", "int", pa.int64(), False, True, "tokens",
               "Tokens this turn adds to the context (new user/tool content); turn 0: system "
               "prompt plus task."),
    ColumnSpec("output_tokens", "int", pa.int64(), False, True, "tokens",
               "Tokens the model generated in this turn."),
    ColumnSpec("tool_name", "str", pa.string(), True, False, "-",
               "Tool the agent ran after this turn (bash, edit, sql, ...); null: none."),
    ColumnSpec("tool_duration_s", "float", pa.float64(), False, True, "s",
               "How long that tool ran: the gap between this turn's reply and the next request."),
    ColumnSpec("text", "str", pa.string(), True, False, "-",
               "Real appended messages where known: a JSON list of OpenAI-style messages."),
    ColumnSpec("output_text", "str", pa.string(), True, False, "-",
               "Real assistant reply text where known."),
    ColumnSpec("prefix_hashes", "int_list", pa.list_(pa.int64()), True, False, "-",
               "Prefix-block hash chain of the prompt where known (Mooncake: 512-token blocks)."),
    ColumnSpec("token_count_method", "str", pa.string(), False, False, "-",
               "Where the token counts came from: usage | tokenizer | generated | estimate.",
               default=DEFAULT_TOKEN_COUNT_METHOD),
)

COLUMN_BY_NAME: dict[str, ColumnSpec] = {c.name: c for c in COLUMNS}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
SESSION_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.session_level)

ARROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in COLUMNS])
