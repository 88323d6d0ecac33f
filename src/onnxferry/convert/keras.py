"""Keras 3 models as conversion sources (TensorFlow SavedModels: ``convert.savedmodel``,
re-exported here).

    source = load_keras("model.keras", ConvertOptions())       # or a keras.Model object
    source = load_saved_model("export_dir", ConvertOptions())   # holds saved_model.pb
    source.reference.run(feeds)                 # the model in TensorFlow, {name: array}
    [c.exporter for c in source.candidates]     # ["tf2onnx", "keras export"] / ["tf2onnx"]

Names: the ONNX inputs are the Keras input layer names, the outputs the Keras output names
(dict keys for a dict-returning model); exporters' own names ("Identity:0") are renamed to
these. Dynamic dims follow ``ConvertOptions.axes_for`` and carry the same symbol names as the
reference signature.

With tensorflow-cpu 2.21, keras 3.15 and tf2onnx 1.17: ``tf2onnx.convert.from_keras`` fails
on Keras 3 Sequential models (it looks up ``keras_tensor_N`` output names), so the "tf2onnx"
candidate traces the model in a ``tf.function`` that returns ``{name: tensor}`` and converts it
with ``tf2onnx.convert.from_function``; "keras export" is ``model.export(path, format="onnx")``
(Keras traces its own function, then also calls tf2onnx's ``from_function``; on its own it
writes opset 15, here it gets the chosen opset), so it is a fallback: tried only when the
"tf2onnx" candidate fails (it took as long again, and its model ran no faster). Both keep a
dynamic batch; opsets past tf2onnx's highest, IR versions and unsupported ops are handled as
in ``convert.tf_common``.
"""

from __future__ import annotations

import inspect
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..errors import InputError, UsageError, one_line
from ..feeds import ColumnScale, Vocabulary
from ..parity import Tolerance
from ..parity.tolerance import FLOAT16, float16_weights_note
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConvertOptions, Source
from .savedmodel import SavedModelRunner, load_saved_model
from .tf_common import (
    common_batch_name,
    convert_with_tf2onnx,
    finish_export,
    function_to_onnx,
    import_tf,
    output_shape,
    quiet_tf,
    resolve_opset,
    source_shape,
    tf_shape,
    tf_version,
)

if TYPE_CHECKING:
    import onnx

__all__ = ["KerasRunner", "SavedModelRunner", "load_keras", "load_saved_model"]


def load_keras(source: Any, options: ConvertOptions, example: Any = None) -> Source:
    """A Keras 3 model (a ``keras.Model`` or a ``.keras`` / legacy ``.h5`` file) to convert.

    Files load with ``keras.saving.load_model(compile=False, safe_mode=True)``; safe mode
    refuses Lambda layers and other pickled code unless ``options.trust_pickle``. InputError
    (exit 2) for a file that is not a Keras model. A subclassed model is converted on one
    input shaped as it was built, as ``--input-shape`` says, or as ``example`` (a factory's
    one example array) is shaped (``_with_declared_inputs``); UsageError for one never built
    and given no shape.
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
    model, notes = _with_declared_inputs(model, options, example)
    runner = KerasRunner(model, options)
    layers = _layer_names(model)
    names = _input_names(model.inputs)
    ranges = _embedding_ranges(model, runner.signature, names)
    tolerance = None
    if policy := _float16_policy(model):  # Keras and ONNX Runtime round after different ops
        tolerance = Tolerance(*FLOAT16)
        notes.append(float16_weights_note(model.name, f"layers compute in float16 ({policy})"))
    return Source(
        framework="keras",
        description=(
            f"{where}: Keras {keras.__version__} model with {len(runner.signature.inputs)} "
            f"inputs, {len(runner.signature.outputs)} outputs, {len(layers)} layers"
        ),
        reference=runner,
        candidates=[
            Candidate("tf2onnx", lambda path: runner.export_tf2onnx(path, opset)),
            Candidate("keras export", lambda path: runner.export_keras(path, opset), fallback=True),
        ],
        value_ranges=ranges,
        vocabularies=_lookup_vocabularies(model, names),
        column_scales=_normalization_scales(model, names),
        details={"keras": keras.__version__, "tensorflow": tf_version(), "opset": opset},
        notes=notes,
        tolerance=tolerance,
    )


def _float16_policy(model: Any) -> str | None:
    """The dtype policy (``mixed_float16``, ``float16``) under which most of ``model``'s
    layers compute in float16, or None."""
    policies = [layer.dtype_policy for layer in _nested_layers(model) if layer.weights]
    half = [p.name for p in policies if p.compute_dtype == "float16"]
    return max(set(half), key=half.count) if 2 * len(half) > len(policies) else None


def _nested_layers(model: Any) -> Iterator[Any]:
    """Every layer inside ``model``, those of nested models too."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _nested_layers(layer)


