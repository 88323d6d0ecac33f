"""``prune_channels``' graph surgery: which layers can lose output channels, and the slices of
every consumer that keep the graph consistent when they do.

    follower = Follower(model.proto, Weights(model, "prune_channels"))
    node = model.proto.graph.node[0]                      # fc1: x @ w1, 8 output channels
    layer = follower.layer(node)                          # a Layer, or why it is not one
    edits = follower.follow(node.output[0], layer.axis, layer.rank, 8)   # or why not
    follower.absorbers                                    # the layers summing over them

A layer's channels are followed through elementwise ops, pools, norms, Transpose, reductions,
Softmax and Flatten (or Reshape to [0, -1]) to the layers that sum over them; anything else
(a residual Add, a Concat, another Reshape, a graph output, a subgraph) stops the surgery with
the reason, naming the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .output import DEFAULT_DOMAINS
from .weights import FLOAT_TYPES, Weights, input_uses, read_in_subgraphs

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Edit:
    """Slice initializer ``tensor`` along ``axis`` by the keep mask, each entry ``repeat`` times
    (a channel that Flatten spread over ``repeat`` features)."""

    tensor: str
    axis: int
    repeat: int = 1


@dataclass(frozen=True)
class Absorber:
    """A layer that sums over the followed channels: its node, its weight, the axis of the
    channels in that weight, and how many features each channel became (Flatten)."""

    node: onnx.NodeProto
    weight: str
    weight_axis: int
    repeat: int = 1


@dataclass
class Layer:
    """A prunable layer: its weight, the axis of its output channels there, the axis of the
    channels in its output tensor (of ``rank``), and its own edits (weight and bias)."""

    weight: str
    weight_axis: int
    axis: int
    rank: int
    edits: list[Edit] = field(default_factory=list)


_UNARY = frozenset(
    [
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Softplus",
        "Softsign",
        "Mish",
        "ThresholdedRelu",
        "Shrink",
        "Exp",
        "Log",
        "Abs",
        "Neg",
        "Sqrt",
        "Reciprocal",
        "Erf",
        "Sin",
        "Cos",
        "Identity",
        "Cast",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Clip",
        "Dropout",
    ]
)
"""Elementwise on input 0; other inputs (Clip's bounds, Dropout's ratio) are scalars."""

_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "PRelu"})

_POOLS = frozenset(
    ["MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]
)

_NORMS = {"BatchNormalization": 4, "InstanceNormalization": 2}

_REDUCE = frozenset(
    [
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceSum",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ]
)

_SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})


Step = tuple[list[Edit], list[tuple[str, int, int, int]]]
"""Edits of one consumer and the tensors it passes the channels on to: (name, axis, rank,
repeat)."""


class Follower:
    """Finds where a tensor's channels go: the consumers to slice, or why that is not safe."""

    def __init__(self, proto: onnx.ModelProto, weights: Weights) -> None:
        import onnx

        self.weights = weights
        self.graph = proto.graph
        self.opset = next(
            (int(o.version) for o in proto.opset_import if o.domain in DEFAULT_DOMAINS), 0
        )
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.graph.node:
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
        self.in_subgraphs = read_in_subgraphs(self.graph)
        self.uses = input_uses(self.graph)
        self.made_by = {out: node for node in self.graph.node for out in node.output}
        self.outputs = {o.name for o in self.graph.output}
        self.channels = 0
        self.absorbers: list[Absorber] = []
        """The layers the last ``follow`` found summing over the channels."""
        # Below IR 4 every initializer is listed as an input too, and ONNX Runtime holds them
        # constant: only from IR 4 does an initializer that is an input mean "overridable".
        self.graph_inputs = {i.name for i in self.graph.input} if proto.ir_version >= 4 else set()
        self.dims: dict[str, list[int | None]] = {}
        try:
            graph = onnx.shape_inference.infer_shapes(proto).graph
        except Exception:  # onnx's InferenceError; then only declared shapes are known
            graph = proto.graph
        for info in [*graph.input, *graph.value_info, *graph.output]:
            tensor_type = info.type.tensor_type
            if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                self.dims[info.name] = [
                    int(d.dim_value) if d.HasField("dim_value") else None
                    for d in tensor_type.shape.dim
                ]

    # --- producers ---------------------------------------------------------------------

    def layer(self, node: onnx.NodeProto) -> Layer | str:
        """The prunable layer ``node`` is, or why it is not one."""
        weight = node.input[1] if len(node.input) > 1 else ""
        if not self.owned(weight):
            return self._why_not_owned(weight)
        shape = self.weights.array(weight).shape
        if node.op_type == "Conv":
            if attribute(node, "group", 1) != 1:
                return "grouped or depthwise convolution"
            rank = len(self.dims.get(node.output[0]) or self.dims.get(node.input[0]) or [])
            if rank < 3:
                return "the rank of its output is unknown (run shape inference)"
            layer = Layer(weight, 0, 1, rank)
            bias = node.input[2] if len(node.input) > 2 else ""
        elif node.op_type == "Gemm":
            if len(shape) != 2:
                return "its weight is not a matrix"
            trans_b = attribute(node, "transB", 0)
            layer = Layer(weight, 0 if trans_b else 1, 1, 2)
            bias = node.input[2] if len(node.input) > 2 else ""
        else:  # MatMul
            if len(shape) != 2:
                return f"its weight has rank {len(shape)}, not 2"
            rank = len(self.dims.get(node.output[0]) or [])
            if rank < 1:
                return "the rank of its output is unknown (run shape inference)"
            layer = Layer(weight, 1, rank - 1, rank)
            bias = ""
        layer.edits.append(Edit(weight, layer.weight_axis))
        if bias:
            if not self.owned(bias):
                return self._why_not_owned(bias)
            bias_shape = self.weights.array(bias).shape
            channels = shape[layer.weight_axis]
            if bias_shape and bias_shape[-1] == channels:
                layer.edits.append(Edit(bias, len(bias_shape) - 1))
            elif bias_shape and bias_shape[-1] != 1:
                return f"its bias has shape {list(bias_shape)}, not one value per channel"
        return layer

    def owned(self, name: str) -> bool:
        """True for an initializer only this one node reads (so slicing it is safe)."""
        return (
            name in self.weights.protos
            and self.uses[name] == 1
            and name not in self.graph_inputs
            and self.weights.protos[name].data_type in FLOAT_TYPES
        )

    def _why_not_owned(self, name: str) -> str:
        if name not in self.weights.protos:
            return f"{name or 'its weight'!r} is computed in the graph, not an initializer"
        if name in self.graph_inputs:
            return f"initializer {name!r} is also a graph input (it can be overridden)"
        if self.weights.protos[name].data_type not in FLOAT_TYPES:
            return f"initializer {name!r} is not a float tensor"
        return f"initializer {name!r} is shared with another node"

    # --- consumers ---------------------------------------------------------------------

    def follow(self, start: str, axis: int, rank: int, channels: int) -> list[Edit] | str:
        """Every edit that keeps the graph consistent when ``start`` (of ``rank``) loses some
        of its ``channels`` along ``axis``, or why (naming the node) that is not safe."""
        self.channels = channels
        self.absorbers = []
        edits: list[Edit] = []
        queue = [(start, axis, rank, 1)]
        seen: set[str] = set()
        while queue:
            name, axis, rank, repeat = queue.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.outputs:
                return f"its channels reach the graph output {name!r}"
            if name in self.in_subgraphs:
                return f"its channels reach a subgraph (through {name!r})"
            for node, index in self.consumers.get(name, []):
                step = self._step(node, index, axis, rank, repeat)
                if isinstance(step, str):
                    return f"its channels reach {node.op_type} {node_label(node)!r}: {step}"
                edits += step[0]
                queue += step[1]
        return edits

    def _step(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> Step | str:
        op = node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            return "an op of another domain"
        if op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            return self._absorb(node, index, axis, rank, repeat)
        if op in _BINARY:
            return self._binary(node, index, axis, rank, repeat)
        if op == "Flatten" or op == "Reshape":
            return self._flatten(node, index, axis, rank, repeat)
        if index != 0:
            return "the channels arrive on an input other than the data input"
        if any(self.consumers.get(o) or o in self.outputs for o in node.output[1:]):
            return "its second output (indices, mask or statistics) is used"
        passed = [(node.output[0], axis, rank, repeat)]
        if op in _UNARY:
            return [], passed
        if op in _POOLS:
            return ([], passed) if axis == 1 else "the channels are not on axis 1"
        if op in _NORMS:
            if axis != 1:
                return "the channels are not on axis 1"
            edits = []
            for name in node.input[1 : 1 + _NORMS[op]]:
                if not self.owned(name):
                    return self._why_not_owned(name)
                if self.weights.array(name).shape != (self.channels * repeat,):
                    return f"its parameter {name!r} does not hold one value per channel"
                edits.append(Edit(name, 0, repeat))
            return edits, passed
        if op == "Transpose":
            perm = ints_attribute(node, "perm") or list(range(rank - 1, -1, -1))
            return [], [(node.output[0], perm.index(axis), rank, repeat)]
        if op in _REDUCE:
            return self._reduce(node, axis, rank, repeat)
        if op in _SOFTMAX:
            if self.opset < 13:
                return "before opset 13 it flattens the channels with the axes after them"
            if attribute(node, "axis", -1) % rank == axis:
                return "it normalizes over the channels"
            return [], passed
        return "pruning cannot follow channels through this op"

    def _absorb(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> Step | str:
        """A layer that sums over the channels: its weight loses the matching inputs."""
        op = node.op_type
        if index != 0:
            return "the channels arrive as its weight, not its data input"
        weight = node.input[1]
        if not self.owned(weight):
            return self._why_not_owned(weight)
        shape = self.weights.array(weight).shape
        if op in ("Conv", "ConvTranspose"):
            if axis != 1:
                return "the channels are not on axis 1"
            if attribute(node, "group", 1) != 1:
                return "grouped or depthwise convolution"
            weight_axis = 1 if op == "Conv" else 0
        elif op == "Gemm":
            if attribute(node, "transA", 0) or axis != 1 or rank != 2:
                return "the channels are not the columns of its input"
            weight_axis = 1 if attribute(node, "transB", 0) else 0
        else:  # MatMul
            if len(shape) != 2 or axis != rank - 1:
                return "the channels are not the last axis of its input, or the weight is not 2-D"
            weight_axis = 0
        if len(shape) <= weight_axis or shape[weight_axis] != self.channels * repeat:
            return f"its weight {weight!r} does not match the channels"
        self.absorbers.append(Absorber(node, weight, weight_axis, repeat))
        return [Edit(weight, weight_axis, repeat)], []

    def _binary(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> Step | str:
        """An elementwise op with a constant: the constant loses the channels it aligns there."""
        if node.op_type == "PRelu" and index != 0:
            return "the channels arrive as its slope"
        other = node.input[1 - index]
        if other not in self.weights.protos:
            maker = self.made_by.get(other)
            if maker is not None and maker.op_type == "Constant":
                return f"its other operand {other!r} is a Constant node, not an initializer"
            return "it combines the channels with another branch (a residual or merge)"
        shape = self.weights.array(other).shape
        out_rank = max(rank, len(shape))
        out_axis = axis + out_rank - rank
        at = out_axis - (out_rank - len(shape))
        passed = [(node.output[0], out_axis, out_rank, repeat)]
        if at < 0 or shape[at] == 1:
            return [], passed
        if not self.owned(other):
            return self._why_not_owned(other)
        if shape[at] != self.channels * repeat:
            return f"its operand {other!r} does not match the channels"
        return [Edit(other, at, repeat)], passed

    def _flatten(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> Step | str:
        """Flatten at the channel axis (or Reshape to [0, -1]): each channel becomes a run of
        features, one per element of the axes after it."""
        if index != 0:
            return "the channels arrive as its shape"
        if node.op_type == "Reshape":
            shape = node.input[1]
            value = self.weights.array(shape) if shape in self.weights.protos else None
            if value is None or value.tolist() != [0, -1] or attribute(node, "allowzero", 0):
                return "its shape holds the channel count (only Reshape to [0, -1] is followed)"
            start = 1
        else:
            start = attribute(node, "axis", 1)
            start = start + rank if start < 0 else start
        if start != axis:
            return "it merges the channels with other axes"
        dims = self.dims.get(node.input[0])
        tail = dims[axis + 1 :] if dims and len(dims) == rank else None
        if tail is None or any(d is None for d in tail):
            return "the sizes of the axes after the channels are unknown"
        spread = math.prod(d for d in tail if d is not None)
        return [], [(node.output[0], 1, 2, repeat * spread)]

    def _reduce(self, node: onnx.NodeProto, axis: int, rank: int, repeat: int) -> Step | str:
        axes = ints_attribute(node, "axes")
        if len(node.input) > 1 and node.input[1]:
            if node.input[1] not in self.weights.protos:
                return "its axes are computed in the graph"
            axes = [int(a) for a in self.weights.array(node.input[1]).reshape(-1)]
        if not axes:
            if attribute(node, "noop_with_empty_axes", 0):
                return [], [(node.output[0], axis, rank, repeat)]
            return "it reduces over every axis, the channels included"
        axes = [a % rank for a in axes]
        if axis in axes:
            return "it reduces over the channels"
        if attribute(node, "keepdims", 1):
            return [], [(node.output[0], axis, rank, repeat)]
        shift = sum(1 for a in set(axes) if a < axis)
        return [], [(node.output[0], axis - shift, rank - len(set(axes)), repeat)]


def slice_channels(weights: Weights, edits: list[Edit], keep: np.ndarray) -> set[str]:
    """Apply ``edits`` to ``weights.arrays``: each tensor keeps the channels ``keep`` marks
    (a boolean mask). Returns the names of the tensors sliced."""
    for edit in edits:
        weights.arrays[edit.tensor] = np.compress(
            np.repeat(keep, edit.repeat), weights.array(edit.tensor), axis=edit.axis
        )
    return {edit.tensor for edit in edits}


def attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def ints_attribute(node: onnx.NodeProto, name: str) -> list[int]:
    for attr in node.attribute:
        if attr.name == name:
            return [int(i) for i in attr.ints]
    return []


def node_label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"
