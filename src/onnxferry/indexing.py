"""Inputs whose values index an axis of another input: a graph network's edges and its nodes.

    index_links(proto)   # (IndexLink(index="edge_index", data="x", axis=0),)

A graph neural network (PyTorch Geometric's ``GCNConv``, ``GATConv``) takes node features
``x[nodes, 16]`` and an edge list ``edge_index[2, edges]`` whose values are rows of ``x``: they
reach a ``Gather`` (or ``GatherND``, ``GatherElements``, a scatter) whose data has ``nodes`` rows.
So generated edges must stay below the node count, and the rows of ``x`` are not a batch that
can be split (``Signature.row_axes``). Found by following each integer input through the ops
that keep its values (selections of its rows, transposes, concatenations) to an index
position whose data has a dim named as an input's dim; the data's shape comes from the
model's ``value_info`` or, where that lacks it, ONNX's shape inference (models under 256 MiB
of weights: it copies the model). An index into a constant (an embedding table) is a fixed
range (``feeds.ranges``), not a link.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

_INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}
"""TensorProto element types of integers (uint8 ... uint64)."""
_KEEPS_VALUES = {
    "Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand",
    "Tile", "Slice", "Split", "Gather", "GatherND", "GatherElements",
}  # fmt: skip
"""Ops whose first input's values come out unchanged (some of them, rearranged)."""
_INDEXES = {"Gather", "GatherElements", "GatherND", "ScatterElements", "Scatter", "ScatterND"}
"""Ops whose second input indexes an axis of the first."""
_UNNAMED = {"", "?", "None"}
_INFER_LIMIT = 256 * 2**20
"""Weights (bytes) past which a model's shapes are not inferred for its links."""


@dataclass(frozen=True)
class IndexLink:
    """Values of input ``index`` index axis ``axis`` of input ``data``: they lie in
    ``[0, data.shape[axis])``."""

    index: str
    data: str
    axis: int


def index_links(model: onnx.ModelProto) -> tuple[IndexLink, ...]:
    """The links of ``model``'s main graph, at most one per (index, data, axis)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {
        out for n in graph.node if n.op_type == "Constant" for out in n.output
    }
    inputs = [v for v in graph.input if v.name not in constants]
    integer = [v.name for v in inputs if v.type.tensor_type.elem_type in _INTEGER_TYPES]
    if not integer:
        return ()
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    symbols = {
        d.dim_param: (v.name, axis)
        for v in reversed(inputs)
        for axis, d in enumerate(v.type.tensor_type.shape.dim)
        if d.HasField("dim_param") and _named(d.dim_param)
    }
    if not symbols:
        return ()
    shapes = _Shapes(model)
    found: dict[tuple[str, str, int], IndexLink] = {}
    for name in integer:
        for data, axis, indices in _indexed(name, consumers, constants):
            if indices is not None and shapes.dim(indices, -1) != 1:
                continue  # GatherND's rows of several numbers: each indexes its own axis
            param = shapes.dim(data, axis)
            target = symbols.get(param) if isinstance(param, str) else None
            if target is not None and target[0] != name:
                found.setdefault((name, *target), IndexLink(name, *target))
    return tuple(found.values())


def _named(param: str) -> bool:
    return param.strip() not in _UNNAMED and not param.strip().lstrip("-").isdigit()


def _indexed(
    start: str, consumers: Mapping[str, list[onnx.NodeProto]], constants: set[str]
) -> list[tuple[str, int, str | None]]:
    """(data tensor, axis, the indices for an ND op) of every index position ``start``'s
    values reach unchanged, where the data is computed (not a constant)."""
    reached: list[tuple[str, int, str | None]] = []
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        tensor, depth = queue.popleft()
        for node in consumers.get(tensor, []):
            inputs = list(node.input)
            if node.op_type in _INDEXES and len(inputs) > 1 and inputs[1] == tensor:
                axis = _axis(node)
                if axis is not None and inputs[0] not in constants:
                    nd = node.op_type in ("GatherND", "ScatterND")
                    reached.append((inputs[0], axis, tensor if nd else None))
                continue
            keeps = (node.op_type in _KEEPS_VALUES and inputs[:1] == [tensor]) or (
                node.op_type == "Concat" or (node.op_type == "Where" and tensor in inputs[1:])
            )
            if keeps and depth < 16:
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        queue.append((out, depth + 1))
    return reached


def _axis(node: onnx.NodeProto) -> int | None:
    """The data axis an index op's indices address: the ND ops' first, without batch dims."""
    attrs: dict[str, int] = {a.name: int(a.i) for a in node.attribute}
    if node.op_type in ("GatherND", "ScatterND"):
        return 0 if attrs.get("batch_dims", 0) == 0 else None
    return attrs.get("axis", 0)


class _Shapes:
    """Declared shapes of a graph's tensors; ONNX's shape inference, once, for the rest."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model = model
        self._inferred = False
        self._dims = self._read(model.graph)

    @staticmethod
    def _read(graph: onnx.GraphProto) -> dict[str, list[str | int | None]]:
        infos = [*graph.input, *graph.output, *graph.value_info]
        return {
            v.name: [
                d.dim_param
                if d.HasField("dim_param")
                else d.dim_value
                if d.HasField("dim_value")
                else None
                for d in v.type.tensor_type.shape.dim
            ]
            for v in infos
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
        }

    def dim(self, tensor: str, axis: int) -> str | int | None:
        """The dim of ``tensor`` at ``axis`` (negative from the end): a name, a size or None."""
        if tensor not in self._dims and not self._inferred:
            self._inferred = True
            self._dims.update(self._infer())
        dims = self._dims.get(tensor)
        if dims is None or not -len(dims) <= axis < len(dims):
            return None
        return dims[axis]

    def _infer(self) -> dict[str, list[str | int | None]]:
        import onnx

        if sum(len(t.raw_data) for t in self._model.graph.initializer) > _INFER_LIMIT:
            return {}  # inference copies the model: not for every signature of a large one
        try:
            return self._read(onnx.shape_inference.infer_shapes(self._model).graph)
        except Exception:  # a graph ONNX's inference cannot follow: no shapes, no links
            return {}
