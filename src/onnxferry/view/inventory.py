"""What a drawing needs to know about a model: every node with a stable key, the weights that
fold into their consumers, who produces and who consumes each tensor, and each tensor's type.

    inventory = Inventory.of(model)
    inventory.sites[0].key, inventory.sites[0].node.op_type     # "0", "MatMul"
    inventory.weights["w1"].text                                 # "⟨4x8⟩ float32"
    inventory.types["h1"]                                        # "⟨batchx8⟩ float32"
    inventory.producer["h1"], inventory.consumers["h1"]          # site keys

A node's key is its index in its graph, below its parent's key for a subgraph
("3/then_branch/0"), so two copies of one model have the same keys. A Constant node whose
outputs only nodes consume is a weight, not a site to draw. Tensor types come from onnx shape
inference on a copy without the large weights (their types are all it needs); when inference
fails, the types the model declares are used and ``notes`` says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import FeedError, one_line
from ..graphs import copy_model, iter_graphs
from ..safety import iter_tensors
from ..signature import TensorSpec, dtype_from_onnx

if TYPE_CHECKING:
    import onnx

    from ..model import Model

SMALL_TENSOR = 4096
"""Bytes of tensor data shape inference keeps (shape and axes tensors it reads); larger
weights lose their data in its copy."""

_CONSTANT_VALUES = {  # Constant's attributes besides value / sparse_value: (onnx type, rank)
    "value_float": (1, 0),
    "value_floats": (1, 1),
    "value_int": (7, 0),
    "value_ints": (7, 1),
    "value_string": (8, 0),
    "value_strings": (8, 1),
}


@dataclass(frozen=True)
class Site:
    """One node, where it sits: ``key`` (stable across copies), ``parent`` (the key of the node
    whose subgraph holds it; "" in the main graph) and ``graph`` (the attribute it sits in)."""

    key: str
    node: onnx.NodeProto
    parent: str = ""
    graph: str = ""


@dataclass(frozen=True)
class Weight:
    """A tensor fixed in the model: an initializer or a Constant node's value."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    tensor: onnx.TensorProto | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """E.g. "⟨64x3x3x3⟩ float32"; a scalar is "⟨⟩"."""
        return f"{dims_text(self.shape)} {self.dtype}"


@dataclass
class Inventory:
    """Sites, weights, producers, consumers and types of one model (see the module)."""

    sites: list[Site]
    weights: dict[str, Weight]
    folded: set[str]  # keys of the Constant sites that are weights
    producer: dict[str, str]  # tensor -> key of the site that outputs it
    consumers: dict[str, list[str]]  # tensor -> keys of the sites that take it
    types: dict[str, str]  # tensor -> "⟨batchx8⟩ float32"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, model: Model, *, types: bool = True) -> Inventory:
        """The inventory of ``model``; ``types=False`` skips shape inference (a diff's other
        model needs no types)."""
        proto = model.proto
        sites = list(walk(proto.graph))
        weights = {t.name: _weight(t.name, t) for g in iter_graphs(proto) for t in g.initializer}
        for graph in iter_graphs(proto):
            weights |= {s.values.name: _sparse(s.values.name, s) for s in graph.sparse_initializer}
        producer: dict[str, str] = {}
        consumers: dict[str, list[str]] = {}
        for site in sites:
            for name in site.node.output:
                if name:
                    producer[name] = site.key
            for name in site.node.input:
                if name:
                    consumers.setdefault(name, []).append(site.key)
        outputs = {o.name for g in iter_graphs(proto) for o in g.output}
        folded: set[str] = set()
        for site in sites:
            node = site.node
            weight = _constant(node)
            if weight is not None and node.output[0] not in outputs and not node.domain:
                weights[weight.name] = weight
                folded.add(site.key)
        inventory = cls(sites, weights, folded, producer, consumers, {})
        if types:
            inventory.types = _types(proto, inventory.notes)
        return inventory

    @property
    def drawn(self) -> list[Site]:
        """The sites a drawing shows: every node but the folded Constants."""
        return [s for s in self.sites if s.key not in self.folded]

    def tensors(self) -> set[str]:
        """Every tensor name the model mentions: inputs, outputs, weights, node ends."""
        return set(self.producer) | set(self.consumers) | set(self.weights) | set(self.types)


