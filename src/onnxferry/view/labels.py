"""The nodes, clusters and edges of a drawing, with their Graphviz labels and colours.

    labels = Labels(Inventory.of(model), model.proto, marks={"h2"}, diff=None, keep=None)
    root = labels.build()          # Box: node statements and nested clusters
    labels.edges                   # (tail, head, attributes), drawn at the top level

Labels are Graphviz HTML labels: every name from the model is escaped. A node's id is "op:" and
its site key; inputs, outputs and stubs (a tensor whose producer is not drawn) have their own
prefixes, so no name from the model can clash with another.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from .diff import NodeDiff
from .inventory import Inventory, Site, child_graphs

if TYPE_CHECKING:
    import onnx

MARK = "#d32f2f"
"""Marked tensors: their edges, producers and weight rows."""

ADDED = "#c8e6c9"
"""Fill of a node the other model lacks."""

CHANGED = "#ffe0b2"
"""Fill of a node that differs from its match in the other model."""

OP_FILL = "#f5f5f5"
INPUT_FILL = "#e3f2fd"
OUTPUT_FILL = "#ede7f6"
NAME_LIMIT = 48
LEGEND_LIMIT = 400

Attrs = dict[str, str]


@dataclass
class Box:
    """A graph or cluster: its node statements and the clusters inside it."""

    name: str
    label: str = ""
    nodes: list[tuple[str, Attrs]] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


class Labels:
    """Builds the boxes and edges of one drawing (see the module)."""

    def __init__(
        self,
        inventory: Inventory,
        proto: onnx.ModelProto,
        marks: set[str],
        diff: NodeDiff | None,
        keep: set[str] | None,
    ) -> None:
        self.inventory = inventory
        self.proto = proto
        self.marks = marks
        self.diff = diff
        self.keep = keep
        self.edges: list[tuple[str, str, Attrs]] = []
        self._boxes: dict[str, Box] = {}
        self._graphs: dict[str, onnx.GraphProto] = {}
        self._inputs: dict[str, str] = {}  # tensor -> path of the graph it is an input of
        self._ids: dict[str, str] = {}  # "op:KEY", "in:TENSOR", ... -> "n0", "n1", ...
        self._opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}

    def node_id(self, key: str) -> str:
        """The DOT id for ``key`` ("op:3", "in:x"): model names can hold ":" (a port in DOT)."""
        return self._ids.setdefault(key, f"n{len(self._ids)}")

    def build(self) -> Box:
        root = Box("root")
        self._add_graph("", self.proto.graph, root)
        for site in self.inventory.drawn:
            if self._drawn(site.key):
                self._add_site(site)
        for path, graph in self._graphs.items():
            self._add_outputs(path, graph)
        return root

    # --- graphs, sites, outputs ------------------------------------------------------------

    def _drawn(self, key: str) -> bool:
        return key not in self.inventory.folded and (self.keep is None or key in self.keep)

    def _add_graph(self, path: str, graph: onnx.GraphProto, box: Box) -> None:
        self._boxes[path] = box
        self._graphs[path] = graph
        for value in graph.input:
            if value.name in self.inventory.weights:
                continue  # an initializer listed as an input (IR < 4): a weight
            self._inputs[value.name] = path
            if self.keep is None:
                self._input(value.name)

    def _add_site(self, site: Site) -> None:
        node = site.node
        box = self._boxes[f"{site.parent}/{site.graph}" if site.parent else ""]
        node_id = self.node_id(f"op:{site.key}")
        box.nodes.append((node_id, self._op_attrs(site)))
        for tensor in node.input:
            if tensor and tensor not in self.inventory.weights:
                self._edge(self._source(tensor), node_id, tensor)
        for name, graph in child_graphs(node):
            title = f"{node.op_type} {node.name}".strip()
            child = Box(f"cluster_{site.key}/{name}", f"<{html_text(f'{title}: {name}')}>")
            box.boxes.append(child)
            self._add_graph(f"{site.key}/{name}", graph, child)

    def _add_outputs(self, path: str, graph: onnx.GraphProto) -> None:
        for value in graph.output:
            tensor = value.name
            producer = self.inventory.producer.get(tensor)
            if self.keep is not None and not (
                (producer and self._drawn(producer)) or f"in:{tensor}" in self._ids
            ):
                continue
            out_id = self.node_id(f"out:{path}:{tensor}")
            color = MARK if tensor in self.marks else "#555555"
            self._boxes[path].nodes.append(
                (
                    out_id,
                    _io(tensor, self.inventory.types.get(tensor, ""), OUTPUT_FILL, color, "house"),
                )
            )
            self._edge(self._source(tensor), out_id, tensor)
            if path:
                owner = path.rsplit("/", 1)[0]
                owner_id = self.node_id(f"op:{owner}")
                self.edges.append((out_id, owner_id, {"style": "dashed", "arrowhead": "empty"}))

    # --- ends of edges ---------------------------------------------------------------------

    def _source(self, tensor: str) -> str:
        """The id of what an edge carrying ``tensor`` starts at (made if needed)."""
        producer = self.inventory.producer.get(tensor)
        if producer is not None and self._drawn(producer):
            return self.node_id(f"op:{producer}")
        if producer is None and tensor in self._inputs:
            return self._input(tensor)
        if f"stub:{tensor}" not in self._ids:
            stub = self.node_id(f"stub:{tensor}")
            weight = self.inventory.weights.get(tensor)
            label = html_text(f"{tensor} {weight.text}") if weight else "…"
            shape = "note" if weight else "plaintext"
            self._boxes[""].nodes.append((stub, {"label": f"<{label}>", "shape": shape}))
        return self.node_id(f"stub:{tensor}")

    def _input(self, tensor: str) -> str:
        if f"in:{tensor}" not in self._ids:
            node_id = self.node_id(f"in:{tensor}")
            color = MARK if tensor in self.marks else "#555555"
            text = self.inventory.types.get(tensor, "")
            self._boxes[self._inputs[tensor]].nodes.append(
                (node_id, _io(tensor, text, INPUT_FILL, color, "invhouse"))
            )
        return self.node_id(f"in:{tensor}")

    def _edge(self, tail: str, head: str, tensor: str) -> None:
        text = self.inventory.types.get(tensor, "")
        label = html_text(tensor) + (f"<BR/>{html_text(text)}" if text else "")
        attrs = {"label": f"<{label}>", "tooltip": _tip(tensor)}
        if tensor in self.marks:
            attrs |= {"color": MARK, "fontcolor": MARK, "penwidth": "2.5"}
        self.edges.append((tail, head, attrs))

    # --- an operator's label ---------------------------------------------------------------

    def _op_attrs(self, site: Site) -> Attrs:
        node = site.node
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        lines = [f"<B>{html_text(op)}</B>"]
        if node.name and node.name != node.op_type:
            lines.append(f'<FONT POINT-SIZE="9">{html_text(node.name)}</FONT>')
        tips = [node.name or node.op_type]
        marked = any(t in self.marks for t in node.output)
        for slot, tensor in enumerate(node.input):
            weight = self.inventory.weights.get(tensor)
            if weight is None:
                continue
            formal = self._formal(node, slot)
            color = MARK if tensor in self.marks else "#555555"
            marked |= tensor in self.marks
            row = html_text(f"{formal} {weight.text}")
            lines.append(f'<FONT POINT-SIZE="9" COLOR="{color}">{row}</FONT>')
            tips.append(f"{formal} = {tensor}")
        fill = OP_FILL
        if self.diff is not None:
            if site.key in self.diff.added:
                fill = ADDED
                lines.append('<FONT POINT-SIZE="9"><I>added</I></FONT>')
            elif site.key in self.diff.changed:
                fill = CHANGED
                why = self.diff.changed[site.key]
                lines.append(f'<FONT POINT-SIZE="9"><I>changed: {html_text(why)}</I></FONT>')
        attrs = {
            "label": "<" + "<BR/>".join(lines) + ">",
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": fill,
            "tooltip": _tip("; ".join(tips)),
        }
        if marked:
            attrs |= {"color": MARK, "penwidth": "3"}
        return attrs

    def _formal(self, node: onnx.NodeProto, slot: int) -> str:
        """The schema's name for input ``slot`` ("W" for Conv's weight), else the tensor's."""
        domain = node.domain or "ai.onnx"
        names = _formal_inputs(node.op_type, domain, self._opsets.get(domain, 0))
        if not names:
            return _short(node.input[slot])
        return names[min(slot, len(names) - 1)]


