"""Automatic search: the fastest model within the budget, judged on data it was not tuned on.

    best, search = auto_search(model, judge, workdir, holdout=judge, time_budget_s=60)
    search.tables()      # every candidate: speedup, metric on tuning and held-out data, within
    search.layers        # per MatMul/Gemm/Conv: int8 or fp32, its measured error and fp32 time

Candidates (``candidate_plan``): the one-liners a user would try first, always and first (ORT's
offline graph optimization, onnxslim, plain ``quantize_dynamic`` per tensor and per channel on
the model as it is), then, ordered by expected gain per second of search, int8 dynamic after
ORT's pre-processing (shape inference) and static QDQ (U8S8; S8S8
where the CPU has VNNI/AMX), SmoothQuant at several alphas before int8, ORT's transformer
fusions before int8 (so attention and LayerNorm still fuse), weight-only int4/int8
(MatMulNBits, where ORT has fast kernels here) and fp16 on providers with fast fp16.
``format_plan`` says which formats are skipped on this CPU, and why.

Mixed precision: for the int8 candidate of each kind (dynamic, static) that came closest to
the budget, per-node decisions are searched in both directions, bisecting against the budget:
from all-int8, restore the nodes with the worst measured int8 error to fp32; from fp32,
quantize the nodes with the least error per measured fp32 millisecond (``mixed``). Every
decision is an explicit ``nodes_to_exclude`` in the candidate's recipe, so the saved recipe
rebuilds the chosen model exactly.

Channel pruning, last and in the time left: the largest share of each layer's channels that
``prune_channels`` (which refits the next layer to the original's outputs on the tuning data)
removes within the budget, bisected over PRUNE_RATIOS, then the fastest int8 recipe within
budget on top of it. It is what makes a small CNN faster where int8 kernels are not (an
AVX-512 CPU without VNNI).

Timing: at the judge's timing feeds (batch 1 unless the user names one); every candidate
within budget is timed side by side with the original in interleaved rounds (its speedup is
the median of the per-round ratios), and the finalists (always including the fastest
one-liner within budget) again in FINAL_ROUNDS rounds; one is chosen only when it beats the
original by FASTER in every round, and a recipe over the fastest one-liner only when it beat
that one-liner by FASTER in every round too (so the answer is never slower than the one-liner
but for noise).

Honest budget: ``judge`` holds the tuning data (rollbacks, calibration, sensitivity);
``holdout`` the judging data. A candidate within budget on the tuning data is measured on the
held-out data too and refused when it misses there, or clears it by less than the drift
between the two (``Budget.generalizes``); when every candidate is refused or
misses, the search says so and is not ok (the verb exits 1). With ``time_budget_s`` no new
candidate starts once the time is spent; ``untried`` lists the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model
from .candidates import Candidate, SearchResult, short_label
from .chain import PRODUCED_NOTHING, Judge, apply_recipe
from .finals import (
    FINALISTS,
    choose_finalist,
    flush_denormals,
    least_candidate_s,
    paired_speedup,
    provisional_s,
    time_finalists,
)
from .recipe import Recipe

FAST_FP16 = {"cuda", "tensorrt", "rocm", "dml", "coreml"}
SMOOTH_ALPHAS = (0.3, 0.5, 0.7)
SENSITIVE_STEPS = (1, 2, 4, 8, 16)
"""Kept for callers of the earlier ladder; the mixed search bisects instead."""
_EXCLUDING = ("int8_static", "int8_dynamic")
FLUSH_SHARE = 0.05
"""The share of a spent time budget the answer's flush_denormals step may still take."""
_RANK_SAMPLES = 16
PRUNE_RATIOS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
"""The shares of each layer's channels the pruning search bisects over."""
PRUNE_SAMPLES = 16
"""Feed sets a pruning candidate's refits run the model on."""

DYNAMIC_SLOW = 0.8
"""When every plain quantize_dynamic one-liner runs slower than this fraction of the
original's speed (paired rounds), no other recipe with dynamic int8 is tried: a CNN's
ConvInteger has no fast kernel in ONNX Runtime's CPU provider (a 3D VNet ran at 0.27x), and
five more such recipes spent a search's whole budget before static int8 was reached."""


