"""Graph plumbing: walk a model's graphs, read its external data into a copy (checked again),
expose intermediate tensors as outputs, hand ONNX Runtime something it can load, and tell the
outputs whose size follows the data rather than the batch.

    for graph in iter_graphs(proto): ...           # main graph, subgraphs, function subgraphs
    for node in iter_nodes(proto): ...             # every node, model-local functions included
    for tensor in iter_initializers(proto): ...    # the initializers of every graph
    rename_values(proto.graph, {"a:0": "a"})       # everywhere, subgraphs too
    proto = inlined(model)                         # a copy with external data read in
    densify_sparse_initializers(proto)             # sparse initializers made dense (checker)
    constants_to_initializers(proto.graph)         # Constant nodes' tensors made initializers
    expose(proto, ["h1", "h2"])                    # the main graph also outputs h1 and h2
    with runnable(proto) as m:                     # a Model: in memory, or past PROTO_LIMIT
        OrtRunner(m).run(feeds)                    #   saved with external data to a temp dir
    with exposing(model, ["h1"]) as m: ...         # the three above in one
    sized_by_data(proto)                           # outputs after NonMaxSuppression, NonZero: []

Reading external data always goes through the checks ``Model.load`` makes (``safety``): the
files may have changed since the model was loaded, so every reference is checked again against
the model's directory, and UnsafeModelError names the first one that is no longer safe.

``model`` imports this module; this module makes Models (``runnable``) only inside functions.
"""

from __future__ import annotations

