"""`ferry optimize`: the fastest model within the accuracy budget, and exactly what was done.

    model = optimize("model.onnx", "fast.onnx", recipe="recipe.toml", budget="cosine>=0.99")
    model = optimize("model.onnx", "fast.onnx", recipe=["fold", "int8_dynamic"])
    model = optimize("model.onnx", "fast.onnx", auto=True, max_drop=0.01, eval_data="val.npz")
    model = optimize("model.onnx", "fast.onnx", auto=True, search="optuna", trials=3, study="s.db")
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
from ..graphs import set_metadata
from ..model import Model
from ..report import Report
from ..signature import Signature
from .auto import auto_search, default_time_budget
from .budget import MODEL_KEY as BUDGET_KEY
from .budget import Budget, empty_outputs, near_zero_outputs
from .candidates import SearchResult
from .capture import captured
from .chain import ChainResult, Judge, apply_recipe
from .holdout import HoldOut, split_holdout, timing_feeds
from .optuna_search import DEFAULT_TRIALS, optuna_search
from .recipe import Recipe, Step

LABEL_KEYS = ("labels", "label", "y", "target", "targets")
EVAL_CHUNK = 64
SEARCHES = ("default", "optuna")
"""``auto``'s searches: the default candidate list, or Optuna's TPE (``optuna_search``)."""

OptimizeReport = Report[ChainResult | SearchResult]
"""What ``optimize`` did: a recipe's ``ChainResult`` or the ``--auto`` search's
``SearchResult``."""


def optimize(
    model: str | Path | Model,
    output: str | Path | None = None,
    *,
    recipe: Recipe | str | Path | Sequence[Step] | None = None,
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
    batch: int = 1,
    judge_inputs: Given | None = None,
    search: str = "default",
    trials: int | None = None,
    study: str | Path | None = None,
    study_name: str | None = None,
    seed: int = 0,
) -> Model:
    """Apply ``recipe`` (or search with ``auto``) under the budget; save to ``output`` with
    ``<output stem>.recipe.toml`` beside it. The report is the last entry of the model's
    ``provenance`` (after the source's): ``model.last_report(ChainResult, SearchResult)``.

    Candidates are judged and timed on ``provider`` at ``precision`` (fp16 on tensorrt or
    openvino; ``engine_cache``: tensorrt's), against the original at fp32. int8 is not a
    precision here: it comes from a static int8 pass, whose Q/DQ nodes TensorRT runs in int8.

    Latency is measured at ``batch`` rows (default 1), whatever the size of the data. With
    ``auto`` the search tunes on part of the data and is judged on the rest (``holdout``:
    ``judge_inputs`` when given, else a split of ``inputs``/``eval_data``); a model that
    meets the budget only on the tuning data is refused. ``time_budget`` defaults to
    ``default_time_budget`` of the model's size. Library warnings go into the report.

    ``search="optuna"`` searches with Optuna's TPE instead of the candidate list (same budget,
    timing and choice; see ``optuna_search``): ``trials`` finished trials in all (default
    DEFAULT_TRIALS), in the study ``study_name`` kept in ``study`` (a path or an RDB URL;
    running again continues it), sampled with ``seed``.
    """
    if (recipe is None) == (not auto):
        raise UsageError("give a recipe or auto=True (not both)", hint="--recipe FILE or --auto")
    if time_budget is not None and not (auto and time_budget > 0):
        raise UsageError(
            f"time_budget {time_budget} needs auto and more than 0 seconds",
            hint="e.g. --auto --time-budget 60",
        )
    if judge_inputs is not None and not auto:
        raise UsageError("judge_inputs needs auto", hint="--auto --judge-inputs FILE")
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}", hint="e.g. --batch 1")
    _check_search(search, auto, trials, study, study_name)
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
    # Latency is judged at the serving batch (1 by default), never at the data's size.
    timing = timing_feeds(source.signature, feeds, batch)
    split = HoldOut(feeds, feeds, labels, labels, held_out=False)
    if auto:
        split = _holdout(source, feeds, labels, judge_inputs)

    def judge_on(sets: list[dict[str, np.ndarray]], y: list[np.ndarray] | None) -> Judge:
        return Judge(
            source,
            sets,
            budget,
            y,
            provider,
            threads,
            timing,
            precision=precision,
            engine_cache=None if engine_cache is None else Path(engine_cache),
        )

    judge = judge_on(split.tune, split.tune_labels)
    _check_not_empty(source, judge.reference, budget, sizes_note)
    if budget.metric == "cosine":
        sizes_note += [
            f"output {name!r} is at most {peak:.2g} in magnitude on these inputs: its cosine "
            "measures rounding, not the model; judge on inputs it responds to (--inputs)"
            for name, peak in near_zero_outputs(judge.reference).items()
        ]
    holdout = judge_on(split.judge, split.judge_labels) if split.held_out else None
    calib = _calibration(calibration, source.signature)
    budget_s = time_budget if time_budget is not None else default_time_budget(source.size_bytes)
    with tempfile.TemporaryDirectory(prefix="onnxferry-optimize-") as tmp:
        with captured() as chatter:
            if steps is not None:
                final, result = apply_recipe(
                    source, steps, judge, workdir=Path(tmp), calibration=calib, for_size=for_size
                )
                kept = _kept(steps, result.steps)
                report: OptimizeReport = Report("optimize", result)
                if not result.kept:  # say plainly that the result is the input, and why
                    report.notes.append(result.outcome)
            else:
                found: SearchResult
                if search == "optuna":  # Optuna's TPE over passes and parameters, in a study
                    final, found = optuna_search(
                        source,
                        judge,
                        Path(tmp),
                        calibration=calib,
                        holdout=holdout,
                        trials=trials or DEFAULT_TRIALS,
                        study=study,
                        study_name=study_name,
                        seed=seed,
                        time_budget_s=budget_s,
                    )
                else:
                    final, found = auto_search(
                        source,
                        judge,
                        Path(tmp),
                        calibration=calib,
                        time_budget_s=budget_s,
                        holdout=holdout,
                    )
                found.held_out = split.note
                chosen = found.candidates[found.chosen] if found.chosen is not None else None
                kept = _kept(chosen.recipe, chosen.result.steps) if chosen else Recipe()
                report = Report("optimize", found)
                report.notes.append(split.note)
        if chatter.lines:
            if isinstance(report.result, SearchResult):
                report.result.warnings += chatter.summary(shown=200)
            report.notes.append(
                f"captured {len(chatter.lines)} library warning line(s) "
                f"({len(set(chatter.lines))} distinct) into the report, not the terminal"
            )
        report.notes.append(f"recipe: {kept.label()}")
        report.notes.append(f"latency measured on {_shapes(judge.timing_feeds)}")
        report.notes += sizes_note
        if final is not source:  # what it may have lost, for the registry's gates
            set_metadata(final.proto, {BUDGET_KEY: budget.text()})
        saved = final.save(output) if output is not None else final.detached()
        if output is not None:
            kept.save(recipe_path(Path(output)))
            report.notes.append(f"recipe saved to {recipe_path(Path(output))}")
    saved.provenance = [*source.provenance, report]
    return saved


def _check_search(
    search: str, auto: bool, trials: int | None, study: str | Path | None, study_name: str | None
) -> None:
    """UsageError for an unknown search, the optuna search without auto, and the study's
    options without the optuna search."""
    if search not in SEARCHES:
        raise UsageError(f"unknown search {search!r}", hint="--search default or --search optuna")
    if search == "optuna" and not auto:
        raise UsageError("the optuna search needs auto", hint="--auto --search optuna")
    if search != "optuna" and (trials, study, study_name) != (None, None, None):
        raise UsageError(
            "trials, study and study_name belong to the optuna search",
            hint="--auto --search optuna --trials N [--study study.db]",
        )
    if trials is not None and trials < 1:
        raise UsageError(f"trials must be at least 1, got {trials}", hint="e.g. --trials 20")


def _holdout(
    model: Model,
    feeds: list[dict[str, np.ndarray]],
    labels: list[np.ndarray] | None,
    judge_inputs: Given | None,
) -> HoldOut:
    """The tuning and judging data: ``judge_inputs`` judges when given (all of ``feeds``
    tune), else ``feeds`` are split."""
    if judge_inputs is None:
        return split_holdout(model.signature, feeds, labels)
    if labels is not None:
        raise UsageError(
            "judge_inputs takes no labels: with eval data the labelled rows are split",
            hint="leave out --judge-inputs, or judge on a budget without labels",
        )
    judging, _ = feed_sets(model, judge_inputs, where="judge inputs")
    return HoldOut(
        feeds, judging, note=f"tuned on {len(feeds)} feed set(s), judged on the judge inputs"
    )


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


def _recipe(recipe: Recipe | str | Path | Sequence[Step]) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | Path):
        return Recipe.load(recipe)
    return Recipe.of(recipe)


def _task(labels: list[np.ndarray] | None) -> str | None:
    if labels is None:
        return None
    return "classification" if labels[0].dtype.kind in "iub" else "regression"


def _check_not_empty(
    source: Model, reference: list[dict[str, np.ndarray]], budget: Budget, notes: list[str]
) -> None:
    """Refuse a budget that would judge nothing: every float output empty on every feed set
    (a detector shown inputs it finds nothing in). Some empty: a note names them."""
    if budget.needs_labels:
        return
    empty = empty_outputs(reference)
    floats = {
        n for outputs in reference for n, v in outputs.items() if np.asarray(v).dtype.kind == "f"
    }
    if empty and set(empty) == floats:
        raise UsageError(
            f"{source.name}: every float output ({', '.join(empty)}) is empty on the "
            "validation inputs, so the budget would judge nothing",
            hint="give inputs the model finds something in (--inputs FILE)",
        )
    notes += [
        f"output {name!r} is empty on every validation input: the budget judges the others"
        for name in empty
    ]


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