@dataclass(frozen=True)
class Planned:
    """A candidate recipe before it runs: whether it is a one-liner (always tried, first), its
    expected speed gain (fraction of latency saved) and cost (relative search seconds)."""

    recipe: Recipe
    one_liner: bool = False
    gain: float = 0.1
    cost: float = 1.0
    needs: str = ""
    """A pass that must change the model on its own first (else this recipe is skipped)."""


def default_time_budget(size_bytes: int) -> float:
    """``--auto``'s time budget when none is given: 150 s plus 1.3 s per MB of model, at most
    780 s (a 6-layer MiniLM-size encoder about 270 s, BERT-base about 13 minutes), so the
    search ends within 5 and 15 minutes on a 2-core machine."""
    return min(780.0, 150.0 + 1.3 * size_bytes / 1e6)


def plain_recipes() -> list[Recipe]:
    """What a user tries first: ORT's offline optimization, onnxslim, plain quantize_dynamic
    (default and per channel) as a user calls it, on the model as it is (no
    ``quant_pre_process``: the model the one-liner writes). Always among the candidates, judged
    by the same budget."""
    return [
        Recipe.of([("ort_graph", {"level": "extended"})]),
        Recipe.of(["slim"]),
        Recipe.of([("int8_dynamic", {"preprocess": False})]),
        Recipe.of([("int8_dynamic", {"per_channel": True, "preprocess": False})]),
    ]


def candidate_plan(provider: str = "cpu") -> list[Planned]:
    """Every candidate ``auto_search`` tries: the one-liners first, then the rest by expected
    gain per second of search (priors, not measurements). Formats ``format_plan`` marks slow
    on this CPU are left out. On x86 CPUs without VNNI, static and per-channel int8 use 7-bit
    weights (``reduce_range``): full-range u8s8 products saturate there (static per-tensor
    int8 of the trained CNN lost 1 % top-1 agreement on such a CPU, none with 7 bits)."""
    from .cpu_features import format_plan, int8_features, x86_without_vnni

    formats = format_plan(provider)
    channel: dict[str, Any] = {"per_channel": True}
    tensor: dict[str, Any] = {}
    if provider == "cpu" and x86_without_vnni():
        channel["reduce_range"] = tensor["reduce_range"] = True
    plan = [Planned(r, one_liner=True, gain=0.3, cost=1.0) for r in plain_recipes()]
    rest: list[Planned] = [
        Planned(Recipe.of([("ort_graph", {"level": "basic"})]), gain=0.02),
        # with ORT's pre-processing (shape inference), which changes what the quantizer does
        Planned(Recipe.of([("int8_dynamic", {})]), gain=0.4, cost=2),
        Planned(Recipe.of([("int8_dynamic", channel)]), gain=0.5, cost=2),
    ]
    rest += [
        Planned(Recipe.of(["slim", ("int8_dynamic", channel)]), gain=0.5, cost=3),
        Planned(Recipe.of([("int8_static", tensor)]), gain=0.55, cost=5),
        Planned(Recipe.of([("int8_static", channel)]), gain=0.55, cost=5),
        Planned(Recipe.of(["slim", ("int8_static", channel)]), gain=0.55, cost=6),
        Planned(Recipe.of(["fuse_transformer"]), gain=0.1, cost=1.5),
        Planned(
            Recipe.of(["fuse_transformer", ("int8_dynamic", channel)]),
            gain=0.7,
            cost=3,
            needs="fuse_transformer",
        ),
        Planned(
            Recipe.of(["fuse_transformer", ("int8_dynamic", {})]),
            gain=0.7,
            cost=3,
            needs="fuse_transformer",
        ),
    ]
    rest += [
        Planned(Recipe.of([("smooth", {"alpha": a}), ("int8_dynamic", channel)]), gain=0.5, cost=4)
        for a in SMOOTH_ALPHAS
    ]
    rest.append(Planned(Recipe.of(["smooth", ("int8_static", channel)]), gain=0.55, cost=6))
    if not formats.get("int8_static_s8s8"):
        s8s8 = {**channel, "activation_type": "int8"}
        rest.append(Planned(Recipe.of([("int8_static", s8s8)]), gain=0.6, cost=5))
    level = 4 if int8_features()["vnni"] or int8_features()["amx"] else 0
    for bits, key in ((4, "int4_weight_only"), (8, "int8_weight_only")):
        if not formats.get(key):
            params = {"bits": bits, "accuracy_level": level}
            rest.append(Planned(Recipe.of([("weight_only", params)]), gain=0.3, cost=3))
    if provider in FAST_FP16:
        rest += [
            Planned(Recipe.of(["fp16"]), gain=0.5, cost=2),
            Planned(Recipe.of(["slim", "fp16"]), gain=0.5, cost=3),
        ]
    rest.sort(key=lambda p: p.gain / p.cost, reverse=True)
    return plan + rest


