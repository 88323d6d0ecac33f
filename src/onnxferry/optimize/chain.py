"""Apply a recipe under an accuracy budget: every pass verified, rolled back or dropped.

    judge = Judge(model, [feeds], Budget.parse("cosine>=0.99"))   # the original's outputs
    final, result = apply_recipe(model, Recipe.load("r.toml"), judge, workdir=Path("work"))
    result.steps                # kept / rolled back / dropped / failed, and why
    result.outcome              # "kept fold -> int8_dynamic", or why the result is the input

Each pass runs on the model before it. The chain so far is judged against the original on the
validation feeds (worst case, see ``budget``): a pass that breaks the budget is rolled back; a
pass that is not measurably faster on this machine (p50 of the foundation's bench, interleaved
rounds) is dropped unless the caller optimizes for size; a pass that cannot handle the model,
or whose result the onnx checker rejects while it accepts the pass's input, fails with its
reason and the chain goes on without it. When no pass is kept the result is the input, and
``ChainResult.outcome`` says so and why ("nothing could be produced: ...").
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FerryError, one_line
from ..measure import measure, within
from ..model import Model
from ..report import Table
from ..runtime import OrtRunner, SessionConfig, create_session
from .base import Pass, PassContext
from .budget import Budget
from .recipe import Recipe

FASTER = 0.03
"""A pass must cut p50 latency by at least this fraction to count as faster."""
PRODUCED_NOTHING = ("failed", "no change")
"""Step statuses of a pass that produced no model to judge."""
WARMUP = 3
"""Untimed runs before a model's first timed round (one before each later round)."""


@dataclass
class Step:
    """What happened to one pass of the recipe."""

    label: str
    status: str  # "kept", "rolled back", "dropped", "failed", "no change"
    reason: str = ""
    metric: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    model: Model | None = field(default=None, repr=False)  # the pass's output, when kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": self.label,
            "status": self.status,
            "reason": self.reason,
            "metric": self.metric,
            "latency_ms": self.latency_ms,
            "size_bytes": self.size_bytes,
            "details": self.details,
        }


@dataclass
class ChainResult:
    """A recipe's run (ReportBody): each step, the budget, and where the model ended up."""

    model: str
    budget: str
    baseline_ms: float
    baseline_size: int
    steps: list[Step] = field(default_factory=list)
    final_metric: float | None = None
    final_ms: float | None = None
    final_size: int | None = None
    kept: list[str] = field(default_factory=list)
    within_budget: bool = True

    @property
    def ok(self) -> bool:
        return self.within_budget

    @property
    def speedup(self) -> float | None:
        if self.final_ms is None or self.final_ms <= 0:
            return None
        return self.baseline_ms / self.final_ms

    @property
    def outcome(self) -> str:
        """One line: what was kept, or that the result is the input unchanged, and why."""
        if self.kept:
            return f"kept {' -> '.join(self.kept)}"
        why = "; ".join(f"{s.label} {s.status}: {s.reason}" for s in self.steps) or "no pass"
        if all(s.status in PRODUCED_NOTHING for s in self.steps):
            return f"nothing could be produced: {why}; the result is the input model unchanged"
        return f"no pass was kept: {why}; the result is the input model unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "budget": self.budget,
            "baseline_ms": self.baseline_ms,
            "baseline_size_bytes": self.baseline_size,
            "final_ms": self.final_ms,
            "final_size_bytes": self.final_size,
            "final_metric": self.final_metric,
            "speedup": self.speedup,
            "within_budget": self.within_budget,
            "kept": self.kept,
            "outcome": self.outcome,
            "steps": [s.to_dict() for s in self.steps],
        }

    def tables(self) -> list[Table]:
        rows: list[tuple[Any, ...]] = [
            ("(original)", "-", 1.0 if self.budget.startswith(("cosine", "top1")) else 0.0,
             self.baseline_ms, 1.0, self.baseline_size / 2**20, "")
        ]  # fmt: skip
        for s in self.steps:
            speedup = self.baseline_ms / s.latency_ms if s.latency_ms else None
            size = s.size_bytes / 2**20 if s.size_bytes else None
            rows.append((s.label, s.status, s.metric, s.latency_ms, speedup, size, s.reason))
        columns = ("pass", "result", "metric", "p50 ms", "speedup", "MiB", "why")
        return [Table(f"optimize {self.model} (budget {self.budget})", columns, rows)]


