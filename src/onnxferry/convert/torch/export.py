"""The two torch exporters: ``torch.onnx.export(dynamo=True)`` and the TorchScript exporter.

    plan = ExportPlan(loaded, inputs, signature, dims, options)
    plan.export_dynamo(Path("net.onnx"))       # DYNAMO, "torch.onnx (dynamo)"
    plan.export_torchscript(Path("net.onnx"))  # TORCHSCRIPT, "torch.onnx (torchscript)"

Both write the signature's input and output names and dynamic axes (checked afterwards by
``naming``); a failure is one ConversionError line (``export_errors``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...runtime import runtime_limits
from ...signature import Signature
from ..base import ConversionError, ConvertOptions
from .custom import CustomExport
from .export_errors import export_error
from .inputs import ExampleInputs, resize
from .naming import match_names
from .quiet import quiet, torch_error
from .runner import flatten_outputs
from .sources import Loaded
from .state import kept_state

DYNAMO = "torch.onnx (dynamo)"
TORCHSCRIPT = "torch.onnx (torchscript)"

DEFAULT_OPSET = 20
"""The ai.onnx opset written when the user names none (capped at what ONNX Runtime loads)."""

TORCHSCRIPT_MAX_OPSET = 20
"""The highest opset the TorchScript exporter writes."""

_EXTERNAL_DATA_BYTES = 1536 * 1024**2
"""Parameters past this size go to an external data file (protobuf stops at 2 GiB)."""


@dataclass
class ExportPlan:
    """What both exporters need: the module or program, example tensors, names and axes."""

    loaded: Loaded
    inputs: ExampleInputs
    signature: Signature
    dims: dict[str, dict[int, str]]
    options: ConvertOptions
    custom: CustomExport | None = None
    """The user's translations of custom layers (``--custom-export``), if any."""
    trace_caveats: list[str] = field(default_factory=list)
    """Where the last TorchScript trace took a value computed from tensors as fixed
    (``QuietOutput.trace_caveats``); the TorchScript candidate's ``caveats``."""

    def _examples(self) -> list[Any]:
        """Example tensors with every dynamic axis at least 2 long (torch.export fixes axes
        of size 0 and 1)."""
        return [
            resize(t, {a: 2 for a in self.dims[n] if t.shape[a] < 2})
            for n, t in zip(self.inputs.names, self.inputs.tensors, strict=True)
        ]

    def _dynamic_shapes(self) -> dict[str, Any] | tuple[Any, ...] | None:
        """torch.export's dynamic shapes: one ``Dim`` per axis name, shared by every input
        that names it (so they must agree in size); by name for keyword inputs, else in order,
        laid out as forward's arguments (a tuple argument: a tuple of them)."""
        import torch

        if not any(self.dims.values()):
            return None
        made: dict[str, Any] = {}
        shapes: list[dict[int, Any]] = []
        for name in self.inputs.names:
            axes = self.dims[name]
            for dim in axes.values():
                if dim not in made:
                    made[dim] = torch.export.Dim(_identifier(dim, len(made)))
            shapes.append({axis: made[dim] for axis, dim in axes.items()})
        args, kwargs = self.inputs.args_kwargs(shapes)
        return kwargs if self.inputs.keyword else args

    def _opset(self, exporter_max: int) -> int:
        if self.options.opset is not None:
            if self.options.opset > exporter_max:
                raise ConversionError(
                    f"the exporter writes opset {exporter_max} at most, not {self.options.opset}",
                    hint=f"pass --opset {exporter_max} or lower, or use the other exporter",
                )
            return self.options.opset
        return min(DEFAULT_OPSET, exporter_max, runtime_limits()[1])

    def export_dynamo(self, path: Path) -> None:
        import torch

        opset = self._opset(_dynamo_max_opset())
        target = self.loaded.program
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] | None = None
        # A program's dims are its own; its symbols (s0, ...) are renamed after export.
        dynamic_shapes = self._dynamic_shapes() if target is None else None
        table = self.custom.translation_table if self.custom else {}
        with quiet(), kept_state(self.loaded.module):
            if target is None:
                args, kwargs = self.inputs.args_kwargs(self._examples())
                if not kwargs and args and isinstance(args[-1], dict):
                    # torch.onnx.export reads a trailing dict as the keyword arguments
                    kwargs = {self.inputs.argument_names[len(args) - 1]: args[-1]}
                    args = args[:-1]
                target = self.loaded.module
            if isinstance(target, torch.jit.ScriptModule):
                target = _script_to_program(target, args, kwargs)
                args, kwargs = (), None
            try:
                torch.onnx.export(
                    target,
                    args,
                    str(path),
                    kwargs=kwargs or None,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    input_names=self.signature.input_names,
                    output_names=self.signature.output_names,
                    opset_version=opset,
                    external_data=_parameter_bytes(self.loaded.module) > _EXTERNAL_DATA_BYTES,
                    custom_translation_table=table or None,
                )
            except Exception as e:
                raise export_error(DYNAMO, e) from e
        match_names(path, self.signature, DYNAMO)

    def export_torchscript(self, path: Path) -> None:
        import torch

        opset = self._opset(TORCHSCRIPT_MAX_OPSET)
        examples = self._examples()
        target = self.loaded.module
        # Plain modules are traced through a wrapper that takes the inputs by position and
        # returns a flat tuple; a TorchScript module cannot be called from a trace.
        wrapped = not isinstance(target, torch.jit.ScriptModule)
        if wrapped:
            target = _positional(target, self.inputs)
        axes: dict[str, dict[int, str]] = {n: dict(a) for n, a in self.dims.items() if a}
        for spec in self.signature.outputs:
            named = {i: d for i, d in enumerate(spec.shape or ()) if isinstance(d, str)}
            if named:
                axes[spec.name] = named
        custom = self.custom.registered() if self.custom else contextlib.nullcontext()
        opsets = (self.custom.opsets if self.custom else {}) or None
        with quiet() as output, custom:
            try:
                torch.onnx.export(
                    target,
                    tuple(examples),
                    str(path),
                    dynamo=False,
                    input_names=self.signature.input_names,
                    output_names=self.signature.output_names,
                    dynamic_axes=axes or None,
                    opset_version=opset,
                    custom_opsets=opsets,
                )
            except Exception as e:
                raise export_error(
                    TORCHSCRIPT, e, output.text(), _WRAPPED if wrapped else ""
                ) from e
            finally:
                self.trace_caveats[:] = output.trace_caveats()
        match_names(
            path, self.signature, TORCHSCRIPT, strip_prefix=_WRAPPED + "." if wrapped else ""
        )


