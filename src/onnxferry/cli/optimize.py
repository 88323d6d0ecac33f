"""`ferry optimize` (a recipe or the --auto search, within a budget) and `ferry passes`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    budget_options,
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
@click.option(
    "--assume-sizes", is_flag=True, help="Judge at chosen sizes for open dims nobody gave."
)
@click.option("--for-size", is_flag=True, help="Keep passes that shrink but do not speed up.")
@runtime_options
@precision_option
@engine_cache_option
@click.option("--time-budget", type=float, help="With --auto: seconds to start candidates in.")
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
    )
    code = emit(optimized.last_report(ChainResult, SearchResult), as_json, report_path)
    if not as_json:
        click.echo(f"wrote {output}", err=True)
    return code


@click.command()
def passes() -> int:
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
    return emit(Report("passes", Listing([table])), False, None)
