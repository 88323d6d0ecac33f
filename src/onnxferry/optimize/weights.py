"""A model's initializers for the pruning passes: read once, replaced in a saved copy.

    weights = Weights(model, "prune_magnitude")
    w1 = weights.array("w1")                       # numpy, external data included
    path = ctx.scratch("prune_magnitude")
    pruned = weights.save({"w1": np.zeros_like(w1)}, path, shapes_changed=False)
    input_uses(model.proto.graph)["w1"]            # 1: only fc1 reads it

A weight is safe to rewrite only where ``input_uses`` counts every reader (subgraphs
included); ``save`` writes the copy inline, made valid for its IR version (``conform``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..graphs import subgraphs, walk_graphs
from ..model import Model
from .base import PassError
from .output import conform

if TYPE_CHECKING:
    import onnx

FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


class Weights:
    """The main graph's initializers of ``model``, read once (external data included), and
    the way to save a copy of the model with some of them replaced."""

    def __init__(self, model: Model, pass_name: str) -> None:
        self.model = model
        self.pass_name = pass_name
        self.protos = {t.name: t for t in model.proto.graph.initializer}
        self.arrays: dict[str, np.ndarray] = {}
        self.base_dir = str(model.path.parent) if model.path is not None else ""

    def array(self, name: str) -> np.ndarray:
        """The current value of initializer ``name`` (as edited so far)."""
        if name not in self.arrays:
            from onnx import numpy_helper

            try:
                self.arrays[name] = numpy_helper.to_array(self.protos[name], self.base_dir)
            except Exception as e:
                raise PassError(
                    f"{self.pass_name}: cannot read initializer {name!r} ({e})",
                    hint="check that the model's external data files are complete",
                ) from e
        return self.arrays[name]

    def save(self, replaced: dict[str, np.ndarray], path: Path, *, shapes_changed: bool) -> Model:
        """A new model at ``path``: the input with the ``replaced`` initializers, inline
        (``shapes_changed`` drops the value_info, which may be stale; onnx and ORT re-infer)."""
        proto = self.proto_with(replaced, shapes_changed=shapes_changed)
        return Model(proto, self.model.path, self.model.external_files).save(path)

    def proto_with(
        self, replaced: dict[str, np.ndarray], *, shapes_changed: bool
    ) -> onnx.ModelProto:
        """``save``'s proto, in memory: tensors not replaced keep their references to the
        input's external data (``graphs.inlined(weights.model, proto)`` reads them in)."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.ModelProto()
        proto.CopyFrom(self.model.proto)
        for tensor in proto.graph.initializer:
            if tensor.name in replaced:
                tensor.CopyFrom(numpy_helper.from_array(replaced[tensor.name], tensor.name))
        if shapes_changed:
            del proto.graph.value_info[:]
        conform(proto, self.model)
        return proto


def input_uses(graph: onnx.GraphProto) -> Counter[str]:
    """How often each name is read: node inputs, and (once) any use inside a subgraph."""
    uses = Counter(name for node in graph.node for name in node.input if name)
    uses.update(read_in_subgraphs(graph))
    return uses


def read_in_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Every name a node inside a subgraph of ``graph`` (at any depth) reads."""
    inner = (g for node in graph.node for sub in subgraphs(node) for g in walk_graphs(sub))
    return {name for g in inner for node in g.node for name in node.input}
