"""Integer inputs that index a table: the values a generated id may take.

    index_ranges(model.proto, model.signature)   # {"input_ids": (0, 30522)}

Generated ids are drawn inside these ranges (``values.realistic_feeds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..model import iter_graphs, iter_nodes
from ..signature import Signature

if TYPE_CHECKING:
    import onnx

_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Clip"}
"""Ops an index input may go through on its way to a Gather, keeping its values."""


def index_ranges(proto: onnx.ModelProto, signature: Signature) -> dict[str, tuple[int, int]]:
    """Integer inputs that index a table: input name -> (0, rows of the smallest table).

    Follows each integer input through casts and reshapes to ``Gather`` nodes whose data is
    an initializer or a ``Constant``; the rows are that tensor's size along the Gather axis.
    """
    tables = _constant_dims(proto)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in iter_nodes(proto):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranges: dict[str, tuple[int, int]] = {}
    for spec in signature.inputs:
        if spec.dtype.kind != "int":
            continue
        rows = _rows(spec.name, consumers, tables, depth=0)
        if rows:
            ranges[spec.name] = (0, min(rows))
    return ranges


def _rows(
    tensor: str,
    consumers: Mapping[str, list[onnx.NodeProto]],
    tables: Mapping[str, tuple[int, ...]],
    depth: int,
) -> list[int]:
    if depth > 8:
        return []
    found = []
    for node in consumers.get(tensor, []):
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
            dims = tables.get(node.input[0])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                found.append(int(dims[axis]))
        elif node.op_type in _PASS_THROUGH and node.input and node.input[0] == tensor:
            for out in node.output:
                found += _rows(out, consumers, tables, depth + 1)
    return found


def _constant_dims(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of initializers and Constant node outputs, by tensor name."""
    dims: dict[str, tuple[int, ...]] = {}
    for graph in iter_graphs(proto):
        for t in graph.initializer:
            dims[t.name] = tuple(t.dims)
    for node in iter_nodes(proto):
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    dims[node.output[0]] = tuple(attr.t.dims)
    return dims