@dataclass
class Judge:
    """The original's outputs on the validation feeds, and how to score a candidate."""

    original: Model
    feeds: list[dict[str, np.ndarray]]
    budget: Budget
    labels: list[np.ndarray] | None = None
    provider: str = "cpu"
    threads: int | None = None
    timing: dict[str, np.ndarray] | None = None
    """The feeds latency is measured on (default: the last, largest validation set)."""
    reference: list[dict[str, np.ndarray]] = field(default_factory=list)
    precision: str = "fp32"
    """What ``provider`` computes candidates in (tensorrt, openvino: fp16); the original's
    reference outputs are computed at fp32, so a candidate's metric includes what the
    precision loses."""
    engine_cache: Path | None = None

    def __post_init__(self) -> None:
        at_fp32 = dataclasses.replace(self._config(), precision="fp32")
        runner = OrtRunner(self.original, config=at_fp32)
        self.reference = [runner.run(f) for f in self.feeds]

    @property
    def timing_feeds(self) -> dict[str, np.ndarray]:
        return self.timing if self.timing is not None else self.feeds[-1]

    def _config(self) -> SessionConfig:
        return SessionConfig(
            provider=self.provider,
            threads=self.threads,
            precision=self.precision,
            engine_cache=self.engine_cache,
        )

    def metric(self, model: Model) -> float:
        runner = OrtRunner(model, config=self._config())
        outputs = [runner.run(f) for f in self.feeds]
        return self.budget.measure(self.reference, outputs, self.labels)

    def latency_ms(self, *models: Model, rounds: int = 3, iterations: int = 30) -> list[float]:
        """p50 latency of each model, median over interleaved rounds (see ``rounds``)."""
        return [statistics.median(v) for v in self.rounds(models, rounds, iterations)]

    def faster(
        self, before: Model, after: Model, iterations: int = 30
    ) -> tuple[float, float, bool]:
        """(p50 before, p50 after, whether ``after`` is faster by FASTER in every one of five
        interleaved rounds of ``iterations`` runs): one lucky round on a noisy machine does not
        make a pass faster."""
        old, new = self.rounds((before, after), rounds=5, iterations=iterations)
        return statistics.median(old), statistics.median(new), always_faster(old, new)

    def quick_ms(self, model: Model, seconds: float) -> float:
        """p50 latency (ms) of one round of up to 3 warmup and 30 timed runs, fewer where a run
        is so slow that they would take much longer than ``seconds`` (never under 1 and 3): a
        provisional scale, sized to what a time budget can spare."""
        session, feeds = create_session(model, self._config()), self.timing_feeds
        timing = within(session, feeds, seconds, warmup=WARMUP, iterations=30, least=3)
        lat = measure(session, feeds, warmup=timing.warmup, iterations=timing.iterations)
        return statistics.median(lat) * 1e3

    def rounds(self, models: Sequence[Model], rounds: int, iterations: int) -> list[list[float]]:
        """Per model, the p50 (ms) of each round on the timing feeds; the models take turns
        within a round so drift on a noisy machine hits them alike. Each model's first round
        starts with WARMUP runs, later ones with one (caches refilled after the others ran)."""
        sessions = [create_session(m, self._config()) for m in models]
        feeds = self.timing_feeds
        per_model: list[list[float]] = [[] for _ in models]
        for r in range(rounds):
            for i, session in enumerate(sessions):
                warmup = WARMUP if r == 0 else 1
                lat = measure(session, feeds, warmup=warmup, iterations=iterations)
                per_model[i].append(statistics.median(lat) * 1e3)
        return per_model


