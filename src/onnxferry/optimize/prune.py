"""Pruning passes: zero the smallest weights (a smaller file) or remove whole channels (faster).

    result = MagnitudePrune(sparsity=0.7).apply(model, ctx)   # zeros, same shapes, same speed
    result = ChannelPrune(ratio=0.25).apply(model, ctx)       # fewer channels: faster
    result.details["skipped"]                                 # layers left alone, and why

``prune_magnitude`` is honest about what zeros buy: ONNX Runtime's CPU kernels are dense, so
the model runs at the same speed and only compresses better. ``prune_channels`` removes the
output channels with the smallest L1 norm from Conv, Gemm and MatMul layers and the matching
input channels of every consumer it can follow (see ``_Follower``); a layer whose channels
reach anything else (a residual Add, a Concat, a Reshape other than to [0, -1], a graph
output) is left alone and reported. Both passes change the model's outputs; the recipe's parity
check judges by how much. When nothing can be pruned, the result holds the input model itself,
``changed=False`` and a note saying why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import UsageError, one_line
from ..feeds import plan_feeds
from ..graphs import subgraphs, walk_graphs
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .graph import conform

if TYPE_CHECKING:
    import onnx

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_DEFAULT_DOMAINS = ("", "ai.onnx")

_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "MatMul": (0, 1),
    "Gemm": (0, 1),
    "Conv": (1,),
    "ConvTranspose": (1,),
}
"""Inputs of each op that hold a weight when they are initializers."""

# --- prune_magnitude ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MagnitudePrune(Pass):
    """Zero the smallest-magnitude weights of MatMul/Gemm/Conv layers (unstructured sparsity).

    Per tensor, the ``sparsity`` fraction of elements with the smallest |w| become 0. Shapes
    and speed stay the same (ONNX Runtime CPU kernels are dense); the file compresses better.
    """

    name: ClassVar[str] = "prune_magnitude"
    family: ClassVar[str] = "prune"
    size_only: ClassVar[bool] = True

    sparsity: float = param(0.5, "fraction of each weight tensor's elements set to zero")
    op_types: tuple[str, ...] = param(
        ("MatMul", "Gemm", "Conv"), f"ops whose weights are pruned (of {', '.join(_WEIGHT_INPUTS)})"
    )
    min_elements: int = param(1024, "leave weight tensors with fewer elements alone")

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise UsageError(
                f"prune_magnitude: sparsity must be in [0, 1), got {self.sparsity}",
                hint="e.g. sparsity = 0.5 zeroes half of each weight tensor",
            )
        unknown = [op for op in self.op_types if op not in _WEIGHT_INPUTS]
        if unknown:
            raise UsageError(
                f"prune_magnitude: cannot prune the weights of {', '.join(unknown)}",
                hint=f"op_types may name {', '.join(_WEIGHT_INPUTS)}",
            )
        if self.min_elements < 1:
            raise UsageError(f"prune_magnitude: min_elements must be >= 1, got {self.min_elements}")

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        weights = _Weights(model, self.name)
        uses = _input_uses(model.proto.graph)
        weight_uses: Counter[str] = Counter()
        for node in model.proto.graph.node:
            if node.op_type in self.op_types and node.domain in _DEFAULT_DOMAINS:
                weight_uses.update(
                    node.input[i]
                    for i in _WEIGHT_INPUTS[node.op_type]
                    if i < len(node.input) and node.input[i] in weights.protos
                )
        names = [
            name
            for name in weight_uses
            if weights.protos[name].data_type in _FLOAT_TYPES
            and math.prod(weights.protos[name].dims) >= self.min_elements
        ]
        skipped = {
            name: "also read by an op that does not use it as a weight"
            for name in names
            if uses[name] != weight_uses[name]
        }
        names = [name for name in names if name not in skipped]
        if not names:
            note = (
                f"no float initializer of at least {self.min_elements} elements feeds only "
                f"{'/'.join(self.op_types)} weight inputs; nothing pruned"
            )
            empty: dict[str, Any] = {"tensors": {}, "skipped": skipped}
            return PassResult(model, changed=False, notes=[note], details=empty)

        per_tensor: dict[str, dict[str, float | int]] = {}
        changed: dict[str, np.ndarray] = {}
        for name in names:
            w = weights.array(name)
            flat = w.reshape(-1).copy()
            zeros_before = int(np.count_nonzero(flat == 0))
            k = math.floor(self.sparsity * flat.size + 0.5)
            order = np.argsort(np.abs(flat.astype(np.float64)), kind="stable")
            flat[order[:k]] = 0
            zeros = int(np.count_nonzero(flat == 0))
            per_tensor[name] = {
                "elements": int(flat.size),
                "zeros_before": zeros_before,
                "zeros": zeros,
                "sparsity": zeros / flat.size,
            }
            if zeros != zeros_before:
                changed[name] = flat.reshape(w.shape)

        elements = sum(int(t["elements"]) for t in per_tensor.values())
        zeros = sum(int(t["zeros"]) for t in per_tensor.values())
        details: dict[str, Any] = {
            "target_sparsity": self.sparsity,
            "tensors": per_tensor,
            "skipped": skipped,
            "elements": elements,
            "zeros": zeros,
            "overall_sparsity": zeros / elements,
        }
        if not changed:
            note = f"the weights already hold at least {self.sparsity:.0%} zeros; nothing pruned"
            return PassResult(model, changed=False, notes=[note], details=details)
        result = weights.save(changed, ctx.scratch(self.name), shapes_changed=False)
        notes = [
            f"zeroed weights in {len(changed)} of {len(names)} tensors: overall sparsity "
            f"{zeros / elements:.1%} of {elements:,} weights (target {self.sparsity:.0%} each)",
            "zeros do not make ONNX Runtime CPU faster; the file compresses better",
        ]
        return PassResult(result, changed=True, notes=notes, details=details)


# --- prune_channels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelPrune(Pass):
    """Remove the output channels with the smallest L1 norm from Conv/Gemm/MatMul layers.

    The matching input channels of the consumers go too (the next Conv's or Gemm/MatMul's
    weight, BatchNormalization parameters, a channel bias), through elementwise ops, pools and
    Flatten. A layer whose channels reach a residual Add, a Concat, a Reshape, a graph output
    or any op it cannot follow is skipped and reported. Output shapes stay the same.
    """

    name: ClassVar[str] = "prune_channels"
    family: ClassVar[str] = "prune"
    size_only: ClassVar[bool] = False

    ratio: float = param(0.25, "fraction of each layer's output channels to remove")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise UsageError(
                f"prune_channels: ratio must be in [0, 1), got {self.ratio}",
                hint="e.g. ratio = 0.25 removes a quarter of each layer's output channels",
            )

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        weights = _Weights(model, self.name)
        follower = _Follower(model.proto, weights)
        pruned: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        changed: set[str] = set()
        for node in list(model.proto.graph.node):
            if (
                node.op_type not in ("Conv", "Gemm", "MatMul")
                or node.domain not in _DEFAULT_DOMAINS
            ):
                continue
            label = _label(node)
            layer = follower.layer(node)
            if isinstance(layer, str):
                skipped[label] = layer
                continue
            channels = weights.array(layer.weight).shape[layer.weight_axis]
            remove = min(math.floor(self.ratio * channels + 1e-9), channels - 1)
            if remove < 1:
                skipped[label] = f"{channels} output channels: none to remove at ratio {self.ratio}"
                continue
            plan = follower.follow(node.output[0], layer.axis, layer.rank, channels)
            if isinstance(plan, str):
                skipped[label] = plan
                continue
            w = weights.array(layer.weight)
            norms = np.abs(np.moveaxis(w, layer.weight_axis, 0).astype(np.float64))
            norms = norms.reshape(channels, -1).sum(axis=1)
            dropped = np.sort(np.argsort(norms, kind="stable")[:remove])
            keep = np.ones(channels, dtype=bool)
            keep[dropped] = False
            for edit in [*layer.edits, *plan]:
                weights.arrays[edit.tensor] = np.compress(
                    np.repeat(keep, edit.repeat), weights.array(edit.tensor), axis=edit.axis
                )
                changed.add(edit.tensor)
            pruned[label] = {
                "op": node.op_type,
                "channels_before": int(channels),
                "channels_after": int(channels - remove),
                "removed_channels": [int(i) for i in dropped],
            }

        details: dict[str, Any] = {"ratio": self.ratio, "pruned": pruned, "skipped": skipped}
        if not pruned:
            note = (
                f"no layer could be pruned ({len(skipped)} skipped; see details)"
                if skipped
                else "the model has no Conv, Gemm or MatMul layer; nothing pruned"
            )
            return PassResult(model, changed=False, notes=[note], details=details)

        replaced = {n: weights.arrays[n] for n in changed}
        result = weights.save(replaced, ctx.scratch(self.name), shapes_changed=True)
        _check_shapes(model, result, self.name)
        ort_note = _check_in_ort(model, result, ctx, self.name)
        nodes = (sum(model.ops_histogram.values()), sum(result.ops_histogram.values()))
        params = (model.parameter_count, result.parameter_count)
        details |= {
            "params_before": params[0],
            "params_after": params[1],
            "nodes_before": nodes[0],
            "nodes_after": nodes[1],
        }
        before = sum(p["channels_before"] for p in pruned.values())
        after = sum(p["channels_after"] for p in pruned.values())
        notes = [
            f"pruned {len(pruned)} layers from {before} to {after} output channels "
            f"({len(skipped)} layers skipped; see details)",
            f"parameters {params[0]:,} -> {params[1]:,} "
            f"({(params[1] - params[0]) / max(params[0], 1):+.1%}); nodes {nodes[0]} -> {nodes[1]}",
        ]
        if ort_note:
            notes.append(ort_note)
        return PassResult(result, changed=True, notes=notes, details=details)


@dataclass(frozen=True)
class _Edit:
    """Slice initializer ``tensor`` along ``axis`` by the keep mask, each entry ``repeat`` times
    (a channel that Flatten spread over ``repeat`` features)."""

    tensor: str
    axis: int
    repeat: int = 1


@dataclass
class _Layer:
    """A prunable layer: its weight, the axis of its output channels there, the axis of the
    channels in its output tensor (of ``rank``), and its own edits (weight and bias)."""

    weight: str
    weight_axis: int
    axis: int
    rank: int
    edits: list[_Edit] = field(default_factory=list)


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

_Step = tuple[list[_Edit], list[tuple[str, int, int, int]]]
"""Edits of one consumer and the tensors it passes the channels on to: (name, axis, rank,
repeat)."""


class _Follower:
    """Finds where a tensor's channels go: the consumers to slice, or why that is not safe."""

    def __init__(self, proto: onnx.ModelProto, weights: _Weights) -> None:
        import onnx

        self.weights = weights
        self.graph = proto.graph
        self.opset = next(
            (int(o.version) for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), 0
        )
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.graph.node:
            for index, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, index))
        self.in_subgraphs = _read_in_subgraphs(self.graph)
        self.uses = _input_uses(self.graph)
        self.made_by = {out: node for node in self.graph.node for out in node.output}
        self.outputs = {o.name for o in self.graph.output}
        self.channels = 0
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

    def layer(self, node: onnx.NodeProto) -> _Layer | str:
        """The prunable layer ``node`` is, or why it is not one."""
        weight = node.input[1] if len(node.input) > 1 else ""
        if not self._owned(weight):
            return self._why_not_owned(weight)
        shape = self.weights.array(weight).shape
        if node.op_type == "Conv":
            if _attr(node, "group", 1) != 1:
                return "grouped or depthwise convolution"
            rank = len(self.dims.get(node.output[0]) or self.dims.get(node.input[0]) or [])
            if rank < 3:
                return "the rank of its output is unknown (run shape inference)"
            layer = _Layer(weight, 0, 1, rank)
            bias = node.input[2] if len(node.input) > 2 else ""
        elif node.op_type == "Gemm":
            if len(shape) != 2:
                return "its weight is not a matrix"
            trans_b = _attr(node, "transB", 0)
            layer = _Layer(weight, 0 if trans_b else 1, 1, 2)
            bias = node.input[2] if len(node.input) > 2 else ""
        else:  # MatMul
            if len(shape) != 2:
                return f"its weight has rank {len(shape)}, not 2"
            rank = len(self.dims.get(node.output[0]) or [])
            if rank < 1:
                return "the rank of its output is unknown (run shape inference)"
            layer = _Layer(weight, 1, rank - 1, rank)
            bias = ""
        layer.edits.append(_Edit(weight, layer.weight_axis))
        if bias:
            if not self._owned(bias):
                return self._why_not_owned(bias)
            bias_shape = self.weights.array(bias).shape
            channels = shape[layer.weight_axis]
            if bias_shape and bias_shape[-1] == channels:
                layer.edits.append(_Edit(bias, len(bias_shape) - 1))
            elif bias_shape and bias_shape[-1] != 1:
                return f"its bias has shape {list(bias_shape)}, not one value per channel"
        return layer

    def _owned(self, name: str) -> bool:
        """True for an initializer only this one node reads (so slicing it is safe)."""
        return (
            name in self.weights.protos
            and self.uses[name] == 1
            and name not in self.graph_inputs
            and self.weights.protos[name].data_type in _FLOAT_TYPES
        )

    def _why_not_owned(self, name: str) -> str:
        if name not in self.weights.protos:
            return f"{name or 'its weight'!r} is computed in the graph, not an initializer"
        if name in self.graph_inputs:
            return f"initializer {name!r} is also a graph input (it can be overridden)"
        if self.weights.protos[name].data_type not in _FLOAT_TYPES:
            return f"initializer {name!r} is not a float tensor"
        return f"initializer {name!r} is shared with another node"

    # --- consumers ---------------------------------------------------------------------

    def follow(self, start: str, axis: int, rank: int, channels: int) -> list[_Edit] | str:
        """Every edit that keeps the graph consistent when ``start`` (of ``rank``) loses some
        of its ``channels`` along ``axis``, or why (naming the node) that is not safe."""
        self.channels = channels
        edits: list[_Edit] = []
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
                    return f"its channels reach {node.op_type} {_label(node)!r}: {step}"
                edits += step[0]
                queue += step[1]
        return edits

    def _step(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> _Step | str:
        op = node.op_type
        if node.domain not in _DEFAULT_DOMAINS:
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
                if not self._owned(name):
                    return self._why_not_owned(name)
                if self.weights.array(name).shape != (self.channels * repeat,):
                    return f"its parameter {name!r} does not hold one value per channel"
                edits.append(_Edit(name, 0, repeat))
            return edits, passed
        if op == "Transpose":
            perm = _ints(node, "perm") or list(range(rank - 1, -1, -1))
            return [], [(node.output[0], perm.index(axis), rank, repeat)]
        if op in _REDUCE:
            return self._reduce(node, axis, rank, repeat)
        if op in _SOFTMAX:
            if self.opset < 13:
                return "before opset 13 it flattens the channels with the axes after them"
            if _attr(node, "axis", -1) % rank == axis:
                return "it normalizes over the channels"
            return [], passed
        return "pruning cannot follow channels through this op"

    def _absorb(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> _Step | str:
        """A layer that sums over the channels: its weight loses the matching inputs."""
        op = node.op_type
        if index != 0:
            return "the channels arrive as its weight, not its data input"
        weight = node.input[1]
        if not self._owned(weight):
            return self._why_not_owned(weight)
        shape = self.weights.array(weight).shape
        if op in ("Conv", "ConvTranspose"):
            if axis != 1:
                return "the channels are not on axis 1"
            if _attr(node, "group", 1) != 1:
                return "grouped or depthwise convolution"
            weight_axis = 1 if op == "Conv" else 0
        elif op == "Gemm":
            if _attr(node, "transA", 0) or axis != 1 or rank != 2:
                return "the channels are not the columns of its input"
            weight_axis = 1 if _attr(node, "transB", 0) else 0
        else:  # MatMul
            if len(shape) != 2 or axis != rank - 1:
                return "the channels are not the last axis of its input, or the weight is not 2-D"
            weight_axis = 0
        if len(shape) <= weight_axis or shape[weight_axis] != self.channels * repeat:
            return f"its weight {weight!r} does not match the channels"
        return [_Edit(weight, weight_axis, repeat)], []

    def _binary(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> _Step | str:
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
        if not self._owned(other):
            return self._why_not_owned(other)
        if shape[at] != self.channels * repeat:
            return f"its operand {other!r} does not match the channels"
        return [_Edit(other, at, repeat)], passed

    def _flatten(
        self, node: onnx.NodeProto, index: int, axis: int, rank: int, repeat: int
    ) -> _Step | str:
        """Flatten at the channel axis (or Reshape to [0, -1]): each channel becomes a run of
        features, one per element of the axes after it."""
        if index != 0:
            return "the channels arrive as its shape"
        if node.op_type == "Reshape":
            shape = node.input[1]
            value = self.weights.array(shape) if shape in self.weights.protos else None
            if value is None or value.tolist() != [0, -1] or _attr(node, "allowzero", 0):
                return "its shape holds the channel count (only Reshape to [0, -1] is followed)"
            start = 1
        else:
            start = _attr(node, "axis", 1)
            start = start + rank if start < 0 else start
        if start != axis:
            return "it merges the channels with other axes"
        dims = self.dims.get(node.input[0])
        tail = dims[axis + 1 :] if dims and len(dims) == rank else None
        if tail is None or any(d is None for d in tail):
            return "the sizes of the axes after the channels are unknown"
        spread = math.prod(d for d in tail if d is not None)
        return [], [(node.output[0], 1, 2, repeat * spread)]

    def _reduce(self, node: onnx.NodeProto, axis: int, rank: int, repeat: int) -> _Step | str:
        axes = _ints(node, "axes")
        if len(node.input) > 1 and node.input[1]:
            if node.input[1] not in self.weights.protos:
                return "its axes are computed in the graph"
            axes = [int(a) for a in self.weights.array(node.input[1]).reshape(-1)]
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return [], [(node.output[0], axis, rank, repeat)]
            return "it reduces over every axis, the channels included"
        axes = [a % rank for a in axes]
        if axis in axes:
            return "it reduces over the channels"
        if _attr(node, "keepdims", 1):
            return [], [(node.output[0], axis, rank, repeat)]
        shift = sum(1 for a in set(axes) if a < axis)
        return [], [(node.output[0], axis - shift, rank - len(set(axes)), repeat)]


# --- shared ------------------------------------------------------------------------------------


class _Weights:
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
        source = Model(proto, self.model.path, self.model.external_files)
        return source.save(path)


def _check_shapes(before: Model, after: Model, pass_name: str) -> None:
    """onnx shape inference (strict) accepts the pruned model, if it accepted the input."""
    import onnx

    def infer(proto: onnx.ModelProto) -> None:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)

    try:
        infer(after.proto)
    except Exception as e:
        try:
            infer(before.proto)
        except Exception:
            return  # strict inference fails on the input already; ONNX Runtime decides
        raise PassError(
            f"{pass_name}: shape inference rejects the pruned model ({one_line(e)})",
            hint="this is a bug in prune_channels; leave the pass out of the recipe",
        ) from e


def _check_in_ort(before: Model, after: Model, ctx: PassContext, pass_name: str) -> str | None:
    """The pruned model loads and runs in ONNX Runtime with the input's output shapes.

    Returns a note when the input model itself does not run, so nothing could be compared."""
    from ..runtime import OrtRunner

    feeds = dict(ctx.feeds[0]) if ctx.feeds else plan_feeds(before, probe=False).feeds(seed=0)
    try:
        expected = OrtRunner(before, validate=False).run(feeds)
    except Exception:
        expected = None
    try:
        got = OrtRunner(after, validate=False).run(feeds)
    except Exception as e:
        if expected is None:
            return "not checked in ONNX Runtime: the input model does not run there either"
        raise PassError(
            f"{pass_name}: the pruned model fails in ONNX Runtime ({one_line(e)})",
            hint="this is a bug in prune_channels; leave the pass out of the recipe",
        ) from e
    if expected is None:
        return "the input model did not run on generated feeds; output shapes not compared"
    for name, value in expected.items():
        if got[name].shape != value.shape:
            raise PassError(
                f"{pass_name}: output {name!r} changed shape from {list(value.shape)} to "
                f"{list(got[name].shape)}",
                hint="this is a bug in prune_channels; leave the pass out of the recipe",
            )
    return None


def _input_uses(graph: onnx.GraphProto) -> Counter[str]:
    """How often each name is read: node inputs, and (once) any use inside a subgraph."""
    uses = Counter(name for node in graph.node for name in node.input if name)
    uses.update(_read_in_subgraphs(graph))
    return uses


def _read_in_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Every name a node inside a subgraph of ``graph`` (at any depth) reads."""
    inner = (g for node in graph.node for sub in subgraphs(node) for g in walk_graphs(sub))
    return {name for g in inner for node in g.node for name in node.input}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _ints(node: onnx.NodeProto, name: str) -> list[int]:
    for attr in node.attribute:
        if attr.name == name:
            return [int(i) for i in attr.ints]
    return []


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"


__all__ = ["ChannelPrune", "MagnitudePrune"]
