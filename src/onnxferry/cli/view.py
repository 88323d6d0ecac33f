"""`ferry graph` and `ferry view`: a model's graph as a file, or in Netron.

    ferry graph model.onnx -o graph.svg                  # .svg, .png or .dot
    ferry graph model.onnx -o graph.png --mark h2 --around 1
    ferry graph model.onnx -o diff.svg --diff model.onnx

Both are shells over the ``view`` package: ``draw`` and ``render``, and ``view`` (Netron).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..view.graph import DEFAULT_MAX_NODES
from .options import report_options
from .render import emit
from .types import PORT


@click.command(name="graph")
@click.argument("model")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The drawing: .svg, .png, or .dot for the DOT text (written atomically).",
)
@click.option(
    "--diff",
    "other",
    metavar="OTHER",
    help="The model before an optimization: MODEL's new nodes green, changed ones orange.",
)
@click.option("--mark", multiple=True, metavar="TENSOR", help="Show a tensor in red (repeatable).")
@click.option(
    "--around",
    type=click.IntRange(min=0),
    help="Draw only the nodes within this many steps of the --mark tensors.",
)
@click.option(
    "--max-nodes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_NODES,
    show_default=True,
    help="Larger graphs are drawn around --mark only.",
)
@report_options
def graph_command(
    model: str,
    output: Path,
    other: str | None,
    mark: tuple[str, ...],
    around: int | None,
    max_nodes: int,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Draw MODEL's graph offline with Graphviz: operators with their weights, tensor shapes
    on the edges, subgraphs as clusters."""
    from ..report import Report
    from ..view import draw, render

    drawing = draw(model, mark=mark, diff=other, around=around, max_nodes=max_nodes)
    render(drawing, output)
    if as_json or report_path is not None:
        report = Report("graph", drawing.drawn_to(output), notes=list(drawing.notes))
        emit(report, as_json, report_path)
    if not as_json:
        click.echo(f"graph: {output} ({drawing.summary()})")
    return 0


@click.command(name="view")
@click.argument("model")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (Netron also serves the files beside the model).",
)
@click.option(
    "--port",
    type=PORT,
    help="Port to listen on (default: 8080, 8081 or a free one).",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser; print the address.")
def view_command(model: str, host: str, port: int | None, no_browser: bool) -> int:
    """Open MODEL in Netron on this machine; Ctrl-C stops it."""
    from ..view import Viewer, view

    def ready(viewer: Viewer) -> None:
        click.echo(f"netron: {viewer.url} (Ctrl-C stops)")

    view(model, host=host, port=port, browse=not no_browser, ready=ready)
    return 0
