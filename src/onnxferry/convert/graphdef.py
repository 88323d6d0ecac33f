"""Frozen TensorFlow 1 graphs as conversion sources: a ``GraphDef`` in a ``.pb`` file (what
``freeze_graph`` writes, OpenCV DNN's samples and the TF object detection API's
``frozen_inference_graph.pb``), weights held as constants, no signature.

    source = load_graph_def("frozen.pb", ConvertOptions())
    source.reference.signature   # inputs: its placeholders; outputs: the tensors no node reads
    source.reference.run(feeds)  # the graph in TensorFlow, {name: array}

Names: each input is its ``Placeholder``'s name (``input`` for ``input:0``); each output is
its node's name (``prob``), ``node_1`` for a node's second output. The outputs are the graph's
ends: every output of every node nothing reads (bookkeeping left out: ``NoOp``, ``Assert``,
``save/...``, a TF1 ``tf.cond``'s loose Identities), as TensorFlow's ``summarize_graph``
finds them. The "tf2onnx" candidate runs the graph, imported and pruned to those tensors,
in a ``tf.function``, as SavedModels are converted (``convert.tf_common``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, one_line
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import ConvertOptions, Source
from .tf_common import (
    common_batch_name,
    import_tf,
    output_shape,
    quiet_tf,
    resolve_opset,
    shape_dims,
    source_shape,
)
from .tf_function import FunctionRunner

_NOT_OUTPUTS = {"Placeholder", "Const", "NoOp", "Assert", "SaveV2", "RestoreV2"}
"""Ops that end a graph without being what it computes."""
_VARIABLES = {"VariableV2", "Variable", "VarHandleOp"}


def load_graph_def(path: str | Path, options: ConvertOptions) -> Source:
    """A frozen GraphDef (``.pb``) to convert. InputError (exit 2) for a file that is not
    one, a graph that still holds variables (not frozen) or has no placeholder."""
    opset = resolve_opset(options)
    runner = GraphDefRunner(path, options)
    ends = f"outputs: {', '.join(runner.tensor_names)} (the tensors no node of the graph reads)"
    what = f"{runner.path}: frozen TensorFlow graph, {runner.node_count} nodes"
    return runner.source(what, opset, notes=[ends])


class GraphDefRunner(FunctionRunner):
    """Runs a frozen GraphDef, imported and pruned to its placeholders and ends; implements
    Runner."""

    def __init__(self, path: str | Path, options: ConvertOptions | None = None) -> None:
        options = options or ConvertOptions()
        self.path = Path(path)
        tf = import_tf()
        graph_def = _read(self.path, tf)
        self.node_count = len(graph_def.node)
        variables = sorted({n.op for n in graph_def.node if n.op in _VARIABLES})
        if variables:
            raise InputError(
                f"{self.path}: the graph holds variables ({', '.join(variables)}): it is not "
                "frozen, its weights are in a checkpoint",
                hint="freeze it (tf.compat.v1.graph_util.convert_variables_to_constants), or "
                "export a SavedModel",
            )
        placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
        if not placeholders:
            raise InputError(
                f"{self.path}: the graph has no Placeholder: nothing to feed it",
                hint="give the frozen inference graph, whose inputs are placeholders",
            )
        with quiet_tf():
            wrapped = tf.compat.v1.wrap_function(
                lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
            )
        graph = wrapped.graph
        inputs = [graph.get_tensor_by_name(f"{name}:0") for name in placeholders]
        outputs = [
            t for name in _ends(graph_def) for t in graph.get_operation_by_name(name).outputs
        ]
        self.tensor_names = [t.name for t in outputs]
        specs = [
            TensorSpec(
                name,
                dtype_from_numpy(t.dtype.as_numpy_dtype),
                source_shape(name, shape_dims(t.shape), options),
            )
            for name, t in zip(placeholders, inputs, strict=True)
        ]
        batch = common_batch_name(specs)
        out_specs = [
            TensorSpec(
                _output_name(t.name),
                dtype_from_numpy(t.dtype.as_numpy_dtype),
                output_shape(shape_dims(t.shape), batch),
            )
            for t in outputs
        ]
        signature = Signature(tuple(specs), tuple(out_specs))
        super().__init__(wrapped.prune(inputs, outputs), signature, f"{self.path.stem}@tf")


def _read(path: Path, tf: Any) -> Any:
    """The GraphDef in ``path``; InputError when the bytes are not one."""
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="give the frozen graph's .pb file")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise InputError(
            f"{path}: not a TensorFlow GraphDef ({one_line(e)})",
            hint="give a frozen graph (.pb) written by GraphDef.SerializeToString",
        ) from e
    if not graph_def.node:
        raise InputError(
            f"{path}: not a TensorFlow GraphDef (it holds no nodes)",
            hint="a SavedModel's saved_model.pb is given as its directory",
        )
    return graph_def


def _ends(graph_def: Any) -> list[str]:
    """The nodes no other node reads, bookkeeping left out: saving ops, and the loose ends
    of TF1 control flow (a ``tf.cond``'s ``switch_t`` / ``switch_f`` / ``pred_id``
    Identities, left by every batch norm built on an ``is_training`` placeholder)."""
    ops = {n.name: n.op for n in graph_def.node}
    read = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}

    def control_flow(node: Any) -> bool:
        sources = [ops.get(name.lstrip("^").split(":")[0]) for name in node.input]
        return node.op == "Identity" and (
            "Switch" in sources or node.name.rsplit("/", 1)[-1] == "pred_id"
        )

    return [
        n.name
        for n in graph_def.node
        if n.name not in read
        and n.op not in _NOT_OUTPUTS
        and not n.name.startswith("save/")
        and not control_flow(n)
    ]


def _output_name(tensor: str) -> str:
    """``prob:0`` -> ``prob``; ``split:1`` -> ``split_1``."""
    node, _, index = tensor.rpartition(":")
    return node if index == "0" else f"{node}_{index}"
