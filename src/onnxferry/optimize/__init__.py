"""Optimize an ONNX model within an accuracy budget: verified passes, recipes, automatic search.

    model = onnxferry.optimize("model.onnx", "fast.onnx", auto=True, max_drop=0.01)
    print(model.provenance[-1].to_text())

Passes (``graph``, ``fp16``, ``quantize``, ``prune``) are declared units ``Model -> Model``;
a ``Recipe`` is an ordered list of them (TOML); ``chain`` applies one under a ``Budget``;
``auto`` searches candidate recipes.
"""

from .base import Pass, PassContext, PassError, PassResult, available_passes, make_pass
from .budget import Budget
from .recipe import Recipe
from .verb import optimize

__all__ = [
    "Budget",
    "Pass",
    "PassContext",
    "PassError",
    "PassResult",
    "Recipe",
    "available_passes",
    "make_pass",
    "optimize",
]
