"""Optimize an ONNX model within an accuracy budget: verified passes, recipes, automatic search.

    model = onnxferry.optimize("model.onnx", "fast.onnx", auto=True, max_drop=0.01)
    model = onnxferry.optimize("model.onnx", "fast.onnx", recipe="fast.recipe.toml")
    print(model.last_report(ChainResult).to_text())     # SearchResult after auto=True

Passes (``graph``, ``fp16``, ``quantize``, ``prune``) are declared units ``Model -> Model``,
listed by name in an explicit ``Catalog`` (``list_passes``, ``make_pass``); a ``Recipe`` is an
ordered list of them (TOML); ``chain`` applies one under a ``Budget``; ``auto`` searches
candidate recipes.
"""

from .base import ParamInfo, Pass, PassContext, PassError, PassInfo, PassResult
from .budget import Budget
from .candidates import SearchResult
from .catalog import BUILTIN, Catalog, list_passes, make_pass
from .chain import ChainResult
from .recipe import Recipe
from .verb import OptimizeReport, optimize

__all__ = [
    "BUILTIN",
    "Budget",
    "Catalog",
    "ChainResult",
    "OptimizeReport",
    "ParamInfo",
    "Pass",
    "PassContext",
    "PassError",
    "PassInfo",
    "PassResult",
    "Recipe",
    "SearchResult",
    "list_passes",
    "make_pass",
    "optimize",
]
