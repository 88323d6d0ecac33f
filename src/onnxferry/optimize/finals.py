"""The side-by-side timing that decides ``auto_search``: each candidate within budget paired
with the original, then the finalists in longer rounds, and the choice.

    speedup = paired_speedup(judge, original, candidate_model, baseline_ms)  # PAIR_ROUNDS
    time_finalists(search, original, judge, FINALISTS)   # FINAL_ROUNDS, every model each round
    choose_finalist(search, judge)                       # search.chosen and search.reason
    flush_denormals(search, original, judge, holdout, workdir)  # the answer, marked if faster

Paired rounds are short and, on a busy machine, scatter by up to 20 %; the choice rests on
the finals, where every model runs in every round (drift hits them alike). A candidate is
chosen only if it beat the original by FASTER in every final round, and a recipe over the
fastest one-liner only if it beat that one-liner so too. Then the answer (or the original,
when nothing was chosen) marked to run with denormals flushed (``flush``) replaces it when that
holds the budget and is faster by FASTER in every side-by-side round.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from .candidates import Candidate, SearchResult, short_label
from .catalog import make_pass
from .chain import FASTER, PRODUCED_NOTHING, Judge, always_faster, apply_recipe
from .recipe import Recipe

FINALISTS = 3
"""How many of the fastest candidates within budget are timed again, side by side."""
FINAL_ROUNDS = 5
FINAL_ITERATIONS = 30
"""Timed runs per model per side-by-side round (fewer when a time budget runs short)."""
MIN_FINAL_ITERATIONS = 5
FINAL_ROUND_MS = 150.0
"""A finalist round runs at least this long per model (more runs for fast models, up to 500)."""
PAIR_ROUNDS = 3
PAIR_ITERATIONS = 15
"""Each candidate within budget: rounds and runs per round, interleaved with the original."""
PAIR_ROUND_MS = 60.0
"""A paired round runs at least this long per model (more runs for fast models, up to 300):
a sub-millisecond model timed 15 times is noise on a loaded machine."""
MIN_PAIR_ITERATIONS = 5
"""Fewest timed runs per paired round, where a time budget runs short (a slow model)."""
FINALIST_FLOOR = 0.8
"""A candidate whose paired speedup is under this is not timed again: paired rounds misrank
by up to 20 %, not by more, and the finals run every model alike (a quantize_dynamic model
of a CNN at 0.2x made a ResNet-50 search's finals 5x as long as the original's runs)."""
PROVISIONAL_S = 2.0
PROVISIONAL_SHARE = 0.05
"""The first, provisional timing of the original (it sizes the rounds) takes about
PROVISIONAL_S, or this share of a time budget when that is less."""


def runs_per_round(baseline_ms: float, floor: int, round_ms: float, ceiling: int) -> int:
    """Runs per round: at least ``floor``, enough for ``round_ms`` at ``baseline_ms`` a run."""
    return max(floor, min(ceiling, int(round_ms / max(baseline_ms, 1e-3))))


def _fitted(runs: int, least: int, left_s: float | None, per_round: int, ms: float) -> int:
    """``runs`` per round, fewer so that ``per_round`` sessions' rounds fit ``left_s`` at
    ``ms`` a run, never under ``least`` (``runs`` as it is without a time budget)."""
    if left_s is None:
        return runs
    fits = int(left_s / (per_round * max(ms, 1e-3) / 1e3)) - 1  # and a warmup run a round
    return max(least, min(runs, fits))


def final_runs(baseline_ms: float, models: int, left_s: float | None) -> int:
    """Runs per side-by-side round of ``models`` models: FINAL_ITERATIONS, or FINAL_ROUND_MS
    of runs when that is more; with ``left_s`` (what is left of a time budget) fewer to fit,
    never fewer than MIN_FINAL_ITERATIONS."""
    iterations = runs_per_round(baseline_ms, FINAL_ITERATIONS, FINAL_ROUND_MS, 500)
    return _fitted(iterations, MIN_FINAL_ITERATIONS, left_s, FINAL_ROUNDS * models, baseline_ms)


def pair_runs(baseline_ms: float, left_s: float | None = None) -> int:
    """Runs per paired round: PAIR_ITERATIONS, or PAIR_ROUND_MS of runs when that is more;
    with ``left_s`` fewer to fit, never fewer than MIN_PAIR_ITERATIONS."""
    runs = runs_per_round(baseline_ms, PAIR_ITERATIONS, PAIR_ROUND_MS, 300)
    return _fitted(runs, MIN_PAIR_ITERATIONS, left_s, PAIR_ROUNDS * 2, baseline_ms)


def least_candidate_s(baseline_ms: float, metric_runs: int) -> float:
    """The least seconds one more candidate costs at ``baseline_ms`` a run: the runs of its
    metric, its paired rounds and the finals it may join (beside the original), each at its
    fewest runs; its passes' own time comes on top. A time budget with less left starts no
    candidate: its timing alone would overrun the budget."""
    paired = _rounds_runs(PAIR_ROUNDS, MIN_PAIR_ITERATIONS)
    return (metric_runs + paired + _rounds_runs(FINAL_ROUNDS, MIN_FINAL_ITERATIONS)) * (
        baseline_ms / 1e3
    )


def _rounds_runs(rounds: int, runs: int, sessions: int = 2) -> int:
    """Runs in ``rounds`` side-by-side rounds of ``sessions`` sessions, a warmup run each."""
    return rounds * sessions * (runs + 1)


def provisional_s(time_budget_s: float | None) -> float:
    """Seconds for the original's provisional timing (PROVISIONAL_S, PROVISIONAL_SHARE)."""
    if time_budget_s is None:
        return PROVISIONAL_S
    return min(PROVISIONAL_S, PROVISIONAL_SHARE * time_budget_s)