def _with_declared_inputs(
    model: Any, options: ConvertOptions, example: Any = None
) -> tuple[Any, list[str]]:
    """``model`` itself when it declares its inputs; a subclassed model (no ``inputs``: its
    layers run in ``call``) wrapped in a functional model on one ``keras.Input``, shaped as
    the model was built (``get_build_config``: ``build((None, None, None, 3))`` keeps the
    open dims open), as ``--input-shape`` gives it or as ``example`` (one array) is shaped,
    the rows and the axes ``--dynamic`` names open; named as the one ``--input-shape`` or the
    first parameter of ``call``; and a note that says so. A model built on several inputs, or
    never built and given no shape, is left as it is (KerasRunner refuses it)."""
    keras = _import_keras()
    if getattr(model, "inputs", None):
        return model, []
    built = (model.get_build_config() or {}).get("input_shape") if model.built else None
    given = list(options.input_shapes.items())
    parameters = list(inspect.signature(model.call).parameters)
    if len(given) == 1:
        name, shape = given[0][0], (None, *given[0][1][1:])
        where = "--input-shape"
    elif not given and _is_shape(built):
        name, shape, where = (parameters or ["input"])[0], tuple(built), "its build()"
    elif not given and hasattr(example, "shape") and len(example.shape) >= 1:
        name, shape = (parameters or ["input"])[0], (None, *example.shape[1:])
        where = "the factory's example"
    else:
        return model, []
    opened = options.axes_for(name, len(shape))  # --dynamic opens what the shape fixed
    if any(shape[axis] is not None for axis in opened if axis < len(shape)):
        shape = tuple(None if axis in opened else d for axis, d in enumerate(shape))
        where += " and --dynamic"
    x = keras.Input(shape=shape[1:], name=name)
    wrapped = keras.Model(x, model(x), name=model.name)
    note = (
        f"the subclassed Keras model declares no inputs: converted on one input {name!r} "
        f"[{', '.join('?' if d is None else str(d) for d in shape)}], the shape from {where}"
    )
    return wrapped, [note]


def _is_shape(value: Any) -> TypeGuard[Sequence[int | None]]:
    """A shape: a tuple or list of ints and Nones (not a structure of shapes)."""
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


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
                f"Keras model {model.name!r} declares no inputs (a subclassed model never "
                "built, or built on several inputs)",
                hint="give its one input's shape with --input-shape NAME=1x...; or wrap it: "
                "x = keras.Input(shape); keras.Model(x, model(x))",
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
            return tf.TensorSpec(tf_shape(s.shape), t.dtype, name=s.name)

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

        proto = function_to_onnx(
            function, flat, opset, layer_of=_layer_finder(self.model), owner=self.model
        )
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
    legacy = path.suffix.lower() in (".h5", ".hdf5")
    try:
        with quiet_tf():
            return keras.saving.load_model(
                str(path),
                compile=False,
                safe_mode=not options.trust_pickle,
                custom_objects=_keras2_recurrent_layers(keras) if legacy else None,
            )
    except Exception as e:
        text = one_line(e)
        hint = "check that the file is a whole Keras 3 model; re-save it"
        if "safe_mode" in text:
            hint = "the model holds code (a Lambda layer); pass trust_pickle if you trust it"
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(e))
        if missing:  # a custom layer whose code was not imported
            raise InputError(
                f"{path}: the model uses {missing[1]!r}, a class of its own code that Keras "
                "cannot find",
                hint="give a factory FILE.py:FUNCTION that imports the code defining it and "
                f"returns keras.saving.load_model({str(path)!r})",
            ) from e
        if "No model config found" in text:  # model.save_weights(): no architecture to load
            raise InputError(
                f"{path}: the HDF5 file holds weights only, no model (Keras finds no model "
                "config in it)",
                hint="give a factory FILE.py:FUNCTION that builds the model, calls "
                "load_weights() on this file and returns it",
            ) from e
        raise InputError(f"{path}: Keras cannot load the model ({text})", hint=hint) from e