def candidate_recipes(provider: str = "cpu") -> list[Recipe]:
    """The recipes ``auto_search`` tries, in order (``candidate_plan``'s recipes)."""
    return [p.recipe for p in candidate_plan(provider)]


@dataclass
class _Search:
    """The state of one search run: the judges, the deadline, and how to try a recipe."""

    model: Model
    judge: Judge
    holdout: Judge | None
    workdir: Path
    calibration: Sequence[Mapping[str, np.ndarray]] | None
    deadline: float | None
    result: SearchResult
    started: float = field(default_factory=time.monotonic)
    scores: dict[str, list[Any]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    """Seconds each candidate took, start to end (the cheapest bounds the next one's)."""

    def left_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def least_s(self) -> float:
        """The least seconds one more candidate takes: its runs (``least_candidate_s``), or
        the quickest candidate so far when that took longer (a large model's passes, saves
        and sessions cost more than its runs)."""
        runs = len(self.judge.feeds) + (len(self.holdout.feeds) if self.holdout else 0)
        least = least_candidate_s(self.result.baseline_ms, runs)
        return max(least, min(self.durations)) if self.durations else least

    def out_of_time(self) -> bool:
        """Too little of the time budget left for one more candidate's runs (a slow model's
        timing alone would overrun it)."""
        left = self.left_s()
        return left is not None and left < self.least_s()

    def attempt(
        self, recipe: Recipe, *, one_liner: bool = False, origin: str = ""
    ) -> Candidate | None:
        search = self.result
        label = recipe.label()
        for earlier in search.candidates:  # the two directions can meet at the same nodes
            if earlier.recipe.label() == label:
                return earlier
        if self.out_of_time():
            search.untried.append(recipe.label())
            return None
        index = len(search.candidates)
        started_s = time.monotonic() - self.started
        final, result = apply_recipe(
            self.model,
            recipe,
            self.judge,
            workdir=self.workdir / f"candidate{index}",
            calibration=self.calibration,
            speed_check=False,
            baseline_ms=search.baseline_ms,
        )
        candidate = Candidate(
            recipe, result, one_liner=one_liner, origin=origin, started_s=started_s
        )
        if not result.kept:
            result.final_ms = None
        else:
            if result.within_budget and self.holdout is not None:
                held = self.holdout.metric(final)
                candidate.held_out_metric = held
                tuned = result.final_metric if result.final_metric is not None else held
                candidate.refused = not self.holdout.budget.generalizes(tuned, held)
            if candidate.within:
                candidate.pair_speedup = paired_speedup(
                    self.judge, self.model, final, search.baseline_ms, self.left_s()
                )
                result.final_ms = search.baseline_ms / candidate.pair_speedup
            else:
                result.final_ms = None  # only candidates within budget are timed
            candidate.path = _on_disk(final, self.workdir / f"candidate{index}" / "final.onnx")
        for step in result.steps:
            step.model = None  # on disk; keeps the search's memory to one model at a time
        search.candidates.append(candidate)
        self.durations.append(time.monotonic() - self.started - started_s)
        return candidate


def auto_search(
    model: Model,
    judge: Judge,
    workdir: Path,
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    recipes: Sequence[Recipe] | None = None,
    finalists: int = FINALISTS,
    time_budget_s: float | None = None,
    holdout: Judge | None = None,
    mixed: bool = True,
    prune: bool | None = None,
) -> tuple[Model, SearchResult]:
    """Try the candidates and return the fastest model within the budget (module docstring).

    ``judge`` tunes (its feeds calibrate, rank and roll back), ``holdout`` judges the answer
    (None: ``judge`` does both). ``recipes`` replaces ``candidate_plan``; ``mixed`` searches
    per-node int8/fp32 decisions for the int8 candidates closest to the budget; ``prune``
    the largest share of channels ``prune_channels`` removes within it (None: with the default
    plan only, after the rest). With
    ``time_budget_s``, no new candidate starts once that many seconds have passed (the one
    running finishes, the finalists are still timed, and the answer marked by flush_denormals
    in ``spare_s``); ``untried`` lists the rest."""
    from .cpu_features import describe_cpu, format_plan

    started = time.monotonic()
    deadline = None if time_budget_s is None else started + time_budget_s
    # a provisional scale (sizes the timing rounds); every decision uses paired rounds
    baseline_ms = judge.quick_ms(model, provisional_s(time_budget_s))
    search = SearchResult(model.name, judge.budget.text(), baseline_ms)
    search.cpu = describe_cpu() if judge.provider == "cpu" else judge.provider
    search.skipped_formats = {k: v for k, v in format_plan(judge.provider).items() if v}
    state = _Search(model, judge, holdout, workdir, calibration, deadline, search, started)
    plan = [Planned(r) for r in recipes] if recipes is not None else candidate_plan(judge.provider)
    slow: str | None = None
    for i, planned in enumerate(plan):
        if i > 0 and plan[i - 1].one_liner and not planned.one_liner:  # the one-liners ran
            slow = slow_dynamic_int8(search.candidates)
            if slow is not None:
                search.skipped_formats["int8_dynamic past the one-liners"] = slow
        if slow is not None and _has_pass(planned.recipe, "int8_dynamic"):
            continue
        if planned.needs:
            alone = state.attempt(Recipe.of([planned.needs]))  # does it change this model?
            if alone is not None and all(s.status in PRODUCED_NOTHING for s in alone.result.steps):
                continue
        state.attempt(planned.recipe, one_liner=planned.one_liner)
    if mixed:
        _mixed_search(state)
    if prune or (prune is None and recipes is None):
        _prune_search(state)
    left_s = None if deadline is None else max(0.0, deadline - time.monotonic())
    time_finalists(search, model, judge, finalists, left_s)
    choose_finalist(search, judge)
    flush_denormals(search, model, judge, holdout, workdir, spare_s(time_budget_s, deadline))
    if search.untried:
        search.reason += (
            f"; the time budget ran out before {len(search.untried)} more candidates "
            f"({', '.join(search.untried[:3])}{', ...' if len(search.untried) > 3 else ''})"
        )
    if time_budget_s is not None and not state.durations:
        least = state.least_s()
        search.reason += (
            f"; one candidate's runs alone take at least {least:.1f} s at "
            f"{search.baseline_ms:.1f} ms a run: give a time budget of at least {2 * least:.0f} s"
        )
    chosen = search.candidates[search.chosen] if search.chosen is not None else None
    best = chosen.load() if chosen is not None else None
    if chosen is not None and best is not None and chosen.result.final_ms is None:
        # the closest miss: its speed, reported
        chosen.result.final_ms = judge.quick_ms(best, provisional_s(time_budget_s))
    described = _described(search)
    if described is not None:
        search.layers_of = short_label(described)
        search.layers = _layer_decisions(state, described)
    search.elapsed_s = time.monotonic() - started
    return best or model, search


def slow_dynamic_int8(candidates: Sequence[Candidate]) -> str | None:
    """Why dynamic int8 is not tried past the one-liners: every plain quantize_dynamic
    one-liner timed (within budget) ran slower than DYNAMIC_SLOW of the original's speed;
    None when one did not, or none was timed."""
    speeds = [
        c.pair_speedup
        for c in candidates
        if c.one_liner and [p.name for p in c.recipe.passes] == ["int8_dynamic"]
    ]
    if not speeds or any(s is None or s >= DYNAMIC_SLOW for s in speeds):
        return None
    said = ", ".join(f"{s:.2f}x" for s in speeds if s is not None)
    return (
        f"the quantize_dynamic one-liners ran at {said} the original's speed on this model "
        "(dynamic int8 kernels are slow for its operators): no other recipe with it was tried"
    )


def _has_pass(recipe: Recipe, name: str) -> bool:
    return any(p.name == name for p in recipe.passes)


def spare_s(time_budget_s: float | None, deadline: float | None) -> float | None:
    """What a time budget leaves the answer's flush_denormals step: the time left, and at
    least FLUSH_SHARE of the budget (the finals may run past it too); None without one."""
    if time_budget_s is None or deadline is None:
        return None
    return max(deadline - time.monotonic(), FLUSH_SHARE * time_budget_s)


def _on_disk(model: Model, target: Path) -> Path:
    if model.path is not None:
        return model.path
    return model.save(target).path or target


# --- channel pruning ---------------------------------------------------------------------


def _prune_search(state: _Search) -> None:
    """The largest share of channels ``prune_channels`` (refit) removes within the budget,
    bisected over PRUNE_RATIOS, then the fastest int8 recipe within budget on top of it. Runs
    last, in the time left: a refit runs the model twice a feed set per pruned layer."""
    need = _prune_cost_s(state)
    left = state.left_s()
    if left is not None and left < need + state.least_s():
        state.result.untried.append(f"channel pruning (its refits take about {need:.0f} s)")
        return
    found: list[int] = []

    def holds(k: int) -> bool | None:
        ratio = PRUNE_RATIOS[k - 1]
        tried = state.attempt(_pruned(ratio), origin=f"prune {ratio:g}")
        if tried is None or all(s.status in PRODUCED_NOTHING for s in tried.result.steps):
            return None  # out of time, or nothing in this model can lose channels
        if tried.within:
            found.append(k)
        return tried.within

    _bisect_largest(len(PRUNE_RATIOS) + 1, holds)
    quantized = [
        c
        for c in state.result.candidates
        if c.within and not c.origin and c.pair_speedup is not None
        and any(_has_pass(c.recipe, name) for name in _EXCLUDING)
    ]  # fmt: skip
    if not found or not quantized:
        return
    best = max(quantized, key=lambda c: c.pair_speedup or 0.0)
    for k in sorted(found, reverse=True)[:2]:
        ratio = PRUNE_RATIOS[k - 1]
        recipe = Recipe([*_pruned(ratio).passes, *best.recipe.passes])
        tried = state.attempt(recipe, origin=f"prune {ratio:g}, then int8")
        if tried is None or tried.within:
            return


def _pruned(ratio: float) -> Recipe:
    return Recipe.of([("prune_channels", {"ratio": ratio, "max_samples": PRUNE_SAMPLES})])


def _prune_cost_s(state: _Search) -> float:
    """Seconds the refits of one pruning candidate take, about: two runs a feed set for each
    Conv/Gemm/MatMul (an upper bound on the layers that can lose channels)."""
    layers = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in state.model.proto.graph.node)
    samples = min(PRUNE_SAMPLES, len(state.calibration or state.judge.feeds) or 1)
    return layers * 2 * samples * state.result.baseline_ms / 1e3


