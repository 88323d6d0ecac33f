"""A search that scales: Optuna's TPE over passes and their parameters, under the same budget.

    best, search = optuna_search(model, judge, workdir, trials=4)
    search.tables()                  # the candidates, then every trial: pruned, duplicate, value
    search.trials[0].state           # "COMPLETE" or "PRUNED"
    # optimize(..., auto=True, search="optuna", trials=40, study="study.db") resumes the study

Each trial builds a recipe from the catalog's passes (``search_space``, ``suggest_recipe``): a
graph step (``ort_graph`` basic / extended, ``slim``, ``fold``, ``fuse_transformer`` or none),
SmoothQuant with its alpha before int8, then int8 dynamic or static QDQ with their declared
parameters (per channel, activation type, calibration method, reduce range, how many
sensitive nodes stay fp32), weight-only int4/int8, or fp16 where the provider has fast fp16;
formats ``format_plan`` marks slow on this CPU are left out. The recipe runs one pass at a
time under ``judge``'s budget (the chain's rules: a pass that breaks the budget is rolled
back, one that fails is skipped); after each pass the trial reports how far the chain is
outside the budget (``Budget.miss``), and a ``ThresholdPruner`` at zero prunes the trial at
the first pass that breaks it: the passes after it and the timing are not run, and TPE learns
that the region is out of budget. A finished trial is judged on ``holdout`` as the default
search judges a candidate (refused there: it counts as no faster than the original), and its
value is its latency over the original's, timed side by side in PAIR_ROUNDS rounds, so trials
of earlier sessions compare with this one's. A recipe the study has already judged is not run
again (the trial takes the earlier trial's outcome).

The study is seeded (``TPESampler(seed=...)``), starts from the default search's one-liners
and static per-channel int8, and lives in memory, or in an Optuna RDB storage (a path becomes
``sqlite:///path``): ``trials`` counts every finished trial of the study, so running again
with the same study runs only the trials it lacks, and several processes can share one study.
A study remembers the model, data, budget, provider and search space it was made for, and
refuses another. Only the models of this session's fastest trials stay on disk.

The end is the default search's (``auto``): the fastest finished trials within budget (their
models rebuilt and judged again when an earlier session made them) are timed side by side
with the original, always with the fastest one-liner, and one is chosen only when it beats the
original in every round. Optuna's log goes into the report (``StudyResult.log``) and the
libraries' warnings into ``warnings``, not the terminal.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

from ..errors import UsageError, one_line
from ..feeds import feeds_digest
from ..model import Model
from ..report import Table, jsonable
from .auto import FAST_FP16, plain_recipes, spare_s
from .candidates import Candidate, SearchResult
from .catalog import BUILTIN, Catalog
from .chain import ChainResult, Judge, Step, apply_recipe
from .finals import (
    FINALISTS,
    PAIR_ITERATIONS,
    PAIR_ROUNDS,
    choose_finalist,
    flush_denormals,
    provisional_s,
    time_finalists,
)
from .recipe import Recipe

if TYPE_CHECKING:
    import optuna

DEFAULT_TRIALS = 20
"""Finished trials (complete or pruned) a study holds when ``trials`` is not given."""
STARTUP_TRIALS = 5
"""Finished trials before TPE models the space (the anchors, then random samples)."""
SPACE_VERSION = 3
"""Kept with a study (with the resolved space): a study over another space is refused."""
GRAPH_STEPS = ("none", "ort_graph", "slim", "fold", "fuse_transformer")
QUANTIZE_STEPS = ("none", "int8_dynamic", "int8_static", "weight_only")
SENSITIVE_CHOICES = (0, 1, 2, 4, 8, 16)
SEARCHED: Mapping[str, Mapping[str, Sequence[Any] | None]] = {
    "ort_graph": {"level": ("basic", "extended")},  # "layout" writes machine-specific ops
    "smooth": {"alpha": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)},
    "int8_dynamic": {
        "per_channel": None,
        "reduce_range": None,
        "exclude_sensitive": SENSITIVE_CHOICES,
        "preprocess": None,
    },
    "int8_static": {
        "method": None,
        "per_channel": None,
        "activation_type": None,
        "reduce_range": None,
        "exclude_sensitive": SENSITIVE_CHOICES,
    },
    "weight_only": {"bits": (4, 8), "block_size": (32, 64, 128), "accuracy_level": (0, 4)},
}
"""The parameters each pass is searched over; None takes the choices the pass declares
(a Literal's values, or False / True). ``search_space`` leaves out formats slow here."""


def search_space(provider: str = "cpu", catalog: Catalog = BUILTIN) -> dict[str, tuple[Any, ...]]:
    """Every choice the study samples, by its Optuna name ("graph", "int8_static.method"):
    ``SEARCHED`` over the catalog's passes, less what ``format_plan`` says is slow on this
    machine (S8S8 without VNNI/AMX, MatMulNBits without its kernels), plus fp16 where the
    provider has fast fp16."""
    from .cpu_features import format_plan, int8_features

    slow = {k for k, why in format_plan(provider).items() if why}
    quantize = [q for q in QUANTIZE_STEPS if q in catalog or q == "none"]
    if provider in FAST_FP16 and "fp16" in catalog:
        quantize.append("fp16")
    space: dict[str, tuple[Any, ...]] = {
        "graph": tuple(g for g in GRAPH_STEPS if g in catalog or g == "none"),
        "smooth": (False, True),
    }
    for name, params in SEARCHED.items():
        if name not in catalog:
            continue
        hints = get_type_hints(catalog.get(name))
        for key, choices in params.items():
            space[f"{name}.{key}"] = tuple(choices or _declared(hints[key]))
    if "int8_static_s8s8" in slow and "int8_static.activation_type" in space:
        space["int8_static.activation_type"] = ("uint8",)
    if "weight_only.bits" in space:
        bits = [b for b in space["weight_only.bits"] if f"int{b}_weight_only" not in slow]
        space["weight_only.bits"] = tuple(bits)
        if not bits:
            quantize.remove("weight_only")
        if not (int8_features()["vnni"] or int8_features()["amx"]):
            space["weight_only.accuracy_level"] = (0,)
    space["quantize"] = tuple(quantize)
    return space


def suggest_recipe(
    trial: optuna.trial.BaseTrial, space: Mapping[str, Sequence[Any]], catalog: Catalog = BUILTIN
) -> Recipe:
    """The recipe ``trial`` samples from ``space``: a graph step, then (before int8)
    SmoothQuant, then int8, weight-only or fp16, each pass with its searched parameters."""
    steps: list[tuple[str, dict[str, Any]]] = []
    graph = trial.suggest_categorical("graph", space["graph"])
    if graph != "none":
        steps.append((graph, _suggest_params(trial, graph, space)))
    quantize = trial.suggest_categorical("quantize", space["quantize"])
    int8 = quantize in ("int8_dynamic", "int8_static") and "smooth.alpha" in space
    if int8 and trial.suggest_categorical("smooth", space["smooth"]):
        steps.append(("smooth", _suggest_params(trial, "smooth", space)))
    if quantize != "none":
        steps.append((quantize, _suggest_params(trial, quantize, space)))
    return Recipe.of(steps, catalog=catalog)


def recipe_params(recipe: Recipe, space: Mapping[str, Sequence[Any]]) -> dict[str, Any] | None:
    """The trial parameters that make ``suggest_recipe`` build ``recipe`` (to enqueue it), or
    None when ``space`` cannot express it."""
    passes = list(recipe.passes)
    params: dict[str, Any] = {"graph": "none", "quantize": "none"}
    if passes and passes[0].name in space["graph"] and passes[0].name != "none":
        params["graph"] = passes.pop(0).name
    if passes and passes[-1].name in space["quantize"]:
        params["quantize"] = passes.pop().name
        if params["quantize"] in ("int8_dynamic", "int8_static"):
            params["smooth"] = bool(passes and passes[0].name == "smooth")
            if params["smooth"]:
                params["smooth.alpha"] = passes.pop(0).params()["alpha"]
    if passes:
        return None
    for step in recipe.passes:
        values = step.params()
        for key in SEARCHED.get(step.name, {}):
            params[f"{step.name}.{key}"] = values[key]
        defaults = type(step)()
        for key, value in values.items():  # a parameter the space does not search
            if key not in SEARCHED.get(step.name, {}) and getattr(defaults, key) != value:
                return None
    if any(k in space and v not in space[k] for k, v in params.items()):
        return None
    return params


def _suggest_params(
    trial: optuna.trial.BaseTrial, name: str, space: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    prefix = f"{name}."
    return {
        key.removeprefix(prefix): trial.suggest_categorical(key, tuple(choices))
        for key, choices in space.items()
        if key.startswith(prefix)
    }


def _declared(hint: Any) -> tuple[Any, ...]:
    if get_origin(hint) is Literal:
        return get_args(hint)
    if hint is bool:
        return (False, True)
    raise TypeError(f"give the choices of a {hint} parameter in SEARCHED")


@dataclass
class TrialRow:
    """One trial of the study, as the report lists it."""

    number: int
    state: str  # "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"
    recipe: str
    relative: float | None = None
    """Latency relative to the original's, timed side by side in the trial."""
    metric: float | None = None
    note: str = ""
    here: bool = False
    """Run by this session (not an earlier one sharing the study)."""


@dataclass
class StudyResult(SearchResult):
    """The default search's result (candidates, the choice and why), with the study's trials
    and Optuna's log (the libraries' warnings are in ``warnings``, as for the default search)."""

    study: str = ""
    storage: str = "memory"
    seed: int = 0
    trials: list[TrialRow] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """Optuna's log lines, each distinct one once."""

    @property
    def evaluated(self) -> int:
        """Trials this session ran (duplicates of judged recipes included)."""
        return sum(row.here for row in self.trials)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "search": "optuna",
            "study": {"name": self.study, "storage": self.storage, "seed": self.seed},
            "trials": [vars(row) for row in self.trials],
            "log": list(self.log),
        }

    def tables(self) -> list[Table]:
        pruned = sum(row.state == "PRUNED" for row in self.trials)
        title = (
            f"optuna study {self.study!r} ({self.storage}, TPE seed {self.seed}): "
            f"{len(self.trials)} trials, {pruned} pruned, {self.evaluated} run now"
        )
        rows = [(r.number, r.state, r.recipe, r.relative, r.metric, r.note) for r in self.trials]
        columns = ("trial", "state", "recipe", "latency / original", "metric", "note")
        tables = [*super().tables(), Table(title, columns, rows)]
        if self.log:
            tables.append(Table("optuna log", ("line",), [(line,) for line in self.log]))
        return tables


def optuna_search(
    model: Model,
    judge: Judge,
    workdir: Path,
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    holdout: Judge | None = None,
    trials: int = DEFAULT_TRIALS,
    study: str | Path | None = None,
    study_name: str | None = None,
    seed: int = 0,
    finalists: int = FINALISTS,
    time_budget_s: float | None = None,
    catalog: Catalog = BUILTIN,
) -> tuple[Model, StudyResult]:
    """Run the study up to ``trials`` finished trials and return the fastest model within the
    budget, chosen as ``auto_search`` chooses, and the study's result.

    ``judge`` tunes (rollbacks, pruning, calibration), ``holdout`` judges each finished trial
    as ``auto_search`` does (a trial within budget on the tuning data only is refused, and
    counts as no faster than the original). ``study``: an Optuna RDB storage URL or a file
    path (SQLite); None keeps it in memory. ``study_name`` defaults to one made from the
    model and the budget. With ``time_budget_s``, no trial starts once that many seconds
    have passed."""
    import optuna

    from .capture import captured
    from .cpu_features import describe_cpu, format_plan

    if trials < 1:
        raise UsageError(f"trials must be at least 1, got {trials}", hint="e.g. --trials 20")
    started = time.monotonic()
    storage, shown = _storage(study)
    space = search_space(judge.provider, catalog)
    identity = _identity(model, judge, space)
    name = study_name or f"{model.name}-{identity['model'][:12]}-{judge.budget.text()}"
    baseline_ms = judge.quick_ms(model, provisional_s(time_budget_s))
    search = StudyResult(model.name, judge.budget.text(), baseline_ms, study=name, seed=seed)
    search.storage = shown
    search.cpu = describe_cpu() if judge.provider == "cpu" else judge.provider
    search.skipped_formats = {k: v for k, v in format_plan(judge.provider).items() if v}
    liners = {r.label() for r in plain_recipes()}
    run = _TrialRunner(model, judge, holdout, workdir, calibration, space, catalog, finalists)
    with captured() as chatter, _optuna_log() as log:
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, group=True
        )
        opened = _open_study(storage, shown, name, sampler, identity)
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        left = trials - len(opened.get_trials(deepcopy=False, states=states))
        tried = {t.user_attrs.get("label") for t in opened.get_trials(deepcopy=False)}
        anchors = _anchors(judge.provider, space, catalog)
        for params in [p for label, p in anchors if label not in tried][: max(left, 0)]:
            opened.enqueue_trial(params, skip_if_exists=True)
        if left > 0:
            opened.optimize(
                run,
                n_trials=left,
                timeout=time_budget_s,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=states)],
            )
        _collect(search, opened.get_trials(deepcopy=False), run, liners, catalog)
        _rebuild_finalists(search, run, finalists)
        left_s = None
        if time_budget_s is not None:
            left_s = max(0.0, time_budget_s - (time.monotonic() - started))
        time_finalists(search, model, judge, finalists, left_s)
        choose_finalist(search, judge)
        deadline = None if time_budget_s is None else started + time_budget_s
        flush_denormals(search, model, judge, holdout, workdir, spare_s(time_budget_s, deadline))
    search.log = [*log, *search.log]  # Optuna's, then the rebuilt finalists' notes
    search.warnings = chatter.summary(shown=200)
    finished = sum(r.state in ("COMPLETE", "PRUNED") for r in search.trials)
    if finished < trials:
        search.reason += f"; the study holds {finished} of {trials} trials (the time ran out)"
    chosen = search.candidates[search.chosen] if search.chosen is not None else None
    best = chosen.load() if chosen is not None else None
    if chosen is not None and best is not None and chosen.result.final_ms is None:
        # the closest miss: its speed, reported
        chosen.result.final_ms = judge.quick_ms(best, provisional_s(time_budget_s))
    search.elapsed_s = time.monotonic() - started
    return best or model, search


