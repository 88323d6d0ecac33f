"""Keras 3 models and TensorFlow SavedModels as conversion sources.

    source = load_keras("model.keras", ConvertOptions())       # or a keras.Model object
    source = load_saved_model("export_dir", ConvertOptions())   # holds saved_model.pb
    source.reference.run(feeds)                 # the model in TensorFlow, {name: array}
    [c.exporter for c in source.candidates]     # ["tf2onnx", "keras export"] / ["tf2onnx"]

Names: the ONNX inputs are the Keras input layer names (the SavedModel signature's argument
names), the outputs the Keras output names (dict keys for a dict-returning model) or the
signature's output keys; exporters' own names ("Identity:0") are renamed to these. Dynamic dims
follow ``ConvertOptions.axes_for`` and carry the same symbol names as the reference signature.

With tensorflow-cpu 2.21, keras 3.15 and tf2onnx 1.17: ``tf2onnx.convert.from_keras`` fails
on Keras 3 Sequential models (it looks up ``keras_tensor_N`` output names), so the "tf2onnx"
candidate traces the model in a ``tf.function`` that returns ``{name: tensor}`` and converts it
with ``tf2onnx.convert.from_function``; "keras export" is ``model.export(path, format="onnx")``
(Keras traces its own function, then also calls tf2onnx's ``from_function``; on its own it
writes opset 15, here it gets the chosen opset). Both keep a dynamic batch and write IR 8 for
opsets up to 18, tf2onnx's highest (opset 19+ raises ValueError in tf2onnx); a higher opset is
reached with onnx's version converter, and the IR version is then raised to what the opsets
need (10 for opset 21), never past what ONNX Runtime loads. tf2onnx does not stop at an
unsupported op (it leaves the TF op in the graph and logs an error); the log is read and the op
(and its Keras layer) reported as a ConversionError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FerryError, InputError, UsageError
from ..model import Model
from ..runtime import runtime_limits
from ..signature import Dim, Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConversionError, ConvertOptions, Source

if TYPE_CHECKING:
    import onnx

__all__ = ["KerasRunner", "SavedModelRunner", "load_keras", "load_saved_model"]

DEFAULT_OPSET = 17
"""The ai.onnx opset written when the user names none (capped at what ONNX Runtime loads)."""

SERVING_SIGNATURE = "serving_default"

OP_HINT = (
    "try another --opset, the other exporter, or map the op to a custom op domain "
    "(tf2onnx custom_ops) and register an ONNX Runtime custom-op library"
)


# --- loaders ----------------------------------------------------------------------------


def load_keras(source: Any, options: ConvertOptions) -> Source:
    """A Keras 3 model (a ``keras.Model`` or a ``.keras`` / legacy ``.h5`` file) to convert.

    Files load with ``keras.saving.load_model(compile=False, safe_mode=True)``; safe mode
    refuses Lambda layers and other pickled code unless ``options.trust_pickle``. InputError
    (exit 2) for a file that is not a Keras model; UsageError for a model without declared
    inputs (a subclassed model never built on ``keras.Input``).
    """
    keras = _import_keras()
    opset = resolve_opset(options)
    if isinstance(source, (str, Path)):
        model = _load_keras_file(Path(source), options)
        where = str(source)
    elif isinstance(source, keras.Model):
        model, where = source, f"keras.Model {source.name!r}"
    else:
        raise UsageError(
            f"load_keras takes a keras.Model or a .keras file, not a {type(source).__name__}",
            hint="pass the model object or the path of its .keras file",
        )
    runner = KerasRunner(model, options)
    layers = _layer_names(model)
    ranges = _embedding_ranges(model, runner.signature, _input_names(model.inputs))
    return Source(
        framework="keras",
        description=(
            f"{where}: Keras {keras.__version__} model with {len(runner.signature.inputs)} "
            f"inputs, {len(runner.signature.outputs)} outputs, {len(layers)} layers"
        ),
        reference=runner,
        candidates=[
            Candidate("tf2onnx", lambda path: runner.export_tf2onnx(path, opset)),
            Candidate("keras export", lambda path: runner.export_keras(path, opset)),
        ],
        value_ranges=ranges,
        details={"keras": keras.__version__, "tensorflow": _tf_version(), "opset": opset},
    )


def load_saved_model(
    path: str | Path, options: ConvertOptions, signature_key: str = SERVING_SIGNATURE
) -> Source:
    """A TensorFlow SavedModel directory (with ``saved_model.pb``) to convert; its
    ``serving_default`` signature (or ``signature_key``) is the model's interface."""
    opset = resolve_opset(options)
    runner = SavedModelRunner(path, options, signature_key)
    sig = runner.signature
    return Source(
        framework="tf",
        description=(
            f"{runner.path}: TensorFlow SavedModel, signature {signature_key!r} with "
            f"{len(sig.inputs)} inputs, {len(sig.outputs)} outputs"
        ),
        reference=runner,
        candidates=[Candidate("tf2onnx", lambda out: runner.export_tf2onnx(out, opset))],
        details={"tensorflow": _tf_version(), "signature": signature_key, "opset": opset},
    )


