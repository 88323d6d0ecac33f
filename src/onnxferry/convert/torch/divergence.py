"""Bisection for a torch conversion: the first module whose output the ONNX model gets wrong.

    divergence = find_module_divergence(source.reference, model, feeds, Tolerance())
    divergence.node, divergence.max_abs   # "encoder.layer.0", 0.31

It maps modules by the name scopes the dynamo exporter records; a model without them gives None.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...graphs import exposing
from ...model import Model
from ...parity import Divergence, Tolerance, judge_output
from ...runtime import OrtRunner
from ..base import ConversionError
from .runner import TorchRunner, flatten_outputs, tensor_to_numpy

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("onnxferry")

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def find_module_divergence(
    reference: TorchRunner,
    model: Model,
    feeds: Mapping[str, np.ndarray],
    tolerance: Tolerance,
) -> Divergence | None:
    """The first module (in execution order) whose output differs from the ONNX tensor it
    maps to, or None when nothing maps or nothing differs.

    The dynamo exporter tags each node with ``pkg.torch.onnx.name_scopes``; the last node of a
    module's scope computes that module's output. Forward hooks capture the module outputs;
    the ONNX tensors are exposed as graph outputs and computed with ONNX Runtime.
    """
    try:
        return _find_module_divergence(reference, model, feeds, tolerance)
    except Exception as e:  # bisection is a diagnosis: never the reason a conversion fails
        log.debug("torch: cannot bisect %s (%s)", model.name, e)
        return None


def _find_module_divergence(
    reference: TorchRunner,
    model: Model,
    feeds: Mapping[str, np.ndarray],
    tolerance: Tolerance,
) -> Divergence | None:
    last = _last_nodes(model.proto)
    if not last:
        return None
    captured = _capture_modules(reference, feeds, set(last))
    if not captured:
        return None
    tensors = [out for path, _ in captured for out in last[path][1].output if out]
    values = _run_exposed(model, feeds, tensors)
    for position, (path, outputs) in enumerate(captured):
        node = last[path][1]
        for tensor in node.output:
            cand = values.get(tensor)
            if cand is None:
                continue
            refs = [o for o in outputs if o.shape == cand.shape]
            if not refs:
                continue
            atol, rtol = tolerance.atol, tolerance.rtol
            result = judge_output(tensor, [refs[0]], [cand], atol, rtol)
            if not result.passed:
                return Divergence(
                    tensor=tensor,
                    node=path,
                    op_type=node.op_type,
                    position=position,
                    max_abs=result.max_abs,
                    max_rel=result.max_rel,
                    required_atol=result.required_atol,
                    problem=result.problem,
                )
            break
    return None


def _last_nodes(proto: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Module path -> (index, last node in its scope) of the main graph, from the name scopes
    the dynamo exporter records on each node."""
    last: dict[str, tuple[int, onnx.NodeProto]] = {}
    for index, node in enumerate(proto.graph.node):
        scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), None)
        if scopes is None:
            continue
        try:
            parsed = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        if not isinstance(parsed, list):
            continue
        for path in parsed[:-1]:
            if isinstance(path, str) and path:
                last[path] = (index, node)
    return last


def _capture_modules(
    reference: TorchRunner, feeds: Mapping[str, np.ndarray], paths: set[str]
) -> list[tuple[str, list[np.ndarray]]]:
    """(module path, its output tensors as arrays) for each module in ``paths``, in the order
    the modules finished (a module called more than once: its last call)."""
    import torch

    done: dict[str, list[np.ndarray]] = {}
    handles = []

    def hook(path: str) -> Callable[..., None]:
        def record(module: Any, args: Any, output: Any) -> None:
            arrays = [tensor_to_numpy(t) for _, t in _tensor_leaves(output)]
            done.pop(path, None)
            done[path] = arrays

        return record

    try:
        for path, module in reference.module.named_modules():
            if path in paths:
                handles.append(module.register_forward_hook(hook(path)))
        with torch.inference_mode():
            reference.call(feeds)
    finally:
        for handle in handles:
            handle.remove()
    return list(done.items())


def _tensor_leaves(value: Any) -> list[tuple[str, Any]]:
    try:
        return flatten_outputs(value)
    except ConversionError:
        return []


def _run_exposed(
    model: Model, feeds: Mapping[str, np.ndarray], tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (node outputs of the main graph) for ``feeds``."""
    wanted = list(dict.fromkeys(tensors))
    with exposing(model, wanted) as probe:
        return OrtRunner(probe, validate=False).run(feeds, output_names=wanted)
