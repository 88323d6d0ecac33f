"""Pruning passes: zero the smallest weights (a smaller file) or remove whole channels (faster).

    result = MagnitudePrune(sparsity=0.7).apply(model, ctx)   # zeros, same shapes, same speed
    result = ChannelPrune(ratio=0.25).apply(model, ctx)       # fewer channels: faster
    result.details["skipped"]                                 # layers left alone, and why

``prune_magnitude`` is honest about what zeros buy: ONNX Runtime's CPU kernels are dense, so
the model runs at the same speed and only compresses better. ``prune_channels`` removes
output channels from Conv, Gemm and MatMul layers (those adding the least to the next layer on
the data, which is then refitted to the original's outputs: ``refit``; or, with ``method="l1"``,
those with the smallest weights) and the matching input channels of every consumer it can
follow (see ``channel_surgery.Follower``); a layer
whose channels reach anything else (a residual Add, a Concat, a Reshape other than to [0, -1],
a graph output) is left alone and reported. Both passes change the model's outputs; the
recipe's parity check judges by how much. When nothing can be pruned, the result holds the
input model itself, ``changed=False`` and a note saying why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import UsageError, one_line
from ..feeds import plan_feeds
from ..graphs import constants_lifted
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .channel_surgery import Follower, node_label, slice_channels
from .output import DEFAULT_DOMAINS, lifted_weights
from .refit import refit, refit_target, sample_rows, weakest_channels
from .weights import FLOAT_TYPES, Weights, input_uses

_METHODS = ("refit", "l1")

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

    def apply(self, source: Model, ctx: PassContext) -> PassResult:
        model, lifted = constants_lifted(source)
        weights = Weights(model, self.name)
        uses = input_uses(model.proto.graph)
        weight_uses: Counter[str] = Counter()
        for node in model.proto.graph.node:
            if node.op_type in self.op_types and node.domain in DEFAULT_DOMAINS:
                weight_uses.update(
                    node.input[i]
                    for i in _WEIGHT_INPUTS[node.op_type]
                    if i < len(node.input) and node.input[i] in weights.protos
                )
        names = [
            name
            for name in weight_uses
            if weights.protos[name].data_type in FLOAT_TYPES
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
            return PassResult(source, changed=False, notes=[note], details=empty)

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
            return PassResult(source, changed=False, notes=[note], details=details)
        result = weights.save(changed, ctx.scratch(self.name), shapes_changed=False)
        notes = [
            f"zeroed weights in {len(changed)} of {len(names)} tensors: overall sparsity "
            f"{zeros / elements:.1%} of {elements:,} weights (target {self.sparsity:.0%} each)",
            "zeros do not make ONNX Runtime CPU faster; the file compresses better",
            *lifted_weights(lifted),
        ]
        return PassResult(result, changed=True, notes=notes, details=details)


# --- prune_channels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelPrune(Pass):
    """Remove a share of the output channels of Conv/Gemm/MatMul layers.

    The matching input channels of the consumers go too (the next Conv's or Gemm/MatMul's
    weight, BatchNormalization parameters, a channel bias), through elementwise ops, pools and
    Flatten. A layer whose channels reach a residual Add, a Concat, a Reshape, a graph output
    or any op it cannot follow is skipped and reported. Output shapes stay the same.

    ``method="refit"`` (the default) runs the model on the pass's data (the calibration feeds,
    else the validation ones): it removes the channels that add the least to the next layer's
    outputs and refits that layer, by least squares, to the original model's outputs
    (``refit``). ``"l1"`` removes the channels with the smallest weight L1 norm and needs no
    data, but nothing compensates for them.
    """

    name: ClassVar[str] = "prune_channels"
    family: ClassVar[str] = "prune"
    size_only: ClassVar[bool] = False

    ratio: float = param(0.25, "fraction of each layer's output channels to remove")
    method: str = param(
        "refit",
        "'refit': drop the channels that matter least on the data and refit the next layer; "
        "'l1': drop the smallest weights, no data",
    )
    max_samples: int = param(32, "feed sets the refit runs the model on")
    max_rows: int = param(16384, "rows (positions, tokens) per refitted layer")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise UsageError(
                f"prune_channels: ratio must be in [0, 1), got {self.ratio}",
                hint="e.g. ratio = 0.25 removes a quarter of each layer's output channels",
            )
        if self.method not in _METHODS:
            raise UsageError(
                f"prune_channels: unknown method {self.method!r}",
                hint=f"method is one of {', '.join(_METHODS)}",
            )
        if self.max_samples < 1 or self.max_rows < 1:
            raise UsageError("prune_channels: max_samples and max_rows must be >= 1")

    def apply(self, source: Model, ctx: PassContext) -> PassResult:
        model, lifted = constants_lifted(source)
        weights = Weights(model, self.name)
        follower = Follower(model.proto, weights)
        pruned: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        changed: set[str] = set()
        feeds = ctx.sample_feeds(model, self.max_samples) if self.method == "refit" else []
        for node in list(model.proto.graph.node):
            if node.op_type not in ("Conv", "Gemm", "MatMul") or node.domain not in DEFAULT_DOMAINS:
                continue
            label = node_label(node)
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
            if self.method == "refit":
                targets = [refit_target(a, follower) for a in follower.absorbers]
                why = next((t for t in targets if isinstance(t, str)), None)
                if why is not None:
                    skipped[label] = why
                    continue
                fits = [t for t in targets if not isinstance(t, str)]
                edited = {n: weights.arrays[n] for n in changed}
                current = weights.proto_with(edited, shapes_changed=True)
                rows = sample_rows(model, current, fits, feeds, self.max_rows)
                dropped = weakest_channels(rows, fits, weights, channels, remove)
            else:
                w = weights.array(layer.weight)
                norms = np.abs(np.moveaxis(w, layer.weight_axis, 0).astype(np.float64))
                norms = norms.reshape(channels, -1).sum(axis=1)
                dropped = np.sort(np.argsort(norms, kind="stable")[:remove])
            keep = np.ones(channels, dtype=bool)
            keep[dropped] = False
            changed |= slice_channels(weights, [*layer.edits, *plan], keep)
            if self.method == "refit":
                changed |= refit(rows, fits, weights, keep)
            pruned[label] = {
                "op": node.op_type,
                "channels_before": int(channels),
                "channels_after": int(channels - remove),
                "removed_channels": [int(i) for i in dropped],
            }

        details: dict[str, Any] = {
            "ratio": self.ratio,
            "method": self.method,
            "pruned": pruned,
            "skipped": skipped,
        }
        if not pruned:
            note = (
                f"no layer could be pruned ({len(skipped)} skipped; see details)"
                if skipped
                else "the model has no Conv, Gemm or MatMul layer; nothing pruned"
            )
            return PassResult(source, changed=False, notes=[note], details=details)

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
        notes += lifted_weights(lifted)
        return PassResult(result, changed=True, notes=notes, details=details)


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


__all__ = ["ChannelPrune", "MagnitudePrune"]
