"""Optimize an ONNX model within an accuracy budget: verified passes, recipes, automatic search.

    model = onnxferry.optimize("model.onnx", "fast.onnx", auto=True, max_drop=0.01)
    model, report = optimize_with_report("model.onnx", "fast.onnx", recipe="fast.recipe.toml")
    print(report.to_text())                # report.result: a ChainResult, or a SearchResult

Passes (``graph``, ``fp16``, ``quantize``, ``prune``) are declared units ``Model -> Model``,
listed by name in an explicit ``Catalog`` (``list_passes``, ``make_pass``); a ``Recipe`` is an
ordered list of them (TOML); ``chain`` applies one under a ``Budget``; ``auto`` searches
candidate recipes.
"""

from .base import ParamInfo, Pass, PassContext, PassError, PassInfo, PassResult
from .budget import Budget
from .catalog import BUILTIN, Catalog, list_passes, make_pass
from .recipe import Recipe
from .verb import OptimizeReport, optimize, optimize_with_report

__all__ = [
    "BUILTIN",
    "Budget",
    "Catalog",
    "OptimizeReport",
    "ParamInfo",
    "Pass",
    "PassContext",
    "PassError",
    "PassInfo",
    "PassResult",
    "Recipe",
    "list_passes",
    "make_pass",
    "optimize",
    "optimize_with_report",
]