@dataclass
class _TrialRunner:
    """The objective: one trial's recipe, pass by pass, pruned at the first budget break."""

    model: Model
    judge: Judge
    holdout: Judge | None
    workdir: Path
    calibration: Sequence[Mapping[str, np.ndarray]] | None
    space: Mapping[str, Sequence[Any]]
    catalog: Catalog
    keep: int
    paths: dict[int, Path] = field(default_factory=dict)
    """This session's trial models on disk (only the ``keep`` fastest stay)."""
    values: dict[int, float] = field(default_factory=dict)
    here: set[int] = field(default_factory=set)

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        self.here.add(trial.number)
        recipe = suggest_recipe(trial, self.space, self.catalog)
        trial.set_user_attr("recipe", recipe.to_data())
        trial.set_user_attr("label", recipe.label())
        earlier = _judged(trial.study, recipe.label())
        if earlier is not None:
            return _repeat(trial, earlier)
        trial.set_user_attr("kept", [])
        if not recipe.passes:
            return 1.0
        directory = self.workdir / f"trial{trial.number}"
        try:
            value = self._run(trial, recipe, directory)
        except optuna.TrialPruned:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._keep_fastest(trial.number, value, directory)
        return value

    def apply(self, recipe: Recipe, directory: Path) -> tuple[Model, ChainResult]:
        """``recipe`` on the original under the tuning judge, no speed check (the search
        times what it keeps)."""
        return apply_recipe(
            self.model,
            recipe,
            self.judge,
            workdir=directory,
            calibration=self.calibration,
            speed_check=False,
            baseline_ms=1.0,
        )

    def _run(self, trial: optuna.Trial, recipe: Recipe, directory: Path) -> float:
        import optuna

        current, steps, kept = self.model, [], []
        for index, step in enumerate(recipe.passes):
            after, chain = apply_recipe(
                current,
                Recipe([step]),
                self.judge,
                workdir=directory / f"step{index}",
                calibration=self.calibration,
                speed_check=False,
                baseline_ms=1.0,  # not timed here
            )
            record = chain.steps[0]
            record.model = None
            steps.append(record)
            trial.set_user_attr("steps", jsonable([s.to_dict() for s in steps]))
            if record.metric is not None:
                trial.report(self.judge.budget.miss(record.metric), index)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", record.label)
                    trial.set_user_attr("metric", record.metric)
                    raise optuna.TrialPruned(f"{record.label}: {record.reason}")
            if record.status == "kept":
                current = after
                kept.append(record.label)
                trial.set_user_attr("metric", record.metric)
                trial.set_user_attr("kept", kept)
        if not kept:
            return 1.0
        if self.holdout is not None:
            held = self.holdout.metric(current)
            trial.set_user_attr("held_out_metric", held)
            tuned = trial.user_attrs.get("metric", held)
            if not self.holdout.budget.generalizes(tuned, held):
                trial.set_user_attr("refused", True)
                return 1.0
        base, timed = self.judge.rounds([self.model, current], PAIR_ROUNDS, PAIR_ITERATIONS)
        relative = statistics.median(c / max(b, 1e-9) for b, c in zip(base, timed, strict=True))
        target = directory / "final.onnx"
        path = current.path if current.path is not None else current.save(target).path
        self.paths[trial.number] = path or target
        trial.set_user_attr("size_bytes", current.size_bytes)
        return relative

    def _keep_fastest(self, number: int, value: float, directory: Path) -> None:
        """Keep the models of the ``keep`` fastest trials on disk, remove the others."""
        if number not in self.paths:
            shutil.rmtree(directory, ignore_errors=True)
            return
        self.values[number] = value
        ranked = sorted(self.values, key=self.values.__getitem__)
        for slower in ranked[self.keep :]:
            del self.values[slower]
            shutil.rmtree(self.workdir / f"trial{slower}", ignore_errors=True)
            self.paths.pop(slower, None)


