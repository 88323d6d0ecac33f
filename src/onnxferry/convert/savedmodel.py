"""TensorFlow SavedModels as conversion sources.

    source = load_saved_model("export_dir", ConvertOptions())   # holds saved_model.pb
    source.reference.run(feeds)                 # the signature in TensorFlow, {name: array}
    [c.exporter for c in source.candidates]     # ["tf2onnx"]

Names: the ONNX inputs are the signature's argument names, the outputs its output keys, both in
natural order ("output_2" before "output_10"). An argument ``--bind`` fixes
(``options.bindings``) is a constant, no longer an input; so is a TF1 SavedModel's training
switch (a bool scalar that picks ``tf.cond`` branches), fixed to False unless bound. Dynamic
dims follow ``ConvertOptions.axes_for`` and carry the same symbol names as the reference
signature. The "tf2onnx" candidate wraps the signature in a ``tf.function`` and converts it
with ``tf2onnx.convert.from_function``; opsets and IR versions as in ``convert.tf_common``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, one_line
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import ConversionError, ConvertOptions, Source
from .graphdef import bindings, dropout_inputs, training_switches
from .tf_common import (
    common_batch_name,
    import_tf,
    natural_key,
    output_shape,
    quiet_tf,
    resolve_opset,
    shape_dims,
    source_shape,
)
from .tf_function import FunctionRunner

__all__ = ["SavedModelRunner", "load_saved_model"]

SERVING_SIGNATURE = "serving_default"


def load_saved_model(
    path: str | Path, options: ConvertOptions, signature_key: str = SERVING_SIGNATURE
) -> Source:
    """A TensorFlow SavedModel directory (with ``saved_model.pb``) to convert; its
    ``serving_default`` signature (or ``signature_key``) is the model's interface."""
    opset = resolve_opset(options)
    runner = SavedModelRunner(path, options, signature_key)
    what = f"{runner.path}: TensorFlow SavedModel, signature {signature_key!r}"
    return runner.source(what, opset, {"signature": signature_key}, notes=runner.notes)


class SavedModelRunner(FunctionRunner):
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
        function = signatures[signature_key]
        args, kwargs = function.structured_input_signature
        if args:
            raise ConversionError(
                f"{self.path}: signature {signature_key!r} takes positional arguments",
                hint="export a signature with named arguments",
            )
        # tf.nest's order; captured variables follow the arguments
        placeholders = dict(zip(sorted(kwargs), function.inputs, strict=False))
        graph_def = function.graph.as_graph_def()
        switches = set(training_switches(graph_def))
        dropouts = dropout_inputs(graph_def)
        bound, self.notes = bindings(
            {key: kwargs[key].shape.rank for key in sorted(kwargs, key=natural_key)},
            [key for key, t in placeholders.items() if t.op.name in switches],
            options,
            "input",
            {key: dropouts[t.op.name] for key, t in placeholders.items() if t.op.name in dropouts},
        )
        keys = [key for key in sorted(kwargs, key=natural_key) if key not in bound]
        specs = [
            TensorSpec(
                key,
                dtype_from_numpy(kwargs[key].dtype.as_numpy_dtype),
                source_shape(key, shape_dims(kwargs[key].shape), options),
            )
            for key in keys
        ]
        outputs = function.structured_outputs
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
                output_shape(shape_dims(outputs[key].shape), batch),
            )
            for key in sorted(outputs, key=natural_key)
        ]

        def positional(*args: Any) -> Any:  # the signature takes its inputs by keyword
            constants = {k: tf.constant(v, dtype=kwargs[k].dtype) for k, v in bound.items()}
            return function(**dict(zip(keys, args, strict=True)), **constants)

        signature = Signature(tuple(specs), tuple(out_specs))
        super().__init__(positional, signature, f"{self.path.name}@tf")
        self.owner = self._loaded  # what holds its tables and variables
