"""SmoothQuant: move activation outliers into the weights before int8 quantization.

    Recipe.of(["smooth", ("int8_dynamic", {"per_channel": True})])

For a MatMul/Gemm ``X @ W`` with a constant ``W``, ``X @ W == (X / s) @ (s * W)`` for any
per-input-channel scale ``s``. Choosing ``s_j = max|X_j|^a / max|W_j|^(1-a)`` (Xiao et al.,
SmoothQuant, 2023) evens out the channel ranges of the activations (a few outlier channels
otherwise take the whole int8 range) at the cost of a little range in the weights, which int8
per-channel weights absorb well. ``1/s`` is folded into a producing LayerNormalization's scale
and bias when every consumer of its output is smoothed; otherwise a Mul is inserted. The fp32
model computes the same function (up to rounding): the pass changes accuracy only once a
quantization pass follows it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..graphs import constants_to_initializers, copy_model, expose
from ..model import Model
from ..runtime import OrtRunner
from .base import Pass, PassContext, PassError, PassResult, param
from .output import conform, lifted_weights, save_output

if TYPE_CHECKING:
    import onnx


@dataclass
class _Consumer:
    node: onnx.NodeProto
    weight: str
    input_axis: int  # the axis of the weight that meets X's channels


@dataclass(frozen=True)
class Smooth(Pass):
    """Scale activation outliers into MatMul/Gemm weights (SmoothQuant) ahead of int8."""

    name: ClassVar[str] = "smooth"
    family: ClassVar[str] = "int8"

    alpha: float = param(0.5, "migration strength: 0 leaves activations, 1 moves it all to W")
    min_channels: int = param(16, "smooth only inputs with at least this many channels")
    max_samples: int = param(16, "validation feed sets used to find activation ranges")

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        import onnx
        from onnx import numpy_helper

        if not 0 <= self.alpha <= 1:
            raise PassError(f"{self.name}: alpha must be in [0, 1], got {self.alpha}")
        proto = model.detached().proto
        lifted = constants_to_initializers(proto.graph)
        weights = {t.name: t for t in proto.graph.initializer}
        groups = _groups(proto, weights, self.min_channels)
        if not groups:
            return PassResult(model, changed=False, notes=["no MatMul/Gemm with a constant weight"])
        ranges = _activation_ranges(proto, list(groups), ctx, self.max_samples)
        uses = _uses(proto)
        smoothed = []
        for tensor, consumers in groups.items():
            x_max = ranges.get(tensor)
            if x_max is None or not np.isfinite(x_max).all():
                continue
            w_max = np.max(
                [
                    np.abs(numpy_helper.to_array(weights[c.weight])).max(axis=1 - c.input_axis)
                    for c in consumers
                ],
                axis=0,
            )
            scale = np.power(np.maximum(x_max, 1e-5), self.alpha) / np.power(
                np.maximum(w_max, 1e-5), 1 - self.alpha
            )
            scale = np.clip(scale, 1e-3, 1e3).astype(np.float32)
            for c in consumers:
                w = numpy_helper.to_array(weights[c.weight])
                shape = [1, 1]
                shape[c.input_axis] = -1
                weights[c.weight].CopyFrom(
                    numpy_helper.from_array((w * scale.reshape(shape)).astype(w.dtype), c.weight)
                )
            how = _fold_into_layernorm(proto, tensor, 1.0 / scale, weights, uses, consumers)
            if how is None:
                _insert_mul(proto, tensor, 1.0 / scale, consumers)
                how = "Mul"
            smoothed.append((tensor, how, float(scale.max() / scale.min())))
        if not smoothed:
            return PassResult(model, changed=False, notes=["no activation range to smooth"])
        conform(proto, model)
        onnx.checker.check_model(proto)
        out = save_output(self.name, proto, model, ctx)
        folded = sum(1 for _, how, _ in smoothed if how == "LayerNormalization")
        return PassResult(
            out,
            notes=[
                f"smoothed {len(smoothed)} activations ({folded} folded into "
                f"LayerNormalization, {len(smoothed) - folded} with a Mul); alpha {self.alpha}",
                *lifted_weights(lifted),
            ],
            details={"smoothed": [{"tensor": t, "how": h, "spread": s} for t, h, s in smoothed]},
        )


def _groups(
    proto: onnx.ModelProto, weights: dict[str, onnx.TensorProto], min_channels: int
) -> dict[str, list[_Consumer]]:
    """Activation tensor -> the MatMul/Gemm nodes that multiply it by a 2-D constant."""
    groups: dict[str, list[_Consumer]] = defaultdict(list)
    shared = _uses(proto)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        x, w = node.input[0], node.input[1]
        if w not in weights or len(weights[w].dims) != 2 or len(shared[w]) != 1:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "MatMul":
            axis = 0
        elif node.op_type == "Gemm" and not attrs.get("transA", 0):
            axis = 1 if attrs.get("transB", 0) else 0
        else:
            continue
        if weights[w].dims[axis] >= min_channels:
            groups[x].append(_Consumer(node, w, axis))
    return dict(groups)


def _uses(proto: onnx.ModelProto) -> dict[str, list[Any]]:
    """Tensor name -> the nodes (and graph outputs) that read it."""
    uses: dict[str, list[Any]] = defaultdict(list)
    for node in proto.graph.node:
        for name in node.input:
            uses[name].append(node)
    for out in proto.graph.output:
        uses[out.name].append(out)
    return uses


def _activation_ranges(
    proto: onnx.ModelProto, tensors: Sequence[str], ctx: PassContext, max_samples: int
) -> dict[str, np.ndarray]:
    """max |x| per channel (last axis) of each tensor over the validation feeds."""
    probe = copy_model(proto)
    expose(probe, tensors)
    model = Model.from_proto(probe)
    feeds = ctx.sample_feeds(model, max_samples)
    runner = OrtRunner(model, validate=False)
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        outputs = runner.run(feed, output_names=list(tensors))
        for name, value in outputs.items():
            value = np.abs(np.asarray(value, dtype=np.float32))
            channel_max = value.reshape(-1, value.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges.get(name, channel_max), channel_max)
    return ranges


def _fold_into_layernorm(
    proto: onnx.ModelProto,
    tensor: str,
    inverse: np.ndarray,
    weights: dict[str, onnx.TensorProto],
    uses: dict[str, list[Any]],
    consumers: list[_Consumer],
) -> str | None:
    """Scale a LayerNormalization's gamma/beta by ``inverse`` when it feeds only the smoothed
    nodes (and owns its gamma/beta); None when that is not the case."""
    from onnx import numpy_helper

    producer = next((n for n in proto.graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "LayerNormalization":
        return None
    if {id(n) for n in uses[tensor]} != {id(c.node) for c in consumers}:
        return None
    params = [p for p in producer.input[1:3] if p]
    if any(p not in weights or len(uses[p]) != 1 for p in params):
        return None
    for p in params:
        value = numpy_helper.to_array(weights[p])
        weights[p].CopyFrom(numpy_helper.from_array((value * inverse).astype(value.dtype), p))
    return "LayerNormalization"


def _insert_mul(
    proto: onnx.ModelProto, tensor: str, inverse: np.ndarray, consumers: list[_Consumer]
) -> None:
    from onnx import helper, numpy_helper

    scale_name, smoothed = f"{tensor}_smooth_scale", f"{tensor}_smoothed"
    proto.graph.initializer.append(numpy_helper.from_array(inverse.astype(np.float32), scale_name))
    mul = helper.make_node("Mul", [tensor, scale_name], [smoothed], name=f"{tensor}_smooth")
    first = min(list(proto.graph.node).index(c.node) for c in consumers)
    proto.graph.node.insert(first, mul)
    for c in consumers:
        c.node.input[0] = smoothed
