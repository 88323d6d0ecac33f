"""The model as a differentiable function of one input: its graph as a torch module.

    scorer = GradientScorer.build(model, evaluator, samples)  # checked against ONNX Runtime
    f = scorer.function(0, target)          # torch rows -> the target's value per row
    f(torch.zeros(3, 4, requires_grad=True)).sum().backward()

ONNX Runtime's standard wheel computes no gradient, so integrated gradients run on
``torchgraph``'s translation of the graph, which is checked against ONNX Runtime on the
explained inputs before it is used (a mismatch, or an operator it lacks, is
``MethodUnavailable`` saying which). Token ids have no gradient: for an integer input the rows
are the ids' embeddings, the output of the lookup that reads them (a Gather from a weight
table, ``torchgraph.module.embedding_of``), given in its place. The other inputs are held at
the explained sample's values, rows are run as the ``Evaluator`` runs them (alone for a model
without a batch axis or whose rows are not independent, padded to a fixed batch), and every row
is charged to the same budget. A model's module is built once per ``Model`` object (a server's
version keeps it).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import VerificationError
from ..model import Model
from ..torchgraph.module import embedding_of
from .evaluate import Evaluator, Target
from .methods import MethodUnavailable

_BUILT: dict[int, tuple[weakref.ref[Model], Any]] = {}
_BUILDING = threading.Lock()
ALTERNATIVES = "use occlusion, kernelshap, permutation or lime"


class GradientScorer:
    """Rows of the explained input -> the target's value per row, through the torch module.
    For integer token ids, the rows are the ids' embeddings (``embedding``: the lookup's
    output, which stands in for the lookup), the ids held at the explained sample's."""

    def __init__(
        self,
        module: Any,
        evaluator: Evaluator,
        samples: np.ndarray,
        embedding: str | None = None,
    ) -> None:
        self.module = module
        self.evaluator = evaluator
        self.samples = samples
        self.embedding = embedding

    @classmethod
    def build(cls, model: Model, evaluator: Evaluator, samples: np.ndarray) -> GradientScorer:
        """The scorer for ``model``: MethodUnavailable when the graph has no faithful torch
        translation, or the input is integer and no embedding lookup reads it (or the model
        has no batch axis) (``methods.require`` checks for torch and Captum first)."""
        module = _module(model, evaluator.feeds(samples[: evaluator.chunk], 0))
        if evaluator.dtype.kind == "f":
            return cls(module, evaluator, samples)
        embedding = embedding_of(module, evaluator.input_name)
        if embedding is None or not evaluator.layout.batch_axis:
            raise MethodUnavailable(
                f"integrated-gradients follows the gradient along a float input, and "
                f"{evaluator.input_name!r} holds {evaluator.dtype} values that no embedding "
                "lookup (a Gather from a weight table) reads on a batch axis",
                hint=ALTERNATIVES,
            )
        return cls(module, evaluator, samples, embedding)

    def embedder(self, sample: int) -> Callable[[np.ndarray], Any] | None:
        """Token ids -> their embeddings (no gradient), the other inputs at ``sample``'s
        values; None for a float input."""
        if self.embedding is None:
            return None
        embedding = self.embedding

        def embed(ids: np.ndarray) -> Any:
            import torch

            feeds = self._feeds(sample, len(ids))
            feeds[self.evaluator.input_name] = torch.from_numpy(np.array(ids, copy=True))
            with torch.no_grad():
                return self.module.tensors(feeds, [embedding])[embedding]

        return embed

    @property
    def note(self) -> str:
        """Where the gradient comes from, and how closely that matches ONNX Runtime."""
        parity = self.module.parity
        figures = f": max abs error {parity.max_abs:.2g}" if parity is not None else ""
        along = (
            f"; along the embedding lookup {self.embedding!r} (ids have no gradient): a "
            "token's attribution is its embedding's, summed over the hidden axis"
            if self.embedding is not None
            else ""
        )
        return (
            "gradients through the graph as a torch module, checked against ONNX Runtime on "
            f"the explained inputs{figures}{along}"
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

        feeds = self._feeds(sample, rows)
        name = self.evaluator.input_name
        if self.embedding is None:
            feeds[name] = batch
            value = self.module(**feeds)[output]
        else:  # the ids stay the sample's; their embeddings are the rows
            ids = np.repeat(self.samples[sample][None], len(batch), axis=0)
            feeds[name] = torch.from_numpy(ids)
            value = self.module.tensors(feeds, [output], {self.embedding: batch})[output]
        return value.reshape(rows or 1, -1).to(torch.float64)

    def _feeds(self, sample: int, rows: int | None) -> dict[str, Any]:
        """The other inputs at ``sample``'s values, ``rows`` times, as tensors."""
        import torch

        fixed = self.evaluator.fixed_inputs(sample, rows)
        return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in fixed.items()}


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
