"""Nodes kept in float in a static (QDQ) int8 model: those around tensors whose calibrated
range is infinite, and excluded nodes rewired to read their activations in float.

    cache = fp32.path.parent / "calibration.json"              # ORT's ranges, after a build
    unbounded_nodes(cache, fp32.proto)                          # []: every range is finite
    keep_float(qdq.proto, fp32.proto, ["fc2/MatMulAddFusion"])  # fc2 reads h2 in float

ORT's ``nodes_to_exclude`` keeps an excluded node's weights in float but not its activation
inputs: the Q/DQ pair its producer quantizes for other consumers still feeds it.
``keep_float`` rewires each such node to the float tensor before that pair (re-applying a
Relu/Clip the quantizer folded into the pair) and drops the Q/DQ pairs no node reads any more.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from .sensitivity import QDQ_OPS, node_like, same_shape

if TYPE_CHECKING:
    import onnx

_FOLDED_ACTIVATIONS = ("Relu", "Clip")


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
