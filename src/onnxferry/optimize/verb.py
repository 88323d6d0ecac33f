"""`ferry optimize`: the fastest model within the accuracy budget, and exactly what was done.

    model = optimize("model.onnx", "fast.onnx", recipe="recipe.toml", budget="cosine>=0.99")
    model = optimize("model.onnx", "fast.onnx", auto=True, max_drop=0.01, eval_data="val.npz")
    report = model.last_report(ChainResult, SearchResult)
    report.to_text()                    # the steps (or candidates), metric, latency, size
    report.result                       # typed: a ChainResult (recipe) or SearchResult (auto)
    # fast.onnx and fast.recipe.toml are written; replay with recipe="fast.recipe.toml"

Validation feeds are the user's (``inputs``, checked by ``feeds.checked_feeds``), else the
labelled ``eval_data`` inputs, else two sets made by the one feed policy (``feeds.feed_sets``;
``input_shapes`` and ``dims`` size the open dims). A budget judged on sizes the tool chose can
pass there and fail at the sizes the model really gets, so when open dims other than the batch
would be guessed, optimize refuses (UsageError naming them) unless ``assume_sizes`` accepts the
chosen sizes; the report then says the budget holds at those sizes only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from ..feeds import Given, checked_feeds, feed_sets
from ..model import Model
from ..report import Report
from ..signature import Signature
from .auto import SearchResult, auto_search
from .budget import Budget
from .chain import ChainResult, Judge, apply_recipe
from .recipe import Recipe

LABEL_KEYS = ("labels", "label", "y", "target", "targets")
EVAL_CHUNK = 64

OptimizeReport = Report[ChainResult | SearchResult]
"""What ``optimize`` did: a recipe's ``ChainResult`` or the ``--auto`` search's
``SearchResult``."""


def optimize(
    model: str | Path | Model,
    output: str | Path | None = None,
    *,
    recipe: Recipe | str | Path | None = None,
    auto: bool = False,
    budget: Budget | str | None = None,
    max_drop: float = 0.01,
    inputs: Given | None = None,
    eval_data: str | Path | Mapping[str, np.ndarray] | None = None,
    calibration: str | Path | Sequence[Mapping[str, np.ndarray]] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
    assume_sizes: bool = False,
    for_size: bool = False,
    provider: str = "cpu",
    threads: int | None = None,
    time_budget: float | None = None,
    precision: str = "fp32",
    engine_cache: str | Path | None = None,
) -> Model:
    """Apply ``recipe`` (or search with ``auto``) under the budget; save to ``output`` with
    ``<output stem>.recipe.toml`` beside it. The report is the last entry of the model's
    ``provenance`` (after the source's): ``model.last_report(ChainResult, SearchResult)``.

    Candidates are judged and timed on ``provider`` at ``precision`` (fp16 on tensorrt or
    openvino; ``engine_cache``: tensorrt's), against the original at fp32. int8 is not a
    precision here: it comes from a static int8 pass, whose Q/DQ nodes TensorRT runs in int8.
    """
    if (recipe is None) == (not auto):
        raise UsageError("give a recipe or auto=True (not both)", hint="--recipe FILE or --auto")
    if time_budget is not None and not (auto and time_budget > 0):
        raise UsageError(
            f"time_budget {time_budget} needs auto and more than 0 seconds",
            hint="e.g. --auto --time-budget 60",
        )
    _check_precision(provider, precision)
    source = model if isinstance(model, Model) else Model.load(model)
    steps = _recipe(recipe) if recipe is not None else None
    sizes_note: list[str] = []
    feeds, labels = _validation(
        source, inputs, eval_data, input_shapes, dims, assume_sizes, sizes_note
    )
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    budget = budget or Budget.from_max_drop(max_drop, _task(labels))
    if budget.needs_labels and labels is None:
        raise UsageError(f"the budget {budget.text()} needs labelled data", hint="--eval data.npz")
    # Latency is judged at batch 1: on labelled data, the first row, not a whole chunk.
    timing = {k: v[:1] for k, v in feeds[0].items()} if eval_data is not None else None
    judge = Judge(
        source,
        feeds,
        budget,
        labels,
        provider,
        threads,
        timing,
        precision=precision,
        engine_cache=None if engine_cache is None else Path(engine_cache),
    )
    calib = _calibration(calibration, source.signature)
    with tempfile.TemporaryDirectory(prefix="onnxferry-optimize-") as tmp:
        if steps is not None:
            final, result = apply_recipe(
                source, steps, judge, workdir=Path(tmp), calibration=calib, for_size=for_size
            )
            kept = _kept(steps, result.steps)
            report: OptimizeReport = Report("optimize", result)
            if not result.kept:  # say plainly that the result is the input, and why
                report.notes.append(result.outcome)
        else:
            final, search = auto_search(
                source, judge, Path(tmp), calibration=calib, time_budget_s=time_budget
            )
            chosen = search.candidates[search.chosen] if search.chosen is not None else None
            kept = _kept(chosen.recipe, chosen.result.steps) if chosen else Recipe()
            report = Report("optimize", search)
        report.notes.append(f"recipe: {kept.label()}")
        report.notes.append(f"latency measured on {_shapes(judge.timing_feeds)}")
        report.notes += sizes_note
        saved = final.save(output) if output is not None else final.detached()
        if output is not None:
            kept.save(recipe_path(Path(output)))
            report.notes.append(f"recipe saved to {recipe_path(Path(output))}")
    saved.provenance = [*source.provenance, report]
    return saved


def _check_precision(provider: str, precision: str) -> None:
    """UsageError for a precision ``provider`` does not take, and for int8 (a pass, not a
    precision, in ``optimize``)."""
    from ..precision import check_precision
    from ..runtime import provider_name, short_provider_name

    check_precision(short_provider_name(provider_name(provider)), precision)
    if precision == "int8":
        raise UsageError(
            "optimize takes int8 from a static int8 pass, not from --precision",
            hint="use a recipe or --auto with --calibration; TensorRT runs the Q/DQ nodes it "
            "writes in int8 at --precision fp32 or fp16",
        )


def _shapes(feeds: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k}[{'x'.join(map(str, v.shape))}]" for k, v in feeds.items())


def recipe_path(output: Path) -> Path:
    """Where the recipe of ``output`` is saved: ``fast.onnx`` -> ``fast.recipe.toml``."""
    return output.with_name(f"{output.stem}.recipe.toml")


def _kept(recipe: Recipe, steps: Sequence[Any]) -> Recipe:
    return Recipe([p for p, s in zip(recipe.passes, steps, strict=True) if s.status == "kept"])


def _recipe(recipe: Recipe | str | Path) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    return Recipe.load(recipe)


def _task(labels: list[np.ndarray] | None) -> str | None:
    if labels is None:
        return None
    return "classification" if labels[0].dtype.kind in "iub" else "regression"


def _validation(
    model: Model,
    inputs: Given | None,
    eval_data: str | Path | Mapping[str, np.ndarray] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    dims: Mapping[str, int] | None,
    assume_sizes: bool,
    notes: list[str],
) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray] | None]:
    signature = model.signature
    if eval_data is not None:
        return _eval_feeds(signature, eval_data)
    unknown = [n for n in input_shapes or {} if n not in signature.input_names]
    if unknown and inputs is None:
        raise UsageError(
            f"--input-shape names unknown input {unknown[0]!r}",
            hint=f"inputs are {signature.input_names}",
        )
    feeds, plan = feed_sets(model, inputs, count=2, dims=dims, input_shapes=input_shapes)
    if plan is not None and plan.guessed:
        chosen = "; ".join(c for c in plan.choices if "batch axis" not in c)
        if not assume_sizes:
            raise UsageError(
                f"{model.name}: the budget would be judged on input sizes chosen by guess "
                f"({chosen}), and a model can pass there and fail at its real sizes",
                hint="give the real sizes (--input-shape NAME=..., --dim NAME=N, or --inputs "
                "FILE), or accept these with --assume-sizes",
            )
        notes.append(
            f"the budget was judged at guessed sizes {plan.describe()} ({chosen}), not "
            "sizes you gave: it holds there only"
        )
    return feeds, None


def _eval_feeds(
    signature: Signature, eval_data: str | Path | Mapping[str, np.ndarray]
) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """Labelled data: every input of the model plus a labels array, split into chunks."""
    if isinstance(eval_data, Mapping):
        arrays = dict(eval_data)
    else:
        from ..data import load_npz_arrays

        arrays = load_npz_arrays(Path(eval_data))
    label_key = next((k for k in LABEL_KEYS if k in arrays), None)
    if label_key is None:
        raise DataError(
            "the eval data has no labels",
            hint=f"store them under one of {', '.join(LABEL_KEYS)} next to the inputs",
        )
    labels = np.asarray(arrays.pop(label_key))
    missing = [n for n in signature.input_names if n not in arrays]
    extra = [k for k in arrays if k not in signature.input_names]
    if missing or extra:
        raise DataError(
            f"eval data keys do not match the model: missing {missing}, unknown {extra}",
            hint=f"name the arrays {signature.input_names} plus labels",
        )
    count = len(labels)
    if any(len(a) != count for a in arrays.values()):
        raise DataError("eval inputs and labels have different numbers of rows")
    starts = range(0, count, EVAL_CHUNK)
    if not starts:
        raise DataError("the eval data is empty", hint="give at least one labelled row")
    chunks = [{k: v[start : start + EVAL_CHUNK] for k, v in arrays.items()} for start in starts]
    feeds = checked_feeds(chunks, signature, where="eval data")
    return feeds, [labels[start : start + EVAL_CHUNK] for start in starts]


def _calibration(
    calibration: str | Path | Sequence[Mapping[str, np.ndarray]] | None, signature: Signature
) -> list[dict[str, np.ndarray]] | None:
    if calibration is None:
        return None
    from .calibration import checked_calibration, load_calibration

    if isinstance(calibration, (str, Path)):
        return load_calibration(calibration, signature)
    return checked_calibration(calibration, signature)
