"""Automatic search: try candidate recipes, measure each, keep the fastest within budget.

    best, search = auto_search(model, judge, workdir)
    search.tables()      # every candidate: latency, speedup, metric, size, within budget

Candidates: ONNX Runtime graph levels, onnxslim, int8 dynamic (per tensor / per channel), int8
static QDQ (per tensor / per channel), with and without graph passes first, with SmoothQuant
smoothing before int8 (activation outliers moved into the weights), and fp16 where the
provider has fast fp16 (CUDA, TensorRT). When int8 breaks the budget, the recipe that came
closest (per int8 pass) is tried again keeping its most sensitive nodes in fp32 (static: per-node
error against the fp32 intermediates; dynamic: per-MatMul error per FLOP), 1, 2, 4, 8, 16 of
them, until the budget holds.
When nothing meets the budget, the candidate closest to it is returned and the report says by
how much it misses.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from ..report import Table
from .chain import FASTER, PRODUCED_NOTHING, ChainResult, Judge, always_faster, apply_recipe
from .recipe import Recipe

FAST_FP16 = {"cuda", "tensorrt", "rocm", "dml", "coreml"}
FINALISTS = 3
"""How many of the fastest candidates within budget are timed again, side by side."""
FINAL_ROUNDS = 5
FINAL_ITERATIONS = 30
"""Timed runs per model per side-by-side round (fewer when a time budget runs short)."""
MIN_FINAL_ITERATIONS = 5
SENSITIVE_STEPS = (1, 2, 4, 8, 16)
"""How many of the most sensitive nodes int8 leaves in fp32, tried in turn."""
_EXCLUDING = ("int8_static", "int8_dynamic")


def candidate_recipes(provider: str = "cpu") -> list[Recipe]:
    """The recipes ``auto_search`` tries, cheapest first. On x86 CPUs without VNNI, per-channel
    int8 uses 7-bit weights (``reduce_range``): full-range u8s8 products saturate there."""
    from .cpu_features import x86_without_vnni  # read when a search runs, not on import

    channel: dict[str, Any] = {"per_channel": True}
    if provider == "cpu" and x86_without_vnni():
        channel["reduce_range"] = True
    steps: list[list[Any]] = [
        [("ort_graph", {"level": "basic"})],
        [("ort_graph", {"level": "extended"})],
        ["slim"],
        [("int8_dynamic", {})],
        [("int8_dynamic", channel)],
        ["slim", ("int8_dynamic", channel)],
        [("int8_static", {})],
        [("int8_static", channel)],
        ["slim", ("int8_static", channel)],
        ["smooth", ("int8_dynamic", channel)],
        ["smooth", ("int8_static", channel)],
    ]
    if provider in FAST_FP16:
        steps += [["fp16"], ["slim", "fp16"]]
    return [Recipe.of(s) for s in steps]


@dataclass
class Candidate:
    """One recipe's outcome in the search. Its model stays on disk (``path``) so the search
    holds one candidate in memory at a time, however many it tries."""

    recipe: Recipe
    result: ChainResult
    path: Path | None = None
    rounds_ms: list[float] = field(default_factory=list)
    """p50 of each side-by-side round with the original and the other finalists."""

    @property
    def within(self) -> bool:
        return bool(self.result.kept) and self.result.within_budget

    def load(self) -> Model | None:
        return Model.load(self.path) if self.path is not None else None


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
    baseline_rounds_ms: list[float] = field(default_factory=list)
    untried: list[str] = field(default_factory=list)
    """Recipes not tried because the search's time budget ran out."""

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
            "untried": list(self.untried),
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
                f"{'*' if i == self.chosen else ' '} {i + 1}. {c.recipe.label()}",
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

    def figures(self) -> list[str]:
        """The candidates plot (latency against the budget metric), numbered as in the table
        (candidates without a latency or a metric have no point)."""
        from ..plots import Point, candidates_svg
        from .budget import Budget

        points = [
            Point(c.recipe.label(), c.result.final_ms, c.result.final_metric, c.within, i + 1)
            for i, c in enumerate(self.candidates)
            if c.result.final_ms is not None
            and c.result.final_metric is not None
            and math.isfinite(c.result.final_ms)
            and math.isfinite(c.result.final_metric)
        ]
        if not points:
            return []
        budget = Budget.parse(self.budget)
        svg = candidates_svg(
            points,
            metric=budget.metric,
            limit=budget.limit,
            higher_is_better=budget.higher_is_better,
            baseline_ms=self.baseline_ms,
        )
        return [svg]


