"""``load_torch``: a torch model as a conversion Source, with its reference runner, its
exporters and its bisection.

    source = load_torch(net, ConvertOptions(), example_inputs=(torch.randn(2, 3, 32, 32),))
    source.reference.run({"x": x})
    [c.exporter for c in source.candidates]  # [DYNAMO, TORCHSCRIPT]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ...errors import InputError
from ...parity import Tolerance
from ...parity.tolerance import FLOAT16, float16_weights_note
from ...signature import Signature
from ..base import DEFAULT_DYNAMIC, Candidate, ConvertOptions, Source
from .custom import load_custom_export
from .divergence import find_module_divergence
from .export import DYNAMO, TORCHSCRIPT, ExportPlan
from .inputs import build_inputs, forward_params, value_ranges
from .runner import TorchRunner
from .sources import module_label, resolve_source
from .specs import describe_inputs, describe_outputs, probe_outputs
from .state import state_note


def load_torch(source: Any, options: ConvertOptions, *, example_inputs: Any = None) -> Source:
    """A Source for a torch model: an ``nn.Module``, ``"file.py:function"`` (a factory that
    returns a module, or ``(module, example_inputs)``), a TorchScript file, or an
    ``ExportedProgram`` / ``.pt2`` file.

    Example inputs come from ``example_inputs`` (a tuple of tensors, positional, or a dict,
    by keyword; an argument may itself be a tuple, list or dict of tensors), then
    ``options.sample_inputs``, then ``options.input_shapes`` (float32; int64 for ``*_ids``
    and ``*mask*`` inputs). Raises ConversionError or InputError (exit 2,
    one line) for a file torch cannot load, a factory that fails, or a forward argument
    that no input gives.
    """
    torch = _import_torch()
    loaded = resolve_source(source, options)
    if example_inputs is None:
        example_inputs = loaded.example
    module = loaded.module
    params = forward_params(module)
    inputs = build_inputs(module, params, example_inputs, options)
    if options.dynamic_axes is None and loaded.axes is not None:
        known = loaded.axes
        axes = {n: known.get(n, {0: DEFAULT_DYNAMIC}) for n in inputs.names}
        options = dataclasses.replace(options, dynamic_axes=axes)
    outputs, output_names = probe_outputs(module, inputs)
    input_specs, dims = describe_inputs(inputs, loaded.program, options)
    output_specs = describe_outputs(module, inputs, dims, outputs, output_names)
    signature = Signature(tuple(input_specs), tuple(output_specs))
    label = module_label(module, loaded)
    reference = TorchRunner(module, inputs, output_names, signature, label)
    custom = load_custom_export(options.custom_export) if options.custom_export else None
    plan = ExportPlan(loaded, inputs, signature, dims, options, custom)
    candidates = [Candidate(DYNAMO, plan.export_dynamo)]
    if loaded.program is None:
        candidates.append(Candidate(TORCHSCRIPT, plan.export_torchscript, plan.trace_caveats))
    find_divergence = None
    if loaded.kind == "module":
        find_divergence = functools.partial(find_module_divergence, reference)
    notes = list(loaded.notes)
    if inputs.replaced:
        notes.append(state_note(label, sorted(inputs.replaced)))
    tolerance = None
    if weights_in_float16(module):  # torch and ONNX Runtime round after different ops
        tolerance = Tolerance(*FLOAT16)
        notes.append(float16_weights_note(label))
    return Source(
        framework="torch",
        description=loaded.description,
        reference=reference,
        candidates=candidates,
        value_ranges=value_ranges(module, inputs.names),
        find_divergence=find_divergence,
        details={
            "torch_version": str(torch.__version__),
            "module": label,
            "source_kind": loaded.kind,
            "inputs_by": "keyword" if inputs.keyword else "position",
            **({"custom_export": str(custom.path)} if custom else {}),
        },
        notes=notes,
        tolerance=tolerance,
    )


def weights_in_float16(module: Any) -> bool:
    """Whether most of ``module``'s parameter elements are float16 (``module.half()``)."""
    import torch

    half = total = 0
    for parameter in module.parameters() if hasattr(module, "parameters") else ():
        total += parameter.numel()
        half += parameter.numel() if parameter.dtype == torch.float16 else 0
    return 2 * half > total


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InputError(
            "converting a PyTorch model needs torch, which is not installed",
            hint="pip install 'onnxferry[torch]'",
        ) from None
    return torch
