"""``prune_channels``' data side: which channels carry the most on the data, and a least-squares
refit of the layers reading them, so the pruned model keeps the original's outputs there.

    weights = Weights(model, "prune_channels")
    follower = Follower(model.proto, weights)
    fc1 = model.proto.graph.node[0]                        # x @ w1, 8 output channels
    layer = follower.layer(fc1)
    plan = follower.follow(fc1.output[0], layer.axis, layer.rank, 8)   # and follower.absorbers
    targets = [refit_target(a, follower) for a in follower.absorbers]   # a Target, or why not
    rows = sample_rows(model, model.proto, targets, feeds, 1024)  # the inputs, the outputs
    dropped = weakest_channels(rows, targets, weights, 8, 2)      # the 2 that add the least
    keep = ~np.isin(np.arange(8), dropped)
    slice_channels(weights, [*layer.edits, *plan], keep)  # w1, w2 (and a bias) lose them
    changed = refit(rows, targets, weights, keep)         # w2 fitted to fc2's old outputs

The method is He, Zhang and Sun's channel pruning ("Channel Pruning for Accelerating Very Deep
Neural Networks", ICCV 2017) without its LASSO step: a channel's weight is the energy of what it
adds to the next layer's outputs (its centred inputs times its weights), and the next layer's
weights (and bias) are then fitted by least squares, from the pruned model's inputs, to the
original model's outputs. Layers are pruned in graph order, so each fit also absorbs the error
of the ones before it. A small ridge term pulls the fit towards the layer's own weights, so a
handful of rows cannot overfit it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..graphs import exposing
from ..model import Model
from .channel_surgery import Absorber, Follower, attribute, ints_attribute

if TYPE_CHECKING:
    import onnx

    from .weights import Weights

RIDGE = 1e-6
"""The pull of the weights (not the bias) towards the layer's own, relative to the mean diagonal
of the rows' Gram matrix: negligible with many rows, and keeps a fit from fewer rows than
features near the original."""

_GRAM_WIDTH = 64
"""Up to this many features per channel (a 8x8 kernel), channel energies come from per-channel
Gram matrices; wider channels (a Flatten's) are summed one at a time."""


@dataclass(frozen=True)
class Target:
    """A layer whose input channels are pruned, as the refit sees it: its weight as a matrix of
    ``features`` x outputs (``columns`` features per input channel), its bias (an initializer
    only it reads, or ""), and the tensor the fit aims at (its output, or its bias Add's)."""

    node: onnx.NodeProto
    weight: str
    bias: str
    output: str
    conv: bool
    columns: int
    transposed: bool = False
    """A dense weight stored outputs x features (Gemm with transB)."""
    kernel: tuple[int, ...] = ()
    """A Conv's kernel size per spatial axis."""

    def matrix(self, weight: np.ndarray) -> np.ndarray:
        """``weight`` as features x outputs, in float64."""
        w: np.ndarray = weight.astype(np.float64)
        if self.conv:
            w = w.reshape(w.shape[0], -1).T
        elif self.transposed:
            w = w.T
        return w

    def weight_from(self, matrix: np.ndarray, like: np.ndarray) -> np.ndarray:
        """The inverse of ``matrix``: a weight of ``like``'s shape and dtype."""
        m: np.ndarray = matrix.T if self.conv or self.transposed else matrix
        return m.reshape(like.shape).astype(like.dtype)


@dataclass
class Rows:
    """Sampled rows of one target: ``x`` its inputs in the model being pruned (features),
    ``y`` the original model's outputs at the same positions."""

    x: np.ndarray
    y: np.ndarray


def refit_target(absorber: Absorber, follower: Follower) -> Target | str:
    """What the refit needs of a layer that sums over the pruned channels, or why it cannot."""
    node = absorber.node
    op = node.op_type
    if op == "ConvTranspose":
        return "a ConvTranspose reads its channels (no refit for it)"
    if op == "Conv":
        pad = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET")
        if pad not in ("NOTSET", "VALID"):
            return f"a Conv with auto_pad {pad} reads its channels (no refit for it)"
        kernel = tuple(int(k) for k in follower.weights.array(absorber.weight).shape[2:])
        bias = node.input[2] if len(node.input) > 2 else ""
        return _with_bias(follower, node, absorber, bias, node.output[0], conv=True,
                          columns=math.prod(kernel), kernel=kernel)  # fmt: skip
    if op == "Gemm":
        for name in ("alpha", "beta"):
            value = next((a.f for a in node.attribute if a.name == name), 1.0)
            if value != 1.0:
                return f"a Gemm with {name} {value} reads its channels (no refit for it)"
        bias = node.input[2] if len(node.input) > 2 else ""
        return _with_bias(follower, node, absorber, bias, node.output[0], conv=False,
                          columns=absorber.repeat,
                          transposed=bool(attribute(node, "transB", 0)))  # fmt: skip
    # MatMul: a bias comes as the Add that alone reads its output (else it is fitted without)
    readers = follower.consumers.get(node.output[0], [])
    bias, output = "", node.output[0]
    if len(readers) == 1 and readers[0][0].op_type == "Add" and output not in follower.outputs:
        add, index = readers[0]
        other = add.input[1 - index]
        outputs = follower.weights.array(absorber.weight).shape[1]
        if follower.owned(other) and follower.weights.array(other).shape == (outputs,):
            bias, output = other, add.output[0]
    return _with_bias(follower, node, absorber, bias, output, conv=False, columns=absorber.repeat)


def _with_bias(
    follower: Follower,
    node: onnx.NodeProto,
    absorber: Absorber,
    bias: str,
    output: str,
    *,
    conv: bool,
    columns: int,
    transposed: bool = False,
    kernel: tuple[int, ...] = (),
) -> Target | str:
    if bias:
        outputs = follower.weights.array(absorber.weight).shape[0 if conv or transposed else 1]
        if not follower.owned(bias):
            return f"the bias {bias!r} of {node.op_type} {node.name!r} is not its own to refit"
        if follower.weights.array(bias).shape != (outputs,):
            return f"the bias {bias!r} of {node.op_type} {node.name!r} is not one per output"
    return Target(node, absorber.weight, bias, output, conv, columns, transposed, kernel)


def sample_rows(
    original: Model,
    current: onnx.ModelProto,
    targets: Sequence[Target],
    feeds: Sequence[Mapping[str, np.ndarray]],
    max_rows: int,
) -> list[Rows]:
    """Up to ``max_rows`` rows per target, drawn evenly from ``feeds`` (seeded by feed index):
    the target's input in ``current`` (the model being pruned, a proto derived from
    ``original``'s: ``Weights.proto_with``), as Conv patches or dense rows, and ``original``'s
    output at the same positions."""
    from ..runtime import OrtRunner

    outputs = list(dict.fromkeys(t.output for t in targets))
    inputs = list(dict.fromkeys(t.node.input[0] for t in targets))
    xs: list[list[np.ndarray]] = [[] for _ in targets]
    ys: list[list[np.ndarray]] = [[] for _ in targets]
    per_feed = max(1, max_rows // max(len(feeds), 1))
    with exposing(original, outputs) as before, exposing(original, inputs, current) as now:
        run_before, run_now = OrtRunner(before, validate=False), OrtRunner(now, validate=False)
        for i, feed in enumerate(feeds):
            y_of = run_before.run(feed, output_names=outputs)
            x_of = run_now.run(feed, output_names=inputs)
            for t, target in enumerate(targets):
                x = np.asarray(x_of[target.node.input[0]], dtype=np.float64)
                y = np.asarray(y_of[target.output], dtype=np.float64)
                rng = np.random.default_rng(i)
                if target.conv:
                    grid = (y.shape[0], *y.shape[2:])
                    picks = _pick(rng, math.prod(grid), per_feed)
                    where = np.unravel_index(picks, grid)
                    xs[t].append(_patches(x, target, where))
                    at: tuple[Any, ...] = (where[0], slice(None), *where[1:])
                    ys[t].append(y[at])
                else:
                    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
                    picks = _pick(rng, len(y), per_feed)
                    xs[t].append(x[picks])
                    ys[t].append(y[picks])
    return [Rows(np.concatenate(x), np.concatenate(y)) for x, y in zip(xs, ys, strict=True)]


def _pick(rng: np.random.Generator, total: int, wanted: int) -> np.ndarray:
    if total <= wanted:
        return np.arange(total)
    return np.sort(rng.choice(total, size=wanted, replace=False))


def _patches(x: np.ndarray, target: Target, where: tuple[np.ndarray, ...]) -> np.ndarray:
    """The Conv's input patches (channel-major, as its weight) at output positions ``where``
    (batch index, then one array per spatial axis): rows x (channels * kernel size)."""
    node = target.node
    spatial = x.ndim - 2
    strides = ints_attribute(node, "strides") or [1] * spatial
    dilations = ints_attribute(node, "dilations") or [1] * spatial
    pads = ints_attribute(node, "pads") or [0] * (2 * spatial)
    padded = np.pad(x, [(0, 0), (0, 0), *((pads[i], pads[i + spatial]) for i in range(spatial))])
    span = [(k - 1) * d + 1 for k, d in zip(target.kernel, dilations, strict=True)]
    axes = tuple(range(2, 2 + spatial))
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=axes)
    at: tuple[Any, ...] = (
        where[0],
        slice(None),
        *(where[1 + i] * strides[i] for i in range(spatial)),
    )
    every: tuple[Any, ...] = (slice(None), slice(None), *(slice(None, None, d) for d in dilations))
    picked: np.ndarray = windows[at][every]
    return picked.reshape(len(where[0]), -1)


def weakest_channels(
    rows: Sequence[Rows],
    targets: Sequence[Target],
    weights: Weights,
    channels: int,
    remove: int,
) -> np.ndarray:
    """The ``remove`` channels (sorted) whose centred inputs add the least energy to the
    targets' outputs, summed over the targets."""
    energy = np.zeros(channels)
    for r, target in zip(rows, targets, strict=True):
        theta = target.matrix(weights.array(target.weight))
        centred = r.x - r.x.mean(axis=0)
        width = target.columns
        if width <= _GRAM_WIDTH:  # ||C_k W_k||^2 = sum((C_k' C_k W_k) * W_k), batched
            blocks = centred.reshape(len(centred), channels, width).transpose(1, 2, 0)
            by_channel = theta.reshape(channels, width, -1)
            energy += ((blocks @ blocks.transpose(0, 2, 1) @ by_channel) * by_channel).sum((1, 2))
            continue
        for k in range(channels):
            cols = slice(k * width, (k + 1) * width)
            energy[k] += float(np.sum((centred[:, cols] @ theta[cols]) ** 2))
    return np.sort(np.argsort(energy, kind="stable")[:remove])


def refit(
    rows: Sequence[Rows], targets: Sequence[Target], weights: Weights, keep: np.ndarray
) -> set[str]:
    """Fit each target's kept weights (and bias) to the original outputs by ridge-regularised
    least squares; ``weights`` must already hold them sliced. Returns the tensors changed."""
    changed: set[str] = set()
    for r, target in zip(rows, targets, strict=True):
        columns = np.repeat(keep, target.columns)
        x = r.x[:, columns]
        w = weights.array(target.weight)
        theta0 = target.matrix(w)
        if target.bias:
            b = weights.array(target.bias)
            x = np.hstack([x, np.ones((len(x), 1))])
            theta0 = np.vstack([theta0, b.astype(np.float64)[None, :]])
        gram = x.T @ x
        features = int(columns.sum())
        pull = np.zeros(len(gram))  # the intercept is not pulled
        pull[:features] = RIDGE * max(float(np.trace(gram[:features, :features])) / features, 1e-12)
        try:
            theta = np.linalg.solve(gram + np.diag(pull), x.T @ r.y + pull[:, None] * theta0)
        except np.linalg.LinAlgError:
            continue  # the weights stay as sliced
        if not np.isfinite(theta).all():
            continue
        if target.bias:
            weights.arrays[target.bias] = theta[-1].astype(b.dtype)
            changed.add(target.bias)
            theta = theta[:-1]
        weights.arrays[target.weight] = target.weight_from(theta, w)
        changed.add(target.weight)
    return changed


__all__ = ["RIDGE", "Rows", "Target", "refit", "refit_target", "sample_rows", "weakest_channels"]
