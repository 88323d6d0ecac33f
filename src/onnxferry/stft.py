"""ONNX's STFT written as the strided convolution it is, for converters without the op.

    count = stft_as_conv(proto)     # in place: how many STFT nodes became a Conv
    given, count = with_stft_as_conv(model)   # a new Model when it had any, else ``model``

``torch.stft`` exports as ONNX's STFT (opset 17), which OpenVINO's ONNX frontend and onnx2tf
do not convert; every torch model with a spectrogram inside stopped at `package openvino` and
`package tflite`. A real signal's STFT with a constant hop and window is a 1-D convolution of
the signal with ``window * cos`` and ``-window * sin`` kernels, one pair per frequency bin, at
a stride of the hop, framed exactly as STFT frames it (``(length - frame) // hop + 1``
frames); the result is put back in STFT's layout, ``[batch, frames, bins, 2]``. A node whose
signal is complex, or whose hop, window or frame length is not a constant, is left as it is.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from .graphs import copy_model, iter_nodes, value_names
from .model import Model

if TYPE_CHECKING:
    import onnx

STFT_NOTE = (
    "its {count} STFT node(s) were given to {tool} as the strided convolution they compute "
    "(cos and sin kernels times the window): {tool} lacks STFT"
)


def with_stft_as_conv(model: Model) -> tuple[Model, int]:
    """``model`` with its STFT nodes as convolutions (``stft_as_conv``) and how many there
    were; ``model`` itself, and 0, when it has none that can be."""
    if not any(node.op_type == "STFT" for node in iter_nodes(model.proto)):
        return model, 0
    proto = copy_model(model.proto)
    count = stft_as_conv(proto)
    return (Model.from_proto(proto), count) if count else (model, 0)


def stft_as_conv(proto: onnx.ModelProto) -> int:
    """Rewrite the main graph's real-signal STFT nodes with constant hop, window and frame
    length as Conv, Reshape and Transposes (module docstring); how many were rewritten."""
    from onnx import helper, numpy_helper, shape_inference

    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    try:
        typed = shape_inference.infer_shapes(proto)
    except Exception:  # an untyped graph just keeps its STFT nodes
        return 0
    last_dims = {
        v.name: v.type.tensor_type.shape.dim[-1].dim_value
        for v in (*typed.graph.input, *typed.graph.value_info)
        if v.type.tensor_type.shape.dim
    }
    taken = value_names(graph)

    def fresh(stem: str) -> str:
        name = next(f"{stem}_{i}" for i in itertools.count() if f"{stem}_{i}" not in taken)
        taken.add(name)
        return name

    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        kernel = _kernel(node, constants, last_dims) if node.op_type == "STFT" else None
        if kernel is None or node.domain not in ("", "ai.onnx"):
            rewritten.append(node)
            continue
        weights, hop = kernel
        bins = weights.shape[0] // 2
        stem = node.name or node.output[0]
        names = {k: fresh(f"{stem}_{k}") for k in ("kernel", "shape", "rows", "conv", "split")}
        graph.initializer.extend(
            [
                numpy_helper.from_array(weights, names["kernel"]),
                numpy_helper.from_array(np.array([0, 2, bins, -1], np.int64), names["shape"]),
            ]
        )
        rewritten += [
            helper.make_node("Transpose", [node.input[0]], [names["rows"]], perm=[0, 2, 1]),
            helper.make_node(
                "Conv", [names["rows"], names["kernel"]], [names["conv"]], strides=[hop]
            ),
            helper.make_node("Reshape", [names["conv"], names["shape"]], [names["split"]]),
            helper.make_node(
                "Transpose", [names["split"]], list(node.output), perm=[0, 3, 2, 1], name=stem
            ),
        ]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(rewritten)
    return count


def _kernel(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], last_dims: dict[str, int]
) -> tuple[np.ndarray, int] | None:
    """The ``[2 * bins, 1, frame]`` cos/sin kernel and the hop of an STFT node, or None when
    it cannot be a convolution (a complex or untyped signal; a hop, window or frame length
    that is not a constant)."""
    inputs = list(node.input) + [""] * (4 - len(node.input))
    signal, step, window, length = inputs[:4]
    if last_dims.get(signal) != 1 or step not in constants:
        return None
    if (window and window not in constants) or (length and length not in constants):
        return None
    taper = constants[window].astype(np.float64).reshape(-1) if window else None
    frame = (
        int(constants[length].reshape(-1)[0])
        if length
        else (len(taper) if taper is not None else 0)
    )
    if frame <= 0 or (taper is not None and len(taper) != frame):
        return None
    onesided = next((a.i for a in node.attribute if a.name == "onesided"), 1)
    bins = frame // 2 + 1 if onesided else frame
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(frame)) / frame
    taper = np.ones(frame) if taper is None else taper
    weights = np.concatenate([taper * np.cos(angle), -taper * np.sin(angle)])
    return weights.astype(np.float32)[:, None, :], int(constants[step].reshape(-1)[0])
