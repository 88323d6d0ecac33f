"""`optimize --auto --search optuna`: TPE over the catalog's passes, pruning at the first pass
that breaks the budget, studies that resume from SQLite, the default search's final choice.

Real passes on a real (small, seeded) MLP, judged by ONNX Runtime; a handful of trials each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

from onnxferry.errors import UsageError
from onnxferry.model import Model
from onnxferry.optimize import BUILTIN, Budget
from onnxferry.optimize.auto import auto_search, plain_recipes
from onnxferry.optimize.chain import Judge
from onnxferry.optimize.optuna_search import (
    StudyResult,
    optuna_search,
    recipe_params,
    search_space,
    suggest_recipe,
)
from tests.helpers import Run, deep_mlp, save

Feeds = dict[str, np.ndarray]


def mlp_model(tmp_path: Path, width: int = 256, hidden: int = 256) -> Model:
    """x[N, width] -> three MatMuls with ReLUs -> y[N, 16]: int8 changes it a little."""
    return Model.load(save(deep_mlp(width, hidden, 16), tmp_path / "mlp.onnx"))


def feeds(width: int = 256, sets: int = 2, rows: int = 8, seed: int = 0) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows, width)).astype(np.float32)} for _ in range(sets)]


def judge_for(model: Model, budget: str = "cosine>=0.99", width: int = 256, seed: int = 0) -> Judge:
    data = feeds(width, seed=seed)
    return Judge(model, data, Budget.parse(budget), timing={"x": data[0]["x"][:1]})


def within(model: Model, judge: Judge) -> bool:
    """``model`` meets ``judge``'s budget, measured again here."""
    return judge.budget.holds(judge.metric(model))


# --- the space -------------------------------------------------------------------------


def test_the_space_is_the_catalogs_passes_and_declared_parameters() -> None:
    space = search_space("cpu")
    assert space["int8_static.method"] == ("minmax", "entropy", "percentile")
    assert space["int8_dynamic.per_channel"] == (False, True)
    assert set(space["graph"]) <= {"none", *BUILTIN}
    assert set(space["quantize"]) - {"none"} <= set(BUILTIN)
    assert "fp16" not in space["quantize"]  # no fast fp16 on ONNX Runtime's CPU provider
    assert "fp16" in search_space("cuda")["quantize"]


def test_every_default_one_liner_is_a_point_of_the_space() -> None:
    space = search_space("cpu")
    for recipe in plain_recipes():
        params = recipe_params(recipe, space)
        assert params is not None, recipe.label()
        rebuilt = suggest_recipe(optuna.trial.FixedTrial(params), space)
        assert rebuilt.label() == recipe.label()


def test_the_same_seed_samples_the_same_recipes() -> None:
    space = search_space("cpu")

    def sampled(seed: int) -> list[str]:
        labels: list[str] = []

        def objective(trial: optuna.Trial) -> float:
            recipe = suggest_recipe(trial, space)
            labels.append(recipe.label())
            return float(len(recipe) + len(recipe.label()) % 7)  # deterministic, not constant

        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=3, multivariate=True, group=True
            )
        optuna.create_study(sampler=sampler).optimize(objective, n_trials=12)
        return labels

    first = sampled(3)
    assert first == sampled(3)
    assert first != sampled(4)


# --- the search ------------------------------------------------------------------------


def test_a_study_starts_from_the_one_liners_and_chooses_within_budget(tmp_path: Path) -> None:
    model = mlp_model(tmp_path)
    judge = judge_for(model)
    best, search = optuna_search(model, judge, tmp_path / "work", trials=6)
    assert isinstance(search, StudyResult)
    assert [row.number for row in search.trials] == list(range(6))
    assert {row.state for row in search.trials} <= {"COMPLETE", "PRUNED"}
    started = [row.recipe for row in search.trials[: len(plain_recipes())]]
    assert started == [r.label() for r in plain_recipes()]
    assert within(best, judge)
    if search.chosen is not None:
        chosen = search.candidates[search.chosen]
        assert chosen.within and chosen.rounds_ms  # timed side by side with the original
        assert search.baseline_rounds_ms
    assert any("Trial 0" in line for line in search.log)  # Optuna's log, in the report
    data = json.loads(json.dumps(search.to_dict()))
    assert data["search"] == "optuna" and len(data["trials"]) == 6


def test_trials_that_break_the_budget_are_pruned_at_that_pass(tmp_path: Path) -> None:
    model = mlp_model(tmp_path)
    judge = judge_for(model, "cosine>=0.999999")  # int8 breaks it, graph passes do not
    best, search = optuna_search(model, judge, tmp_path / "work", trials=6)
    pruned = [row for row in search.trials if row.state == "PRUNED"]
    assert pruned, search.trials
    for row in pruned:
        assert row.note.startswith("pruned: ") and row.relative is None
        assert row.metric is not None and not judge.budget.holds(row.metric)
        assert not (tmp_path / "work" / f"trial{row.number}").exists()  # nothing kept on disk
    candidates = {c.recipe.label(): c for c in search.candidates}
    for row in pruned:
        steps = candidates[row.recipe].result.steps
        assert steps[-1].status == "rolled back"  # no pass ran after the one that broke it
        assert not candidates[row.recipe].within
    assert within(best, judge)


