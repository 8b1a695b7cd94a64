"""Shared plotting pieces for the report's figures: the figure block, colours, layout, compact JSON.

Figures are plotly JSON embedded in the report. Numbers are stored compactly: plotly encodes
numpy arrays as base64 typed arrays, and float arrays are narrowed to float32 (about 1 ms of
time resolution at 3 hours, 0.01 W at 1 kW), which halves a long run's data.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["FigureBlock", "RUN_COLORS", "INSTANCE_COLORS", "INSTANCE_DASHES", "figure_json", "to_dict", "layout", "run_color", "seconds_text"]

RUN_COLORS: tuple[str, ...] = tuple(qualitative.D3)
INSTANCE_COLORS: tuple[str, ...] = tuple(qualitative.Dark2)
INSTANCE_DASHES: tuple[str, ...] = ("solid", "dot", "dash", "dashdot", "longdash", "longdashdot")
_FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


@dataclass
class FigureBlock:
    """One figure of the report with its caption."""

    id: str
    title: str
    caption: str
    figure: dict[str, Any] | None
    missing: list[str] = field(default_factory=list)  # labels of runs without this data
    empty_message: str = ""

    @property
    def json(self) -> str:
        """The figure as JSON safe to embed in a ``<script>`` element."""
        return figure_json(self.figure) if self.figure is not None else "null"


def figure_json(figure: dict[str, Any]) -> str:
    """JSON text that cannot close the ``<script>`` element it is embedded in."""
    return json.dumps(figure, separators=(",", ":")).replace("</", "<\\/")


def _f32(encoded: Any) -> Any:
    """A plotly base64 float64 array as float32: half the bytes, still ~1 ms resolution at 3 h and 0.01 W at 1 kW."""
    if not (isinstance(encoded, dict) and encoded.get("dtype") == "f8" and isinstance(encoded.get("bdata"), str)):
        return encoded
    values = np.frombuffer(base64.b64decode(encoded["bdata"]), dtype="<f8")
    if values.size <= 16:
        return encoded
    return {**encoded, "dtype": "f4", "bdata": base64.b64encode(values.astype("<f4").tobytes()).decode("ascii")}


def to_dict(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON data (plotly's encoder turns numpy arrays into base64 typed arrays)."""
    spec: dict[str, Any] = json.loads(fig.to_json())
    for trace in spec["data"]:
        for key in ("x", "y"):
            if key in trace:
                trace[key] = _f32(trace[key])
    return spec


def layout(fig: go.Figure, *, height: int, **extra: Any) -> go.Figure:
    settings: dict[str, Any] = {
        "template": "plotly_white", "height": height, "margin": {"l": 70, "r": 30, "t": 40, "b": 55},
        "font": {"family": _FONT, "size": 12}, "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
    }
    settings.update(extra)
    fig.update_layout(**settings)
    return fig


def seconds_text(width_s: float) -> str:
    """A bin width for a caption: ``20 ms`` or ``5.4 s``."""
    return f"{width_s * 1e3:.0f} ms" if width_s < 1.0 else f"{width_s:.3g} s"


def run_color(i: int) -> str:
    return RUN_COLORS[i % len(RUN_COLORS)]
