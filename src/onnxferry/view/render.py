"""A Drawing to a file or to inline SVG, through Graphviz's ``dot`` with a time limit.

    render(draw("model.onnx"), "graph.svg")           # .svg, .png, or .dot (the DOT text)
    svg = inline_svg(draw("model.onnx", mark=["h2"]))  # "<svg ...>...</svg>" for a page

Files are written atomically. A missing ``dot`` is GraphvizMissing (exit 2) with the command
that installs it; a ``dot`` that fails or runs past ``timeout`` seconds is one line too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..atomic import write_bytes_atomic
from ..errors import InputError, UsageError, one_line
from .graph import Drawing

FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}
"""File suffix -> what is written ("dot": the DOT text, no Graphviz needed)."""

DOT_TIMEOUT = 120.0
"""Seconds ``dot`` may take to lay out one graph."""


class GraphvizMissing(InputError):
    """Graphviz's ``dot`` program is not on PATH."""


def render(drawing: Drawing, path: str | Path, *, timeout: float = DOT_TIMEOUT) -> Path:
    """Write ``drawing`` to ``path`` in the format its suffix names (``FORMATS``)."""
    target = Path(path)
    kind = FORMATS.get(target.suffix.lower())
    if kind is None:
        raise UsageError(
            f"{target}: cannot tell what to draw from the suffix {target.suffix or '(none)'!r}",
            hint=f"name the file {', '.join(FORMATS)}",
        )
    data = drawing.source.encode() if kind == "dot" else run_dot(drawing, kind, timeout)
    return write_bytes_atomic(target, data)


def inline_svg(drawing: Drawing, *, timeout: float = DOT_TIMEOUT) -> str:
    """The drawing as an ``<svg>`` element (no XML prolog), to put inside an HTML page."""
    text = run_dot(drawing, "svg", timeout).decode("utf-8", errors="replace")
    return text[text.find("<svg") :]


def dot_program() -> str:
    """The path of ``dot``; GraphvizMissing when it is not installed."""
    found = shutil.which("dot")
    if found is None:
        raise GraphvizMissing(
            "Graphviz's dot is not installed",
            hint="apt-get install graphviz (brew install graphviz on macOS), or write .dot",
        )
    return found


def run_dot(drawing: Drawing, kind: str, timeout: float = DOT_TIMEOUT) -> bytes:
    """``dot -T<kind>`` over the drawing's DOT text; its output."""
    command = [dot_program(), f"-T{kind}"]
    try:
        done = subprocess.run(
            command,
            input=drawing.source.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"Graphviz's dot did not lay out {drawing.drawn} nodes of {drawing.model} in "
            f"{timeout:g} s",
            hint="draw fewer (--mark TENSOR --around 2, --max-nodes), or open the model in "
            "Netron (ferry view MODEL)",
        ) from None
    if done.returncode != 0 or not done.stdout:
        problem = one_line(done.stderr.decode(errors="replace"), line="last") or "no output"
        raise InputError(
            f"Graphviz's dot failed on the graph of {drawing.model} "
            f"(exit {done.returncode}): {problem}",
            hint="write .dot to see the text it was given, and report it",
        )
    return done.stdout
