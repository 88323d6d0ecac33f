"""The reference signature of a torch module: input specs with their dynamic axes, and
output specs whose dynamic dims are found by running the module at a second size.

    input_specs, dims = describe_inputs(inputs, program, options)  # dims: {input: {axis: name}}
    outputs, names = probe_outputs(module, inputs)
    output_specs = describe_outputs(module, inputs, dims, outputs, names)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import FerryError
from ...signature import Dim, TensorSpec, dtype_from_numpy
from ..base import ConversionError, ConvertOptions
from .inputs import ExampleInputs, resize
from .quiet import torch_error
from .runner import flatten_outputs

log = logging.getLogger("onnxferry")


def describe_inputs(
    inputs: ExampleInputs, program: Any, options: ConvertOptions
) -> tuple[list[TensorSpec], dict[str, dict[int, str]]]:
    """Input specs and, per input, its dynamic axes {axis: name}."""
    specs: list[TensorSpec] = []
    dims: dict[str, dict[int, str]] = {}
    symbolic = _program_dims(program, inputs.names) if program is not None else None
    for name, tensor in zip(inputs.names, inputs.tensors, strict=True):
        rank = tensor.dim()
        axes = {a: n for a, n in options.axes_for(name, rank).items() if -rank <= a < rank}
        axes = {a % rank: n for a, n in axes.items()}
        if symbolic is not None:  # a program's dims are fixed: dynamic where it is
            own = symbolic.get(name, {})
            axes = {a: axes.get(a, own[a]) for a in own}
        dims[name] = axes
        shape: tuple[Dim, ...] = tuple(axes.get(i, int(d)) for i, d in enumerate(tensor.shape))
        specs.append(TensorSpec(name, dtype_from_numpy(_numpy_dtype(tensor)), shape))
    return specs, dims


def _program_dims(program: Any, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """{input: {axis: symbol}} for the symbolic dims of an ExportedProgram's user inputs."""
    user = list(program.graph_signature.user_inputs)
    found: dict[str, dict[int, str]] = {}
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for name, node_name in zip(names, user, strict=False):
        node = placeholders.get(node_name)
        value = node.meta.get("val") if node is not None else None
        shape = getattr(value, "shape", ())
        found[name] = {i: str(d) for i, d in enumerate(shape) if not isinstance(d, int)}
    return found


def _numpy_dtype(tensor: Any) -> np.dtype[Any]:
    import torch

    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bf16
    dtype: np.dtype[Any] = torch.empty((), dtype=tensor.dtype).numpy().dtype
    return dtype


def probe_outputs(module: Any, inputs: ExampleInputs) -> tuple[list[Any], list[str]]:
    """Run the module once on the examples: its flat tensor outputs and their names."""
    import torch

    try:
        with torch.inference_mode():
            result = inputs.call(module)
    except FerryError:
        raise
    except Exception as e:
        raise ConversionError(
            f"the model fails on the example inputs: {torch_error(e)}",
            hint="check the example inputs (--inputs, --input-shape)",
        ) from e
    leaves = flatten_outputs(result)
    return [v for _, v in leaves], [n for n, _ in leaves]


def describe_outputs(
    module: Any,
    inputs: ExampleInputs,
    dims: Mapping[str, Mapping[int, str]],
    outputs: Sequence[Any],
    names: Sequence[str],
) -> list[TensorSpec]:
    """Output specs whose dynamic dims are found by running once more with every dynamic
    input axis resized (one more each, else a multiple, for a model that takes only
    multiples of its strides: batdetect2's U-Net, 32): an output dim that follows an axis's
    size takes its name."""
    import torch

    sizes: dict[str, int] = {}
    for name, tensor in zip(inputs.names, inputs.tensors, strict=True):
        for axis, dim in dims[name].items():
            sizes.setdefault(dim, int(tensor.shape[axis]))
    probe: list[Any] | None = None
    grown: dict[str, int] = {}
    schemes = [
        {dim: size + 1 + i for i, (dim, size) in enumerate(sizes.items())},
        {dim: size * (2 + i) for i, (dim, size) in enumerate(sizes.items())},
    ]
    for grown in schemes if sizes else ():
        resized = [
            resize(t, {a: grown[d] for a, d in dims[n].items()})
            for n, t in zip(inputs.names, inputs.tensors, strict=True)
        ]
        try:
            with torch.inference_mode():
                probe = [v for _, v in flatten_outputs(inputs.call(module, resized))]
        except Exception as e:  # a model that only runs at some sizes: guess from the first
            log.debug("torch: resized probe run failed (%s); guessing output dims", e)
        if probe is not None and len(probe) != len(outputs):
            probe = None
        if probe is not None:
            break
    specs: list[TensorSpec] = []
    for i, (name, tensor) in enumerate(zip(names, outputs, strict=True)):
        shape: list[Dim] = []
        for axis, size in enumerate(tensor.shape):
            other = probe[i].shape[axis] if probe is not None and probe[i].dim() > axis else None
            shape.append(_output_dim(name, axis, int(size), other, sizes, grown))
        specs.append(TensorSpec(name, dtype_from_numpy(_numpy_dtype(tensor)), tuple(shape)))
    return specs


def _output_dim(
    name: str,
    axis: int,
    size: int,
    other: int | None,
    sizes: Mapping[str, int],
    grown: Mapping[str, int],
) -> Dim:
    for dim, first in sizes.items():
        follows = other == grown[dim] if other is not None else axis == 0 and first > 1
        if size == first and follows:
            return dim
    if other is not None and other != size:
        return f"{name}_dim{axis}"
    return size
