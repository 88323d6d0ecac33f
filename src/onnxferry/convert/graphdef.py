"""Frozen TensorFlow 1 graphs as conversion sources: a ``GraphDef`` in a ``.pb`` file (what
``freeze_graph`` writes, OpenCV DNN's samples and the TF object detection API's
``frozen_inference_graph.pb``), weights held as constants, no signature.

    source = load_graph_def("frozen.pb", ConvertOptions())
    source.reference.signature   # inputs: placeholders outputs read; outputs: tensors unread
    source.reference.run(feeds)  # the graph in TensorFlow, {name: array}

The inputs are the placeholders the outputs are computed from, and a
``PlaceholderWithDefault`` whose default is no constant (``cut_defaults``: deepbrain's volume
defaults to a tf.data iterator's element), its default left out.

Names: each input is its ``Placeholder``'s name (``input`` for ``input:0``); each output is
its node's name (``prob``), ``node_1`` for a node's second output. The outputs are the graph's
ends: every output of every node nothing reads (bookkeeping left out: ``NoOp``, ``Assert``,
``save/...``, a TF1 ``tf.cond``'s loose Identities), as TensorFlow's ``summarize_graph``
finds them, or the tensors ``--graph-outputs`` names (``options.graph_outputs``). A
placeholder ``--bind`` fixes (``options.bindings``, ``keep_prob=1.0``) is a constant, no
longer an input; so is a training switch (a bool scalar that picks ``tf.cond`` branches,
``is_training``), fixed to False unless bound, and a dropout's keep probability or rate,
fixed to what turns it off (``dropout_inputs``). The "tf2onnx" candidate converts the graph,
pruned to those tensors, through tf2onnx's frozen-graph route (``tf2onnx --graphdef``),
where a TF1 ``while_loop`` (Enter, Exit, NextIteration) becomes a Loop; the reference runs
it in TensorFlow, imported into a ``tf.function``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, one_line
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import ConvertOptions, Source
from .tf_common import (
    common_batch_name,
    finish_export,
    graph_def_to_onnx,
    import_tf,
    output_shape,
    quiet_tf,
    resolve_opset,
    shape_dims,
    source_shape,
)
from .tf_function import FunctionRunner

_NOT_OUTPUTS = {
    "Placeholder",
    "PlaceholderWithDefault",
    "Const",
    "NoOp",
    "Assert",
    "SaveV2",
    "RestoreV2",
    "Switch",
    "RefSwitch",
}
"""Ops that end a graph without being what it computes."""
_VARIABLES = {"VariableV2", "Variable", "VarHandleOp"}


def load_graph_def(path: str | Path, options: ConvertOptions) -> Source:
    """A frozen GraphDef (``.pb``) to convert. InputError (exit 2) for a file that is not
    one, a graph that still holds variables (not frozen) or has no placeholder."""
    opset = resolve_opset(options)
    path = Path(path)
    graph_def = _read(path, import_tf())
    variables = sorted({n.op for n in graph_def.node if n.op in _VARIABLES})
    if variables:
        raise InputError(
            f"{path}: the graph holds variables ({', '.join(variables)}): it is not "
            "frozen, its weights are in a checkpoint",
            hint="give the checkpoint's .meta file, freeze it "
            "(tf.compat.v1.graph_util.convert_variables_to_constants), or export a SavedModel",
        )
    runner = GraphDefRunner(graph_def, options, path.stem)
    what = f"{path}: frozen TensorFlow graph, {len(graph_def.node)} nodes"
    return runner.source(what, opset, notes=runner.notes)


class GraphDefRunner(FunctionRunner):
    """Runs a frozen GraphDef, imported with its bound placeholders as constants and pruned
    to its other placeholders and its outputs; implements Runner. ``notes`` say which
    outputs were taken and which placeholders bound."""

    def __init__(
        self,
        graph_def: Any,
        options: ConvertOptions,
        stem: str,
        *,
        outputs: Sequence[str] | None = None,
        ends: str = "the tensors no node of the graph reads",
    ) -> None:
        tf = import_tf()
        if outputs is None and options.graph_outputs:
            outputs, ends = options.graph_outputs, "given with --graph-outputs"
        names = graph_ends(graph_def) if outputs is None else outputs  # defaults still read
        graph_def, cut = cut_defaults(graph_def)
        needed = upstream(graph_def, [node_name(name) for name in names])
        dtypes = {
            n.name: n.attr["dtype"].type
            for n in graph_def.node
            if n.op == "Placeholder" and n.name in needed
        }
        ranks = {
            n.name: None if n.attr["shape"].shape.unknown_rank else len(n.attr["shape"].shape.dim)
            for n in graph_def.node
            if n.name in dtypes
        }
        switches = training_switches(graph_def)
        dropouts = dropout_inputs(graph_def)
        bound, self.notes = bindings(ranks, switches, options, "placeholder", dropouts)
        self.notes += [
            f"{name}: a PlaceholderWithDefault whose default is not a constant (a tf.data "
            "iterator's element, another input): fed as an input, its default left out"
            for name in cut
            if name in dtypes and name not in bound
        ]
        placeholders = [name for name in dtypes if name not in bound]
        if not placeholders:
            raise InputError(
                "the graph has no Placeholder left to feed"
                + (f" (--bind fixed {', '.join(bound)})" if bound else ""),
                hint="give the frozen inference graph, whose inputs are placeholders",
            )

        def imported() -> None:
            constants = {
                f"{name}:0": tf.constant(value, dtype=tf.as_dtype(dtypes[name]))
                for name, value in bound.items()
            }
            tf.compat.v1.import_graph_def(graph_def, input_map=constants or None, name="")

        with quiet_tf():
            wrapped = tf.compat.v1.wrap_function(imported, [])
            bound_graph = tf.Graph()
            with bound_graph.as_default():
                imported()
        graph = wrapped.graph
        inputs = [graph.get_tensor_by_name(f"{name}:0") for name in placeholders]
        tensors = [t for name in names for t in _tensors(graph, name, graph_def)]
        self.notes.insert(0, f"outputs: {', '.join(t.name for t in tensors)} ({ends})")
        specs = [
            TensorSpec(
                name,
                dtype_from_numpy(t.dtype.as_numpy_dtype),
                source_shape(name, shape_dims(t.shape), options, placeholder=True),
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
            for t in tensors
        ]
        signature = Signature(tuple(specs), tuple(out_specs))
        super().__init__(wrapped.prune(inputs, tensors), signature, f"{stem}@tf")
        self.tensors = [t.name for t in [*inputs, *tensors]]
        self.graph_def = tf.compat.v1.graph_util.extract_sub_graph(
            bound_graph.as_graph_def(), sorted({node_name(t.name) for t in tensors})
        )
        shapes = {spec.name: spec.shape for spec in specs}
        for node in self.graph_def.node:  # an unknown rank takes the one the user gave
            shape = shapes.get(node.name)
            if shape is not None:
                dims = [d if isinstance(d, int) else None for d in shape]
                node.attr["shape"].shape.CopyFrom(tf.TensorShape(dims).as_proto())

    def export_tf2onnx(self, path: Path, opset: int) -> None:
        """tf2onnx's frozen-graph route, which converts a TF1 ``while_loop`` (a function
        calling the graph does not), the bound placeholders as constants."""
        names = [*self.signature.input_names, *self.signature.output_names]
        count = len(self.signature.inputs)
        proto = graph_def_to_onnx(
            self.graph_def,
            self.tensors[:count],
            self.tensors[count:],
            opset,
            dict(zip(self.tensors, names, strict=True)),
        )
        finish_export(proto, self.signature, path)


def cut_defaults(graph_def: Any) -> tuple[Any, list[str]]:
    """``graph_def`` with every ``PlaceholderWithDefault`` whose default is not computed from
    constants alone made a ``Placeholder`` (its default left out), and their names. deepbrain's
    volume ``img`` defaults to a tf.data iterator's next element, read through a string handle
    placeholder: fed, as at inference, neither is needed. A training switch is made one too,
    to be fixed to False as a Placeholder switch is (its default may be True); any other
    whose default is constant keeps it, and is no input."""
    nodes = {n.name: n for n in graph_def.node}

    def from_constants(name: str) -> bool:
        starts = [nodes.get(n) for n in upstream(graph_def, [name])]
        return all(node is not None and (node.input or node.op == "Const") for node in starts)

    switches = set(training_switches(graph_def))
    cut = [
        n.name
        for n in graph_def.node
        if n.op == "PlaceholderWithDefault"
        and (n.name in switches or not from_constants(node_name(n.input[0])))
    ]
    if not cut:
        return graph_def, []
    copy = type(graph_def)()
    copy.CopyFrom(graph_def)
    for node in copy.node:
        if node.name in cut:
            node.op = "Placeholder"
            del node.input[:]
    return copy, cut


def upstream(graph_def: Any, names: Sequence[str]) -> set[str]:
    """The nodes ``names`` are computed from, themselves included."""
    inputs = {n.name: [node_name(i) for i in n.input] for n in graph_def.node}
    return closure(names, lambda name: inputs.get(name, []))


def closure(start: Sequence[str], neighbours: Callable[[str], Sequence[str]]) -> set[str]:
    """``start`` and every node reached from it through ``neighbours(name)``."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(neighbours(name))
    return seen