# --- mixed precision ---------------------------------------------------------------------


def _mixed_search(state: _Search) -> None:
    """Per int8 kind, the candidate that came closest to (or within) the budget on the tuning
    data becomes the base: if it broke the budget, decide per node in both directions."""
    from .mixed import quantize_order, restore_order, with_float_nodes

    for base in _closest_bases(state):
        if state.out_of_time():
            state.result.untried.append(f"mixed precision from {base.recipe.label()}")
            continue
        layers = _scores(state, base.recipe)
        if len(layers) < 2:
            continue
        down, up = restore_order(layers), quantize_order(layers)

        def holds(fp32: Sequence[str], origin: str, base: Candidate = base) -> bool | None:
            tried = state.attempt(with_float_nodes(base.recipe, fp32), origin=origin)
            if tried is None:
                return None
            return bool(tried.result.kept) and tried.result.within_budget

        def restored(k: int, order: list[str] = down) -> bool | None:
            return holds(order[:k], f"restore worst {k}")

        def quantized(k: int, order: list[str] = up) -> bool | None:
            return holds(order[k:], f"quantize cheapest {k}")

        # all-int8 broke the budget: the fewest worst nodes restored to fp32 that hold it
        _bisect_smallest(len(down), restored)
        # from fp32: the most of the cheapest nodes quantized that hold it
        _bisect_largest(len(up), quantized)