def auto_search(
    model: Model,
    judge: Judge,
    workdir: Path,
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    recipes: Sequence[Recipe] | None = None,
    finalists: int = FINALISTS,
    time_budget_s: float | None = None,
) -> tuple[Model, SearchResult]:
    """Try every candidate recipe and return the fastest model within the budget.

    Each candidate is judged on the budget, and those within it timed once; the ``finalists``
    fastest are then timed again side by side with the original in interleaved rounds, and one
    is chosen only when it beats the original by FASTER in every round. With
    ``time_budget_s``, no new candidate starts once that many seconds have passed (the one
    running finishes, and the finalists are still timed); ``untried`` lists the rest."""
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    (baseline_ms,) = judge.latency_ms(model, rounds=1)
    search = SearchResult(model.name, judge.budget.text(), baseline_ms)

    def attempt(recipe: Recipe) -> Candidate | None:
        if deadline is not None and time.monotonic() > deadline:
            search.untried.append(recipe.label())
            return None
        index = len(search.candidates)
        final, result = apply_recipe(
            model,
            recipe,
            judge,
            workdir=workdir / f"candidate{index}",
            calibration=calibration,
            speed_check=False,
            baseline_ms=baseline_ms,
        )
        candidate = Candidate(recipe, result)
        if result.kept:
            if result.within_budget:
                (result.final_ms,) = judge.latency_ms(final, rounds=1)
            candidate.path = _on_disk(final, workdir / f"candidate{index}" / "final.onnx")
        for step in result.steps:
            step.model = None  # on disk; keeps the search's memory to one model at a time
        search.candidates.append(candidate)
        return candidate

    for recipe in recipes or candidate_recipes(judge.provider):
        attempt(recipe)
    for recipe in _closest_misses(search.candidates, judge):
        for exclude in SENSITIVE_STEPS:  # keep the most sensitive nodes in fp32
            tried = attempt(_excluding(recipe, exclude))
            if tried is None or tried.within or _nothing_more_to_exclude(tried, exclude):
                break
    left_s = None if deadline is None else max(0.0, deadline - time.monotonic())
    _time_finalists(search, model, judge, finalists, left_s)
    _choose(search, judge)
    if search.untried:
        search.reason += (
            f"; the time budget ran out before {len(search.untried)} more candidates "
            f"({', '.join(search.untried[:3])}{', ...' if len(search.untried) > 3 else ''})"
        )
    chosen = search.candidates[search.chosen] if search.chosen is not None else None
    best = chosen.load() if chosen is not None else None
    if chosen is not None and best is not None and chosen.result.final_ms is None:
        (chosen.result.final_ms,) = judge.latency_ms(best)  # the closest miss: report its speed
    return best or model, search


def _on_disk(model: Model, target: Path) -> Path:
    if model.path is not None:
        return model.path
    return model.save(target).path or target


def _time_finalists(
    search: SearchResult, original: Model, judge: Judge, count: int, left_s: float | None = None
) -> None:
    """Time the fastest candidates within budget side by side with the original; their
    latencies and speedups become these medians, measured at the same moments. With
    ``left_s`` (what is left of a time budget), each round runs fewer than FINAL_ITERATIONS
    times to fit, never fewer than MIN_FINAL_ITERATIONS."""
    within = [c for c in search.candidates if c.within and c.path is not None]
    within.sort(key=lambda c: c.result.final_ms or np.inf)
    finalists = within[:count]
    if not finalists:
        return
    models = [original, *(Model.load(c.path) for c in finalists if c.path is not None)]
    iterations = FINAL_ITERATIONS
    if left_s is not None:
        per_run_s = max(search.baseline_ms, 1e-3) / 1e3
        fits = int(left_s / (FINAL_ROUNDS * len(models) * per_run_s))
        iterations = max(MIN_FINAL_ITERATIONS, min(FINAL_ITERATIONS, fits))
    rounds = judge.rounds(models, rounds=FINAL_ROUNDS, iterations=iterations)
    del models
    search.baseline_rounds_ms = rounds[0]
    search.baseline_ms = statistics.median(rounds[0])
    for c in search.candidates:
        c.result.baseline_ms = search.baseline_ms
    for c, timed in zip(finalists, rounds[1:], strict=True):
        c.rounds_ms = timed
        c.result.final_ms = statistics.median(timed)