def _judged(study: optuna.Study, label: str) -> optuna.trial.FrozenTrial | None:
    """The first finished trial of ``study`` that judged the recipe ``label``."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for frozen in study.get_trials(deepcopy=False, states=states):
        if frozen.user_attrs.get("label") == label and "duplicate_of" not in frozen.user_attrs:
            return frozen
    return None


def _repeat(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> float:
    """This trial's outcome is ``earlier``'s (the same recipe): its reports, prune or value."""
    import optuna

    trial.set_user_attr("duplicate_of", earlier.number)
    for key in ("kept", "metric", "pruned_at"):
        if key in earlier.user_attrs:
            trial.set_user_attr(key, earlier.user_attrs[key])
    for step, value in sorted(earlier.intermediate_values.items()):
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"the same recipe as trial {earlier.number}")
    if earlier.value is None:  # pruned earlier under another pruner: prune again
        raise optuna.TrialPruned(f"the same recipe as trial {earlier.number}")
    return float(earlier.value)


def _collect(
    search: StudyResult,
    frozen: Sequence[optuna.trial.FrozenTrial],
    run: _TrialRunner,
    liners: set[str],
    catalog: Catalog,
) -> None:
    """The study's trials as report rows, and each distinct judged recipe as a candidate (its
    latency: the trial's relative latency times this session's baseline)."""
    budget = run.judge.budget.text()
    for t in sorted(frozen, key=lambda t: t.number):
        attrs = t.user_attrs
        label = str(attrs.get("label", "?"))
        metric = None if attrs.get("metric") is None else float(attrs["metric"])
        note = ""
        if "duplicate_of" in attrs:
            note = f"same recipe as trial {attrs['duplicate_of']}"
        elif "pruned_at" in attrs:
            note = f"pruned: {attrs['pruned_at']} breaks {budget}"
        elif attrs.get("refused"):
            note = f"refused: held-out metric {attrs.get('held_out_metric')}"
        elif t.state.name == "COMPLETE" and not attrs.get("kept"):
            note = "nothing kept"
        here = t.number in run.here
        relative = t.value if t.state.name == "COMPLETE" else None  # pruned: the last report
        row = TrialRow(t.number, t.state.name, label, relative, metric, note, here)
        search.trials.append(row)
        if t.state.name not in ("COMPLETE", "PRUNED") or "duplicate_of" in attrs:
            continue
        recipe = Recipe.from_data(attrs["recipe"], catalog=catalog)
        result = ChainResult(search.model, budget, search.baseline_ms, run.model.size_bytes)
        result.steps = [_step(s) for s in attrs.get("steps", [])]
        result.final_metric = metric
        candidate = Candidate(recipe, result, one_liner=label in liners)
        held = attrs.get("held_out_metric")
        candidate.held_out_metric = None if held is None else float(held)
        candidate.refused = bool(attrs.get("refused"))
        if t.state.name == "COMPLETE" and attrs.get("kept"):
            result.kept = list(attrs["kept"])
            result.final_ms = float(t.value or 1.0) * search.baseline_ms
            result.final_size = attrs.get("size_bytes")
            candidate.path = run.paths.get(t.number)
        else:
            result.within_budget = t.state.name == "COMPLETE"
        search.candidates.append(candidate)


def _step(data: Mapping[str, Any]) -> Step:
    def number(key: str) -> float | None:
        value = data.get(key)
        return None if value is None else float(value)

    size = data.get("size_bytes")
    return Step(
        str(data.get("pass", "?")),
        str(data.get("status", "?")),
        str(data.get("reason", "")),
        number("metric"),
        number("latency_ms"),
        int(size) if size is not None else None,
        dict(data.get("details") or {}),
    )


def _rebuild_finalists(search: StudyResult, run: _TrialRunner, count: int) -> None:
    """The ``count`` fastest candidates within budget made by an earlier session have no model
    here: apply their recipes again (judged again; one whose result differs leaves the race)."""
    within = sorted(
        (c for c in search.candidates if c.within), key=lambda c: c.result.final_ms or np.inf
    )
    for index, candidate in enumerate(within[:count]):
        if candidate.path is not None:
            continue
        directory = run.workdir / f"rebuild{index}"
        final, result = run.apply(candidate.recipe, directory)
        if result.kept != candidate.result.kept or not result.within_budget:
            candidate.result.within_budget = False
            search.log.append(
                f"{candidate.recipe.label()} rebuilt keeps {result.kept or 'nothing'} at "
                f"{result.final_metric}, not what its trial kept: left out of the final timing"
            )
            continue
        target = directory / "final.onnx"
        candidate.path = final.path if final.path is not None else final.save(target).path


def _identity(model: Model, judge: Judge, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """What a study is made for: a study of another model, data, budget or space is refused."""
    choices = repr(sorted((k, tuple(v)) for k, v in space.items())).encode()
    return {
        "model": model.digest,
        "data": feeds_digest(judge.feeds),
        "budget": judge.budget.text(),
        "provider": judge.provider,
        "precision": judge.precision,
        "space": f"{SPACE_VERSION}:{hashlib.sha256(choices).hexdigest()[:16]}",
    }


def _storage(study: str | Path | None) -> tuple[str | None, str]:
    """(the storage URL or None for memory, how the report shows it: no password)."""
    if study is None:
        return None, "memory"
    text = str(study)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(
                f"--study {text}: not a file in an existing directory",
                hint="give a file path such as study.db, or an RDB URL such as sqlite:///s.db",
            )
        text = f"sqlite:///{path}"
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(text).render_as_string(hide_password=True)
    except Exception as e:
        raise UsageError(
            f"--study {text}: not a database URL ({one_line(str(e))})",
            hint="give a file path such as study.db, or an RDB URL such as sqlite:///s.db",
        ) from e
    return text, shown


def _open_study(
    storage: str | None,
    shown: str,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    identity: Mapping[str, Any],
) -> optuna.Study:
    import optuna

    try:
        opened = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler,
            pruner=optuna.pruners.ThresholdPruner(upper=0.0),
            direction="minimize",
            load_if_exists=True,
        )
    except Exception as e:  # the driver's, SQLAlchemy's or Optuna's own error
        raise UsageError(
            f"cannot open the study {name!r} in {shown}: {one_line(f'{type(e).__name__}: {e}')}",
            hint="give a writable file path or a reachable RDB URL",
        ) from e
    made_for = opened.user_attrs.get("onnxferry")
    if made_for is None and not opened.trials:
        opened.set_user_attr("onnxferry", dict(identity))
    elif made_for != dict(identity):
        differs = sorted(k for k in identity if (made_for or {}).get(k) != identity[k])
        raise UsageError(
            f"the study {name!r} in {shown} was made for another search "
            f"(its {', '.join(differs) or 'origin'} differ)",
            hint="give another --study-name, or the model, data and budget it was made for",
        )
    return opened


def _anchors(
    provider: str, space: Mapping[str, Sequence[Any]], catalog: Catalog
) -> list[tuple[str, dict[str, Any]]]:
    """What every new study tries first: the default search's one-liners (ORT's offline
    optimization, onnxslim, plain quantize_dynamic per tensor and per channel), then static
    per-channel int8 (7-bit weights on x86 CPUs without VNNI, as the default list); each
    as (its recipe's label, its trial parameters)."""
    from .cpu_features import x86_without_vnni

    static: dict[str, Any] = {"per_channel": True}
    if provider == "cpu" and x86_without_vnni():
        static["reduce_range"] = True
    recipes = [*plain_recipes(), Recipe.of([("int8_static", static)])]
    found = ((r.label(), recipe_params(r, space)) for r in recipes)
    return [(label, params) for label, params in found if params is not None]


@contextmanager
def _optuna_log() -> Iterator[list[str]]:
    """Optuna's log records (its logger does not propagate) as lines, each distinct one once
    with a count, instead of the terminal."""
    counts: dict[str, int] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = f"{record.levelname.lower()}: {record.getMessage()}"
            counts[line] = counts.get(line, 0) + 1

    logger = logging.getLogger("optuna")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [Collect(logging.INFO)], False
    logger.setLevel(logging.INFO)  # the report has room for what a terminal would not show
    lines: list[str] = []
    try:
        yield lines
    finally:
        logger.handlers, logger.propagate = saved[:2]
        logger.setLevel(saved[2])
        lines.extend(f"{line} (x{n})" if n > 1 else line for line, n in counts.items())