def _script_to_program(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    """A TorchScript module as an ExportedProgram (torch's TS2EP converter, experimental)."""
    try:
        from torch._export.converter import TS2EPConverter

        return TS2EPConverter(module, args, kwargs).convert()
    except Exception as e:
        raise ConversionError(
            f"{DYNAMO}: torch cannot convert the TorchScript module to an ExportedProgram: "
            f"{torch_error(e)}",
            hint="use the torchscript exporter, or export the Python module instead",
        ) from e


_WRAPPED = "model"
"""The attribute that holds the model inside the TorchScript exporter's wrapper."""


def _positional(model: Any, inputs: ExampleInputs) -> Any:
    """A module that takes the inputs positionally, calls ``model`` with them (by keyword
    where it takes them so, in tuples where it takes them so) and returns its outputs as one
    flat tuple of tensors: what the TorchScript exporter traces. It is in eval mode: that
    exporter traces in the outer module's mode and afterwards sets every submodule to it."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            setattr(self, _WRAPPED, model)

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            result = inputs.call(getattr(self, _WRAPPED), tensors)
            return tuple(v for _, v in flatten_outputs(result))

    return Positional().eval()


def _identifier(name: str, index: int) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = f"d{index}_{ident}"
    return ident


def _dynamo_max_opset() -> int:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return DEFAULT_OPSET


def _parameter_bytes(module: Any) -> int:
    try:
        tensors = [*module.parameters(), *module.buffers()]
    except Exception:
        return 0
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)