def always_faster(before: Sequence[float], after: Sequence[float]) -> bool:
    """``after`` beat ``before`` by FASTER in every round (both timed in the same rounds)."""
    return all(b <= a * (1 - FASTER) for a, b in zip(before, after, strict=True))


def apply_recipe(
    model: Model,
    recipe: Recipe,
    judge: Judge,
    *,
    for_size: bool = False,
    workdir: Path,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    speed_check: bool = True,
    baseline_ms: float | None = None,
    timing_runs: int = 30,
) -> tuple[Model, ChainResult]:
    """Run ``recipe`` on ``model`` under ``judge``'s budget; returns the final model (its
    files live in ``workdir``: save it before the caller removes that) and what happened.
    ``baseline_ms`` is ``model``'s latency when the caller has measured it already;
    ``timing_runs`` the runs per round when a pass is timed against its input."""
    ctx = PassContext(workdir, judge.feeds, calibration, judge.provider)
    if baseline_ms is None:
        (baseline_ms,) = judge.latency_ms(model)
    result = ChainResult(model.name, judge.budget.text(), baseline_ms, model.size_bytes)
    current, current_ms = model, baseline_ms
    for step in recipe.passes:
        record = _run_step(
            step, current, current_ms, ctx, judge, for_size, speed_check, timing_runs
        )
        result.steps.append(record)
        if record.status == "kept" and record.model is not None:
            current = record.model
            current_ms = record.latency_ms or current_ms
            result.kept.append(step.label())
    result.final_ms = current_ms
    result.final_size = current.size_bytes
    result.final_metric = judge.metric(current) if result.kept else None
    result.within_budget = result.final_metric is None or judge.budget.holds(result.final_metric)
    return current, result


def _run_step(
    step: Pass,
    current: Model,
    current_ms: float,
    ctx: PassContext,
    judge: Judge,
    for_size: bool,
    speed_check: bool,
    timing_runs: int = 30,
) -> Step:
    label = step.label()
    try:
        applied = step.apply(current, ctx)
    except FerryError as e:
        return Step(label, "failed", str(e))
    except Exception as e:  # a library's own failure inside the pass: the chain goes on
        return Step(label, "failed", f"{step.name}: {one_line(f'{type(e).__name__}: {e}')}")
    record = Step(label, "no change", details=dict(applied.details))
    record.size_bytes = applied.model.size_bytes
    if applied.notes:
        record.details["notes"] = list(applied.notes)
    if not applied.changed:
        record.reason = "; ".join(applied.notes) or "nothing to do on this model"
        return record
    from .output import output_problem  # pass plumbing: loaded when a pass has run

    problem = output_problem(applied.model, current)
    if problem is not None:
        record.status = "failed"
        record.reason = f"{step.name}: the result is not a valid ONNX model: {problem}"
        return record
    try:
        record.metric = judge.metric(applied.model)
    except FerryError as e:
        record.status, record.reason = "failed", f"{step.name}: the result does not run: {e}"
        return record
    if not judge.budget.holds(record.metric):
        record.status = "rolled back"
        record.reason = f"breaks the budget {judge.budget.text()} (got {record.metric:.6g})"
        return record
    if speed_check:
        before, after, faster = judge.faster(current, applied.model, timing_runs)
        record.latency_ms = after
        record.details["input_ms"] = before  # the pass's input, timed in the same rounds
        if not faster and not for_size:
            record.status = "dropped"
            record.reason = (
                f"not measurably faster on this machine (p50 {after:.3f} ms vs {before:.3f} ms)"
                + ("; " + "; ".join(applied.notes) if applied.notes else "")
            )
            return record
        if not faster:
            record.reason = "kept for size (not faster)"
    record.status = "kept"
    record.model = applied.model
    return record