def _closest_misses(candidates: Sequence[Candidate], judge: Judge) -> list[Recipe]:
    """Per int8 pass (static, dynamic), the recipe whose int8 step came closest to the budget
    before it was rolled back: the one worth keeping a few sensitive nodes in fp32 for."""
    best: dict[str, tuple[float, Recipe]] = {}
    for c in candidates:
        for step in c.result.steps:
            name = step.label.split("(")[0]
            if step.status == "rolled back" and name in _EXCLUDING and step.metric is not None:
                miss = judge.budget.miss(step.metric)
                if name not in best or miss < best[name][0]:
                    best[name] = (miss, c.recipe)
    return [recipe for _, recipe in best.values()]


def _nothing_more_to_exclude(candidate: Candidate, excluded: int) -> bool:
    """Every node int8 could take is excluded, or the ranking had fewer than ``excluded``
    nodes: excluding more cannot change the model."""
    for step in candidate.result.steps:
        if step.label.split("(")[0] not in _EXCLUDING:
            continue
        ranked = step.details.get("sensitive_nodes")
        if step.status == "no change" or (ranked is not None and len(ranked) < excluded):
            return True
    return False


def _excluding(recipe: Recipe, count: int) -> Recipe:
    """``recipe`` with its int8 pass leaving the ``count`` most sensitive nodes fp32."""
    from dataclasses import replace

    return Recipe(
        [
            replace(p, exclude_sensitive=count) if p.name in _EXCLUDING else p  # type: ignore[call-arg]
            for p in recipe.passes
        ]
    )


def _choose(search: SearchResult, judge: Judge) -> None:
    timed = [i for i, c in enumerate(search.candidates) if c.within and c.rounds_ms]
    if timed:
        best = min(timed, key=lambda i: search.candidates[i].result.final_ms or np.inf)
        candidate = search.candidates[best]
        result = candidate.result
        if not always_faster(search.baseline_rounds_ms, candidate.rounds_ms):
            search.reason = (
                f"no candidate within {search.budget} is faster than the original by "
                f"{FASTER:.0%} in every one of {FINAL_ROUNDS} side-by-side rounds (best: "
                f"{candidate.recipe.label()}, {result.speedup or 0:.2f}x); the original is kept"
            )
            return
        search.chosen = best
        search.reason = (
            f"fastest within {search.budget}: {candidate.recipe.label()} "
            f"({result.speedup:.2f}x, metric {result.final_metric:.6g}; faster than the "
            f"original in all {FINAL_ROUNDS} side-by-side rounds)"
        )
        return
    if any(c.within for c in search.candidates):
        search.reason = "no candidate within the budget could be timed; the original is kept"
        return
    tried = [
        i
        for i, c in enumerate(search.candidates)
        if c.result.kept and c.result.final_metric is not None
    ]
    if not tried:
        search.reason = f"{_why_none(search.candidates)}; the original is kept"
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


def _why_none(candidates: Sequence[Candidate], shown: int = 8) -> str:
    """Why no candidate kept a pass: "nothing could be produced: <reasons>" when every pass
    failed or changed nothing, else "no candidate kept a pass: <reasons>"; each distinct
    reason once."""
    steps = [s for c in candidates for s in c.result.steps]
    reasons = list(dict.fromkeys(f"{s.label} {s.status}: {s.reason}" for s in steps))
    more = len(reasons) - shown
    why = "; ".join(reasons[:shown]) + (f"; and {more} more" if more > 0 else "")
    if all(s.status in PRODUCED_NOTHING for s in steps):
        return f"nothing could be produced: {why or 'no candidate'}"
    return f"no candidate kept a pass: {why}"
