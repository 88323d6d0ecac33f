"""A model's graph for Graphviz: one node per operator with its weights folded into its label,
tensor names and shapes on the edges, inputs and outputs as their own shapes, If/Loop/Scan
bodies as clusters; marked tensors in red, and the nodes a pass added or changed filled.

    drawing = draw("model.onnx")                          # a Drawing; drawing.source is DOT
    drawing = draw("model.onnx", mark=["h2"])             # h2's edges and producer in red
    drawing = draw("model.onnx", mark=["h2"], around=1)   # only nodes within 1 step of h2
    drawing = draw("model.onnx", diff="model.onnx")       # added / changed against another
    drawing.summary()                                     # "6 of 6 nodes; marked h2"
    drawing.drawn_to(Path("graph.svg")).to_dict()        # what `ferry graph --json` prints

Past ``max_nodes`` nodes a graph is not drawn whole: with marks, the nodes around them are
(the widest neighbourhood up to 3 steps that fits), else InputError says what to do.
``render`` (render.py) turns a Drawing into SVG or PNG.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from ..model import Model
from ..report import Table
from .diff import NodeDiff, diff_nodes
from .inventory import Inventory
from .labels import Box, Labels, html_text, legend

DEFAULT_MAX_NODES = 2000
"""Nodes past which a whole graph is not drawn (dot takes minutes, nobody reads it)."""

WIDEST = 3
"""The most steps around marked tensors drawn when a graph is past ``max_nodes``."""


@dataclass
class Drawing:
    """A model's graph as Graphviz ``dot`` (a graphviz.Digraph) and what it shows."""

    dot: Any
    model: str
    total: int  # operator nodes in the model (folded Constants aside)
    drawn: int
    marked: tuple[str, ...] = ()
    diff: NodeDiff | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The DOT text."""
        return str(self.dot.source)

    def drawn_to(self, output: Path) -> DrawnGraph:
        """The drawing as written to ``output``: the report body of ``ferry graph``."""
        return DrawnGraph(self, output)

    def summary(self) -> str:
        """One line: how many nodes, what is marked, what changed."""
        parts = [f"{self.drawn} of {self.total} nodes"]
        if self.marked:
            parts.append(f"marked {', '.join(self.marked)}")
        if self.diff is not None:
            parts.append(self.diff.summary())
        return "; ".join(parts)


@dataclass(frozen=True)
class DrawnGraph:
    """A drawing and the file it went to (a ReportBody)."""

    drawing: Drawing
    output: Path
    ok = True

    def to_dict(self) -> dict[str, Any]:
        diff = self.drawing.diff
        return {
            "model": self.drawing.model,
            "output": str(self.output),
            "nodes": self.drawing.total,
            "drawn": self.drawing.drawn,
            "marked": list(self.drawing.marked),
            "diff": None
            if diff is None
            else {
                "added": sorted(diff.added),
                "changed": dict(diff.changed),
                "removed": list(diff.removed),
            },
        }

    def tables(self) -> list[Table]:
        row = (str(self.output), self.drawing.total, self.drawing.drawn, self.drawing.summary())
        return [Table(f"graph {self.drawing.model}", ("output", "nodes", "drawn", "shows"), [row])]


def draw(
    model: str | Path | Model,
    *,
    mark: Iterable[str] = (),
    diff: str | Path | Model | None = None,
    around: int | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Drawing:
    """The graph of ``model`` (see the module). ``mark`` names tensors to show in red (its
    edges, its producer, a weight's consumers); ``diff`` is the model to compare with (the one
    before a pass): nodes of ``model`` it lacks are filled green, changed ones orange, and the
    legend counts the nodes it has that ``model`` lost. ``around`` draws only the nodes within
    that many steps of the marked tensors."""
    graphviz = _graphviz()
    loaded = _as_model(model)
    inventory = Inventory.of(loaded)
    marks = _checked_marks(mark, inventory, loaded.name)
    notes = list(inventory.notes)
    found = None
    if diff is not None:
        other = _as_model(diff)
        found = diff_nodes(inventory, Inventory.of(other, types=False))
        notes.insert(0, f"against {other.path or other.name}")
    total = len(inventory.drawn)
    keep = _kept(inventory, marks, around, max_nodes, loaded.name, notes)
    labels = Labels(inventory, loaded.proto, set(marks), found, keep)
    root = labels.build()
    dot = graphviz.Digraph(name=loaded.name)
    dot.attr(
        "graph",
        label=f"<<B>{html_text(loaded.name)}</B>>",
        labelloc="t",
        fontname="Helvetica",
        rankdir="TB",
    )
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    _emit(dot, root)
    for tail, head, attrs in labels.edges:
        dot.edge(tail, head, **attrs)
    if marks or found is not None or notes:
        dot.node("legend", label=legend(marks, found, notes), shape="plaintext")
    drawn = total if keep is None else len(keep)
    return Drawing(dot, loaded.name, total, drawn, tuple(marks), found, notes)


def neighbourhood(inventory: Inventory, marks: Iterable[str], steps: int) -> set[str]:
    """Keys of the drawn sites within ``steps`` of the marked tensors' producers and
    consumers, with the nodes whose subgraphs hold them."""
    sites = {s.key: s for s in inventory.drawn}
    frontier: set[str] = set()
    for tensor in marks:
        frontier.add(inventory.producer.get(tensor, ""))
        frontier.update(inventory.consumers.get(tensor, ()))
    frontier &= sites.keys()
    keep = set(frontier)
    for _ in range(steps):
        reached: set[str] = set()
        for key in frontier:
            node = sites[key].node
            reached.update(inventory.producer.get(t, "") for t in node.input)
            for tensor in node.output:
                reached.update(inventory.consumers.get(tensor, ()))
        frontier = (reached & sites.keys()) - keep
        keep |= frontier
    for key in list(keep):
        parent = sites[key].parent
        while parent:
            keep.add(parent)
            parent = sites[parent].parent
    return keep


def _kept(
    inventory: Inventory,
    marks: list[str],
    around: int | None,
    max_nodes: int,
    name: str,
    notes: list[str],
) -> set[str] | None:
    """The keys to draw (None: all), after the node limit."""
    total = len(inventory.drawn)
    if around is not None and not marks:
        raise UsageError("--around needs a tensor to draw around", hint="add --mark TENSOR")
    if around is None and total > max_nodes:
        if not marks:
            raise InputError(
                f"{name} has {total} nodes, more than the {max_nodes} drawn at once (--max-nodes)",
                hint="open it in Netron (ferry view MODEL), draw around a tensor "
                "(--mark TENSOR --around 2), or raise --max-nodes",
            )
        fits = [
            s for s in range(WIDEST, -1, -1) if len(neighbourhood(inventory, marks, s)) <= max_nodes
        ]
        around = fits[0] if fits else 0
    if around is None:
        return None
    keep = neighbourhood(inventory, marks, around)
    if len(keep) > max_nodes:
        raise InputError(
            f"{len(keep)} nodes of {name} lie within {around} steps of "
            f"{', '.join(marks)}, more than the {max_nodes} drawn at once (--max-nodes)",
            hint="give a smaller --around, or raise --max-nodes",
        )
    notes.append(
        f"showing {len(keep)} of {total} nodes, within {around} steps of {', '.join(marks)}"
    )
    return keep


def _checked_marks(mark: Iterable[str], inventory: Inventory, name: str) -> list[str]:
    marks = list(dict.fromkeys(mark))
    known = inventory.tensors()
    for tensor in marks:
        if tensor not in known:
            close = difflib.get_close_matches(tensor, sorted(known), n=3, cutoff=0.5)
            raise InputError(
                f"tensor {tensor!r} is not in {name}",
                hint=f"did you mean {', '.join(map(repr, close))}?"
                if close
                else "the graph's edges show its tensor names (ferry graph MODEL -o graph.svg)",
            )
    return marks


def _emit(container: Any, box: Box) -> None:
    for node_id, attrs in box.nodes:
        container.node(node_id, **attrs)
    for child in box.boxes:
        with container.subgraph(name=child.name) as sub:
            sub.attr(label=child.label, style="rounded,dashed", color="#888888", fontsize="10")
            _emit(sub, child)


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError:
        raise UsageError(
            "drawing a graph needs the graphviz package, which is not installed",
            hint="pip install 'onnxferry[view]'",
        ) from None
    return graphviz


def _as_model(value: str | Path | Model) -> Model:
    return value if isinstance(value, Model) else Model.load(value)
