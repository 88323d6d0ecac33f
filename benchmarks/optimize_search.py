"""`optimize --auto`'s default candidate list against `--search optuna`, side by side, on the
same models, data and budget, in one process.

    .venv/bin/python benchmarks/optimize_search.py                 # encoder, cnn, mlp
    .venv/bin/python benchmarks/optimize_search.py --quick         # smaller MLP, fewer trials
    .venv/bin/python benchmarks/optimize_search.py --models encoder --encoder minilm --trials 16

Models (trained here with tests/trained_models.py, no download, cached; the MLP has seeded
random weights):
  encoder  a BERT-like post-LN encoder trained on a synthetic language (small: 2 layers,
           hidden 64; minilm: 6 layers, hidden 384), batch 1, sequence 128, mean-pooled
           embedding; budget cosine>=0.99 (worst case);
  cnn      a ResNet-style CNN trained on scikit-learn's digits (widths 32-64-128 at 32x32;
           --quick: 8-16-32 at 16x16); budget top1>=0.99 (agreement with fp32);
  mlp      x[1024] -> 4096 -> 4096 -> 1000 with ReLUs (--quick: 512 -> 2048 -> 2048 -> 1000);
           budget cosine>=0.999.

Each search gets the same search inputs (``optimize``'s ``inputs``; it splits them into tuning
and judging rows itself) and the same ``--time-budget``. Wall time is the whole
``onnxferry.optimize`` call. Then the original and both answers are judged on held-out inputs
neither search saw (the same budget metric, ``Judge.metric``) and timed side by side at batch
1 in interleaved rounds (``Judge.rounds``: median of the rounds' p50), with the original timed
twice: the two copies' distance is the run's timing noise. The target, per model: the Optuna
search's answer within budget on the held-out inputs, at least as fast as the default's
(within 3%, the choice rule's own margin, or the run's noise when that is larger: a smaller
difference is not a measured one), in less wall time. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*
from machine import cpu_summary, load_average

Feeds = dict[str, np.ndarray]
ROUNDS = 7
ITERATIONS = 50
MARGIN = 0.03


@dataclass
class Case:
    name: str
    path: Path
    budget: str
    search_inputs: list[Feeds]
    held_out: list[Feeds]


@dataclass
class Outcome:
    search: str
    wall_s: float
    tried: str
    recipe: str
    path: Path
    speedup: float = float("nan")
    metric: float = float("nan")
    within: bool = False


def encoder_case(work: Path, which: str) -> Case:
    from tests.trained_models import MINILM_ENCODER, SMALL_ENCODER, encoder_inputs, trained_encoder

    spec = MINILM_ENCODER if which == "minilm" else SMALL_ENCODER
    trained = trained_encoder(spec)
    return Case(
        f"encoder {spec.layers}x{spec.hidden} (trained)",
        trained.path,
        "cosine>=0.99",
        encoder_inputs(spec, 16, seed=1),
        encoder_inputs(spec, 32, seed=11),
    )


def cnn_case(work: Path, which: str) -> Case:
    from tests.trained_models import RESNET_CNN, SMALL_CNN, digits_split, trained_cnn

    spec = SMALL_CNN if which == "quick" else RESNET_CNN
    trained = trained_cnn(spec)
    x_test = digits_split(spec.size)[2]
    name = trained.path.name.removesuffix(".onnx")
    rows = [x.astype(np.float32)[None] for x in x_test]
    return Case(
        f"cnn {name} (trained on digits)",
        trained.path,
        "top1>=0.99",
        [{"image": r} for r in rows[:48]],
        [{"image": r} for r in rows[48:240]],
    )


def mlp_case(work: Path, which: str) -> Case:
    from tests.helpers import deep_mlp, save

    width, hidden = (512, 2048) if which == "quick" else (1024, 4096)
    path = save(deep_mlp(width, hidden, 1000), work / "mlp.onnx")
    rng = np.random.default_rng(0)

    def sets(count: int) -> list[Feeds]:
        return [{"x": rng.standard_normal((1, width)).astype(np.float32)} for _ in range(count)]

    return Case(f"mlp {width}-{hidden}-{hidden}-1000", path, "cosine>=0.999", sets(8), sets(32))


CASES: dict[str, Callable[[Path, str], Case]] = {
    "encoder": encoder_case,
    "cnn": cnn_case,
    "mlp": mlp_case,
}


def run_search(case: Case, search: str, work: Path, trials: int, budget_s: float) -> Outcome:
    import onnxferry
    from onnxferry.optimize import SearchResult

    out = work / f"{search}.onnx"
    study = search == "optuna"
    started = time.perf_counter()
    model = onnxferry.optimize(
        case.path,
        out,
        auto=True,
        budget=case.budget,
        inputs=case.search_inputs,
        time_budget=budget_s,
        search=search,
        trials=trials if study else None,
        study=work / "study.db" if study else None,
    )
    wall = time.perf_counter() - started
    found = model.last_report(SearchResult).result
    chosen = found.candidates[found.chosen].recipe.label() if found.chosen is not None else "-"
    if search == "optuna":
        rows = found.to_dict()["trials"]
        pruned = sum(r["state"] == "PRUNED" for r in rows)
        tried = f"{len(rows)} trials ({pruned} pruned)"
    else:
        tried = f"{len(found.candidates)} candidates"
    return Outcome(search, wall, tried, chosen, out)


def judge_side_by_side(case: Case, outcomes: list[Outcome]) -> float:
    """Time the original, the original again (a control) and the answers in interleaved
    rounds; the control's distance from the original is this run's timing noise (returned)."""
    from onnxferry.model import Model
    from onnxferry.optimize import Budget
    from onnxferry.optimize.chain import Judge

    original = Model.load(case.path)
    judge = Judge(original, case.held_out, Budget.parse(case.budget), timing=case.held_out[0])
    models = [original, Model.load(case.path), *(Model.load(o.path) for o in outcomes)]
    rounds = judge.rounds(models, rounds=ROUNDS, iterations=ITERATIONS)
    base = statistics.median(rounds[0])
    noise = abs(base / statistics.median(rounds[1]) - 1)
    for outcome, model, timed in zip(outcomes, models[2:], rounds[2:], strict=True):
        outcome.speedup = base / statistics.median(timed)
        outcome.metric = judge.metric(model)
        outcome.within = judge.budget.holds(outcome.metric)
    print(
        f"  original p50 {base:.3f} ms (median of {ROUNDS} interleaved rounds); the original "
        f"timed again as a control: {noise:.1%} apart (this run's noise)"
    )
    return noise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller MLP, 10 trials")
    parser.add_argument("--models", default="encoder,cnn,mlp")
    parser.add_argument("--encoder", choices=("small", "minilm"), default="small")
    parser.add_argument("--trials", type=int, default=None, help="default 16 (--quick: 10)")
    parser.add_argument("--time-budget", type=float, default=600.0)
    args = parser.parse_args()
    trials = args.trials or (10 if args.quick else 16)
    print(f"machine: {cpu_summary()}; load {load_average()}")
    print(f"optuna trials {trials}, time budget {args.time_budget:g} s per search")
    failed: list[str] = []
    table: list[tuple[str, Outcome]] = []
    for key in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="optimize-search-") as tmp:
            work = Path(tmp)
            which = args.encoder if key == "encoder" else ("quick" if args.quick else "full")
            case = CASES[key](work, which)
            print(
                f"\n{case.name}: budget {case.budget}, {len(case.search_inputs)} search inputs, "
                f"{len(case.held_out)} held-out inputs"
            )
            outcomes = []
            for search in ("default", "optuna"):
                outcome = run_search(case, search, work, trials, args.time_budget)
                print(f"  {search}: {outcome.wall_s:.1f} s, {outcome.tried}, {outcome.recipe}")
                outcomes.append(outcome)
            noise = judge_side_by_side(case, outcomes)
            table += [(case.name, o) for o in outcomes]
            default, study = outcomes
            ok = (
                study.within
                and study.speedup >= default.speedup * (1 - max(MARGIN, noise))
                and study.wall_s < default.wall_s
            )
            if not ok:
                failed.append(case.name)
    print("\n| model | search | wall s | tried | chosen | speedup | held-out metric | within |")
    print("|---|---|---|---|---|---|---|---|")
    for name, o in table:
        print(
            f"| {name} | {o.search} | {o.wall_s:.1f} | {o.tried} | {o.recipe} | "
            f"{o.speedup:.2f}x | {o.metric:.5f} | {'yes' if o.within else 'NO'} |"
        )
    print(f"\nload after: {load_average()}")
    if failed:
        print(f"target missed on: {', '.join(failed)}")
        return 1
    print("target met on every model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