# --- Keras ------------------------------------------------------------------------------


class KerasRunner:
    """Runs a Keras model (TensorFlow backend) eagerly; implements Runner.

    Inputs are named by the model's input layers; outputs by the dict keys the model returns,
    else its output layer names (``output_N`` when those are not unique).
    """

    def __init__(self, model: Any, options: ConvertOptions | None = None) -> None:
        keras = _import_keras()
        if keras.backend.backend() != "tensorflow":
            raise UsageError(
                f"Keras runs on the {keras.backend.backend()!r} backend; converting needs "
                "TensorFlow",
                hint="set KERAS_BACKEND=tensorflow before importing keras",
            )
        options = options or ConvertOptions()
        self.model = model
        self.name = f"{model.name}@keras"
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise UsageError(
                f"Keras model {model.name!r} declares no inputs (a subclassed or unbuilt model)",
                hint="wrap it in a functional model: x = keras.Input(shape); "
                "keras.Model(x, model(x))",
            )
        self._input_struct = _input_structure(model)
        self._names = _input_names(inputs)
        self._output_names, outputs = _output_structure(model)
        specs = [
            TensorSpec(
                self._names[t.name],
                dtype_from_numpy(t.dtype),
                source_shape(self._names[t.name], t.shape, options),
            )
            for t in inputs
        ]
        batch = common_batch_name(specs)
        out_specs = [
            TensorSpec(n, dtype_from_numpy(t.dtype), output_shape(t.shape, batch))
            for n, t in zip(self._output_names, outputs, strict=True)
        ]
        self._signature = Signature(tuple(specs), tuple(out_specs))

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        tf = import_tf()
        keras = _import_keras()
        tensors = {name: tf.convert_to_tensor(array) for name, array in feeds.items()}
        args = keras.tree.map_structure(lambda t: tensors[self._names[t.name]], self._input_struct)
        outputs = self.model(args, training=False)
        return {
            name: np.asarray(keras.ops.convert_to_numpy(value))
            for name, value in self._named(outputs).items()
        }

    def tf_specs(self) -> Any:
        """The model's input structure as ``tf.TensorSpec``s (dynamic dims None)."""
        tf = import_tf()
        keras = _import_keras()
        by_name = {s.name: s for s in self.signature.inputs}

        def spec(t: Any) -> Any:
            s = by_name[self._names[t.name]]
            return tf.TensorSpec(_tf_shape(s.shape), t.dtype, name=s.name)

        return keras.tree.map_structure(spec, self._input_struct)

    def export_tf2onnx(self, path: Path, opset: int) -> None:
        """tf2onnx.convert.from_function on a tf.function returning {output name: tensor}."""
        tf = import_tf()
        keras = _import_keras()
        structure = self.tf_specs()
        flat = keras.tree.flatten(structure)

        def serve(*args: Any) -> dict[str, Any]:
            packed = keras.tree.pack_sequence_as(structure, list(args))
            return self._named(self.model(packed, training=False))

        function = tf.function(serve, input_signature=flat)

        def convert(export_opset: int) -> onnx.ModelProto:
            import tf2onnx

            proto: onnx.ModelProto
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=flat, opset=export_opset
            )
            return proto

        proto = convert_with_tf2onnx(convert, opset, layer_of=_layer_finder(self.model))
        finish_export(proto, self.signature, path)

    def export_keras(self, path: Path, opset: int) -> None:
        """Keras' own ONNX export: ``model.export(path, format="onnx")``."""

        def convert(export_opset: int) -> onnx.ModelProto:
            import onnx

            with tempfile.TemporaryDirectory(prefix="ferry-keras-") as tmp:
                target = Path(tmp) / "model.onnx"
                with warnings.catch_warnings():
                    # keras' numpy-2 patch for tf2onnx probes the removed np.object
                    warnings.filterwarnings(
                        "ignore", message=r".*np\.object", category=FutureWarning
                    )
                    self.model.export(
                        str(target),
                        format="onnx",
                        verbose=False,
                        input_signature=[self.tf_specs()],
                        opset_version=export_opset,
                    )
                return onnx.load(str(target))

        proto = convert_with_tf2onnx(convert, opset, layer_of=_layer_finder(self.model))
        exported = [o.name for o in proto.graph.output]
        names = self.signature.output_names
        renames: dict[str, str] = {}
        if set(exported) != set(names) and len(exported) == len(names):
            renames = dict(zip(exported, names, strict=True))  # Keras' flatten order
        finish_export(proto, self.signature, path, renames)

    def _named(self, outputs: Any) -> dict[str, Any]:
        keras = _import_keras()
        if isinstance(outputs, Mapping) and all(isinstance(k, str) for k in outputs):
            return {name: outputs[name] for name in self._output_names}
        return dict(zip(self._output_names, keras.tree.flatten(outputs), strict=True))


