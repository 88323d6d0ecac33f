"""Names in an exported ONNX file, made to match the reference: inputs and outputs checked,
symbolic dims given the signature's axis names, initializers the module's parameter names.

    match_names(path, signature, DYNAMO)                          # raises ConversionError
    match_names(path, signature, TORCHSCRIPT, strip_prefix="model.")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...graphs import rename_values, value_names
from ...signature import Signature
from ..base import ConversionError

if TYPE_CHECKING:
    pass


def match_names(path: Path, signature: Signature, exporter: str, strip_prefix: str = "") -> None:
    """Check the written model's input and output names; give its symbolic dims the
    signature's names (an ExportedProgram calls them s0, s1, ...) and its initializers the
    module's parameter names (without ``strip_prefix``). Rewrites the file if anything changed.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    got_in, got_out = [v.name for v in inputs], [v.name for v in graph.output]
    if got_in != signature.input_names or got_out != signature.output_names:
        raise ConversionError(
            f"{exporter} wrote inputs {got_in} and outputs {got_out}, expected "
            f"{signature.input_names} and {signature.output_names}",
            hint="the model may ignore an input or return a structure that changes with shapes",
        )
    dims: dict[str, str] = {}
    for value, spec in zip(inputs, signature.inputs, strict=True):
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape or (), strict=False):
            if isinstance(want, str) and dim.HasField("dim_value"):
                raise ConversionError(
                    f"{exporter} fixed {want!r} of input {spec.name!r} to {dim.dim_value}: the "
                    "model's code specializes that axis",
                    hint=f"make it static (--dynamic without {want}) or use the other exporter",
                )
            if isinstance(want, str) and dim.dim_param and dim.dim_param != want:
                dims.setdefault(dim.dim_param, want)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in dims:
                dim.dim_param = dims[dim.dim_param]
    relaxed = False
    for value, spec in zip(graph.output, signature.outputs, strict=True):
        # torch.onnx can declare an output dim static that follows a dynamic input (an
        # LSTM's sequence, torch 2.13); the reference showed it varies, so it is named.
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape or (), strict=False):
            if isinstance(want, str) and dim.HasField("dim_value"):
                dim.dim_param = want
                relaxed = True
    names: dict[str, str] = {}
    if strip_prefix:
        taken = value_names(graph)
        for name in initializers:
            short = name.removeprefix(strip_prefix)
            if short != name and short not in taken:
                names[name] = short
                taken.add(short)
        rename_values(graph, names)
    if dims or names or relaxed:
        onnx.save(proto, str(path))