def _closest_bases(state: _Search) -> list[Candidate]:
    """Per int8 pass, the candidate whose int8 step came closest to the budget on the tuning
    data and broke it (only those need per-node decisions)."""
    best: dict[str, tuple[float, Candidate]] = {}
    judge = state.judge
    for c in state.result.candidates:
        if c.origin:
            continue
        for step in c.result.steps:
            name = step.label.split("(")[0]
            if name in _EXCLUDING and step.metric is not None and step.status == "rolled back":
                miss = judge.budget.miss(step.metric)
                if name not in best or miss < best[name][0]:
                    best[name] = (miss, c)
    return [c for _, c in best.values()]


def _scores(state: _Search, recipe: Recipe) -> list[Any]:
    """Measured int8 error and fp32 time of each quantizable node of ``recipe``'s int8 pass
    (cached per prefix and pass)."""
    from .base import PassContext
    from .mixed import layer_scores, node_costs, static_layer_scores

    index = next(i for i, p in enumerate(recipe.passes) if p.name in _EXCLUDING)
    step = recipe.passes[index]
    key = f"{Recipe(recipe.passes[:index]).label()} | {step.label()}"
    if key in state.scores:
        return state.scores[key]
    judge = state.judge
    ctx = PassContext(state.workdir / f"scores{len(state.scores)}", judge.feeds,
                      state.calibration, judge.provider)  # fmt: skip
    current = state.model
    for p in recipe.passes[:index]:
        current = p.apply(current, ctx).model
    feeds = judge.feeds[:_RANK_SAMPLES]
    try:
        if step.name == "int8_dynamic":
            costs = node_costs(current, judge.timing_feeds, judge.threads)
            scores: list[Any] = layer_scores(
                current,
                feeds,
                costs,
                per_channel=bool(getattr(step, "per_channel", False)),
                reduce_range=bool(getattr(step, "reduce_range", False)),
            )
        else:
            plan = step.plan(current, ctx)  # type: ignore[attr-defined]
            costs = node_costs(plan.source, judge.timing_feeds, judge.threads)
            scores = static_layer_scores(plan.source, plan.build(), feeds, costs)
    except Exception as e:  # a ranking that fails leaves this base to the plain candidates
        state.result.untried.append(f"mixed precision from {recipe.label()} ({e})")
        scores = []
    state.scores[key] = scores
    return scores


