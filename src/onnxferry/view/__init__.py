"""Seeing a model: its graph drawn offline with Graphviz, or served interactively by Netron.

    drawing = draw("model.onnx", mark=["h2"])         # operators, shapes, folded weights
    render(drawing, "graph.svg")                       # or .png, .dot
    render(draw("model.onnx", diff="model.onnx"), "diff.svg")   # what a pass changed
    svg, note = marked_figure("model.onnx", "h2")     # for a report: inline SVG, or why not

``ferry graph`` and ``ferry view`` (cli/view.py) wrap ``draw`` + ``render`` and ``view``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FerryError
from ..model import Model
from .diff import NodeDiff, diff_nodes
from .graph import DEFAULT_MAX_NODES, Drawing, draw, neighbourhood
from .netron import Viewer, start_viewer, view
from .render import FORMATS, GraphvizMissing, inline_svg, render

FIGURE_NODES = 60
"""Nodes past which a report's figure shows only the neighbourhood of the marked tensor."""


def marked_figure(
    model: str | Path | Model, tensor: str, *, max_nodes: int = FIGURE_NODES
) -> tuple[str | None, str | None]:
    """(inline SVG of ``model`` with ``tensor`` marked, None), or (None, why there is none):
    a report draws what it can and says what it cannot. A graph past ``max_nodes`` shows the
    widest neighbourhood of ``tensor`` that fits."""
    try:
        return inline_svg(draw(model, mark=[tensor], max_nodes=max_nodes)), None
    except FerryError as e:
        return None, f"graph of {tensor!r} not drawn: {e}"


__all__ = [
    "DEFAULT_MAX_NODES",
    "FORMATS",
    "Drawing",
    "GraphvizMissing",
    "NodeDiff",
    "Viewer",
    "diff_nodes",
    "draw",
    "inline_svg",
    "marked_figure",
    "neighbourhood",
    "render",
    "start_viewer",
    "view",
]