@cache
def _formal_inputs(op_type: str, domain: str, opset: int) -> tuple[str, ...]:
    import onnx

    try:
        schema = onnx.defs.get_schema(
            op_type, opset or onnx.defs.onnx_opset_version(), "" if domain == "ai.onnx" else domain
        )
    except onnx.defs.SchemaError:
        return ()
    return tuple(formal.name for formal in schema.inputs)


def legend(marks: Iterable[str], diff: NodeDiff | None, notes: Iterable[str]) -> str:
    """The legend's HTML table: the diff's counts, the marked tensors, the notes."""
    rows = []
    if diff is not None:
        rows.append(f'<TR><TD BGCOLOR="{ADDED}">added: {len(diff.added)}</TD></TR>')
        rows.append(f'<TR><TD BGCOLOR="{CHANGED}">changed: {len(diff.changed)}</TD></TR>')
        gone = ", ".join(diff.removed[:8]) + (", …" if len(diff.removed) > 8 else "")
        removed = f"removed: {len(diff.removed)}" + (f" ({gone})" if gone else "")
        rows.append(f"<TR><TD>{html_text(removed, LEGEND_LIMIT)}</TD></TR>")
    marked = html_text(", ".join(marks), LEGEND_LIMIT)
    if marked:
        rows.append(f'<TR><TD><FONT COLOR="{MARK}">marked: {marked}</FONT></TD></TR>')
    rows.extend(
        f'<TR><TD><FONT POINT-SIZE="9">{html_text(n, LEGEND_LIMIT)}</FONT></TD></TR>' for n in notes
    )
    return (
        '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
        + "".join(rows)
        + "</TABLE>>"
    )


def _io(tensor: str, text: str, fill: str, color: str, shape: str) -> Attrs:
    label = f"<B>{html_text(tensor)}</B>" + (
        f'<BR/><FONT POINT-SIZE="9">{html_text(text)}</FONT>' if text else ""
    )
    width = "3" if color == MARK else "1"
    return {
        "label": f"<{label}>",
        "shape": shape,
        "style": "filled",
        "fillcolor": fill,
        "color": color,
        "penwidth": width,
        "tooltip": _tip(tensor),
    }


def _tip(text: str) -> str:
    """A tooltip: DOT reads backslashes in it as escapes."""
    return text.replace("\\", "\\\\")


def _short(text: str, limit: int = NAME_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def html_text(text: str, limit: int = NAME_LIMIT) -> str:
    """Model text for an HTML label: shortened past ``limit``, escaped, control characters
    out."""
    clean = "".join(c if c.isprintable() else " " for c in _short(text, limit))
    return html.escape(clean, quote=False)