def training_switches(graph_def: Any) -> list[str]:
    """The bool scalar placeholders that pick ``tf.cond`` branches (a TF1 cond's Switch,
    through its ``pred_id`` Identities, or a TF2 cond's If), as a TF1 graph's ``is_training``
    does for every batch norm and dropout."""
    nodes = {n.name: n for n in graph_def.node}
    predicate = {"Switch": 1, "RefSwitch": 1, "If": 0, "StatelessIf": 0}
    roots = set()
    for node in graph_def.node:
        if node.op in predicate and len(node.input) > predicate[node.op]:
            name = node_name(node.input[predicate[node.op]])
            while nodes.get(name) is not None and nodes[name].op == "Identity":
                name = node_name(nodes[name].input[0])
            roots.add(name)
    tf = import_tf()
    return [
        n.name
        for n in graph_def.node
        if n.op in ("Placeholder", "PlaceholderWithDefault")
        and n.name in roots
        and n.attr["dtype"].type == tf.bool.as_datatype_enum
        and (n.attr["shape"].shape.unknown_rank or not n.attr["shape"].shape.dim)
    ]


_RANDOM = frozenset({
    "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "StatelessRandomUniform",
    "StatelessRandomUniformV2", "StatelessRandomNormal", "StatelessRandomNormalV2",
})  # fmt: skip
_PASS = frozenset({"Identity", "Cast", "Sub"})
"""Ops between a dropout's placeholder and its comparison with the random draw: TF 1.13+
turns ``keep_prob`` into ``rate = 1 - keep_prob`` (a Sub), a cast may follow."""


