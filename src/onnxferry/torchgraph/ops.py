"""ONNX operators as torch functions: the table ``OnnxModule`` evaluates a graph with.

    fn = OPS[("", "Gemm")]                        # (domain, op_type) -> function
    y = fn(node, [h, w, b])                       # a Tensor, or a tuple for several outputs
    supported_ops()                               # ["Abs", "Add", ..., "Where"]

Each function takes the ``Node`` (its attributes already plain Python: ints, floats, lists,
strings, numpy arrays) and its input tensors (None for an omitted optional input), and
follows the ONNX operator's definition at the node's opset. Inputs that ONNX takes as data but
that fix a shape (Reshape's shape, Slice's starts, Unsqueeze's axes, ...) are read as Python
ints; a Reshape whose shape the graph computes from its input stays a tensor under tracing, so
a traced export keeps its dynamic dims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Node:
    """One ONNX node, its attributes decoded; ``opset`` is its domain's opset."""

    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @property
    def label(self) -> str:
        return self.name or f"{self.op_type}->{','.join(self.outputs)}"


OpFunction = Callable[[Node, list[Any]], Any]
OPS: dict[tuple[str, str], OpFunction] = {}


def op(*names: str) -> Callable[[OpFunction], OpFunction]:
    def register(fn: OpFunction) -> OpFunction:
        for name in names:
            OPS[("", name)] = fn
        return fn

    return register


RUN_BY_THE_MODULE = ("If", "Loop", "Scan")
"""Operators that hold graphs: ``OnnxModule`` runs their branches itself."""


def supported_ops() -> list[str]:
    """The ai.onnx operators the converter knows, sorted."""
    return sorted([*(name for domain, name in OPS if domain == ""), *RUN_BY_THE_MODULE])


def ints(tensor: Any) -> list[int]:
    """A small int tensor (shape, axes, pads) as Python ints."""
    return [int(v) for v in tensor.reshape(-1).tolist()]


def _torch() -> Any:
    import torch

    return torch


def _functional() -> Any:
    import torch.nn.functional as F

    return F


# --- elementwise ------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Pow": lambda a, b: _torch().pow(a, b),
    "Equal": lambda a, b: a == b,
    "Less": lambda a, b: a < b,
    "Greater": lambda a, b: a > b,
    "LessOrEqual": lambda a, b: a <= b,
    "GreaterOrEqual": lambda a, b: a >= b,
    "And": lambda a, b: a & b,
    "Or": lambda a, b: a | b,
}


@op(*_BINARY)
def _binary(node: Node, xs: list[Any]) -> Any:
    return _BINARY[node.op_type](xs[0], xs[1])


@op("Div")
def _div(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    a, b = xs
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Erf": "erf",
    "Sqrt": "sqrt",
    "Exp": "exp",
    "Log": "log",
    "Neg": "neg",
    "Abs": "abs",
    "Reciprocal": "reciprocal",
    "Floor": "floor",
    "Ceil": "ceil",
    "Not": "logical_not",
    "Sin": "sin",
    "Cos": "cos",
}
"""Elementwise operators that are one ``torch`` function of the same name."""

_UNARY_FUNCTIONAL = {
    "Softplus": "softplus",
    "Softsign": "softsign",
    "HardSwish": "hardswish",
    "Mish": "mish",
}
"""Elementwise operators that are one ``torch.nn.functional`` function."""


@op(*_UNARY, *_UNARY_FUNCTIONAL)
def _unary(node: Node, xs: list[Any]) -> Any:
    if node.op_type in _UNARY:
        return getattr(_torch(), _UNARY[node.op_type])(xs[0])
    return getattr(_functional(), _UNARY_FUNCTIONAL[node.op_type])(xs[0])


@op("Identity", "Dropout")
def _identity(node: Node, xs: list[Any]) -> Any:
    # Dropout: ferry trains with the model's dropout off (ratio is not learnt, and ONNX
    # exports of trained models set it to inference mode); the mask output is all true.
    x = xs[0]
    if node.op_type == "Dropout" and len(node.outputs) > 1:
        return x, _torch().ones_like(x, dtype=_torch().bool)
    return x


@op("LeakyRelu")
def _leaky_relu(node: Node, xs: list[Any]) -> Any:
    return _functional().leaky_relu(xs[0], float(node.attr("alpha", 0.01)))


