"""Automatic search: try candidate recipes, measure each, keep the fastest within budget.

    best, search = auto_search(model, judge, workdir)
    search.tables()      # every candidate: latency, speedup, metric, size, within budget

Candidates: ONNX Runtime graph levels, onnxslim, int8 dynamic (per tensor / per channel), int8
static QDQ (per tensor / per channel), with and without graph passes first, with SmoothQuant
smoothing before int8 (activation outliers moved into the weights), and fp16 where the
provider has fast fp16 (CUDA, TensorRT). When static int8 breaks the budget, the most sensitive
nodes (per-node error against the fp32 intermediates) stay in fp32 until the budget holds.
When nothing meets the budget, the candidate closest to it is returned and the report says by
how much it misses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from ..report import Table
from .chain import ChainResult, Judge, apply_recipe
from .recipe import Recipe

FAST_FP16 = {"cuda", "tensorrt", "rocm", "dml", "coreml"}
SENSITIVE_STEPS = (1, 2, 4, 8, 16)
"""How many of the most sensitive nodes static int8 leaves in fp32, tried in turn."""


def candidate_recipes(provider: str = "cpu") -> list[Recipe]:
    """The recipes ``auto_search`` tries, cheapest first."""
    steps: list[list[Any]] = [
        [("ort_graph", {"level": "basic"})],
        [("ort_graph", {"level": "extended"})],
        ["slim"],
        [("int8_dynamic", {})],
        [("int8_dynamic", {"per_channel": True})],
        ["slim", ("int8_dynamic", {"per_channel": True})],
        [("int8_static", {})],
        [("int8_static", {"per_channel": True})],
        ["slim", ("int8_static", {"per_channel": True})],
        ["smooth", ("int8_dynamic", {"per_channel": True})],
        ["smooth", ("int8_static", {"per_channel": True})],
    ]
    if provider in FAST_FP16:
        steps += [["fp16"], ["slim", "fp16"]]
    return [Recipe.of(s) for s in steps]


@dataclass
class Candidate:
    """One recipe's outcome in the search."""

    recipe: Recipe
    result: ChainResult
    model: Model | None

    @property
    def within(self) -> bool:
        return bool(self.result.kept) and self.result.within_budget


@dataclass
class SearchResult:
    """Every candidate, the choice and why (ReportBody)."""

    model: str
    budget: str
    baseline_ms: float
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    reason: str = ""
    misses_by: float | None = None  # set when no candidate meets the budget

    @property
    def ok(self) -> bool:
        """The returned model meets the budget (the original, when nothing was faster)."""
        return self.misses_by is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "budget": self.budget,
            "baseline_ms": self.baseline_ms,
            "chosen": (
                self.candidates[self.chosen].recipe.to_data() if self.chosen is not None else None
            ),
            "reason": self.reason,
            "misses_by": self.misses_by,
            "candidates": [
                {
                    "recipe": c.recipe.label(),
                    "kept": c.result.kept,
                    "latency_ms": c.result.final_ms,
                    "speedup": c.result.speedup,
                    "metric": c.result.final_metric,
                    "size_bytes": c.result.final_size,
                    "within_budget": c.within,
                    "steps": [s.to_dict() for s in c.result.steps],
                }
                for c in self.candidates
            ],
        }

    def tables(self) -> list[Table]:
        rows = [
            (
                ("* " if i == self.chosen else "  ") + c.recipe.label(),
                " -> ".join(c.result.kept) or "(nothing kept)",
                c.result.final_ms,
                c.result.speedup,
                c.result.final_metric,
                (c.result.final_size or 0) / 2**20,
                c.within,
            )
            for i, c in enumerate(self.candidates)
        ]
        columns = ("candidate", "kept", "p50 ms", "speedup", "metric", "MiB", "within")
        title = (
            f"optimize --auto {self.model} (budget {self.budget}, "
            f"original p50 {self.baseline_ms:.3f} ms)"
        )
        return [Table(title, columns, rows), Table("choice", ("why",), [(self.reason,)])]


def auto_search(
    model: Model,
    judge: Judge,
    workdir: Path,
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    recipes: Sequence[Recipe] | None = None,
) -> tuple[Model, SearchResult]:
    """Try every candidate recipe and return the fastest model within the budget."""
    (baseline_ms,) = judge.latency_ms(model)
    search = SearchResult(model.name, judge.budget.text(), baseline_ms)

    def attempt(recipe: Recipe) -> Candidate:
        final, result = apply_recipe(
            model,
            recipe,
            judge,
            workdir=workdir / f"candidate{len(search.candidates)}",
            calibration=calibration,
            speed_check=False,
        )
        if result.kept:
            (result.final_ms,) = judge.latency_ms(final)
        candidate = Candidate(recipe, result, final if result.kept else None)
        search.candidates.append(candidate)
        return candidate

    for recipe in recipes or candidate_recipes(judge.provider):
        candidate = attempt(recipe)
        if _static_int8_broke_budget(candidate):
            for exclude in SENSITIVE_STEPS:  # keep the most sensitive nodes in fp32
                if attempt(_excluding(recipe, exclude)).within:
                    break
    _choose(search, judge)
    chosen = search.candidates[search.chosen] if search.chosen is not None else None
    return (chosen.model if chosen and chosen.model else model), search


def _static_int8_broke_budget(candidate: Candidate) -> bool:
    return any(
        s.status == "rolled back" and s.label.startswith("int8_static")
        for s in candidate.result.steps
    )


def _excluding(recipe: Recipe, count: int) -> Recipe:
    """``recipe`` with its int8_static pass leaving the ``count`` most sensitive nodes fp32."""
    from dataclasses import replace

    return Recipe(
        [
            replace(p, exclude_sensitive=count) if p.name == "int8_static" else p  # type: ignore[call-arg]
            for p in recipe.passes
        ]
    )


def _choose(search: SearchResult, judge: Judge) -> None:
    within = [i for i, c in enumerate(search.candidates) if c.within]
    if within:
        best = min(within, key=lambda i: search.candidates[i].result.final_ms or np.inf)
        result = search.candidates[best].result
        if (result.speedup or 0) <= 1.0:
            search.reason = "no candidate is faster than the original; the original is kept"
            return
        search.chosen = best
        search.reason = (
            f"fastest within {search.budget}: {search.candidates[best].recipe.label()} "
            f"({result.speedup:.2f}x, metric {result.final_metric:.6g})"
        )
        return
    tried = [
        i
        for i, c in enumerate(search.candidates)
        if c.result.kept and c.result.final_metric is not None
    ]
    if not tried:
        search.reason = "no candidate produced a model; the original is kept"
        return
    closest = min(
        tried, key=lambda i: judge.budget.miss(search.candidates[i].result.final_metric or 0.0)
    )
    metric = search.candidates[closest].result.final_metric or 0.0
    search.chosen = closest
    search.misses_by = judge.budget.miss(metric)
    search.reason = (
        f"nothing meets {search.budget}; the closest is "
        f"{search.candidates[closest].recipe.label()} with {metric:.6g}, missing by "
        f"{judge.budget.miss(metric):.3g}"
    )
