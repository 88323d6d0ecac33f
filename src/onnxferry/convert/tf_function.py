"""TensorFlow functions as conversion sources: a ``tf.function`` with an input signature, a
``tf.Module`` whose ``__call__`` is one, or a ``ConcreteFunction`` (what a factory returns
for TensorFlow code that is neither Keras nor a SavedModel: a TF1 graph wrapped and pruned
with ``tf.compat.v1.wrap_function``).

    source = load_tf_function(tf.function(f, input_signature=[tf.TensorSpec([None, 4])]),
                              ConvertOptions())
    source.reference.run({"x": x})      # the function in TensorFlow, {name: array}

Names: each input is its ``TensorSpec``'s name (``input_0``, ... where it has none); the
outputs are a returned dict's keys in natural order, else ``output_0``, ... in the order of
the returned tensors. ``FunctionRunner`` also runs the frozen graphs of ``convert.graphdef``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, one_line
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConversionError, ConvertOptions, Source
from .tf_common import (
    common_batch_name,
    finish_export,
    function_to_onnx,
    import_tf,
    natural_key,
    output_shape,
    resolve_opset,
    shape_dims,
    source_shape,
    tensor_specs,
    tf_version,
)


def load_tf_function(function: Any, options: ConvertOptions) -> Source:
    """A ``tf.function`` (with an input signature), a ``tf.Module`` whose ``__call__`` is
    one, or a ``ConcreteFunction`` to convert. UsageError for a tf.function without an input
    signature; ConversionError for one TensorFlow cannot trace."""
    opset = resolve_opset(options)
    concrete = _concrete(function)
    arguments = _arguments(concrete)
    inputs = [
        TensorSpec(
            name,
            dtype_from_numpy(spec.dtype.as_numpy_dtype),
            source_shape(name, shape_dims(spec.shape), options),
        )
        for name, spec in arguments
    ]
    batch = common_batch_name(inputs)
    outputs = [
        TensorSpec(
            name, dtype_from_numpy(t.dtype.as_numpy_dtype), output_shape(shape_dims(t.shape), batch)
        )
        for name, t in _named(concrete.structured_outputs).items()
    ]
    label = getattr(concrete, "name", "function")
    runner = FunctionRunner(concrete, Signature(tuple(inputs), tuple(outputs)), f"{label}@tf")
    runner.owner = function  # a tf.Module's variables live as long as the runner
    return runner.source(f"TensorFlow function {label}", opset)


class FunctionRunner:
    """Runs a TensorFlow function that takes the signature's inputs positionally and returns
    its outputs (a dict by name, or tensors in order); implements Runner."""

    def __init__(self, function: Any, signature: Signature, name: str) -> None:
        self.function = function
        self.name = name
        self._signature = signature
        self.owner: Any = None  # what must outlive the function (its tf.Module)

    @property
    def signature(self) -> Signature:
        return self._signature

    def source(
        self, what: str, opset: int, details: Mapping[str, Any] | None = None, **extra: Any
    ) -> Source:
        """The Source converting this function with tf2onnx at ``opset``, described as
        ``what`` and its input and output counts; ``details`` and ``extra`` (Source fields)
        added."""
        sig = self.signature
        return Source(
            framework="tf",
            description=f"{what}: {len(sig.inputs)} inputs, {len(sig.outputs)} outputs",
            reference=self,
            candidates=[Candidate("tf2onnx", lambda out: self.export_tf2onnx(out, opset))],
            details={"tensorflow": tf_version(), "opset": opset, **(details or {})},
            **extra,
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        tf = import_tf()
        arrays = (tf.convert_to_tensor(feeds[n]) for n in self.signature.input_names)
        results = self._outputs(self.function(*arrays))
        return {name: np.asarray(value.numpy()) for name, value in results.items()}

    def export_tf2onnx(self, path: Path, opset: int) -> None:
        """tf2onnx on a tf.function that calls this one and names its outputs."""
        tf = import_tf()
        specs = tensor_specs(self.signature)

        def serve(*args: Any) -> dict[str, Any]:
            return self._outputs(self.function(*args))

        function = tf.function(serve, input_signature=specs)
        proto = function_to_onnx(function, specs, opset, owner=self.owner)
        finish_export(proto, self.signature, path)

    def _outputs(self, returned: Any) -> dict[str, Any]:
        """The returned tensors by output name: a dict's by key, others in order."""
        names = self.signature.output_names
        if isinstance(returned, Mapping) and all(n in returned for n in names):
            return {n: returned[n] for n in names}
        return dict(zip(names, _named(returned).values(), strict=True))


def _concrete(function: Any) -> Any:
    """The ConcreteFunction of a tf.function (traced at its input signature), of a
    ``tf.Module`` whose ``__call__`` is one, or the ConcreteFunction itself."""
    # a tf.Module's __call__, as declared on its class: a tf.function descriptor
    mro = type(function).__mro__
    call = next((vars(c)["__call__"] for c in mro if "__call__" in vars(c)), None)
    if not hasattr(function, "get_concrete_function") and hasattr(call, "get_concrete_function"):
        function = function.__call__  # it holds the module weakly; the runner holds it
    if hasattr(function, "get_concrete_function") and not hasattr(function, "graph"):
        if getattr(function, "input_signature", None) is None:
            raise UsageError(
                "the tf.function has no input signature: its inputs' shapes and types are unknown",
                hint="give it one: tf.function(f, input_signature=[tf.TensorSpec(...)])",
            )
        try:
            return function.get_concrete_function()
        except Exception as e:
            raise ConversionError(
                f"TensorFlow cannot trace the function: {one_line(e, line='last')}",
                hint="a tf.Module's method holds its module weakly: return the module itself, "
                "not module.method",
            ) from e
    return function


def _arguments(concrete: Any) -> list[tuple[str, Any]]:
    """(name, TensorSpec) of each positional argument, in order: the structured signature's,
    or for a pruned graph (no structure) its input tensors'."""
    structured = getattr(concrete, "structured_input_signature", None)
    if structured is not None:
        args, kwargs = structured
        if kwargs:
            raise UsageError(
                "the TensorFlow function takes keyword arguments",
                hint="give it a positional input_signature",
            )
        return [(spec.name or f"input_{i}", spec) for i, spec in enumerate(_flat(args))]
    import_tf()
    return [(t.name.split(":")[0], t) for t in concrete.inputs if t.dtype.name != "resource"]


def _flat(values: Any) -> list[Any]:
    if isinstance(values, (list, tuple)):
        return [leaf for v in values for leaf in _flat(v)]
    return [values]


def _named(returned: Any) -> dict[str, Any]:
    """Returned tensors by output name: a dict's keys in natural order, else ``output_N``."""
    if isinstance(returned, Mapping):
        return {k: returned[k] for k in sorted(returned, key=natural_key)}
    leaves = _flat(returned) if isinstance(returned, Sequence) else [returned]
    return {f"output_{i}": t for i, t in enumerate(leaves)}
