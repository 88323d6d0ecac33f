"""ONNX Runtime graph optimizers known to crash the process on some models, to turn off there.

    [c.optimizer for c in known_crashes(Model.load("encoder_fp16.onnx"), "all")]
    # ["NchwcTransformer"] on x86-64; [] at "basic" or on arm64

A crash inside ``InferenceSession(...)`` is a segmentation fault: no exception reaches Python
and the process is gone, so each known one is matched on the model before a session is made,
and its optimizer goes into ``disabled_optimizers``. Every entry names the upstream report; drop
it once the fixed onnxruntime is the oldest one the lock file allows.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .graphs import iter_graphs
from .model import Model

if TYPE_CHECKING:
    import onnx

_FLOAT16 = 10
_FLOAT = 1
_X86_64 = frozenset({"x86_64", "amd64", "x64"})


@dataclass(frozen=True)
class KnownCrash:
    """One optimizer that crashes ONNX Runtime at ``levels`` on models ``matches`` finds."""

    optimizer: str
    levels: frozenset[str]
    machines: frozenset[str]
    matches: Callable[[onnx.ModelProto], bool]
    why: str


def known_crashes(model: Model, level: str, machine: str | None = None) -> list[KnownCrash]:
    """The ``KNOWN_CRASHES`` that ``model`` would hit at graph optimization ``level`` (one of
    ``runtime.GRAPH_LEVELS``) on ``machine`` (``platform.machine()`` unless given)."""
    machine = (machine or platform.machine()).lower()
    return [
        crash
        for crash in KNOWN_CRASHES
        if level in crash.levels and machine in crash.machines and crash.matches(model.proto)
    ]


def float16_transpose_into_matmul(proto: onnx.ModelProto) -> bool:
    """Whether a graph of ``proto`` holds float16 tensors and feeds a Transpose's output to a
    MatMul, directly or through one Cast to float.

    The CPU provider has no float16 MatMul on x86, so ONNX Runtime wraps it in Casts to float;
    the Transpose-into-MatMul fusion that follows leaves a node without its schema, which
    NchwcTransformer then reads through a null pointer. Models converted to float16 whole
    (onnxconverter-common's ``convert_float_to_float16``, as published ``*_fp16.onnx``
    transformers are) have the pattern in every attention block. The float16 test is on the
    graph as a whole, not on the Transpose's own type: a float32 Transpose in a model that
    holds float16 elsewhere is turned off too, which costs only the NCHWc layout of its Convs.
    """
    for graph in iter_graphs(proto):
        if not _holds_float16(graph):
            continue
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        transposed = [
            node.output[0]
            for node in graph.node
            if node.op_type == "Transpose" and node.domain in ("", "ai.onnx")
        ]
        if any(_reaches_matmul(name, consumers) for name in transposed):
            return True
    return False


def _reaches_matmul(name: str, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    """Whether ``name`` goes into a MatMul, directly or through one Cast to float."""
    for node in consumers.get(name, []):
        if node.op_type == "MatMul":
            return True
        cast_to_float = node.op_type == "Cast" and _attribute(node, "to") == _FLOAT
        if cast_to_float and any(n.op_type == "MatMul" for n in consumers.get(node.output[0], [])):
            return True
    return False


def _holds_float16(graph: onnx.GraphProto) -> bool:
    declared: Iterable[onnx.ValueInfoProto] = [*graph.input, *graph.output, *graph.value_info]
    if any(value.type.tensor_type.elem_type == _FLOAT16 for value in declared):
        return True
    if any(tensor.data_type == _FLOAT16 for tensor in graph.initializer):
        return True
    for node in graph.node:
        if node.op_type == "Cast" and _attribute(node, "to") == _FLOAT16:
            return True
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == _FLOAT16:
                    return True
    return False


def _attribute(node: onnx.NodeProto, name: str) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return None


KNOWN_CRASHES: tuple[KnownCrash, ...] = (
    KnownCrash(
        optimizer="NchwcTransformer",
        levels=frozenset({"layout", "all"}),
        machines=_X86_64,
        matches=float16_transpose_into_matmul,
        why=(
            "it crashes onnxruntime on a float16 Transpose feeding a MatMul on x86-64 "
            "(microsoft/onnxruntime#28392, seen in 1.24 to 1.32)"
        ),
    ),
)