def walk(graph: onnx.GraphProto, parent: str = "", where: str = "") -> Iterator[Site]:
    """The sites of ``graph`` and of its subgraphs, each node before its subgraphs' nodes."""
    for index, node in enumerate(graph.node):
        key = f"{parent}/{where}/{index}" if parent else str(index)
        yield Site(key, node, parent, where)
        for name, sub in child_graphs(node):
            yield from walk(sub, key, name)


def child_graphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """(name as ``walk`` spells it, graph) for each subgraph of ``node``."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.name, attr.g
        for j, sub in enumerate(attr.graphs):
            yield f"{attr.name}[{j}]", sub


def dims_text(shape: tuple[int | str | None, ...] | None) -> str:
    """Dims between angle brackets: "⟨batchx8⟩", "?" for an unknown dim, "⟨?⟩" for an
    unknown rank."""
    if shape is None:
        return "⟨?⟩"
    return "⟨" + "x".join("?" if d is None else str(d) for d in shape) + "⟩"


def dtype_text(code: int) -> str:
    """An ONNX element type as numpy names it ("float32"); "string" and "undefined" else."""
    try:
        dtype = dtype_from_onnx(code)
    except FeedError:  # an element type onnxferry does not carry
        return f"type {code}"
    return dtype.onnx_name.lower() if dtype.numpy.kind == "O" else str(dtype.numpy)


def _weight(name: str, tensor: onnx.TensorProto) -> Weight:
    return Weight(name, dtype_text(tensor.data_type), tuple(int(d) for d in tensor.dims), tensor)


def _sparse(name: str, sparse: onnx.SparseTensorProto) -> Weight:
    dims = tuple(int(d) for d in sparse.dims)
    return Weight(name, dtype_text(sparse.values.data_type), dims)


def _constant(node: onnx.NodeProto) -> Weight | None:
    if node.op_type != "Constant" or len(node.output) != 1 or not node.output[0]:
        return None
    for attr in node.attribute:
        if attr.name == "value":
            return _weight(node.output[0], attr.t)
        if attr.name == "sparse_value":
            return _sparse(node.output[0], attr.sparse_tensor)
        if attr.name in _CONSTANT_VALUES:
            code, rank = _CONSTANT_VALUES[attr.name]
            count = len(attr.floats) + len(attr.ints) + len(attr.strings)
            return Weight(node.output[0], dtype_text(code), (count,) if rank else ())
    return None


def _types(proto: onnx.ModelProto, notes: list[str]) -> dict[str, str]:
    """Tensor name -> type text, from shape inference on a copy without large weight data."""
    import onnx

    light = copy_model(proto)
    for site in iter_tensors(light):
        if len(site.tensor.raw_data) > SMALL_TENSOR:
            site.tensor.ClearField("raw_data")
    try:
        light = onnx.shape_inference.infer_shapes(light)
    except Exception as e:  # onnx raises its own error types for models it cannot infer
        notes.append(
            f"shape inference failed ({one_line(e, 160, line='first')}); "
            "showing the types the model declares"
        )
    types: dict[str, str] = {}
    for graph in iter_graphs(light):
        for info in [*graph.input, *graph.value_info, *graph.output]:
            text = _type_text(info)
            if text:
                types.setdefault(info.name, text)
    return types


def _type_text(info: onnx.ValueInfoProto) -> str:
    kind = info.type.WhichOneof("value")
    if kind == "tensor_type":
        spec = TensorSpec.from_value_info(info)
        return f"{dims_text(spec.shape)} {dtype_text(info.type.tensor_type.elem_type)}"
    if kind is None:
        return ""
    return str(kind).removesuffix("_type")  # sequence, map, optional, sparse_tensor