import itertools
import posixpath
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, ModelLoadError, UnsafeModelError, UsageError
from .safety import (
    ExternalRef,
    check_external_data,
    iter_tensors,
    read_data_file,
    read_external_data,
    uses_external_data,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from .model import Model

PROTOBUF_MAX = 2**31 - 1
"""The largest message protobuf encodes or parses (bytes)."""

PROTO_LIMIT = 2**31 - 2**26
"""Bytes of a model past which it goes to external data: protobuf cannot encode a message over
2 GiB, and the graph itself needs some room (64 MiB)."""


# --- walking ---------------------------------------------------------------------------------


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by ``node``'s attributes (If branches, Loop and Scan bodies), one level."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph inside it, at any depth."""
    return _walk([graph])


def iter_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph (If/Loop/Scan bodies), recursively, including those
    inside model-local functions."""
    yield from _walk([model.graph])
    for fn in model.functions:
        yield from _walk([g for node in fn.node for g in subgraphs(node)])


def iter_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of the model: main graph, subgraphs and model-local functions."""
    for graph in iter_graphs(model):
        yield from graph.node
    for fn in model.functions:
        yield from fn.node


def iter_initializers(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The initializers of every graph (``iter_graphs``); every tensor anywhere, with where it
    sits, is ``safety.iter_tensors``."""
    for graph in iter_graphs(model):
        yield from graph.initializer


def _walk(stack: list[onnx.GraphProto]) -> Iterator[onnx.GraphProto]:
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            stack.extend(subgraphs(node))


# --- outputs sized by the data ----------------------------------------------------------------

SIZE_FROM_VALUES = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})
"""Operators whose output size follows their input's values, not its shape."""


def sized_by_data(model: onnx.ModelProto) -> list[str]:
    """The main graph's outputs whose size may follow the input's values, not its shape: those
    downstream of ``SIZE_FROM_VALUES`` (a detector's boxes after non-max suppression, a mask's
    selections). Their leading dim counts what the data holds, not the batch, so requests
    cannot be concatenated and split again: a count that happens to equal the rows proves
    nothing. Conservative: whatever is downstream counts, subgraphs included, unless the
    output declares a size per row (``_fixed_per_row``: padded to a maximum count)."""
    tainted: set[str] = set()
    graph = model.graph
    for node in graph.node:
        inner = [x for g in subgraphs(node) for sub in walk_graphs(g) for x in sub.node]
        ops = {node.op_type, *(x.op_type for x in inner)}
        if ops & SIZE_FROM_VALUES or tainted & {*node.input, *(n for x in inner for n in x.input)}:
            tainted.update(node.output)
    batch = {d for i in graph.input for d in _dims(i)[:1] if isinstance(d, str)}
    return [o.name for o in graph.output if o.name in tainted and not _fixed_per_row(o, batch)]


RANDOM_OPS = frozenset({
    "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial",
    "Bernoulli",
})  # fmt: skip
"""ONNX's operators that draw random numbers."""


def random_ops(model: onnx.ModelProto) -> list[str]:
    """The operators drawing random numbers anywhere in the model (subgraphs included), by
    type: a dropout exported with its mask (TF1's ``keep_prob``), a sampler. Whether they
    change the outputs takes a run: a dropout kept at a keep probability of 1 does not."""
    found = {
        node.op_type
        for graph in walk_graphs(model.graph)
        for node in graph.node
        if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS
    }
    return sorted(found)


def unread_inputs(model: onnx.ModelProto) -> list[str]:
    """The main graph's inputs that no node reads (subgraphs included) and no output passes
    on: torch keeps a forward argument its code never uses (AttaCut's ``seq_lengths``), and
    converters such as onnx2tf leave such inputs out."""
    read = {n for graph in walk_graphs(model.graph) for node in graph.node for n in node.input}
    read.update(o.name for o in model.graph.output)
    read.update(t.name for t in model.graph.initializer)
    return [i.name for i in model.graph.input if i.name not in read]


def sequence_outputs(model: onnx.ModelProto) -> list[str]:
    """The main graph's outputs that are sequences of tensors (``SplitToSequence``, a Loop's
    scan of varying shapes): one tensor per element, not a value per row."""
    return [
        o.name
        for o in model.graph.output
        if o.type.HasField("sequence_type")
        and o.type.sequence_type.elem_type.HasField("tensor_type")
    ]


RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
_KEEPS_AXES = frozenset({
    "Identity", "Cast", "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Neg", "Abs", "Sqrt", "Exp",
    "Log", "Erf", "Softplus", "Gelu", "Dropout", "Clip", "Add", "Sub", "Mul", "Div",
})  # fmt: skip
"""Operators whose output keeps the axes of each input (elementwise, broadcast alike)."""


def time_major_inputs(model: onnx.ModelProto) -> list[str]:
    """The main graph's inputs whose first axis is a recurrent operator's time axis: an LSTM,
    GRU or RNN of layout 0 (PyTorch's without ``batch_first``) reached through elementwise
    operators, Transposes and MatMuls by a weight, or a Scan's scanned axis. Requests
    concatenated along that axis run as one longer sequence, each after the one before it:
    they are no rows. A Transpose that moves the axis elsewhere (tf2onnx's batch-major Keras
    LSTM) clears it."""
    from onnx import helper

    graph = model.graph
    weights = {t.name for t in graph.initializer}
    ranks = {v.name: len(_dims(v)) for v in graph.input if v.type.tensor_type.HasField("shape")}
    # tensor -> {graph input: (where that input's axis 0 is, the tensor's rank)}
    where: dict[str, dict[str, tuple[int, int]]] = {
        name: {name: (0, rank)} for name, rank in ranks.items() if rank
    }
    found: list[str] = []

    def reach(name: str, axis: int) -> None:
        found.extend(k for k, (pos, _) in where.get(name, {}).items() if pos == axis)

    for node in graph.node:
        op, attrs = node.op_type, {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            continue
        if op in RECURRENT:
            reach(node.input[0], 0 if attrs.get("layout", 0) == 0 else 1)
        elif op == "Scan":
            scanned = attrs.get("num_scan_inputs", 0)
            axes = list(attrs.get("scan_input_axes", [])) or [0] * scanned
            for name, axis in zip(node.input[len(node.input) - scanned :], axes, strict=False):
                reach(name, axis)
        elif op == "Transpose" and "perm" in attrs:
            perm = list(attrs["perm"])
            where[node.output[0]] = {
                k: (perm.index(pos), rank)
                for k, (pos, rank) in where.get(node.input[0], {}).items()
                if pos in perm
            }
        elif op in _KEEPS_AXES:
            where[node.output[0]] = {k: v for x in node.input for k, v in where.get(x, {}).items()}
        elif op == "MatMul" and node.input[1] in weights:  # the last axis is summed away
            where[node.output[0]] = {
                k: (pos, rank)
                for k, (pos, rank) in where.get(node.input[0], {}).items()
                if pos < rank - 1
            }
    return list(dict.fromkeys(found))


def time_axis_error(model_name: str, input_name: str) -> UsageError:
    """The one line for a verb that takes rows along ``input_name``'s first axis when that is
    a recurrent operator's time axis (``time_major_inputs``) and no dim is named the batch."""
    return UsageError(
        f"{model_name}: input {input_name!r} runs along its first axis as a sequence (a "
        "recurrent operator's time axis), so its rows cannot be taken apart",
        hint=f"name its batch dim (torch.onnx.export(..., dynamic_axes={{{input_name!r}: {{1: "
        "'batch'}})) or export with batch_first=True",
    )


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """A value's declared dims (a size, a name, or None for neither); [] without a shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return []
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param if d.dim_param else None
        for d in tensor.shape.dim
    ]


def _fixed_per_row(output: onnx.ValueInfoProto, batch: set[str]) -> bool:
    """Whether ``output`` declares a size per row: a scalar, or every dim a number but the
    first, which is a number too or an input's batch dim (combined non-max suppression padded
    to ``[batch, 100, 4]``)."""
    tensor = output.type.tensor_type
    if not tensor.HasField("shape"):
        return False
    dims = _dims(output)
    if not dims:
        return True
    first, rest = dims[0], dims[1:]
    whole = all(isinstance(d, int) and d > 0 for d in rest)
    return whole and ((isinstance(first, int) and first > 0) or first in batch)


# --- names -----------------------------------------------------------------------------------


class NodeWriter:
    """Writes chosen nodes of a main graph as other nodes, in place (``unfused``, ``qdq``): a
    subclass's ``write`` gives a node's replacement (its outputs keep their names) or None to
    keep it, naming what it adds with ``fresh``; ``learn`` sees every node kept; ``rewrite``
    runs the graph through and returns how many of each counted node were written."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.taken = value_names(proto.graph)
        self.constants: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.stem = ""
        """The name new nodes and tensors of the node being written start with."""

    def fresh(self, stem: str) -> str:
        """A tensor name the graph does not use yet (``stem_0``, ``stem_1``, ...)."""
        name = next(f"{stem}_{i}" for i in itertools.count() if f"{stem}_{i}" not in self.taken)
        self.taken.add(name)
        return name

    def write(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        raise NotImplementedError

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        """Add an ``op_type`` node on ``inputs`` to the node being written (``learn`` sees it);
        its output: ``out``, or a fresh name."""
        from onnx import helper

        node_name = self.fresh(f"{self.stem}/{op_type}")
        name = out or node_name
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=node_name, **attrs))
        self.learn(self.nodes[-1])
        return name

    def const(self, stem: str, value: np.ndarray) -> str:
        """A new initializer holding ``value``; its fresh name."""
        import numpy as np
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def learn(self, node: onnx.NodeProto) -> None:
        """What a kept node tells of the tensors it writes (nothing, unless overridden)."""

    def counted(self, node: onnx.NodeProto) -> bool:
        """Whether a written node counts in ``rewrite``'s result (every one, by default)."""
        return True

    def rewrite(self, proto: onnx.ModelProto) -> Counter[str]:
        counts: Counter[str] = Counter()
        nodes: list[onnx.NodeProto] = []
        changed = False
        for node in proto.graph.node:
            written = self.write(node)
            if written is None:
                nodes.append(node)
                self.learn(node)
                continue
            nodes += written
            changed = True
            if self.counted(node):
                counts[node.op_type] += 1
        if changed:
            del proto.graph.node[:]
            proto.graph.node.extend(nodes)
            proto.graph.initializer.extend(self.constants)
        return counts


def listed(counts: Mapping[str, int]) -> str:
    """``NodeWriter.rewrite``'s counts in a note: "2 QLinearConv, 1 QGemm"."""
    return ", ".join(f"{count} {op}" for op, count in counts.items())


def value_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name ``graph`` and its subgraphs use: inputs, outputs, value infos,
    initializers, node inputs and outputs."""
    names: set[str] = set()
    for g in walk_graphs(graph):
        names |= {v.name for v in (*g.input, *g.output, *g.value_info, *g.initializer)}
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
    names.discard("")
    return names


def rename_values(graph: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    """Rename tensors throughout ``graph`` and its subgraphs; a tensor that already holds a
    target name is moved aside to a fresh one (``name__1``) first.

        rename_values(proto.graph, {"input_1:0": "image"})
    """
    wanted = {old: new for old, new in renames.items() if old != new}
    if not wanted:
        return
    used = value_names(graph)
    taken = used | set(wanted.values())
    for name in sorted((used & set(wanted.values())) - set(wanted)):
        fresh = next(f"{name}__{i}" for i in itertools.count(1) if f"{name}__{i}" not in taken)
        taken.add(fresh)
        wanted[name] = fresh
    for g in walk_graphs(graph):
        for value in (*g.input, *g.output, *g.value_info, *g.initializer):
            value.name = wanted.get(value.name, value.name)
        for node in g.node:
            node.input[:] = [wanted.get(n, n) for n in node.input]
            node.output[:] = [wanted.get(n, n) for n in node.output]


# --- copies, external data, outputs ----------------------------------------------------------


def name_output_dims(proto: onnx.ModelProto, names: Mapping[str, Mapping[int, str]]) -> int:
    """Give the main graph's outputs the dim names ``names`` holds (output -> {axis: name}),
    in place, as ``Signature.dims_following_inputs`` finds them; how many dims were named.

        name_output_dims(proto, {"logits": {1: "sequence"}})
    """
    count = 0
    for value in proto.graph.output:
        for axis, name in names.get(value.name, {}).items():
            dims = value.type.tensor_type.shape.dim
            if axis < len(dims) and dims[axis].dim_param != name:
                dims[axis].dim_param = name  # clears a dim_value too (a oneof)
                count += 1
    return count


def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``proto``."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def set_metadata(proto: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Set ``props`` in the model's metadata_props, replacing the values of keys it has."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Move the tensors of ``graph``'s Constant nodes (attribute ``value``) to initializers
    named after their outputs, in place; how many it moved.

        constants_to_initializers(proto.graph)   # Paddle2ONNX keeps conv weights in Constants

    Quantizers only quantize initializers, and the pruning passes only slice them
    (``constants_lifted``). Constants whose output is a graph output stay.
    """
    outputs = {o.name for o in graph.output}
    keep, moved = [], []
    for node in graph.node:
        value = _constant_tensor(node)
        if value is None or node.output[0] in outputs:
            keep.append(node)
            continue
        tensor = type(value)()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        moved.append(tensor)
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(moved)
    return len(moved)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node holds in its ``value`` attribute, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)