def dropout_inputs(graph_def: Any) -> dict[str, float]:
    """The float scalar placeholders that set a dropout's random mask, each with the value
    that turns the dropout off at inference: 1.0 for a keep probability (TF1's
    ``tf.nn.dropout(x, keep_prob)``: added to the draw and floored, or ``1 - keep_prob``
    compared with it), 0.0 for a rate compared with the draw as it is. Fed, such an input
    draws a new mask each run: the outputs are random."""
    tf = import_tf()
    nodes = {n.name: n for n in graph_def.node}
    drawn = {n.name for n in graph_def.node if n.op in _RANDOM}
    fixed = {n.name for n in graph_def.node if n.op == "Const"}
    grown = True
    while grown:  # what is computed from the draws and constants alone (scaled, shifted)
        grown = False
        for node in graph_def.node:
            inputs = [node_name(i) for i in node.input if not i.startswith("^")]
            if node.name in drawn or node.name in fixed or node.op == "Placeholder":
                continue
            if inputs and all(i in fixed for i in inputs):
                fixed.add(node.name)
            elif inputs and all(i in drawn or i in fixed for i in inputs):
                drawn.add(node.name)
            else:
                continue
            grown = True
    found: dict[str, float] = {}
    for node in graph_def.node:
        if node.op not in ("GreaterEqual", "Greater", "Add", "AddV2") or len(node.input) < 2:
            continue
        sides = [node_name(i) for i in node.input[:2]]
        if not any(side in drawn for side in sides):
            continue
        other = next(side for side in sides if side not in drawn)
        subtracted = False
        while other in nodes and nodes[other].op in _PASS:
            subtracted |= nodes[other].op == "Sub"
            other = node_name(nodes[other].input[-1 if nodes[other].op == "Sub" else 0])
        placeholder = nodes.get(other)
        if placeholder is None or placeholder.op != "Placeholder":
            continue
        shape = placeholder.attr["shape"].shape
        if placeholder.attr["dtype"].type not in (tf.float32.as_datatype_enum,) or (
            not shape.unknown_rank and shape.dim
        ):
            continue
        keep = subtracted or node.op in ("Add", "AddV2")
        found[placeholder.name] = 1.0 if keep else 0.0
    return found


