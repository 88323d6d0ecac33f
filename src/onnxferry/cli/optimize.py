"""`ferry optimize` (a recipe or the --auto search, within a budget) and `ferry passes`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    assume_sizes_option,
    budget_options,
    custom_ops_options,
    engine_cache_option,
    inputs_option,
    output_option,
    precision_option,
    report_options,
    runtime_options,
    size_options,
)
from .render import Listing, emit


@click.command()
@click.argument("model")
@output_option
@click.option("--recipe", type=click.Path(dir_okay=False), help="A recipe (TOML) to apply.")
@click.option("--auto", is_flag=True, help="Search candidate recipes for the fastest in budget.")
@budget_options
@inputs_option("Validation feeds")
@click.option("--calibration", help="Calibration samples for static int8 (.npz or a directory).")
@size_options
@assume_sizes_option
@click.option("--for-size", is_flag=True, help="Keep passes that shrink but do not speed up.")
@runtime_options
@precision_option
@engine_cache_option
@click.option(
    "--time-budget",
    type=float,
    help="With --auto: seconds to start candidates in (default: 150 + 1.3 per MB, max 780).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rows per run when timing (the batch the model will serve).",
)
@click.option(
    "--judge-inputs",
    help="With --auto: held-out feeds to judge the budget on (default: a split of --inputs).",
)
@click.option(
    "--search",
    type=click.Choice(["default", "optuna"]),
    default="default",
    show_default=True,
    help="With --auto: the candidate list, or Optuna's TPE over passes and parameters.",
)
@click.option("--trials", type=int, help="With --search optuna: trials in the study (default 20).")
@click.option("--study", help="With --search optuna: a study file or RDB URL; runs resume it.")
@click.option("--study-name", help="With --study: the study's name (default: from the model).")
@custom_ops_options
@report_options
def optimize(
    model: str,
    output: Path,
    recipe: str | None,
    auto: bool,
    max_drop: float,
    budget: str | None,
    eval_data: str | None,
    inputs: str | None,
    calibration: str | None,
    dims: dict[str, int],
    input_shapes: dict[str, tuple[int, ...]],
    assume_sizes: bool,
    for_size: bool,
    provider: str,
    threads: int | None,
    precision: str,
    engine_cache: Path | None,
    time_budget: float | None,
    batch: int,
    judge_inputs: str | None,
    search: str,
    trials: int | None,
    study: str | None,
    study_name: str | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Make a model faster within an accuracy budget: a recipe, or --auto search.

    Writes OUTPUT and OUTPUT's recipe (<stem>.recipe.toml) to replay with --recipe.
    """
    from ..model import Model
    from ..optimize import ChainResult, SearchResult, optimize

    loaded = Model.load(model)
    optimized = optimize(
        loaded,
        output,
        recipe=recipe,
        auto=auto,
        budget=budget,
        max_drop=max_drop,
        inputs=inputs,
        eval_data=eval_data,
        calibration=calibration,
        input_shapes=input_shapes,
        dims=dims,
        assume_sizes=assume_sizes,
        for_size=for_size,
        provider=provider,
        threads=threads,
        time_budget=time_budget,
        precision=precision,
        engine_cache=engine_cache,
        batch=batch,
        judge_inputs=judge_inputs,
        search=search,
        trials=trials,
        study=study,
        study_name=study_name,
    )
    code = emit(optimized.last_report(ChainResult, SearchResult), as_json, report_path)
    if not as_json:
        click.echo(f"wrote {output}", err=True)
    return code


@click.command()
@report_options
def passes(as_json: bool, report_path: Path | None) -> int:
    """List the optimization passes and their parameters (for recipes)."""
    from ..optimize import list_passes
    from ..report import Report, Table

    rows = [
        (info.name, info.family, *param)
        for info in list_passes()
        for param in [(p.name, p.type, repr(p.default), p.description) for p in info.parameters]
        or [("-", "-", repr(None), "")]
    ]
    table = Table("passes", ("pass", "family", "parameter", "type", "default", "detail"), rows)
    return emit(Report("passes", Listing([table])), as_json, report_path)