def constants_lifted(model: Model) -> tuple[Model, int]:
    """``(model, 0)`` when no Constant node of its main graph holds a tensor, else an
    in-memory copy with those tensors moved to initializers (``constants_to_initializers``;
    external data stays referenced) and how many moved.

        model, moved = constants_lifted(Model.load("paddle.onnx"))   # weights a pass can slice
    """
    from .model import Model

    if not any(_constant_tensor(node) is not None for node in model.proto.graph.node):
        return model, 0
    proto = copy_model(model.proto)
    moved = constants_to_initializers(proto.graph)
    return Model(proto, model.path, model.external_files), moved


def densify_sparse_initializers(proto: onnx.ModelProto) -> int:
    """Every sparse initializer of ``proto`` (subgraphs too) made the dense initializer ONNX
    Runtime makes of it at load, in place (its values read in first: ``inlined``); returns how
    many there were. onnx's checker and shape inference type a sparse initializer as a sparse
    tensor, so the dense operator it feeds fails their inference ("Input tensors of wrong rank
    (0)"), though ONNX Runtime runs the model.

        proto = inlined(model)
        densify_sparse_initializers(proto)                 # what `ferry check` infers shapes on
    """
    import numpy as np
    from onnx import numpy_helper

    count = 0
    for graph in iter_graphs(proto):
        for sparse in graph.sparse_initializer:
            values = numpy_helper.to_array(sparse.values)
            indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
            dims = tuple(int(d) for d in sparse.dims)
            dense = np.zeros(dims, dtype=values.dtype)
            # indices: linear positions [NNZ], or coordinates [NNZ, rank] (the two layouts
            # SparseTensorProto allows)
            flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
            dense.reshape(-1)[flat] = values.reshape(-1)
            graph.initializer.append(numpy_helper.from_array(dense, sparse.values.name))
            count += 1
        del graph.sparse_initializer[:]
    return count