def bindings(
    inputs: Mapping[str, int | None],
    switches: Sequence[str],
    options: ConvertOptions,
    kind: str,
    dropouts: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The ``inputs`` (name: rank, None when unknown) to replace by constants: the user's
    ``--bind``, the training ``switches`` fixed to False and the ``dropouts``
    (``dropout_inputs``) to the value that turns them off, with a note for each fixed
    unasked. InputError for a ``--bind`` that names no input (``kind``: "placeholder",
    "input") or one of rank 1 or more (a value fixes a scalar)."""
    for name in options.bindings:
        if name not in inputs:
            raise InputError(
                f"--bind {name}: the graph has no {kind} {name!r}",
                hint=f"bind one of its {kind}s: {', '.join(list(inputs)[:8])}",
            )
        if inputs[name]:
            raise InputError(
                f"--bind {name}: {kind} {name!r} is a tensor of rank {inputs[name]}, and "
                "--bind fixes a scalar",
                hint="bind a scalar placeholder (is_training, keep_prob), or feed this one",
            )
    bound: dict[str, Any] = dict(options.bindings)
    notes = []
    for name in switches:
        if name not in bound:
            bound[name] = False
            notes.append(
                f"{name} fixed to False: a bool placeholder that picks tf.cond branches, as "
                f"a TF1 is_training does (--bind {name}=true converts the other branch)"
            )
    for name, value in (dropouts or {}).items():
        if name not in bound:
            bound[name] = value
            role = "keep probability" if value else "drop rate"
            notes.append(
                f"{name} fixed to {value}: a dropout's {role}, which fed would draw a new random "
                f"mask each run (--bind {name}=VALUE converts another)"
            )
    return bound, notes


def _tensors(graph: Any, name: str, graph_def: Any) -> list[Any]:
    """The tensor ``name`` names (``split:1``), or every output of the node it names
    (``prob``); InputError naming the graph's ends when there is none."""
    try:
        if ":" in name:
            return [graph.get_tensor_by_name(name)]
        return list(graph.get_operation_by_name(name).outputs)
    except (KeyError, ValueError):
        raise InputError(
            f"--graph-outputs {name}: the graph has no tensor {name!r}",
            hint=f"name a node (prob) or a tensor (split:1); the graph's ends: "
            f"{', '.join(graph_ends(graph_def)[:8])}",
        ) from None


def _read(path: Path, tf: Any) -> Any:
    """The GraphDef in ``path``; InputError when the bytes are not one."""
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="give the frozen graph's .pb file")
    hint = "give a frozen graph (.pb) written by GraphDef.SerializeToString"
    graph_def = parse_file(path, tf.compat.v1.GraphDef(), "a TensorFlow GraphDef", hint)
    if not graph_def.node:
        raise InputError(
            f"{path}: not a TensorFlow GraphDef (it holds no nodes)",
            hint="a SavedModel's saved_model.pb is given as its directory",
        )
    return graph_def


def parse_file(path: Path, message: Any, what: str, hint: str) -> Any:
    """``message`` (a protobuf) read from ``path``; InputError saying it is not ``what``."""
    try:
        message.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise InputError(f"{path}: not {what} ({one_line(e)})", hint=hint) from e
    return message


def graph_ends(graph_def: Any) -> list[str]:
    """The nodes no other node reads, bookkeeping left out: saving ops, and the loose ends
    of TF1 control flow (a ``tf.cond``'s ``switch_t`` / ``switch_f`` / ``pred_id``
    Identities, left by every batch norm built on an ``is_training`` placeholder, and the
    Exit of a ``while_loop``'s integer counter)."""
    ops = {n.name: n.op for n in graph_def.node}
    read = {node_name(name) for node in graph_def.node for name in node.input}
    counters = {import_tf().int32.as_datatype_enum, import_tf().int64.as_datatype_enum}

    def control_flow(node: Any) -> bool:
        sources = [ops.get(node_name(name)) for name in node.input]
        if node.op == "Exit":
            return node.attr["T"].type in counters
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


def node_name(reference: str) -> str:
    """The node a GraphDef input refers to: ``^init`` and ``split:1`` -> ``init``, ``split``."""
    return reference.lstrip("^").split(":")[0]


def _output_name(tensor: str) -> str:
    """``prob:0`` -> ``prob``; ``split:1`` -> ``split_1``."""
    node, _, index = tensor.rpartition(":")
    return node if index == "0" else f"{node}_{index}"
