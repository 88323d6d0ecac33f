"""Nodes kept in float in a static (QDQ) int8 model: those around tensors whose calibrated
range is infinite, and excluded nodes rewired to read their activations in float.

    cache = fp32.path.parent / "calibration.json"              # ORT's ranges, after a build
    unbounded_nodes(cache, fp32.proto)                          # []: every range is finite
    keep_float(qdq.proto, fp32.proto, ["fc2/MatMulAddFusion"])  # fc2 reads h2 in float
    as_float_ops(qdq.proto)           # how many Q/DQ nodes became the float ops computing them

ORT's ``nodes_to_exclude`` keeps an excluded node's weights in float but not its activation
inputs: the Q/DQ pair its producer quantizes for other consumers still feeds it.
``keep_float`` rewires each such node to the float tensor before that pair (re-applying a
Relu/Clip the quantizer folded into the pair) and drops the Q/DQ pairs no node reads any more.
``as_float_ops`` writes a QDQ model's quantization in float ops (for converters whose
QuantizeLinear is not a builtin of their runtime: onnx2tf's is a Flex op in TFLite).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from .sensitivity import QDQ_OPS, node_like, same_shape

if TYPE_CHECKING:
    import numpy as np
    import onnx

_FOLDED_ACTIVATIONS = ("Relu", "Clip")

_INTEGER_RANGES = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767)}
"""Saturation bounds by ONNX element type: UINT8, INT8, UINT16, INT16."""
_INT32 = 6
"""A static int8 model's biases: int32, dequantized from constants (onnx2tf's int32
DequantizeLinear gave a CNN's logits 0.35 off, on a range of 0.39)."""