def _load_keras_file(path: Path, options: ConvertOptions) -> Any:
    keras = _import_keras()
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise InputError(
            f"{path}: {what}, not a Keras model file", hint="give a .keras file saved by Keras 3"
        )
    if path.suffix.lower() not in (".h5", ".hdf5"):
        if not zipfile.is_zipfile(path):
            raise InputError(
                f"{path}: not a Keras .keras file (not a zip archive)",
                hint="give a file written by model.save('model.keras')",
            )
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"{path}: cannot read the .keras archive ({one_line(e)})") from e
        if "config.json" not in names:
            raise InputError(
                f"{path}: not a Keras .keras file (the zip archive holds no config.json)",
                hint="give a file written by model.save('model.keras')",
            )
    try:
        with quiet_tf():
            return keras.saving.load_model(
                str(path), compile=False, safe_mode=not options.trust_pickle
            )
    except Exception as e:
        text = one_line(e)
        hint = "check that the file is a whole Keras 3 model; re-save it"
        if "safe_mode" in text:
            hint = "the model holds code (a Lambda layer); pass trust_pickle if you trust it"
        raise InputError(f"{path}: Keras cannot load the model ({text})", hint=hint) from e


def _input_names(inputs: Sequence[Any]) -> dict[str, str]:
    """Input layer name -> input name: the layer's, except Keras' automatic "keras_tensor_N"
    (a Sequential model built without keras.Input), which becomes "input" / "input_N"."""
    names = {}
    for i, t in enumerate(inputs):
        auto = re.fullmatch(r"keras_tensor(_\d+)?", t.name) is not None
        names[t.name] = t.name if not auto else "input" if len(inputs) == 1 else f"input_{i}"
    return names