def _bisect_smallest(n: int, holds: Callable[[int], bool | None]) -> int | None:
    """The smallest k in 1..n-1 with ``holds(k)``, assuming 0 fails and n holds."""
    bounds = _bisect(n, holds, rising=True)
    return bounds[1] if bounds and bounds[1] < n else None


def _bisect_largest(n: int, holds: Callable[[int], bool | None]) -> int | None:
    """The largest k in 1..n-1 with ``holds(k)``, assuming 0 holds and n fails."""
    bounds = _bisect(n, holds, rising=False)
    return bounds[0] if bounds and bounds[0] > 0 else None


def _bisect(n: int, holds: Callable[[int], bool | None], *, rising: bool) -> tuple[int, int] | None:
    """The neighbours (k, k + 1) where ``holds`` changes between 0 and n (it starts false when
    ``rising``, true otherwise); None as soon as ``holds`` answers None (it gave up)."""
    low, high = 0, n
    while high - low > 1:
        mid = (low + high) // 2
        ok = holds(mid)
        if ok is None:
            return None
        low, high = (low, mid) if ok == rising else (mid, high)
    return low, high


def _described(search: SearchResult) -> Candidate | None:
    """The candidate whose per-layer decisions the report shows: the chosen one when it has an
    int8 pass, else the fastest int8 candidate within budget, else the closest int8 miss."""
    from .mixed import int8_pass

    chosen = search.candidates[search.chosen] if search.chosen is not None else None
    if chosen is not None and int8_pass(chosen.recipe) in _EXCLUDING:
        return chosen
    int8 = [c for c in search.candidates if int8_pass(c.recipe) in _EXCLUDING and c.result.kept]
    within = [c for c in int8 if c.within]
    if within:
        return min(within, key=lambda c: c.result.final_ms or np.inf)
    return None


def _layer_decisions(state: _Search, chosen: Candidate) -> list[dict[str, Any]]:
    """Per node of the chosen recipe's int8 pass: int8 or fp32, measured error and fp32 ms."""
    from .mixed import float_nodes

    if not any(p.name in _EXCLUDING for p in chosen.recipe.passes):
        return []
    from .mixed import with_float_nodes

    try:
        layers = _scores(state, with_float_nodes(chosen.recipe, []))
    except Exception:
        return []
    fp32 = set(float_nodes(chosen.recipe))
    return [
        {**layer.to_dict(), "decision": "fp32" if layer.node in fp32 else "int8"}
        for layer in layers
    ]