def paired_speedup(
    judge: Judge,
    original: Model,
    candidate: Model,
    baseline_ms: float,
    left_s: float | None = None,
) -> float:
    """The median over PAIR_ROUNDS interleaved rounds of the original's p50 over
    ``candidate``'s (drift hits both alike); ``left_s`` as in ``pair_runs``."""
    runs = pair_runs(baseline_ms, left_s)
    base, cand = judge.rounds([original, candidate], rounds=PAIR_ROUNDS, iterations=runs)
    ratio = statistics.median(b / max(c, 1e-9) for b, c in zip(base, cand, strict=True))
    return max(ratio, 1e-9)


def time_finalists(
    search: SearchResult, original: Model, judge: Judge, count: int, left_s: float | None = None
) -> None:
    """Time the fastest candidates within budget side by side with the original; their
    latencies and speedups become these medians, measured at the same moments. The fastest
    one-liner within budget is always among them, and every other one-liner whose paired
    speedup could make it the choice (faster than the original by FASTER). Each round runs
    FINAL_ITERATIONS times, or for FINAL_ROUND_MS per model when that is more; with ``left_s``
    (what is left of a time budget) fewer to fit, never fewer than MIN_FINAL_ITERATIONS."""
    within = [c for c in search.candidates if _finalist(c)]
    within.sort(key=lambda c: c.result.final_ms or np.inf)
    finalists = within[:count]
    liners = [c for c in within if c.one_liner]
    if liners and not any(c.one_liner for c in finalists):
        finalists[-1] = liners[0]
    # A paired measurement (3 short rounds) can misrank candidates by 20 % on a busy machine:
    # every one-liner that could be chosen (faster than the original by FASTER) is timed
    # again, so the choice among them, and against a recipe, is made in the finals.
    finalists += [
        c for c in liners if c not in finalists and (c.pair_speedup or 0.0) >= 1 / (1 - FASTER)
    ]
    if not finalists:
        return
    models = [original, *(Model.load(c.path) for c in finalists if c.path is not None)]
    iterations = final_runs(search.baseline_ms, len(models), left_s)
    rounds = judge.rounds(models, rounds=FINAL_ROUNDS, iterations=iterations)
    del models
    search.baseline_rounds_ms = rounds[0]
    search.baseline_ms = statistics.median(rounds[0])
    for c in search.candidates:
        c.result.baseline_ms = search.baseline_ms
        if c.pair_speedup is not None:  # its paired ratio, against the final baseline
            c.result.final_ms = search.baseline_ms / c.pair_speedup
    for c, timed in zip(finalists, rounds[1:], strict=True):
        c.rounds_ms = timed
        c.result.final_ms = statistics.median(timed)


def _finalist(c: Candidate) -> bool:
    """Within budget, on disk, and not clearly slower than the original (FINALIST_FLOOR)."""
    slow = c.pair_speedup is not None and c.pair_speedup < FINALIST_FLOOR
    return c.within and c.path is not None and not slow


