"""TensorFlow and tf2onnx helpers shared by the Keras, SavedModel and TFLite sources.

    tf = import_tf()                             # tensorflow, C++ logs turned down
    with quiet_native("litert"): interpreter.allocate_tensors()   # its lines: debug log
    opset = resolve_opset(options)               # the user's opset or DEFAULT_OPSET, checked
    shape = source_shape(name, [None, 8], options)   # ("batch", 8) for the reference signature
    proto = convert_with_tf2onnx(convert, opset)  # convert(export_opset) -> onnx.ModelProto
    finish_export(proto, runner.signature, path, renames)   # names, dims, IR; written

tf2onnx 1.17 writes IR 8 for opsets up to 18, its highest (opset 19+ raises ValueError in
tf2onnx); ``convert_with_tf2onnx`` exports at ``min(opset, 18)`` and reaches a higher opset with
onnx's version converter; ``finish_export`` then raises the IR version to what the opsets need
(10 for opset 21), never past what ONNX Runtime loads. tf2onnx does not stop at an unsupported
op (it leaves the TF op in the graph and logs an error); the log is read and the op (and its
Keras layer) reported as a ConversionError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FerryError, UsageError, one_line
from ..graphs import rename_values
from ..locales import portable_locales
from ..model import Model
from ..native import NativeOutput, native_output
from ..runtime import runtime_limits
from ..signature import Dim, Signature, TensorSpec
from .base import DEFAULT_OPSET, ConversionError, ConvertOptions

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("onnxferry")

OP_HINT = (
    "try another --opset, the other exporter, or map the op to a custom op domain "
    "(tf2onnx custom_ops) and register an ONNX Runtime custom-op library"
)


def import_tf() -> Any:
    """tensorflow, with its C++ logging and its Python warnings (a Keras 3 model retracing
    its ``_conv_xla`` at every call) turned down unless the user set TF_CPP_MIN_LOG_LEVEL
    (only effective before TensorFlow's first import) and what it prints while loading kept
    off the terminal (``quiet_native``); ``quiet_tf`` also collects tf2onnx's."""
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with quiet_native("tensorflow"):
        import tensorflow as tf

    return tf


@contextlib.contextmanager
def quiet_native(what: str) -> Iterator[None]:
    """What native code prints on stderr in the block, logged at debug level (``-v`` shows it)
    instead: TensorFlow's absl lines on import ("I0000 ... oneDNN custom operations are on",
    CUDA stubs), whatever TF_CPP_MIN_LOG_LEVEL says, and LiteRT's "Created TensorFlow Lite
    XNNPACK delegate" when an interpreter allocates."""
    native: NativeOutput | None = None
    try:
        with native_output() as native:
            yield
    finally:  # logged once fd 2 is back: the log's handler writes there
        for line in (native.text() if native else "").splitlines():
            if line.strip():
                log.debug("%s: %s", what, line.rstrip())


def tf_version() -> str:
    return str(import_tf().__version__)


def resolve_opset(options: ConvertOptions) -> int:
    """The ai.onnx opset to write: the user's, else DEFAULT_OPSET; never past what the
    installed ONNX Runtime loads (UsageError when the user asks for more)."""
    _, max_opset = runtime_limits()
    if options.opset is None:
        return min(DEFAULT_OPSET, max_opset)
    if options.opset > max_opset:
        import onnxruntime

        raise UsageError(
            f"opset {options.opset} is newer than onnxruntime {onnxruntime.__version__} loads "
            f"(at most {max_opset})",
            hint=f"pass --opset {max_opset} or lower, or upgrade onnxruntime",
        )
    if options.opset < 7:
        raise UsageError(f"opset {options.opset} is too old", hint="pass --opset 13 or newer")
    return options.opset


def source_shape(
    name: str,
    dims: Sequence[int | None] | None,
    options: ConvertOptions,
    *,
    placeholder: bool = False,
) -> tuple[Dim, ...]:
    """An input's shape for the reference signature: the dims the user makes dynamic get
    their names; by default dim 0 (when the source leaves it open) is "batch" and other open
    dims are named ``<input>_dim<axis>``; ``options.input_shapes`` fixes the rest, and gives
    an input of unknown rank (a TF1 placeholder declared without a shape) its rank; such a
    ``placeholder`` of a graph can also be fixed to a value (``--bind``)."""
    if dims is None and name in options.input_shapes:
        dims = [None] * len(options.input_shapes[name])
    if dims is None:
        other = (
            f"fix its value with --bind {name}=VALUE (a TF1 keep_prob=1.0), or name outputs "
            "that do not read it with --graph-outputs"
            if placeholder
            else "export the model with a fixed input rank"
        )
        raise UsageError(
            f"input {name!r} has an unknown rank",
            hint=f"give its shape with --input-shape {name}=1x..., or {other}",
        )
    rank = len(dims)
    axes = options.axes_for(name, rank)
    bad = [a for a in axes if not 0 <= a < rank]
    if bad:
        raise UsageError(
            f"dynamic axis {bad[0]} of input {name!r} is outside its rank {rank}",
            hint=f"name axes 0..{rank - 1}",
        )
    given = options.input_shapes.get(name)
    if given is not None and len(given) != rank:
        raise UsageError(
            f"input shape {list(given)} for {name!r} has rank {len(given)}, the model's has "
            f"rank {rank}",
            hint="give one size per dimension",
        )
    shape: list[Dim] = []
    for axis, dim in enumerate(dims):
        if axis in axes and (dim is None or options.dynamic_axes is not None):
            shape.append(axes[axis])
        elif given is not None:
            if dim is not None and int(given[axis]) != dim:
                raise UsageError(
                    f"input shape {list(given)} for {name!r} sets dim {axis} to {given[axis]}, "
                    f"but the model fixes it at {dim}",
                    hint="match the model's fixed dimensions",
                )
            shape.append(int(given[axis]))
        elif dim is None and options.dynamic_axes is None:
            shape.append(f"{name}_dim{axis}")
        else:
            shape.append(dim)
    return tuple(shape)


def common_batch_name(inputs: Sequence[TensorSpec]) -> str | None:
    """The name every input gives its dim 0, if they agree (then outputs' open dim 0 is it)."""
    names = {s.shape[0] if s.shape else None for s in inputs}
    if len(names) == 1:
        name = names.pop()
        return name if isinstance(name, str) else None
    return None


def output_shape(dims: Sequence[int | None] | None, batch: str | None) -> tuple[Dim, ...] | None:
    """An output's shape: fixed dims kept, an open dim 0 named ``batch``, other open dims
    unknown (None)."""
    if dims is None:
        return None
    return tuple(batch if (d is None and i == 0 and batch) else d for i, d in enumerate(dims))


def tf_shape(shape: tuple[Dim, ...] | None) -> list[int | None] | None:
    """A signature shape for ``tf.TensorSpec``: named (dynamic) dims become None."""
    if shape is None:
        return None
    return [d if isinstance(d, int) else None for d in shape]


def shape_dims(shape: Any) -> list[int | None] | None:
    """A tf.TensorShape or tuple as a list of ints and None (None for an unknown rank)."""
    if getattr(shape, "rank", 0) is None:
        return None
    return [
        None if d is None else int(d)
        for d in (shape.as_list() if hasattr(shape, "as_list") else shape)
    ]


def tensor_specs(signature: Signature) -> list[Any]:
    """The signature's inputs as ``tf.TensorSpec``s (dynamic dims None), for a tf.function's
    input_signature."""
    tf = import_tf()
    return [
        tf.TensorSpec(tf_shape(s.shape), tf.as_dtype(s.dtype.numpy), name=s.name)
        for s in signature.inputs
    ]


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting "output_2" before "output_10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@contextlib.contextmanager
def quiet_tf() -> Iterator[list[logging.LogRecord]]:
    """Collect tf2onnx's log records (warnings and errors) instead of printing them; quiet
    TensorFlow's Python loggers for the block."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow", "absl")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    tf2onnx_logger = loggers[0]
    tf2onnx_logger.addHandler(handler)
    for lg in loggers:
        lg.propagate = False
        lg.setLevel(logging.WARNING if lg is tf2onnx_logger else logging.ERROR)
    try:
        yield records
    finally:
        tf2onnx_logger.removeHandler(handler)
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate


def function_to_onnx(
    function: Any,
    specs: Any,
    opset: int,
    *,
    layer_of: Callable[[str], str | None] | None = None,
    owner: Any = None,
) -> onnx.ModelProto:
    """A ``tf.function`` with ``specs`` as its input signature, through tf2onnx (see
    ``convert_with_tf2onnx`` for the opset handling and error messages).

    What ``tf2onnx.convert.from_function`` does, less the tensors the function captures: a
    restored SavedModel holds its large constants as captured tensors (Basic Pitch's CQT
    kernels), which that call turns into model inputs; frozen, they are constants here, as
    ``tf2onnx --saved-model`` makes them. A function that looks values up in hash tables
    (Keras' StringLookup and IntegerLookup) is frozen with its tables' contents, read from
    ``owner`` (the Keras model, tf.Module or SavedModel that holds them), as
    ``tf2onnx.convert.from_keras`` does."""

    def convert(export_opset: int) -> onnx.ModelProto:
        import tensorflow as tf
        import tf2onnx

        concrete = function.get_concrete_function(*specs)
        captured = {t.name for t in concrete.graph.internal_captures}
        inputs = [
            t.name
            for t in concrete.inputs
            if t.dtype != tf.dtypes.resource and t.name not in captured
        ]
        outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
        renames = tf2onnx.convert.tensor_names_from_structed(concrete, inputs, outputs)
        ops = _graph_ops(concrete)
        common: dict[str, Any] = {
            "name": concrete.name,
            "input_names": inputs,
            "output_names": outputs,
            "opset": export_opset,
            "tensors_to_rename": renames,
            "extra_opset": _string_opsets(ops),
        }
        proto: onnx.ModelProto
        if owner is not None and any(op.startswith("LookupTable") for op in ops):
            with tf.device("/cpu:0"):
                frozen, tables = tf2onnx.tf_loader.from_trackable(
                    owner, concrete, inputs, outputs, False
                )
                frozen = inline_xla_calls(frozen, inputs, outputs)
            # from_keras' own path: from_graph_def has no way in for the tables' contents
            proto, _ = tf2onnx.convert._convert_common(
                frozen, continue_on_error=True, initialized_tables=tables, **common
            )
            return proto
        with tf.device("/cpu:0"):
            frozen = tf2onnx.tf_loader.from_function(concrete, inputs, outputs)
            frozen = inline_xla_calls(frozen, inputs, outputs)
        proto, _ = tf2onnx.convert.from_graph_def(frozen, **common)
        return proto

    return convert_with_tf2onnx(convert, opset, layer_of=layer_of)


def graph_def_to_onnx(
    graph_def: Any,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    renames: Mapping[str, str],
) -> onnx.ModelProto:
    """A frozen GraphDef through tf2onnx's frozen-graph route (``tf2onnx --graphdef``:
    Grappler in a ``tf.Graph``, then the rewriters that turn a TF1 ``while_loop``'s
    Enter/Exit/NextIteration into a Loop), ``inputs`` and ``outputs`` as tensor names
    (``x:0``), ``renames`` to give them theirs (see ``convert_with_tf2onnx``)."""

    def convert(export_opset: int) -> onnx.ModelProto:
        import tensorflow as tf
        import tf2onnx

        with tf.device("/cpu:0"):
            proto: onnx.ModelProto
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=inputs,
                output_names=outputs,
                opset=export_opset,
                tensors_to_rename=dict(renames),
                extra_opset=_string_opsets({node.op for node in graph_def.node}),
            )
        return proto

    return convert_with_tf2onnx(convert, opset)


_CALLS = ("StatefulPartitionedCall", "PartitionedCall")
_XLA = "_XlaMustCompile"


def inline_xla_calls(graph_def: Any, inputs: list[str], outputs: list[str]) -> Any:
    """``graph_def`` with its calls of functions compiled by XLA inlined (Grappler keeps them
    as calls, which tf2onnx cannot convert). Keras 3 runs grouped convolutions this way on
    TensorFlow (ConvNeXt's depthwise ``Conv2D(groups=C)``: "broken on CPU without XLA"), as
    ``_conv_xla``; inlined, it is the Conv2D tf2onnx converts with ``group``. A call inside a
    function is inlined in the next round."""
    import tensorflow as tf
    import tf2onnx

    for _ in range(8):  # nesting levels: a SavedModel's function calling the layer's
        functions = {f.signature.name: f for f in graph_def.library.function}
        nodes = [*graph_def.node, *(n for f in functions.values() for n in f.node_def)]
        marked = [n for n in nodes if n.op in _CALLS and _XLA in n.attr and n.attr[_XLA].b]
        if not marked:
            break
        for node in marked:
            del node.attr[_XLA]
            called = functions.get(node.attr["f"].func.name)
            for attr in (_XLA, "_noinline"):  # Grappler marks XLA's functions not to inline
                if called is not None and attr in called.attr:
                    del called.attr[attr]
        with tf.Graph().as_default():
            graph_def = tf2onnx.tf_loader.tf_optimize(inputs, outputs, graph_def)
    return graph_def


STRING_OPS = frozenset(
    {
        "StringSplit",
        "StringSplitV2",
        "StaticRegexReplace",
        "RegexSplitWithOffsets",
        "StringJoin",
        "ReduceJoin",
        "StringToHashBucketFast",
        "WordpieceTokenizeWithOffsets",
        "SentencepieceOp",
        "SentencepieceTokenizeOp",
    }
)
"""TensorFlow's text ops that tf2onnx writes as onnxruntime-extensions' operators (domain
``ai.onnx.contrib``; Keras' TextVectorization standardizes and splits with two of them)."""


def _graph_ops(concrete: Any) -> set[str]:
    """The op types of a concrete function and of the functions it calls."""
    graph = concrete.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    return ops | {node.op for fn in graph.library.function for node in fn.node_def}


def _string_opsets(ops: set[str]) -> list[Any] | None:
    """tf2onnx's ``extra_opset`` for a graph with text ops, where onnxruntime-extensions (which
    runs them: ``customops``) is installed; None otherwise (tf2onnx then names the op)."""
    from onnx import helper

    from ..customops import extensions_library

    if not ops & STRING_OPS or extensions_library() is None:
        return None
    return [helper.make_opsetid("ai.onnx.contrib", 1)]


def convert_with_tf2onnx(
    convert: Callable[[int], onnx.ModelProto],
    opset: int,
    *,
    layer_of: Callable[[str], str | None] | None = None,
    framework: str = "TensorFlow",
) -> onnx.ModelProto:
    """Run a tf2onnx conversion at ``opset`` (or tf2onnx's highest, then raised with onnx's
    version converter); ConversionError naming the op (and Keras layer) tf2onnx could not
    convert, or the exception it raised, on one line."""
    import tf2onnx

    from .tf2onnx_ops import register_missing_ops

    register_missing_ops()
    highest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    export_opset = min(opset, highest)
    with quiet_tf() as records:
        try:
            proto = convert(export_opset)
        except FerryError:
            raise
        except Exception as e:
            failure = _op_failure(records, layer_of, framework)
            if failure is not None:
                raise failure from e
            raise ConversionError(f"tf2onnx failed: {one_line(e)}", hint=OP_HINT) from e
    failure = _op_failure(records, layer_of, framework)
    if failure is not None:
        raise failure
    if opset > export_opset:
        proto = _raise_opset(proto, opset, highest)
    return proto


def _op_failure(
    records: Sequence[logging.LogRecord],
    layer_of: Callable[[str], str | None] | None,
    framework: str,
) -> ConversionError | None:
    """The first op tf2onnx logged as unsupported or failed, as a ConversionError."""
    found: list[tuple[str, str | None, str]] = []  # (op, node, how)
    counted: list[str] = []  # ops from the "Unsupported ops" summary (TFLite logs only that)
    for record in records:
        if record.levelno < logging.ERROR or not isinstance(record.msg, str):
            continue
        args = record.args
        if record.msg.startswith("Unsupported ops") and isinstance(args, Mapping):
            counted.extend(str(op) for op in args)  # logging unwraps the lone Counter argument
        elif not isinstance(args, tuple):
            continue
        elif record.msg.startswith("Tensorflow op [") and len(args) == 2:
            found.append((str(args[1]), str(args[0]), "has no ONNX conversion"))
        elif record.msg.startswith("Failed to convert node") and len(args) == 3:
            match = re.search(r"OP=(\S+)", str(args[2]))
            error = record.exc_info[1] if record.exc_info else None
            how = f"failed to convert ({one_line(error, 160)})" if error else "failed to convert"
            found.append((match.group(1) if match else "op", str(args[0]), how))
    found += [
        (op, None, "has no ONNX conversion") for op in counted if op not in {f[0] for f in found}
    ]
    if not found:
        return None
    op, node, how = found[0]
    layer = layer_of(node) if layer_of and node else None
    where = ""
    if node:
        where = f" (node {node!r}" + (f", Keras layer {layer!r}" if layer else "") + ")"
    others = sorted({o for o, _, _ in found[1:] if o != op})
    more = f"; also {', '.join(others)}" if others else ""
    return ConversionError(f"tf2onnx: {framework} op {op}{where} {how}{more}", hint=OP_HINT)


def _raise_opset(proto: onnx.ModelProto, opset: int, highest: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        converted: onnx.ModelProto = version_converter.convert_version(proto, opset)
    except Exception as e:
        raise ConversionError(
            f"tf2onnx writes at most opset {highest}, and onnx's version converter cannot "
            f"raise the model to opset {opset} ({one_line(e)})",
            hint=f"pass --opset {highest} or lower",
        ) from e
    return converted


def finish_export(
    proto: onnx.ModelProto,
    signature: Signature,
    path: Path,
    renames: Mapping[str, str] | None = None,
) -> None:
    """Give an exported model the reference's names, order and dim names, an IR version the
    installed ONNX Runtime loads, and write it atomically to ``path`` (checked on the way)."""
    rename_values(proto.graph, renames or {})
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    _require_same("inputs", [v.name for v in inputs], signature.input_names)
    _require_same("outputs", [v.name for v in graph.output], signature.output_names)
    by_name = {v.name: v for v in graph.input}
    ordered = [by_name[n] for n in signature.input_names]
    ordered += [v for v in graph.input if v.name in initializers]
    outputs = {v.name: v for v in graph.output}
    ordered_outputs = [outputs[n] for n in signature.output_names]
    for field, values in ((graph.input, ordered), (graph.output, ordered_outputs)):
        copies = [type(v)() for v in values]
        for copy, v in zip(copies, values, strict=True):
            copy.CopyFrom(v)
        del field[:]
        field.extend(copies)
    for value, spec in zip(graph.input, signature.inputs, strict=False):
        _set_dims(value, spec.shape)
    for value, spec in zip(graph.output, signature.outputs, strict=True):
        _set_dims(value, spec.shape)
    # tf2onnx writes tf.strings.lower as a StringNormalizer that names no locale, which
    # ONNX Runtime reads as en_US.UTF-8, absent from slim images; C.UTF-8 maps case the same
    portable_locales(proto, everywhere=True)
    _drop_unused_domains(proto)
    _fit_ir_version(proto)
    Model.from_proto(proto).save(path)


def _require_same(what: str, got: Sequence[str], want: Sequence[str]) -> None:
    if set(got) != set(want) or len(got) != len(want):
        raise ConversionError(
            f"the exported model's {what} {list(got)} do not match the source's {list(want)}",
            hint="try the other exporter",
        )


def _set_dims(value: onnx.ValueInfoProto, shape: tuple[Dim, ...] | None) -> None:
    """Name the exported dims as the reference does; dims the exporter fixed stay fixed."""
    if shape is None or not value.type.HasField("tensor_type"):
        return
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) != len(shape):
        return
    for dim, want in zip(tensor_type.shape.dim, shape, strict=True):
        if dim.HasField("dim_value"):
            continue
        if isinstance(want, str) and want:
            dim.dim_param = want
        elif isinstance(want, int):
            dim.dim_value = want


def _drop_unused_domains(proto: onnx.ModelProto) -> None:
    """Drop opset imports no node uses (tf2onnx always imports ai.onnx.ml)."""
    used = {"", "ai.onnx"}
    graphs = [proto.graph, *(f for f in proto.functions)]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            used.add(node.domain)
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    used |= {f.domain for f in proto.functions}
    kept = [o for o in proto.opset_import if o.domain in used]
    if len(kept) != len(proto.opset_import):
        copies = [type(o)() for o in kept]
        for copy, o in zip(copies, kept, strict=True):
            copy.CopyFrom(o)
        del proto.opset_import[:]
        proto.opset_import.extend(copies)


def _fit_ir_version(proto: onnx.ModelProto) -> None:
    """At least the IR version the opsets need, at most what ONNX Runtime loads."""
    from onnx import helper

    max_ir, max_opset = runtime_limits()
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > max_opset:
        raise ConversionError(
            f"the exporter wrote opset {opset}; onnxruntime loads at most {max_opset}",
            hint=f"pass --opset {max_opset} or lower",
        )
    needed = helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    ir = max(int(proto.ir_version), int(needed))
    if ir > max_ir:
        if needed > max_ir:
            raise ConversionError(
                f"opset {opset} needs IR version {needed}; onnxruntime loads at most {max_ir}",
                hint="pass an older --opset, or upgrade onnxruntime",
            )
        ir = max_ir
    proto.ir_version = ir