def _input_structure(model: Any) -> Any:
    """What the model is called with: a tensor, a list or a dict of input KerasTensors."""
    try:
        return model.input
    except (AttributeError, ValueError):  # Sequential before its first call
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def _output_structure(model: Any) -> tuple[list[str], list[Any]]:
    """(names, KerasTensors) of the model's outputs, in the order the reference returns them."""
    keras = _import_keras()
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = model.outputs[0] if len(model.outputs) == 1 else list(model.outputs)
    if isinstance(structure, Mapping) and all(isinstance(k, str) for k in structure):
        return list(structure), list(structure.values())
    flat = list(keras.tree.flatten(structure))
    names = list(getattr(model, "output_names", None) or [])
    if not names and model.layers and len(flat) == 1:
        names = [model.layers[-1].name]
    if len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return names, flat


def _embedding_ranges(
    model: Any, signature: Signature, names: Mapping[str, str]
) -> dict[str, tuple[int, int]]:
    """Integer inputs that feed an Embedding layer directly take ids in [0, input_dim)."""
    keras = _import_keras()
    integer_inputs = {s.name for s in signature.inputs if s.dtype.kind == "int"}
    ranges: dict[str, tuple[int, int]] = {}
    for layer in getattr(model, "layers", []):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            name = names.get(layer.input.name, "")
        except (AttributeError, ValueError):  # shared layers have no single input
            continue
        if name in integer_inputs:
            ranges[name] = (0, int(layer.input_dim))
    return ranges


def _layer_names(model: Any) -> set[str]:
    names: set[str] = set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        stack.extend(getattr(layer, "layers", []))
    return names


def _layer_finder(model: Any) -> Callable[[str], str | None]:
    """Maps a TF node name ("functional_1/my_layer_1/MatMul") to its Keras layer name."""
    names = _layer_names(model) - {model.name}

    def find(node: str) -> str | None:
        for part in node.split("/"):
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in names:
                    return candidate
        return None

    return find


# --- SavedModel -------------------------------------------------------------------------


class SavedModelRunner:
    """Runs one signature of a TensorFlow SavedModel; implements Runner.

    Inputs and outputs are named by the signature's argument and output keys, in natural
    order ("output_2" before "output_10").
    """

    def __init__(
        self,
        path: str | Path,
        options: ConvertOptions | None = None,
        signature_key: str = SERVING_SIGNATURE,
    ) -> None:
        options = options or ConvertOptions()
        self.path = Path(path)
        if not self.path.is_dir():
            what = "a file" if self.path.exists() else "no such directory"
            raise InputError(
                f"{self.path}: {what}, not a TensorFlow SavedModel directory",
                hint="give the directory that holds saved_model.pb",
            )
        if not (self.path / "saved_model.pb").is_file():
            raise InputError(
                f"{self.path}: not a TensorFlow SavedModel (no saved_model.pb in the directory)",
                hint="give the directory written by tf.saved_model.save or model.export",
            )
        tf = import_tf()
        try:
            with quiet_tf():
                self._loaded = tf.saved_model.load(str(self.path))
        except Exception as e:
            raise InputError(
                f"{self.path}: TensorFlow cannot load the SavedModel ({one_line(e)})",
                hint="check that the directory is a whole SavedModel; re-export it",
            ) from e
        signatures = dict(self._loaded.signatures)
        if signature_key not in signatures:
            raise InputError(
                f"{self.path}: the SavedModel has no signature {signature_key!r}",
                hint=f"its signatures are {sorted(signatures) or 'none'}; export one with "
                "tf.saved_model.save(module, dir, signatures=...)",
            )
        self.function = signatures[signature_key]
        self.name = f"{self.path.name}@tf"
        args, kwargs = self.function.structured_input_signature
        if args:
            raise ConversionError(
                f"{self.path}: signature {signature_key!r} takes positional arguments",
                hint="export a signature with named arguments",
            )
        self._input_keys = sorted(kwargs, key=natural_key)
        specs = [
            TensorSpec(
                key,
                dtype_from_numpy(kwargs[key].dtype.as_numpy_dtype),
                source_shape(key, _dims(kwargs[key].shape), options),
            )
            for key in self._input_keys
        ]
        outputs = self.function.structured_outputs
        if not isinstance(outputs, Mapping):
            raise ConversionError(
                f"{self.path}: signature {signature_key!r} does not return a dict of tensors",
                hint="export a signature that returns {name: tensor}",
            )
        batch = common_batch_name(specs)
        out_specs = [
            TensorSpec(
                key,
                dtype_from_numpy(outputs[key].dtype.as_numpy_dtype),
                output_shape(_dims(outputs[key].shape), batch),
            )
            for key in sorted(outputs, key=natural_key)
        ]
        self._signature = Signature(tuple(specs), tuple(out_specs))

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        tf = import_tf()
        result = self.function(**{k: tf.convert_to_tensor(feeds[k]) for k in self._input_keys})
        return {name: np.asarray(result[name].numpy()) for name in self.signature.output_names}

    def export_tf2onnx(self, path: Path, opset: int) -> None:
        """tf2onnx.convert.from_function on the signature, with the dynamic dims asked for."""
        tf = import_tf()
        keys = self._input_keys
        specs = [
            tf.TensorSpec(_tf_shape(s.shape), tf.as_dtype(s.dtype.numpy), name=s.name)
            for s in self.signature.inputs
        ]
        signature_function = self.function

        def serve(*args: Any) -> Any:
            return signature_function(**dict(zip(keys, args, strict=True)))

        function = tf.function(serve, input_signature=specs)

        def convert(export_opset: int) -> onnx.ModelProto:
            import tf2onnx

            proto: onnx.ModelProto
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=specs, opset=export_opset
            )
            return proto

        finish_export(convert_with_tf2onnx(convert, opset), self.signature, path)