def _best_timed(search: SearchResult, timed: list[int]) -> tuple[int, str]:
    """The fastest timed finalist; but the fastest one-liner when the other did not beat it
    by FASTER in every side-by-side round (a difference within the noise does not justify a
    recipe over what the user would get from the one-liner) and that one-liner itself beat
    the original in every round. With a note when the one-liner was preferred."""
    candidates = search.candidates
    best = min(timed, key=lambda i: candidates[i].result.final_ms or np.inf)
    liners = [i for i in timed if candidates[i].one_liner]
    if not liners:
        return best, ""
    liner = _plainest(search, liners)
    if candidates[best].one_liner:
        return liner, ""
    beaten = always_faster(candidates[liner].rounds_ms, candidates[best].rounds_ms)
    if beaten or not always_faster(search.baseline_rounds_ms, candidates[liner].rounds_ms):
        return best, ""
    note = (
        f"{short_label(candidates[best])} was not faster than this one-liner by {FASTER:.0%} in "
        "every side-by-side round, so the one-liner is kept"
    )
    return liner, note


def _plainest(search: SearchResult, liners: list[int]) -> int:
    """The fastest one-liner; but plain ``quantize_dynamic`` (no options) in place of the
    per-channel one when that did not beat it by FASTER in every side-by-side round: BERT-base
    on AMX timed them 1 % apart one way in the finals and 0.6 % the other way in the benchmark,
    and a tie goes to the call a user makes first."""
    candidates = search.candidates
    fastest = min(liners, key=lambda i: candidates[i].result.final_ms or np.inf)
    plain = [i for i in liners if _quantize_dynamic(candidates[i]) == {}]
    if not plain or _quantize_dynamic(candidates[fastest]) is None or fastest in plain:
        return fastest
    beaten = always_faster(candidates[plain[0]].rounds_ms, candidates[fastest].rounds_ms)
    return fastest if beaten else plain[0]


def _quantize_dynamic(candidate: Candidate) -> dict[str, Any] | None:
    """The options a quantize_dynamic one-liner was called with ({} for the plain call, as
    ``plain_recipes`` makes it); None for any other recipe."""
    passes = candidate.recipe.passes
    if len(passes) != 1 or passes[0].name != "int8_dynamic":
        return None
    plain = make_pass("int8_dynamic", {"preprocess": False}).params()
    return {k: v for k, v in passes[0].params().items() if plain[k] != v}


def choose_finalist(search: SearchResult, judge: Judge) -> None:
    """Choose the fastest timed finalist when it beat the original in every side-by-side round
    (``search.chosen``); otherwise the original is kept. ``search.reason`` says which and why."""
    timed = [i for i, c in enumerate(search.candidates) if c.within and c.rounds_ms]
    if timed:
        best, preferred = _best_timed(search, timed)
        candidate = search.candidates[best]
        result = candidate.result
        if not always_faster(search.baseline_rounds_ms, candidate.rounds_ms):
            search.reason = (
                f"no candidate within {search.budget} is faster than the original by "
                f"{FASTER:.0%} in every one of {FINAL_ROUNDS} side-by-side rounds (best: "
                f"{short_label(candidate)}, {result.speedup or 0:.2f}x); the original is kept"
            )
            return
        search.chosen = best
        held = (
            f", held-out {candidate.held_out_metric:.6g}"
            if candidate.held_out_metric is not None
            else ""
        )
        search.reason = (
            f"fastest within {search.budget}: {short_label(candidate)} "
            f"({result.speedup:.2f}x, metric {result.final_metric:.6g}{held}; faster than the "
            f"original in all {FINAL_ROUNDS} side-by-side rounds)"
            + (f"; {preferred}" if preferred else "")
        )
        return
    within = [c for c in search.candidates if c.within]
    paired = [c for c in within if c.pair_speedup is not None]
    if paired and not any(_finalist(c) for c in within):
        fastest = max(paired, key=lambda c: c.pair_speedup or 0.0)
        search.reason = (
            f"every candidate within {search.budget} ran slower than {FINALIST_FLOOR:.0%} of "
            f"the original's speed in paired rounds (best: {short_label(fastest)}, "
            f"{fastest.pair_speedup or 0:.2f}x); the original is kept"
        )
        return
    if within:
        search.reason = "no candidate within the budget could be timed; the original is kept"
        return
    refused = [c for c in search.candidates if c.refused and c.held_out_metric is not None]
    if refused:
        best_refused = min(refused, key=lambda c: judge.budget.miss(c.held_out_metric or 0.0))
        there = best_refused.held_out_metric or 0.0
        search.misses_by = judge.budget.miss(there)
        search.reason = (
            f"refused: {len(refused)} candidate(s) met {search.budget} on the data the search "
            "tuned on but not on the held-out data, or there by less than the drift between "
            f"the two (best: {short_label(best_refused)}, "
            f"{best_refused.result.final_metric:.6g} there, {there:.6g} on the held-out data); "
            "nothing holds on held-out data, the original is kept"
        )
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
        f"{short_label(search.candidates[closest])} with {metric:.6g}, missing by "
        f"{judge.budget.miss(metric):.3g}"
    )