def test_finished_trials_are_judged_on_the_held_out_data(tmp_path: Path) -> None:
    model = mlp_model(tmp_path)
    judge, holdout = judge_for(model), judge_for(model, seed=1)
    best, search = optuna_search(model, judge, tmp_path / "w", holdout=holdout, trials=4)
    kept = [c for c in search.candidates if c.result.kept]
    assert kept
    for c in kept:
        assert c.held_out_metric is not None
        tuned = c.result.final_metric
        assert tuned is not None
        assert c.refused == (not holdout.budget.generalizes(tuned, c.held_out_metric))
    assert within(best, holdout)


def test_a_study_resumes_from_its_sqlite_file(tmp_path: Path) -> None:
    model = mlp_model(tmp_path)
    judge = judge_for(model)
    db = tmp_path / "study.db"
    _, first = optuna_search(model, judge, tmp_path / "w1", trials=3, study=db, study_name="s")
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    before = [(t.number, t.params, t.state) for t in stored.trials]
    _, second = optuna_search(model, judge, tmp_path / "w2", trials=5, study=db, study_name="s")
    assert first.evaluated == 3 and second.evaluated == 2
    assert [row.number for row in second.trials if row.here] == [3, 4]
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert [(t.number, t.params, t.state) for t in stored.trials][:3] == before
    assert len(stored.trials) == 5
    # Nothing left to run: the finalists are rebuilt from their recipes and timed again.
    best, third = optuna_search(model, judge, tmp_path / "w3", trials=5, study=db, study_name="s")
    assert third.evaluated == 0 and len(third.trials) == 5
    assert within(best, judge)
    if second.chosen is not None:
        assert third.chosen is not None or "faster than the original" in third.reason


def test_a_study_made_for_another_model_is_refused(tmp_path: Path) -> None:
    model = mlp_model(tmp_path)
    db = tmp_path / "study.db"
    optuna_search(model, judge_for(model), tmp_path / "w1", trials=1, study=db, study_name="s")
    other = mlp_model(tmp_path / "other", width=128)
    with pytest.raises(UsageError, match="made for another search") as info:
        optuna_search(other, judge_for(other, width=128), tmp_path / "w2", study=db, study_name="s")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ("{tmp}/nowhere/study.db", "not a file in an existing directory"),
        ("{tmp}", "not a file in an existing directory"),
        ("bogus://x", "cannot open the study"),
        ("sqlite:///{tmp}/nowhere/study.db", "cannot open the study"),
    ],
)
def test_bad_storages_are_one_line_usage_errors(tmp_path: Path, study: str, message: str) -> None:
    model = mlp_model(tmp_path)
    where = study.format(tmp=tmp_path)
    with pytest.raises(UsageError, match=message) as info:
        optuna_search(model, judge_for(model), tmp_path / "w", trials=1, study=where)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_the_study_answers_whenever_the_default_list_does(tmp_path: Path) -> None:
    """Same model, same judge: where the default candidate list returns a faster model within
    budget, so does the study (the one-liners are its first trials, and the fastest of them is
    always a finalist). Which is faster is the benchmark's question (benchmarks/
    optimize_search.py), not a test's."""
    model = mlp_model(tmp_path, width=512, hidden=1024)
    judge = judge_for(model, width=512)
    _, default = auto_search(model, judge, tmp_path / "default", mixed=False)
    best, study = optuna_search(model, judge, tmp_path / "optuna", trials=8)
    assert within(best, judge)
    if default.chosen is not None:
        assert study.chosen is not None, study.reason
        liners = {r.label() for r in plain_recipes()}
        assert liners <= {c.recipe.label() for c in study.candidates}


# --- the verb and the CLI --------------------------------------------------------------


def test_cli_runs_and_resumes_a_study_with_the_log_in_the_report(
    tmp_path: Path, ferry: Run
) -> None:
    source = save(deep_mlp(256, 256, 16), tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", x=feeds()[0]["x"])
    args = [source, "-o", tmp_path / "fast.onnx", "--auto", "--search", "optuna", "--inputs"]
    args += [tmp_path / "x.npz", "--study", tmp_path / "s.db", "--max-drop", "0.1", "--json"]
    code, out, err = ferry("optimize", *args, "--trials", "2")
    assert code == 0, err
    assert "Trial" not in err and "Trial" not in out.split('"log"')[0]  # the log is in the report
    report = json.loads(out)
    assert report["result"]["search"] == "optuna" and len(report["result"]["trials"]) == 2
    assert (tmp_path / "fast.onnx").exists() and (tmp_path / "fast.recipe.toml").exists()
    code, out, err = ferry("optimize", *args, "--trials", "3")
    assert code == 0, err
    trials = json.loads(out)["result"]["trials"]
    assert [t["here"] for t in trials] == [False, False, True]
    assert [t["recipe"] for t in trials] == [r.label() for r in plain_recipes()[:3]]
    onnx.checker.check_model(str(tmp_path / "fast.onnx"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--auto", "--trials", "3"], "--search optuna"),
        (["--auto", "--study", "s.db"], "--search optuna"),
        (["--auto", "--study-name", "s"], "--search optuna"),
        (["--auto", "--search", "grid"], "grid"),
    ],
)
def test_cli_search_options_need_each_other(
    tmp_path: Path, ferry: Run, extra: list[str], message: str
) -> None:
    source = save(deep_mlp(8, 8, 2), tmp_path / "m.onnx")
    code, _, err = ferry("optimize", source, "-o", tmp_path / "o.onnx", *extra)
    assert code == 2 and message in err
