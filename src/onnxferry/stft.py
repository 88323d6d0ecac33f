"""ONNX's STFT and DFT written as the products they are, for converters without the ops.

    count = stft_as_conv(proto)     # in place: how many STFT / DFT nodes were rewritten
    given, count = with_stft_as_conv(model)   # a new Model when it had any, else ``model``

``torch.stft`` exports as ONNX's STFT and ``torch.fft.rfft`` as its DFT (opset 17), which
OpenVINO's ONNX frontend and onnx2tf do not convert; every torch model with a spectrogram
inside stopped at `package openvino` and `package tflite`, as did onnx-asr's feature
extractors (onnxscript). A real signal's STFT (the signal ``[batch, length, 1]``, or
``[batch, length]`` as onnxscript writes it and ONNX Runtime runs it) with a constant hop
and window is a 1-D convolution of the signal with ``window * cos`` and ``-window * sin``
kernels, one pair per frequency bin, at a stride of the hop, framed exactly as STFT frames
it (``(length - frame) // hop + 1`` frames), put back in STFT's layout ``[batch, frames,
bins, 2]``. A real signal's DFT along its last axis of known length is its product with the
``[cos, -sin]`` matrix, in DFT's layout ``[..., bins, 2]``. A node whose signal is complex,
or whose hop, window, length or axis is not a constant, an inverse DFT, or one along another
axis, is left as it is.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from .graphs import iter_nodes, value_names
from .model import Model

if TYPE_CHECKING:
    import onnx

STFT_NOTE = (
    "its {count} STFT / DFT node(s) were given to {tool} as the products they compute "
    "(a convolution or a matrix of cosines and sines): {tool} lacks both ops"
)


def with_stft_as_conv(model: Model) -> tuple[Model, int]:
    """``model`` with its STFT nodes as convolutions (``stft_as_conv``) and how many there
    were; ``model`` itself, and 0, when it has none that can be."""
    if not any(node.op_type in ("STFT", "DFT") for node in iter_nodes(model.proto)):
        return model, 0
    return model.rewritten(stft_as_conv)


def stft_as_conv(proto: onnx.ModelProto) -> int:
    """Rewrite the main graph's real-signal STFT nodes with constant hop, window and frame
    length as Conv, Reshape and Transposes, and its real-signal forward DFTs along the last
    axis as MatMul (module docstring); how many were rewritten."""
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
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*typed.graph.input, *typed.graph.value_info)
        if v.type.tensor_type.HasField("shape")
    }
    taken = value_names(graph)

    def fresh(stem: str) -> str:
        name = next(f"{stem}_{i}" for i in itertools.count() if f"{stem}_{i}" not in taken)
        taken.add(name)
        return name

    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            rewritten.append(node)
            continue
        if node.op_type == "DFT" and (matrix := _dft_matrix(node, constants, shapes)) is not None:
            rank = len(shapes[node.input[0]])
            stem = node.name or node.output[0]
            names = {k: fresh(f"{stem}_{k}") for k in ("matrix", "last", "shape", "real", "mm")}
            bins = matrix.shape[1] // 2
            graph.initializer.extend(
                [
                    numpy_helper.from_array(matrix, names["matrix"]),
                    numpy_helper.from_array(np.array([-1], np.int64), names["last"]),
                    numpy_helper.from_array(
                        np.array([0] * (rank - 2) + [bins, 2], np.int64), names["shape"]
                    ),
                ]
            )
            rewritten += [
                helper.make_node("Squeeze", [node.input[0], names["last"]], [names["real"]]),
                helper.make_node("MatMul", [names["real"], names["matrix"]], [names["mm"]]),
                helper.make_node(
                    "Reshape", [names["mm"], names["shape"]], list(node.output), name=stem
                ),
            ]
            count += 1
            continue
        kernel = _kernel(node, constants, shapes) if node.op_type == "STFT" else None
        if kernel is None:
            rewritten.append(node)
            continue
        weights, hop = kernel
        bins = weights.shape[0] // 2
        stem = node.name or node.output[0]
        names = {
            k: fresh(f"{stem}_{k}") for k in ("kernel", "shape", "axis", "rows", "conv", "split")
        }
        graph.initializer.extend(
            [
                numpy_helper.from_array(weights, names["kernel"]),
                numpy_helper.from_array(np.array([0, 2, bins, -1], np.int64), names["shape"]),
            ]
        )
        if len(shapes[node.input[0]]) == 2:  # [batch, length], as ONNX Runtime takes it too
            axis = numpy_helper.from_array(np.array([1], np.int64), names["axis"])
            graph.initializer.append(axis)
            rows = helper.make_node("Unsqueeze", [node.input[0], names["axis"]], [names["rows"]])
        else:  # [batch, length, 1]
            rows = helper.make_node("Transpose", [node.input[0]], [names["rows"]], perm=[0, 2, 1])
        rewritten += [
            rows,
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
    node: onnx.NodeProto, constants: dict[str, np.ndarray], shapes: dict[str, list[int]]
) -> tuple[np.ndarray, int] | None:
    """The ``[2 * bins, 1, frame]`` cos/sin kernel and the hop of an STFT node, or None when
    it cannot be a convolution (a complex or untyped signal; a hop, window or frame length
    that is not a constant). A real signal is ``[batch, length, 1]``, or ``[batch, length]``
    as onnx-asr's feature extractors (onnxscript) give it and ONNX Runtime runs it."""
    inputs = list(node.input) + [""] * (4 - len(node.input))
    signal, step, window, length = inputs[:4]
    dims = shapes.get(signal, [])
    real = len(dims) == 2 or (len(dims) == 3 and dims[-1] == 1)
    if not real or step not in constants:
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


def _dft_matrix(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], shapes: dict[str, list[int]]
) -> np.ndarray | None:
    """The ``[length, 2 * bins]`` matrix (bin k's cosine and minus sine side by side) of a
    forward DFT of a real signal along the axis before its last, or None when it cannot be
    one (an inverse DFT, a complex or untyped signal, another axis, a length that is not the
    signal's)."""
    attrs = {a.name: a.i for a in node.attribute}
    dims = shapes.get(node.input[0], [])
    if attrs.get("inverse", 0) or len(dims) < 2 or dims[-1] != 1:
        return None
    inputs = list(node.input) + [""] * (3 - len(node.input))
    length_name, axis_name = inputs[1], inputs[2]
    if axis_name:  # opset 20: the axis is an input
        if axis_name not in constants:
            return None
        axis = int(constants[axis_name].reshape(-1)[0])
    else:
        axis = attrs.get("axis", 1)
    if axis % len(dims) != len(dims) - 2:
        return None
    frame = dims[-2]
    if length_name:
        if length_name not in constants:
            return None
        frame = frame if frame == int(constants[length_name].reshape(-1)[0]) else 0
    if frame <= 0:
        return None
    bins = frame // 2 + 1 if attrs.get("onesided", 0) else frame
    angle = 2 * np.pi * np.outer(np.arange(frame), np.arange(bins)) / frame
    pairs = np.stack([np.cos(angle), -np.sin(angle)], axis=-1)  # [frame, bins, 2]
    return pairs.reshape(frame, 2 * bins).astype(np.float32)