def weights_not_inputs(model: Model) -> Model:
    """``model`` itself from IR version 4 on; below it, an in-memory copy at IR 4 whose main
    graph no longer lists its initializers as inputs (every IR 3 model does: the model zoo's).

        converted = weights_not_inputs(Model.load("squeezenet.onnx"))   # for a converter

    Converters (ONNX Runtime's ORT format, onnx2tf) take such inputs for real ones: the .ort
    then asks for its weights at run time. ONNX Runtime already treats them as constants.
    """
    from .model import Model

    if model.proto.ir_version >= 4:
        return model
    proto = inlined(model)
    weights = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.input if v.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.ir_version = 4
    return Model.from_proto(proto)


def loop_outputs_not_inputs(model: Model) -> Model:
    """``model`` itself when no ``Loop`` body hands an input straight back as an output; else
    an in-memory copy where an ``Identity`` stands between each such pair.

        readable = loop_outputs_not_inputs(Model.load("slanet.onnx"))   # for OpenVINO

    Paddle2ONNX carries loop-invariant values (a GRU's weights) through a loop that way, which
    ONNX allows and ONNX Runtime runs; OpenVINO's ONNX frontend then counts the loop's
    inputs wrong and refuses the model ("canonical inputs size (41) does not match").
    """
    from onnx import helper

    from .model import Model

    def passed(proto: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto, onnx.ValueInfoProto]]:
        for node in iter_nodes(proto):
            if node.op_type != "Loop":
                continue
            for body in subgraphs(node):
                inputs = {v.name for v in body.input}
                yield from ((body, out) for out in body.output if out.name in inputs)

    if next(passed(model.proto), None) is None:
        return model
    proto = inlined(model)
    for body, out in list(passed(proto)):
        taken = value_names(body)
        carried = next(
            name for k in itertools.count() if (name := f"{out.name}/carried{k or ''}") not in taken
        )
        body.node.append(helper.make_node("Identity", [out.name], [carried]))
        out.name = carried
    return Model.from_proto(proto)


