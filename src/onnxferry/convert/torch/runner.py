"""The torch module as the reference Runner, and its outputs flattened to named tensors.

    runner = TorchRunner(module, inputs, ["output_0"], signature, "Net")  # inputs.build_inputs
    runner.run({"x": x})                          # {"output_0": array}
    flatten_outputs({"logits": t, "aux": (a, b)})  # [("logits", t), ("aux_0", a), ("aux_1", b)]

Outputs are named as the exporters flatten them, so the reference and the ONNX model agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import FerryError
from ...feeds import describe_shapes
from ...signature import Signature
from ..base import ConversionError
from .inputs import ExampleInputs, tensor_from_numpy
from .quiet import torch_error


class TorchRunner:
    """Runs the torch module on numpy feeds (under ``torch.inference_mode``); a Runner.

    runner.run({"x": x})   # {"output_0": array}, named as the exported model's outputs
    """

    def __init__(
        self,
        module: Any,
        inputs: ExampleInputs,
        output_names: Sequence[str],
        signature: Signature,
        label: str,
    ) -> None:
        self.module = module
        self.inputs = inputs
        self.input_names = list(inputs.names)
        self.output_names = list(output_names)
        self._signature = signature
        self.name = f"torch:{label}"

    @property
    def signature(self) -> Signature:
        return self._signature

    def call(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The module's raw result for numpy feeds (no inference_mode, no conversion);
        ConversionError when the module's code raises on them."""

        tensors = [tensor_from_numpy(n, feeds[n]) for n in self.input_names]
        try:
            return self.inputs.call(self.module, tensors)
        except FerryError:
            raise
        except Exception as e:
            shapes = describe_shapes({n: np.shape(feeds[n]) for n in self.input_names})
            raise ConversionError(
                f"the model fails on the inputs {shapes}: {torch_error(e)}",
                hint="give inputs it takes (--inputs samples.npz): the values, types and shapes "
                "its forward checks",
            ) from e

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._signature.validate(feeds)
        with torch.inference_mode():
            leaves = flatten_outputs(self.call(feeds))
        if len(leaves) != len(self.output_names):
            raise FerryError(
                f"{self.name} returned {len(leaves)} tensors for these feeds, but "
                f"{len(self.output_names)} ({', '.join(self.output_names)}) on the examples",
                hint="make forward return the same structure for every input shape",
            )
        return {
            name: tensor_to_numpy(value)
            for name, (_, value) in zip(self.output_names, leaves, strict=True)
        }


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        array: np.ndarray = tensor.float().numpy().astype(ml_dtypes.bfloat16)
        return array
    return np.asarray(tensor.numpy())


def flatten_outputs(value: Any) -> list[tuple[str, Any]]:
    """(name, tensor) for each tensor in a forward's result, in the order torch.export and the
    TorchScript exporter flatten it: dict and ModelOutput keys keep their names, positional
    entries are "output_0", "output_1", ... (the index among all tensors)."""
    leaves: list[tuple[tuple[str | int, ...], Any]] = []
    _collect(value, (), leaves)
    names: list[str] = []
    for index, (path, _) in enumerate(leaves):
        if all(isinstance(p, int) for p in path):
            name = f"output_{index}"
        else:  # {"hidden": (a, b)} -> hidden_0, hidden_1; (a, {"x": b}) -> output_1_x
            name = "_".join(str(p) for p in path)
            name = f"output_{name}" if isinstance(path[0], int) else name
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return [(n, v) for n, (_, v) in zip(names, leaves, strict=True)]


def _collect(value: Any, path: tuple[str | int, ...], out: list[tuple[Any, Any]]) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out.append((path, value))
    elif value is None:
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, (*path, str(key)), out)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        for key, item in zip(value._fields, value, strict=True):
            _collect(item, (*path, str(key)), out)
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _collect(item, (*path, i), out)
    else:
        where = "".join(f"[{p!r}]" for p in path) or "itself"
        raise ConversionError(
            f"the model returns a {type(value).__name__} at output {where}; only tensors "
            "(in tuples, lists and dicts) convert to ONNX",
            hint="return tensors from forward (wrap the model in a module that does)",
        )