def as_float_ops(proto: onnx.ModelProto) -> int:
    """Rewrite the main graph's quantization as float ops computing the same values, in place:
    DequantizeLinear of integer weights becomes the float weights; a QuantizeLinear whose
    every reader is a DequantizeLinear becomes ``Min(Max(Round(x / s) + zp, lo), hi)`` (the
    integer values, held in float; Round halves to even, as QuantizeLinear does) and each
    reader ``(q - zp) * s``. Q/DQ with a computed scale or zero point, per-axis or blocked
    activations, or float8 types stay. Returns how many Q/DQ nodes were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def parameters(node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(scale, zero point as float, element type) when both are constants."""
        names = [*node.input[1:], ""][:2]
        if names[0] not in constants or (names[1] and names[1] not in constants):
            return None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("block_size", 0):
            return None
        scale = constants[names[0]]
        zero = constants[names[1]] if names[1] else np.zeros((), np.uint8)
        element = helper.np_dtype_to_tensor_dtype(zero.dtype)
        weight = node.op_type == "DequantizeLinear" and node.input[0] in constants
        if element not in _INTEGER_RANGES and not (weight and element == _INT32):
            return None
        return scale, zero.astype(scale.dtype), element

    rewritten_q: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    count = 0

    def const(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for node in graph.node:
        found = parameters(node) if node.op_type in QDQ_OPS else None
        if found is None:
            nodes.append(node)
            continue
        scale, zero, element = found
        out = node.output[0]
        source = node.input[0]
        if node.op_type == "DequantizeLinear" and source in constants:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            value = constants[source].astype(scale.dtype)
            if scale.ndim == 1 and value.ndim:
                shape = [1] * value.ndim
                shape[axis % value.ndim] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            weights.append(
                numpy_helper.from_array(((value - zero) * scale).astype(scale.dtype), out)
            )
            count += 1
            continue
        if scale.size != 1:
            nodes.append(node)
            continue
        if node.op_type == "QuantizeLinear":
            if out in outputs or not all(
                r.op_type == "DequantizeLinear"
                and (p := parameters(r)) is not None
                and p[0].size == 1
                for r in readers.get(out, [])
            ):
                nodes.append(node)
                continue
            low, high = _INTEGER_RANGES[element]
            step = f"{out}/float"
            nodes += [
                helper.make_node("Div", [source, const(f"{step}/scale", scale)], [f"{step}/x"]),
                helper.make_node("Round", [f"{step}/x"], [f"{step}/rounded"]),
                helper.make_node(
                    "Add", [f"{step}/rounded", const(f"{step}/zero", zero)], [f"{step}/q"]
                ),
                helper.make_node(
                    "Max",
                    [f"{step}/q", const(f"{step}/low", np.asarray(low, scale.dtype))],
                    [f"{step}/low_clamped"],
                ),
                helper.make_node(
                    "Min",
                    [f"{step}/low_clamped", const(f"{step}/high", np.asarray(high, scale.dtype))],
                    [out],
                ),
            ]
            rewritten_q.add(out)
            count += 1
        elif source in rewritten_q:
            step = f"{out}/float"
            nodes += [
                helper.make_node("Sub", [source, const(f"{step}/zero", zero)], [f"{step}/centred"]),
                helper.make_node("Mul", [f"{step}/centred", const(f"{step}/scale", scale)], [out]),
            ]
            count += 1
        else:
            nodes.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(weights)
        _drop_dead_qdq(proto)
    return count


def unbounded_nodes(cache: Path, source: onnx.ModelProto) -> list[str]:
    """Nodes producing or reading a tensor whose range in ORT's calibration cache is not finite.

    ORT quantizes such a tensor anyway, with an infinite scale, and the Q/DQ pair then turns
    every value into 0 or NaN; excluding its producer and readers leaves it unquantized.
    """
    import json

    try:
        ranges = json.loads(cache.read_text())["data"]
        unbounded = {
            name
            for name, item in ranges.items()
            if not all(
                math.isfinite(float(v)) for key in ("lowest", "highest") for v in item[key]["data"]
            )
        }
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [
        node.name
        for node in source.graph.node
        if node.name and unbounded & {*node.input, *node.output}
    ]


def keep_float(qdq: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Collection[str]) -> None:
    """Rewire each node in ``nodes`` to read its activations in float, in place.

    ORT's ``nodes_to_exclude`` leaves a node's weights in float, but its activation inputs
    still come from the Q/DQ pair its producer quantizes for the other consumers. The node
    then reads the tensor that pair quantizes, unless ORT folded a Relu/Clip into the pair (the
    tensor is then the pre-activation value): that activation is applied again in float. Q/DQ
    pairs no node reads any more are removed.
    """
    graph = qdq.graph
    producer = {out: n for n in graph.node for out in n.output if out}
    f_producer = {out: n for n in fp32.graph.node for out in n.output if out}
    f_nodes = {n.name: n for n in fp32.graph.node if n.name}
    q_names = {n.name for n in graph.node}
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | set(producer)
    refolded: dict[str, str] = {}
    added: list[tuple[int, onnx.NodeProto]] = []
    for position, node in enumerate(graph.node):
        ref = f_nodes.get(node.name)
        if node.name not in nodes or ref is None or not same_shape(ref, node):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            quant = producer.get(dq.input[0]) if dq is not None else None
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if quant is None or quant.op_type != "QuantizeLinear":
                continue
            tensor, wanted = quant.input[0], ref.input[i]
            source, origin = producer.get(tensor), f_producer.get(wanted)
            if tensor == wanted and (source.name if source else None) == (
                origin.name if origin else None
            ):
                node.input[i] = tensor
            elif (
                origin is not None
                and origin.op_type in _FOLDED_ACTIVATIONS
                and origin.name not in q_names
                and tensor == wanted
                and all(not p or p in available for p in origin.input[1:])
            ):
                if wanted not in refolded:
                    refolded[wanted] = f"{wanted}/float"
                    activation = node_like(
                        origin,
                        [tensor, *origin.input[1:]],
                        [refolded[wanted]],
                        f"{origin.name}/float",
                    )
                    added.append((position, activation))
                node.input[i] = refolded[wanted]
    for offset, (position, activation) in enumerate(added):
        graph.node.insert(position + offset, activation)
    _drop_dead_qdq(qdq)


def _drop_dead_qdq(proto: onnx.ModelProto) -> None:
    graph = proto.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [
            n for n in graph.node if n.op_type in QDQ_OPS and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