@op("Elu")
def _elu(node: Node, xs: list[Any]) -> Any:
    return _functional().elu(xs[0], float(node.attr("alpha", 1.0)))


@op("HardSigmoid")
def _hard_sigmoid(node: Node, xs: list[Any]) -> Any:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return _torch().clamp(xs[0] * alpha + beta, 0.0, 1.0)


@op("Gelu")
def _gelu(node: Node, xs: list[Any]) -> Any:
    approximate = node.attr("approximate", "none")
    return _functional().gelu(xs[0], approximate=approximate)


@op("PRelu")
def _prelu(node: Node, xs: list[Any]) -> Any:
    x, slope = xs
    return _torch().where(x >= 0, x, x * slope)


@op("Clip")
def _clip(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low = xs[1] if len(xs) > 1 and xs[1] is not None else None
        high = xs[2] if len(xs) > 2 and xs[2] is not None else None
    return _torch().clamp(x, low, high)


@op("Where")
def _where(node: Node, xs: list[Any]) -> Any:
    return _torch().where(xs[0], xs[1], xs[2])


@op("Sum", "Max", "Min", "Mean")
def _variadic(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    result = xs[0]
    for x in xs[1:]:
        if node.op_type in ("Sum", "Mean"):
            result = result + x
        elif node.op_type == "Max":
            result = torch.maximum(result, x)
        else:
            result = torch.minimum(result, x)
    return result / len(xs) if node.op_type == "Mean" else result


@op("Cast")
def _cast(node: Node, xs: list[Any]) -> Any:
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(int(node.attr("to")))
    return xs[0].to(torch_dtype(dtype))


def torch_dtype(dtype: np.dtype[Any]) -> Any:
    """The torch dtype of a numpy dtype."""
    torch = _torch()
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


# --- linear algebra and normalisation ---------------------------------------------------------


@op("MatMul")
def _matmul(node: Node, xs: list[Any]) -> Any:
    return _torch().matmul(xs[0], xs[1])


@op("Gemm")
def _gemm(node: Node, xs: list[Any]) -> Any:
    a, b = xs[0], xs[1]
    c = xs[2] if len(xs) > 2 else None
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    if not trans_a and alpha == 1.0 and beta == 1.0:  # a linear layer: exported as one Gemm
        return _functional().linear(a, b if trans_b else b.t(), c)
    if trans_a:
        a = a.t()
    if trans_b:
        b = b.t()
    y = (a @ b) * alpha
    return y + c * beta if c is not None else y


@op("BatchNormalization")
def _batch_norm(node: Node, xs: list[Any]) -> Any:
    # Running statistics stay as they are: fine-tuning a converted model keeps them frozen
    # (they are buffers), and the scale and bias train.
    x, scale, bias, mean, var = xs[:5]
    eps = float(node.attr("epsilon", 1e-5))
    y = _functional().batch_norm(x, mean, var, scale, bias, False, 0.0, eps)
    return (y, mean, var) if len(node.outputs) > 1 else y


@op("InstanceNormalization")
def _instance_norm(node: Node, xs: list[Any]) -> Any:
    eps = float(node.attr("epsilon", 1e-5))
    return _functional().instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=eps)


@op("LayerNormalization")
def _layer_norm(node: Node, xs: list[Any]) -> Any:
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    axis = int(node.attr("axis", -1)) % x.dim()
    shape = tuple(int(d) for d in x.shape[axis:])  # plain ints: the weights' dims, static
    eps = float(node.attr("epsilon", 1e-5))
    weight = scale.expand(shape) if tuple(scale.shape) != shape else scale
    if bias is not None and tuple(bias.shape) != shape:
        bias = bias.expand(shape)
    return _functional().layer_norm(x, shape, weight, bias, eps)


@op("LRN")
def _lrn(node: Node, xs: list[Any]) -> Any:
    return _functional().local_response_norm(
        xs[0],
        int(node.attr("size")),
        alpha=float(node.attr("alpha", 1e-4)),
        beta=float(node.attr("beta", 0.75)),
        k=float(node.attr("bias", 1.0)),
    )


@op("Softmax", "LogSoftmax")
def _softmax(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    F = _functional()
    fn = F.softmax if node.op_type == "Softmax" else F.log_softmax
    if node.opset >= 13:
        return fn(x, dim=int(node.attr("axis", -1)))
    axis = int(node.attr("axis", 1)) % x.dim()  # before 13: flattened to 2-D at axis
    flat = x.reshape(math.prod(x.shape[:axis]), -1) if axis else x.reshape(1, -1)
    return fn(flat, dim=1).reshape(x.shape)


# --- convolution and pooling ------------------------------------------------------------------


def _pads(node: Node, x: Any, kernel: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads [begin..., end...] for the node, auto_pad resolved against x's shape."""
    spatial = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        strides = node.attr("strides", [1] * spatial)
        begins, ends = [], []
        for i in range(spatial):
            size = int(x.shape[2 + i])
            out = -(-size // strides[i])
            effective = (kernel[i] - 1) * dilations[i] + 1
            total = max(0, (out - 1) * strides[i] + effective - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else large)
            ends.append(large if auto == "SAME_UPPER" else small)
        return [*begins, *ends]
    if auto == "VALID":
        return [0] * (2 * spatial)
    return list(node.attr("pads", [0] * (2 * spatial)))


def _symmetric(pads: Sequence[int], x: Any, value: float = 0.0) -> tuple[Any, list[int]]:
    """Pads torch's pooling and convolution take (one per side), padding x first when ONNX's
    begin and end pads differ."""
    half = len(pads) // 2
    begins, ends = list(pads[:half]), list(pads[half:])
    if begins == ends:
        return x, begins
    return _padded(x, pads, value), [0] * half


def _padded(x: Any, pads: Sequence[int], value: float = 0.0) -> Any:
    """x padded by ONNX pads [begin..., end...] over its last spatial axes."""
    half = len(pads) // 2
    torch_pads: list[int] = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:]), strict=True):
        torch_pads += [b, e]
    return _functional().pad(x, torch_pads, value=value)


@op("Conv")
def _conv(node: Node, xs: list[Any]) -> Any:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    spatial = w.dim() - 2
    kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
    dilations = list(node.attr("dilations", [1] * spatial))
    x, padding = _symmetric(_pads(node, x, kernel, dilations), x)
    conv = getattr(_functional(), f"conv{spatial}d")
    return conv(
        x,
        w,
        b,
        stride=list(node.attr("strides", [1] * spatial)),
        padding=padding,
        dilation=dilations,
        groups=int(node.attr("group", 1)),
    )


@op("ConvTranspose")
def _conv_transpose(node: Node, xs: list[Any]) -> Any:
    """Unpadded, then cropped by ONNX's pads: torch takes one pad per side, ONNX two."""
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    spatial = w.dim() - 2
    strides = list(node.attr("strides", [1] * spatial))
    dilations = list(node.attr("dilations", [1] * spatial))
    extra = list(node.attr("output_padding", [0] * spatial))
    kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
    full = [
        strides[i] * (int(x.shape[2 + i]) - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
        for i in range(spatial)
    ]
    auto = node.attr("auto_pad", "NOTSET")
    shape = node.attr("output_shape")
    if shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        wanted = list(shape)[-spatial:] if shape is not None else None
        totals = [
            full[i] - (wanted[i] if wanted else int(x.shape[2 + i]) * strides[i])
            for i in range(spatial)
        ]
        if any(t < 0 for t in totals):
            raise UnsupportedOp(node, "with an output_shape larger than the full output")
        light = [t // 2 for t in totals]  # SAME_UPPER crops the odd one off the end
        heavy = [t - t // 2 for t in totals]
        pads = [*light, *heavy] if auto == "SAME_UPPER" else [*heavy, *light]
    elif auto == "VALID":
        pads = [0] * (2 * spatial)
    else:
        pads = list(node.attr("pads", [0] * (2 * spatial)))
    if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations, strict=True)):
        raise UnsupportedOp(node, "with output_padding not below its stride or dilation")
    transposed = getattr(_functional(), f"conv_transpose{spatial}d")
    y = transposed(
        x,
        w,
        b,
        stride=strides,
        output_padding=extra,
        dilation=dilations,
        groups=int(node.attr("group", 1)),
    )
    crop = [slice(None), slice(None)]
    crop += [slice(pads[i], full[i] - pads[spatial + i]) for i in range(spatial)]
    return y[tuple(crop)]


@op("MaxPool", "AveragePool")
def _pool(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    kernel = list(node.attr("kernel_shape"))
    spatial = len(kernel)
    dilations = list(node.attr("dilations", [1] * spatial))
    pads = _pads(node, x, kernel, dilations)
    short = _short_of_window(x, kernel, dilations, pads)
    strides = list(node.attr("strides", [1] * spatial))
    ceil = bool(node.attr("ceil_mode", 0))
    F = _functional()
    if node.op_type == "MaxPool":
        x, padding = _symmetric(_widened(pads, short), x, value=-math.inf)
        pool = getattr(F, f"max_pool{spatial}d")
        return pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)
    include = bool(node.attr("count_include_pad", 0))
    half = len(pads) // 2
    pool = getattr(F, f"avg_pool{spatial}d")
    if pads[:half] == pads[half:] and not any(short):
        return pool(x, kernel, strides, pads[:half], ceil_mode=ceil, count_include_pad=include)
    # Unequal pads or a short input: pad first; with count_include_pad, ONNX Runtime divides by
    # the whole window (as torch does here), else by the real elements in it.
    widened = _widened(pads, short)
    sums = pool(_padded(x, widened), kernel, strides, 0, ceil_mode=ceil)
    if include:
        return sums
    counted = _padded(_torch().ones_like(x[:1, :1]), widened)
    return sums / pool(counted, kernel, strides, 0, ceil_mode=ceil)


def _short_of_window(
    x: Any, kernel: Sequence[int], dilations: Sequence[int], pads: Sequence[int]
) -> list[int]:
    """Per spatial axis, how much the padded input falls short of one window. ONNX Runtime
    still gives one output there, over the elements it has (its output size truncates toward
    zero: PaddleOCR's recognizer pools a height of 2 with a kernel of 3); torch gives none."""
    half = len(kernel)
    return [
        max(
            0, (kernel[i] - 1) * dilations[i] + 1 - (int(x.shape[2 + i]) + pads[i] + pads[half + i])
        )
        for i in range(half)
    ]


def _widened(pads: Sequence[int], short: Sequence[int]) -> list[int]:
    """``pads`` with ``short`` more at the end of each axis."""
    half = len(pads) // 2
    return [*pads[:half], *(end + more for end, more in zip(pads[half:], short, strict=True))]


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    dims = tuple(range(2, x.dim()))
    if node.op_type == "GlobalAveragePool":
        return x.mean(dim=dims, keepdim=True)
    return x.amax(dim=dims, keepdim=True)


# --- shapes -----------------------------------------------------------------------------------


@op("Flatten")
def _flatten(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    axis = int(node.attr("axis", 1)) % (x.dim() + 1)
    if axis == 0:
        return x.reshape(1, -1)
    if axis == x.dim():
        return x.reshape(-1, 1)
    return x.flatten(0, axis - 1).flatten(1)


@op("Reshape")
def _reshape(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    x, shape = xs[0], xs[1]
    allow_zero = bool(node.attr("allowzero", 0))
    if node.attrs.get("_dynamic_shape", False) and torch.jit.is_tracing():
        # A shape computed from the input: traced as a tensor, so the export stays dynamic.
        if not allow_zero:
            dims = torch._shape_as_tensor(x)[: shape.shape[0]]
            if dims.shape[0] < shape.shape[0]:
                pad = torch.zeros(shape.shape[0] - dims.shape[0], dtype=dims.dtype)
                dims = torch.cat([dims, pad])
            shape = torch.where(shape == 0, dims, shape)
        return torch._reshape_from_tensor(x, shape)
    target: list[Any] = []
    for i, size in enumerate(ints(shape)):
        target.append(x.shape[i] if size == 0 and not allow_zero else size)
    if node.attrs.get("_batch_one") and target and target[0] == 1:
        target[0] = x.shape[0]  # a batch-1 export's batch, trained on more rows
    return x.reshape(target)


@op("Transpose")
def _transpose(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    perm = node.attr("perm") or list(reversed(range(x.dim())))
    return x.permute(*perm)


@op("Concat")
def _concat(node: Node, xs: list[Any]) -> Any:
    return _torch().cat([x for x in xs if x is not None], dim=int(node.attr("axis")))


def _axes(node: Node, xs: list[Any], since: int) -> list[int] | None:
    if node.opset >= since:
        return ints(xs[1]) if len(xs) > 1 and xs[1] is not None else None
    axes = node.attr("axes")
    return list(axes) if axes is not None else None


@op("Unsqueeze")
def _unsqueeze(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    axes = _axes(node, xs, 13) or []
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Squeeze")
def _squeeze(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    axes = _axes(node, xs, 13)
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


@op("Shape")
def _shape(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    dims = torch._shape_as_tensor(xs[0])
    start, end = node.attr("start", 0), node.attr("end")
    return dims[start:end]


@op("Size")
def _size(node: Node, xs: list[Any]) -> Any:
    return _torch().tensor(xs[0].numel(), dtype=_torch().int64)


@op("Gather")
def _gather(node: Node, xs: list[Any]) -> Any:
    x, index = xs
    axis = int(node.attr("axis", 0)) % x.dim()
    index = _torch().where(index < 0, index + x.shape[axis], index)
    flat = x.index_select(axis, index.reshape(-1))
    return flat.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


@op("Slice")
def _slice(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ints(xs[1]), ints(xs[2])
        axes = ints(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
        steps = ints(xs[4]) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.dim()
        size = int(x.shape[axis])
        if step < 0:  # torch slices forward only: flip, then slice the mirrored range
            first = min(max(start + size if start < 0 else start, -1), size - 1)
            stop = min(max(end + size if end < 0 else end, -1), size - 1)
            index[axis] = slice(size - 1 - first, size - 1 - stop, -step)
            flips.append(axis)
            continue
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    if flips:
        x = x.flip(flips)
    return x[tuple(index)]


@op("Split")
def _split(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    axis = int(node.attr("axis", 0))
    if node.opset >= 13:
        sizes = ints(xs[1]) if len(xs) > 1 and xs[1] is not None else None
    else:
        sizes = node.attr("split")
    if sizes is None:
        count = int(node.attr("num_outputs", len(node.outputs)))
        chunk = -(-int(x.shape[axis]) // count)
        return tuple(x.split(chunk, dim=axis))
    return tuple(x.split(list(sizes), dim=axis))


@op("Expand")
def _expand(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    x, shape = xs[0], xs[1]
    if node.attrs.get("_dynamic_shape", False) and torch.jit.is_tracing():
        # A shape computed from the input (tf2onnx's LSTM initial states): its elements given
        # as traced 0-d tensors keep the export's batch dynamic; ones of that shape broadcast.
        sizes = [shape[i] for i in range(int(shape.shape[0]))]
        return x * torch.ones(sizes, dtype=x.dtype)
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@op("Tile")
def _tile(node: Node, xs: list[Any]) -> Any:
    return xs[0].repeat(*ints(xs[1]))


@op("Resize", "Upsample")
def _resize(node: Node, xs: list[Any]) -> Any:
    from .resize import Resize, resize

    x = xs[0]
    legacy = node.op_type == "Upsample" or node.opset < 11
    mode = node.attr("mode", "nearest")
    if int(node.attr("antialias", 0)) and mode != "nearest":
        raise UnsupportedOp(node, "with antialias")
    if mode not in ("nearest", "linear", "cubic"):
        raise UnsupportedOp(node, f"in mode {mode}")
    how = Resize(
        mode=mode,
        coordinates="asymmetric"
        if legacy
        else node.attr("coordinate_transformation_mode", "half_pixel"),
        nearest="simple" if legacy else node.attr("nearest_mode", "round_prefer_floor"),
        cubic_a=float(node.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(node.attr("exclude_outside", 0)),
        extrapolation=float(node.attr("extrapolation_value", 0.0)),
        aspect_policy=node.attr("keep_aspect_ratio_policy", "stretch"),
    )
    if node.op_type == "Upsample" and node.opset < 9:
        return resize(x, how, scales=list(node.attr("scales")))
    given = [v if v is not None and v.numel() else None for v in xs[1:]]
    if legacy:
        (scales,) = given[:1]
        return resize(x, how, scales=scales.tolist() if scales is not None else None)
    roi, scales, sizes = [*given, None, None, None][:3]
    return resize(
        x,
        how,
        scales=scales.tolist() if scales is not None else None,
        sizes=ints(sizes) if sizes is not None else None,
        roi=roi.tolist() if roi is not None else None,
        axes=node.attr("axes"),
    )


@op("GatherElements")
def _gather_elements(node: Node, xs: list[Any]) -> Any:
    x, index = xs
    axis = int(node.attr("axis", 0)) % x.dim()
    index = _torch().where(index < 0, index + x.shape[axis], index)
    return _torch().gather(x, axis, index.long())


@op("OneHot")
def _one_hot(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    indices, depth, values = xs
    size = int(depth.reshape(-1)[0])
    indices = indices.long()
    indices = torch.where(indices < 0, indices + size, indices)
    inside = (indices >= 0) & (indices < size)
    hot = _functional().one_hot(torch.where(inside, indices, 0), size) * inside[..., None]
    axis = int(node.attr("axis", -1)) % (indices.dim() + 1)
    picked = torch.where(hot.bool(), values[1], values[0])
    return picked.movedim(-1, axis)


_SCATTER_REDUCTIONS = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@op("ScatterElements")
def _scatter_elements(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    x, index, updates = xs
    axis = int(node.attr("axis", 0)) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index).long()
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        return x.scatter(axis, index, updates)
    return x.scatter_reduce(axis, index, updates, _SCATTER_REDUCTIONS[reduction])


def _complex_signal(x: Any) -> tuple[Any, bool]:
    """ONNX's ``[..., 1]`` real or ``[..., 2]`` (real, imaginary) signal as a torch tensor
    without that last axis (complex for the second), and whether it was real."""
    if x.shape[-1] == 1:
        return x[..., 0], True
    return _torch().complex(x[..., 0], x[..., 1]), False


def _as_pairs(spectrum: Any) -> Any:
    return _torch().stack([spectrum.real, spectrum.imag], dim=-1)


@op("DFT")
def _dft(node: Node, xs: list[Any]) -> Any:
    fft = _torch().fft
    x = xs[0]
    given = [v if v is not None and v.numel() else None for v in [*xs[1:], None, None]]
    length = int(given[0].reshape(-1)[0]) if given[0] is not None else None
    if node.opset >= 20:
        axis = int(given[1].reshape(-1)[0]) if given[1] is not None else -2
    else:
        axis = int(node.attr("axis", 1))
    axis %= x.dim()
    signal, real = _complex_signal(x)
    inverse, onesided = int(node.attr("inverse", 0)), int(node.attr("onesided", 0))
    if inverse and onesided:
        raise UnsupportedOp(node, "inverse and onesided")
    n = length or int(signal.shape[axis])
    if inverse:
        return _as_pairs(fft.ifft(signal, n=n, dim=axis))
    if onesided and real:
        return _as_pairs(fft.rfft(signal, n=n, dim=axis))
    spectrum = fft.fft(signal, n=n, dim=axis)
    return _as_pairs(spectrum.narrow(axis, 0, n // 2 + 1) if onesided else spectrum)


@op("STFT")
def _stft(node: Node, xs: list[Any]) -> Any:
    fft = _torch().fft
    x = xs[0]  # ONNX Runtime also takes a real [batch, length] without the last axis
    signal, real = (x, True) if x.dim() == 2 else _complex_signal(x)
    step = int(xs[1].reshape(-1)[0])
    window = xs[2] if len(xs) > 2 else None
    size = xs[3] if len(xs) > 3 else None
    if size is not None:
        n = int(size.reshape(-1)[0])
    elif window is not None:
        n = int(window.shape[0])
    else:
        raise UnsupportedOp(node, "without a window or a frame length")
    frames = signal.unfold(1, n, step)  # [batch, frames, n]
    if window is not None:
        frames = frames * window
    onesided = int(node.attr("onesided", 1))
    if onesided and real:
        return _as_pairs(fft.rfft(frames, dim=-1))
    spectrum = fft.fft(frames, dim=-1)
    return _as_pairs(spectrum[..., : n // 2 + 1] if onesided else spectrum)


def _per_axis(values: Any, x: Any, axis: int) -> Any:
    """A scale or zero point: one per ``axis`` of ``x`` broadcast along it, or a scalar."""
    if values.dim() == 0 or values.numel() == 1 or x.dim() == 0:
        return values.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return values.reshape(shape)


def _quantization(node: Node, xs: list[Any]) -> tuple[Any, Any, Any, int]:
    """(x, scale, zero point or None, axis) of a QuantizeLinear or DequantizeLinear."""
    if int(node.attr("block_size", 0)):
        raise UnsupportedOp(node, "with block_size")
    point = xs[2] if len(xs) > 2 and xs[2] is not None else None
    return xs[0], xs[1], point, int(node.attr("axis", 1))


@op("DequantizeLinear")
def _dequantize(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    x, scale, point, axis = _quantization(node, xs)
    if x.dtype not in (torch.uint8, torch.int8, torch.int32):
        raise UnsupportedOp(node, f"of {str(x.dtype).removeprefix('torch.')}")
    shifted = x.to(torch.int32)
    if point is not None:
        shifted = shifted - _per_axis(point, x, axis).to(torch.int32)
    return shifted.to(scale.dtype) * _per_axis(scale, x, axis)


@op("QuantizeLinear")
def _quantize(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    x, scale, point, axis = _quantization(node, xs)
    dtype = point.dtype if point is not None else torch.uint8
    if dtype not in (torch.uint8, torch.int8):
        raise UnsupportedOp(node, f"to {str(dtype).removeprefix('torch.')}")
    q = torch.round(x / _per_axis(scale, x, axis))  # half to even, as ONNX says
    if point is not None:
        q = q + _per_axis(point, x, axis).to(q.dtype)
    info = torch.iinfo(dtype)
    return q.clamp(info.min, info.max).to(dtype)


@op("Mod")
def _mod(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    if int(node.attr("fmod", 0)):
        return torch.fmod(xs[0], xs[1])
    return torch.remainder(xs[0], xs[1])


@op("Pad")
def _pad(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        pads, value = list(node.attr("pads")), float(node.attr("value", 0.0))
    else:
        pads = ints(xs[1])
        value = float(xs[2].item()) if len(xs) > 2 and xs[2] is not None else 0.0
    if len(xs) > 3 and xs[3] is not None:
        raise UnsupportedOp(node, "with an axes input")
    half = len(pads) // 2
    torch_pads: list[int] = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:]), strict=True):
        torch_pads += [b, e]
    while torch_pads and torch_pads[-2:] == [0, 0]:  # torch pads the trailing dims only
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return _functional().pad(x, torch_pads, value=value)
    # reflect and edge pad all but the first one or two dims of a 2-D to 5-D tensor
    spatial = max(1, x.dim() - 2)
    if len(torch_pads) > 2 * (x.dim() - 1):
        raise UnsupportedOp(node, f"in mode {mode} on the leading dims of a {x.dim()}-D tensor")
    torch_pads += [0, 0] * (spatial - len(torch_pads) // 2)
    return _functional().pad(x, torch_pads, mode="replicate" if mode == "edge" else mode)


@op("ConstantOfShape")
def _constant_of_shape(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    value = node.attr("value")
    fill = value.reshape(-1) if value is not None else np.zeros(1, np.float32)
    return torch.full(ints(xs[0]), fill[0].item(), dtype=torch_dtype(fill.dtype))


@op("Constant")
def _constant(node: Node, xs: list[Any]) -> Any:
    torch = _torch()
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in node.attrs:
            value = np.asarray(node.attrs[key])
            if key in ("value_float", "value_floats"):
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return torch.from_numpy(np.array(value, copy=True))
    raise UnsupportedOp(node, "with a sparse or string value")


@op("Range")
def _range(node: Node, xs: list[Any]) -> Any:
    start, limit, delta = (x.item() for x in xs)
    return _torch().arange(start, limit, delta, dtype=xs[0].dtype)


# --- reductions -------------------------------------------------------------------------------

_REDUCERS = {
    "ReduceMean": "mean",
    "ReduceSum": "sum",
    "ReduceMax": "amax",
    "ReduceMin": "amin",
    "ReduceProd": "prod",
}


@op(*_REDUCERS, "ReduceL2", "ReduceSumSquare")
def _reduce(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    since = 13 if node.op_type == "ReduceSum" else 18
    axes = _axes(node, xs, since)
    keep = bool(node.attr("keepdims", 1))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = tuple(a % x.dim() for a in axes)
    if node.op_type == "ReduceL2":
        return (x * x).sum(dim=dims, keepdim=keep).sqrt()
    if node.op_type == "ReduceSumSquare":
        return (x * x).sum(dim=dims, keepdim=keep)
    if node.op_type == "ReduceProd":
        for d in sorted(dims, reverse=True):
            x = x.prod(dim=d, keepdim=keep)
        return x
    return getattr(x, _REDUCERS[node.op_type])(dim=dims, keepdim=keep)


@op("ArgMax", "ArgMin")
def _arg(node: Node, xs: list[Any]) -> Any:
    x = xs[0]
    axis, keep = int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
    fn = x.argmax if node.op_type == "ArgMax" else x.argmin
    return fn(dim=axis, keepdim=keep)


# --- recurrent ---------------------------------------------------------------------------


_GATE_ACTIVATIONS: dict[str, Callable[[Any, float | None, float | None], Any]] = {
    "Sigmoid": lambda x, a, b: x.sigmoid(),
    "Tanh": lambda x, a, b: x.tanh(),
    "Relu": lambda x, a, b: x.relu(),
    "HardSigmoid": lambda x, a, b: (
        x * (0.2 if a is None else a) + (0.5 if b is None else b)
    ).clamp(0.0, 1.0),
    "LeakyRelu": lambda x, a, b: _functional().leaky_relu(x, 0.01 if a is None else a),
    "Softsign": lambda x, a, b: x / (1 + x.abs()),
    "Softplus": lambda x, a, b: _functional().softplus(x),
}


@op("LSTM")
def _lstm(node: Node, xs: list[Any]) -> Any:
    """ONNX's LSTM (gates i, o, f, c), step by step so it trains: both directions,
    peepholes, ``clip``, ``sequence_lens`` (steps past a row's length keep its state and give
    zeros) and initial states; outputs Y, Y_h, Y_c (``layout`` 0, the one ONNX Runtime runs)."""
    torch = _torch()
    x, w, r = xs[0], xs[1], xs[2]
    bias, lens, h0, c0, peep = (*xs[3:], None, None, None, None, None)[:5]
    if int(node.attr("input_forget", 0)):
        raise UnsupportedOp(node, "with input_forget")
    if int(node.attr("layout", 0)):  # ONNX Runtime's CPU kernel refuses it too
        raise UnsupportedOp(node, "with layout 1")
    steps, hidden = int(x.shape[0]), int(r.shape[-1])
    direction = node.attr("direction", "forward")
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    names = node.attr("activations") or ["Sigmoid", "Tanh", "Tanh"] * len(reverse)
    alphas, betas = node.attr("activation_alpha") or [], node.attr("activation_beta") or []
    unknown = [n for n in names if n not in _GATE_ACTIVATIONS]
    if unknown:
        raise UnsupportedOp(node, f"with activation {unknown[0]}")

    clip = node.attr("clip")

    def gate(k: int) -> Callable[[Any], Any]:
        """Activation k, its input clipped first (peephole terms included, as ORT does)."""
        fn = _GATE_ACTIVATIONS[names[k]]
        a = float(alphas[k]) if k < len(alphas) else None
        b = float(betas[k]) if k < len(betas) else None
        if clip is None:
            return lambda v: fn(v, a, b)
        return lambda v: fn(v.clamp(-float(clip), float(clip)), a, b)

    valid = None if lens is None else torch.arange(steps)[:, None] < lens.long()[None, :]
    ys, hs, cs = [], [], []
    for d, backwards in enumerate(reverse):
        f, g, h = gate(3 * d), gate(3 * d + 1), gate(3 * d + 2)
        zeros = x.new_zeros(1, hidden).expand(x.shape[1], hidden)  # the batch stays traced
        state_h = zeros if h0 is None else h0[d]
        state_c = zeros if c0 is None else c0[d]
        b = x.new_zeros(8 * hidden) if bias is None else bias[d]
        pi, po, pf = (None, None, None) if peep is None else peep[d].split(hidden)
        out: list[Any] = [None] * steps
        for t in reversed(range(steps)) if backwards else range(steps):
            z = x[t] @ w[d].T + state_h @ r[d].T + b[: 4 * hidden] + b[4 * hidden :]
            zi, zo, zf, zc = z.split(hidden, dim=-1)
            if pi is not None:
                zi, zf = zi + pi * state_c, zf + pf * state_c
            c_new = f(zf) * state_c + f(zi) * g(zc)
            if po is not None:
                zo = zo + po * c_new
            h_new = f(zo) * h(c_new)
            if valid is None:
                state_h, state_c, out[t] = h_new, c_new, h_new
            else:
                keep = valid[t][:, None]
                state_h = torch.where(keep, h_new, state_h)
                state_c = torch.where(keep, c_new, state_c)
                out[t] = torch.where(keep, h_new, torch.zeros_like(h_new))
        ys.append(torch.stack(out))
        hs.append(state_h)
        cs.append(state_c)
    return torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)


class UnsupportedOp(Exception):
    """An operator (or one of its variants) the converter does not translate."""

    def __init__(self, node: Node, detail: str = "") -> None:
        super().__init__(f"{node.op_type} {detail}".strip())
        self.node = node
        self.detail = detail