# --- shared with convert.tflite ---------------------------------------------------------


def import_tf() -> Any:
    """tensorflow, with its C++ logging turned down unless the user set TF_CPP_MIN_LOG_LEVEL
    (only effective before TensorFlow's first import); ``quiet_tf`` quiets its Python logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _import_keras() -> Any:
    import_tf()
    import keras

    return keras


def _tf_version() -> str:
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
    name: str, dims: Sequence[int | None] | None, options: ConvertOptions
) -> tuple[Dim, ...]:
    """An input's shape for the reference signature: the dims the user makes dynamic get
    their names; by default dim 0 (when the source leaves it open) is "batch" and other open
    dims are named ``<input>_dim<axis>``; ``options.input_shapes`` fixes the rest."""
    if dims is None:
        raise UsageError(
            f"input {name!r} has an unknown rank", hint="export the model with a fixed input rank"
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


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting "output_2" before "output_10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An exception's message on one line, shortened."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    rename_values(proto, dict(renames or {}))
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


def rename_values(proto: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename tensors throughout the graph and its subgraphs; a tensor that already holds a
    target name is moved aside to a fresh one first."""
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return
    used = _value_names(proto.graph)
    taken = used | set(renames.values())
    for name in sorted((used & set(renames.values())) - set(renames)):
        fresh = next(
            f"{name}__{i}" for i in range(1, len(taken) + 2) if f"{name}__{i}" not in taken
        )
        taken.add(fresh)
        renames[name] = fresh
    _apply_renames(proto.graph, renames)


def _fresh(name: str, taken: set[str]) -> str:
    i = 1
    while f"{name}__{i}" in taken:
        i += 1
    return f"{name}__{i}"


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names |= _value_names(sub)
    names.discard("")
    return names


def _apply_renames(graph: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _apply_renames(sub, renames)


def _dims(shape: Any) -> list[int | None] | None:
    """A tf.TensorShape or tuple as a list of ints and None (None for an unknown rank)."""
    if getattr(shape, "rank", 0) is None:
        return None
    return [
        None if d is None else int(d)
        for d in (shape.as_list() if hasattr(shape, "as_list") else shape)
    ]


def _tf_shape(shape: tuple[Dim, ...] | None) -> list[int | None] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) else None for d in shape]