def open_negative_dims(proto: onnx.ModelProto) -> int:
    """Paddle2ONNX writes an open dim as ``dim_value: -1``; ONNX has no negative sizes and
    converters (onnx2tf) reject them. Each becomes a dim with neither value nor name (unknown),
    in place, in every graph's inputs, outputs and value infos; returns how many.

        open_negative_dims(proto)   # x: [-1, 3, "?", "?"] -> x: [?, 3, "?", "?"]
    """
    opened = 0
    for graph in iter_graphs(proto):
        for value in (*graph.input, *graph.output, *graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    dim.Clear()
                    opened += 1
    return opened


def keep_io_shapes(proto: onnx.ModelProto, original: onnx.ModelProto) -> int:
    """Give ``proto``'s inputs and outputs the shapes ``original`` declares (same name and
    rank), in place; returns how many changed. A rewriter that names open dims (onnxslim
    writes ``input_d0``, ``state_d1``) otherwise cuts the link between a recurrent state's
    unnamed batch dim and the input's, and changes the signature a server publishes.

        keep_io_shapes(slimmed, model.proto)   # state: [2, "state_d1", 128] -> [2, ?, 128]
    """
    declared = {
        v.name: v.type.tensor_type.shape
        for v in (*original.graph.input, *original.graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    changed = 0
    for value in (*proto.graph.input, *proto.graph.output):
        shape, kept = value.type.tensor_type.shape, declared.get(value.name)
        if kept is None or len(kept.dim) != len(shape.dim) or shape == kept:
            continue
        shape.CopyFrom(kept)
        changed += 1
    return changed


def external_refs(proto: onnx.ModelProto, model_dir: Path | None) -> tuple[ExternalRef, ...]:
    """The external-data references of ``proto``, checked against ``model_dir`` as
    ``Model.load`` checks them (UnsafeModelError). ``model_dir`` None is an in-memory model:
    InputError if it refers to external data at all, since there is nowhere to find it."""
    if model_dir is not None:
        return check_external_data(proto, model_dir)
    for site in iter_tensors(proto):
        if uses_external_data(site.tensor):
            raise InputError(
                f"{site.label} keeps its data in an external file, but this in-memory "
                "model has no directory to find it in",
                hint="load the model with Model.load(path) so its external data is found",
            )
    return ()


def read_in(proto: onnx.ModelProto, refs: tuple[ExternalRef, ...]) -> onnx.ModelProto:
    """``proto`` with the data of ``refs`` (from ``external_refs(proto, ...)``) read into its
    tensors: a copy, or ``proto`` itself when there is nothing to read."""
    if not refs:
        return proto
    out = copy_model(proto)
    by_index = {ref.index: ref for ref in refs}
    for index, site in enumerate(iter_tensors(out)):
        ref = by_index.get(index)
        if ref is not None:
            site.tensor.raw_data = read_external_data(ref)
            del site.tensor.external_data[:]
            site.tensor.ClearField("data_location")
    return out


def inlined(model: Model, proto: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A copy of the model's proto with every external tensor's data read in, after the checks
    of ``Model.load`` (made again: the files may have changed). ``proto`` stands in for the
    model's own when given: a derived copy (names, inferred shapes) with the same references.

        proto = inlined(model)                             # onnxslim, converters need the data
        typed = inlined(model, infer_shapes(model.proto))  # inference first, while it is small
    """
    source = model.proto if proto is None else proto
    refs = external_refs(source, None if model.path is None else model.path.parent)
    return read_in(source, refs) if refs else copy_model(source)


def external_file_contents(model: Model) -> dict[str, bytes]:
    """The whole of each external data file of ``model`` by its location as the model writes
    it, re-checked as ``Model.load`` checks them; {} for a model without a file or external
    data. ONNX Runtime takes them in memory
    (``SessionOptions.add_external_initializers_from_files_in_memory``) and copies them, so the
    session no longer reads the files.

        contents = external_file_contents(model)      # {"model.onnx.data": b"..."}
    """
    if model.path is None:
        return {}
    first: dict[str, ExternalRef] = {}
    for ref in external_refs(model.proto, model.path.parent):
        first.setdefault(ref.location, ref)
    return {location: read_data_file(ref) for location, ref in first.items()}


def model_from_contents(contents: Mapping[str, bytes], model_file: str, *, where: str) -> Model:
    """A Model built in memory from the bytes of a model file and its external data files
    (``contents``: names relative to the model's folder), checked as ``Model.load`` checks
    files; nothing is read from disk. ``where`` names the model in errors.

        model = model_from_contents({"model.onnx": blob}, "model.onnx", where="resnet:2")
    """
    import onnx

    from .model import Model

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(contents[model_file])
    except Exception:  # google.protobuf's DecodeError (untyped)
        raise ModelLoadError(
            f"{where}: not an ONNX model (the protobuf data is malformed or truncated)",
            hint="check the stored files; add or sign the model again",
        ) from None
    read_in_contents(proto, contents, model_file)
    return Model.from_proto(proto)


def read_in_contents(
    proto: onnx.ModelProto, contents: Mapping[str, bytes], model_file: str
) -> None:
    """Fill every external tensor of ``proto`` from ``contents`` (names relative to the model's
    folder), checked as the safe loader checks files: no name outside the version, offsets
    and lengths within the data."""
    base = posixpath.dirname(model_file)
    for site in iter_tensors(proto):
        if not uses_external_data(site.tensor):
            continue
        entries = {e.key: e.value for e in site.tensor.external_data}
        location = posixpath.normpath(posixpath.join(base, entries.get("location", "")))
        if location not in contents or location == model_file:
            raise UnsafeModelError(
                f"{site.label} refers to external data {entries.get('location')!r}, which is "
                "not one of the model's files",
                hint="keep the model's external data files beside it",
            )
        data = contents[location]
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else len(data) - offset
        except ValueError:
            raise UnsafeModelError(
                f"{site.label}: bad offset or length in its external data reference",
                hint="re-export the model",
            ) from None
        if offset < 0 or length < 0 or offset + length > len(data):
            raise UnsafeModelError(
                f"{site.label}: its external data reaches past the end of {location}",
                hint="re-export the model",
            )
        site.tensor.raw_data = data[offset : offset + length]
        del site.tensor.external_data[:]
        site.tensor.ClearField("data_location")


def expose(proto: onnx.ModelProto, names: Iterable[str]) -> None:
    """Make the main graph of ``proto`` also output each tensor of ``names`` (in place; names
    already outputs, empty names and repeats are skipped). ONNX Runtime infers their types."""
    import onnx

    present = {o.name for o in proto.graph.output}
    for name in dict.fromkeys(names):
        if name and name not in present:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))


@contextmanager
def runnable(proto: onnx.ModelProto) -> Iterator[Model]:
    """A Model ONNX Runtime can load from ``proto`` (tensors inline): in memory below
    ``PROTO_LIMIT``, else saved with external data to a temporary directory that is removed
    when the block ends.

        with runnable(proto) as model:
            outputs = OrtRunner(model).run(feeds)
    """
    from .model import Model

    if proto.ByteSize() < PROTO_LIMIT:
        yield Model.from_proto(proto)
        return
    with tempfile.TemporaryDirectory(prefix="onnxferry-") as tmp:
        yield Model.from_proto(proto).save(Path(tmp) / "model.onnx", external_data=True)


@contextmanager
def exposing(
    model: Model, names: Iterable[str], proto: onnx.ModelProto | None = None
) -> Iterator[Model]:
    """A runnable copy of ``model`` (``inlined``, then ``runnable``) whose main graph also
    outputs ``names`` (``expose``); ``model`` itself is not touched. ``proto`` stands in for
    the model's own, as in ``inlined``.

        with exposing(model, ["h1"]) as probe:
            h1 = OrtRunner(probe, validate=False).run(feeds, output_names=["h1"])["h1"]
    """
    proto = inlined(model, proto)
    expose(proto, names)
    with runnable(proto) as probe:
        yield probe