def _why_none(candidates: Sequence[Candidate], shown: int = 8) -> str:
    """Why no candidate kept a pass: "nothing could be produced: <reasons>" when every pass
    failed or changed nothing, else "no candidate kept a pass: <reasons>"; each distinct
    reason once ("no candidate ran" when none did: a time budget too short)."""
    steps = [s for c in candidates for s in c.result.steps]
    if not steps:
        return "no candidate ran"
    reasons = list(dict.fromkeys(f"{s.label} {s.status}: {s.reason}" for s in steps))
    more = len(reasons) - shown
    why = "; ".join(reasons[:shown]) + (f"; and {more} more" if more > 0 else "")
    if all(s.status in PRODUCED_NOTHING for s in steps):
        return f"nothing could be produced: {why}"
    return f"no candidate kept a pass: {why}"


def flush_denormals(
    search: SearchResult,
    original: Model,
    judge: Judge,
    holdout: Judge | None,
    workdir: Path,
    spare_s: float | None = None,
) -> None:
    """The answer (``search.chosen``, or ``original`` when the search kept it) marked by the
    flush_denormals pass, as a candidate of its own; chosen when within the budget (the
    held-out one too) and faster than the answer by FASTER in every side-by-side round (as
    many runs a round as the finals, fewer to fit ``spare_s``, the seconds a time budget
    leaves it; listed as untried when even MIN_FINAL_ITERATIONS would not fit). Not tried on
    a closest miss (nothing within the budget)."""
    if not search.ok:
        return
    base = search.candidates[search.chosen] if search.chosen is not None else None
    base_ms = (base.result.final_ms if base is not None else None) or search.baseline_ms
    flush = Recipe.of(["flush_denormals"])
    if spare_s is not None:  # the metric on every feed set, then the side-by-side rounds
        judged = len(judge.feeds) + (len(holdout.feeds) if holdout is not None else 0)
        spare_s -= judged * base_ms / 1e3
        if spare_s < _rounds_runs(FINAL_ROUNDS, MIN_FINAL_ITERATIONS) * base_ms / 1e3:
            search.untried.append(flush.label())
            return
    model = base.load() if base is not None else original
    if model is None:
        return
    index = len(search.candidates)
    runs = final_runs(base_ms, 2, spare_s)
    marked, result = apply_recipe(
        model, flush, judge, workdir=workdir / f"candidate{index}", baseline_ms=base_ms,
        timing_runs=runs,
    )  # fmt: skip
    step = result.steps[0]
    step.model = None  # on disk below, as every candidate's (one model in memory at a time)
    if base is not None:
        result = dataclasses.replace(
            result,
            steps=[*base.result.steps, step],
            kept=[*base.result.kept, *result.kept],
            final_metric=result.final_metric or base.result.final_metric,
        )
    result.baseline_ms = search.baseline_ms
    candidate = Candidate(Recipe([*(base.recipe.passes if base else []), *flush.passes]), result)
    search.candidates.append(candidate)
    if step.status != "kept" or step.latency_ms is None:
        candidate.path = base.path if base is not None else None  # the answer, unmarked
        if base is not None:  # the same model as the answer: the same held-out verdict
            candidate.held_out_metric, candidate.refused = base.held_out_metric, base.refused
        return
    candidate.path = marked.save(workdir / f"candidate{index}" / "final.onnx").path
    # the marked model's time on the finals' scale: its ratio to the answer in its own rounds
    result.final_ms = base_ms * step.latency_ms / step.details.get("input_ms", step.latency_ms)
    if holdout is not None:
        held = candidate.held_out_metric = holdout.metric(marked)
        tuned = result.final_metric if result.final_metric is not None else held
        candidate.refused = not holdout.budget.generalizes(tuned, held)
    if not candidate.within:
        return
    search.chosen = index
    search.reason += (
        f"; marked by flush_denormals (denormal floats flushed to zero) it ran faster in every "
        f"one of {FINAL_ROUNDS} side-by-side rounds (p50 {step.details.get('input_ms', 0):.3f} "
        f"-> {step.latency_ms:.3f} ms)"
    )
