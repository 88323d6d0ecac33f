"""The model as a differentiable function of one input: its graph as a torch module.

    scorer = GradientScorer.build(model, evaluator, samples)  # checked against ONNX Runtime
    f = scorer.function(0, target)          # torch rows -> the target's value per row
    f(torch.zeros(3, 4, requires_grad=True)).sum().backward()

ONNX Runtime's standard wheel computes no gradient, so integrated gradients run on
``torchgraph``'s translation of the graph, which is checked against ONNX Runtime on the
explained inputs before it is used (a mismatch, or an operator it lacks, is
``MethodUnavailable`` saying which). The other inputs are held at the explained sample's
values, rows are run as the ``Evaluator`` runs them (alone for a model without a batch axis or
whose rows are not independent, padded to a fixed batch), and every row is charged to the
same budget. A model's module is built once per ``Model`` object (a server's version keeps
it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import VerificationError
from ..model import Model
from .evaluate import Evaluator, Target
from .methods import MethodUnavailable

_BUILT: dict[int, tuple[weakref.ref[Model], Any]] = {}
_BUILDING = threading.Lock()
ALTERNATIVES = "use occlusion, kernelshap, permutation or lime"


class GradientScorer:
    """Rows of the explained input -> the target's value per row, through the torch module."""

    def __init__(self, module: Any, evaluator: Evaluator) -> None:
        self.module = module
        self.evaluator = evaluator

    @classmethod
    def build(cls, model: Model, evaluator: Evaluator, samples: np.ndarray) -> GradientScorer:
        """The scorer for ``model``: MethodUnavailable when the input is not float, or the
        graph has no faithful torch translation (``methods.require`` checks for torch and
        Captum first)."""
        if evaluator.dtype.kind != "f":
            raise MethodUnavailable(
                f"integrated-gradients follows the gradient along a float input, and "
                f"{evaluator.input_name!r} holds {evaluator.dtype} values",
                hint=ALTERNATIVES,
            )
        return cls(_module(model, evaluator.feeds(samples[: evaluator.chunk], 0)), evaluator)

    @property
    def note(self) -> str:
        """Where the gradient comes from, and how closely that matches ONNX Runtime."""
        parity = self.module.parity
        figures = f": max abs error {parity.max_abs:.2g}" if parity is not None else ""
        return (
            "gradients through the graph as a torch module, checked against ONNX Runtime on "
            f"the explained inputs{figures}"
        )

    def function(self, sample: int, target: Target) -> Callable[[Any], Any]:
        """``f(rows) -> scores``: a torch tensor of rows (the input's dtype) -> the target's
        value per row, differentiable; the other inputs held at ``sample``'s values."""

        def f(rows: Any) -> Any:
            self.evaluator.charge(len(rows))
            values = self._outputs(rows, sample, target.output)[:, target.index]
            self.evaluator.count(len(rows))
            if rows.requires_grad and not values.requires_grad:
                raise MethodUnavailable(
                    f"integrated-gradients: no gradient reaches {self.evaluator.input_name!r} "
                    f"from {target.label} (the graph quantizes or rounds it on the way, or "
                    "the target does not depend on it)",
                    hint=ALTERNATIVES,
                )
            return values

        return f

    def _outputs(self, rows: Any, sample: int, output: str) -> Any:
        import torch

        evaluator, layout = self.evaluator, self.evaluator.layout
        if not layout.batch_axis:
            return torch.cat([self._run(row, sample, output, None) for row in rows])
        chunk = evaluator.chunk
        parts = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            size = layout.fixed_batch or len(part)
            padded = torch.cat([part, part[-1:].expand(size - len(part), *part.shape[1:])])
            parts.append(self._run(padded, sample, output, size)[: len(part)])
        return torch.cat(parts)

    def _run(self, batch: Any, sample: int, output: str, rows: int | None) -> Any:
        import torch

        fixed = self.evaluator.fixed_inputs(sample, rows)
        feeds = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in fixed.items()}
        feeds[self.evaluator.input_name] = batch
        value = self.module(**feeds)[output]
        return value.reshape(rows or 1, -1).to(torch.float64)


def _module(model: Model, feeds: Mapping[str, np.ndarray]) -> Any:
    """``model``'s torch module, built and checked on ``feeds`` the first time it is asked."""
    from ..torchgraph import UnsupportedOperator, to_torch

    with _BUILDING:
        known = _BUILT.get(id(model))
        if known is not None and known[0]() is model:
            return known[1]
        try:
            module = to_torch(model, feeds=[dict(feeds)])
        except UnsupportedOperator as e:
            raise MethodUnavailable(
                "integrated-gradients takes the gradient through onnxferry's torch "
                f"translation of the graph, and {e.message}",
                hint=ALTERNATIVES,
            ) from e
        except VerificationError as e:
            raise MethodUnavailable(
                "integrated-gradients needs a faithful torch translation of the graph: "
                + e.message,
                hint=ALTERNATIVES,
            ) from e
        module.requires_grad_(False)  # gradients for the input only
        _BUILT[id(model)] = (weakref.ref(model), module)
        weakref.finalize(model, _BUILT.pop, id(model), None)  # the weights go with the model
        return module