_KERAS2_RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def _keras2_recurrent_layers(keras: Any) -> dict[str, type]:
    """Keras 3's recurrent layers taking tf.keras 2's configs, which carry ``time_major``
    (dgaintel's LSTM: ``False``, Keras 3 has no such argument and refused the file). A True
    one, where the batch axis is second, is still refused (by Keras, naming it)."""

    def taking_keras2(base: type) -> type:
        def from_config(cls: type, config: dict[str, Any]) -> Any:
            config = dict(config)
            if config.get("time_major") is False:
                del config["time_major"]
            return base.from_config(config)  # type: ignore[attr-defined]

        return type(base.__name__, (base,), {"from_config": classmethod(from_config)})

    return {name: taking_keras2(getattr(keras.layers, name)) for name in _KERAS2_RECURRENT}


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
    """Inputs that feed an Embedding layer directly take ids in [0, input_dim): integers, or
    floats (``keras.Input``'s default dtype; the layer casts them), as whole numbers."""
    keras = _import_keras()
    id_inputs = {s.name for s in signature.inputs if s.dtype.kind in ("int", "float")}
    return {
        name: (0, int(layer.input_dim))
        for name, layer in _input_layers(model, names, keras.layers.Embedding)
        if name in id_inputs
    }


def _lookup_vocabularies(model: Any, names: Mapping[str, str]) -> dict[str, Vocabulary]:
    """Inputs that feed a StringLookup or IntegerLookup layer directly take its vocabulary's
    values, and one it does not know (its out-of-vocabulary bucket); those that feed a
    TextVectorization take texts of its words (``feeds.values`` mixes in case, punctuation
    and words it does not know)."""
    keras = _import_keras()
    vocabularies: dict[str, Vocabulary] = {}
    for name, layer in _input_layers(model, names, keras.layers.TextVectorization):
        words = [str(w) for w in layer.get_vocabulary(include_special_tokens=False)]
        if words:
            vocabularies[name] = Vocabulary(tuple(words), text=True)
    for name, layer in _input_layers(model, names, keras.layers.StringLookup):
        known = [str(w) for w in layer.get_vocabulary(include_special_tokens=False)]
        vocabularies[name] = Vocabulary((*known, "ferry-unknown-value"), text=False)
    for name, layer in _input_layers(model, names, keras.layers.IntegerLookup):
        numbers = [int(w) for w in layer.get_vocabulary(include_special_tokens=False)]
        vocabularies[name] = Vocabulary((*numbers, max(numbers, default=0) + 1), text=False)
    return vocabularies


def _normalization_scales(model: Any, names: Mapping[str, str]) -> dict[str, ColumnScale]:
    """Inputs that feed a Normalization layer directly are drawn around its mean, at its
    standard deviation (per column of the last axis)."""
    keras = _import_keras()
    scales: dict[str, ColumnScale] = {}
    for name, layer in _input_layers(model, names, keras.layers.Normalization):
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64)
        variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float64)
        columns = mean.shape[-1] if mean.ndim else 1
        scales[name] = ColumnScale(
            mean.reshape(-1)[:columns], np.sqrt(np.maximum(variance, 0)).reshape(-1)[:columns]
        )
    return scales


def _input_layers(model: Any, names: Mapping[str, str], kind: type) -> Iterator[tuple[str, Any]]:
    """(input name, layer) for each top-level layer of ``kind`` that takes a model input
    directly."""
    layers: list[Any] = [layer for layer in getattr(model, "layers", []) if isinstance(layer, kind)]
    for layer in layers:
        try:
            name = names.get(layer.input.name, "")
        except (AttributeError, ValueError):  # shared layers have no single input
            continue
        if name:
            yield name, layer


def _layer_names(model: Any) -> set[str]:
    return {layer.name for layer in _nested_layers(model)}


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


def _import_keras() -> Any:
    import_tf()
    import keras

    return keras
