"""`ferry deploy`: convert -> optimize -> bench into one directory with its reports."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    assume_sizes_option,
    batch_option,
    budget_options,
    custom_export_option,
    custom_ops_options,
    dim_option,
    report_options,
    source_options,
)
from .render import emit


@click.command()
@click.argument("source")
@click.option(
    "-o",
    "--outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory to deploy into.",
)
@source_options(inputs="Sample inputs, for conversion and validation")
@dim_option
@assume_sizes_option
@budget_options
@batch_option(default="1,8")
@custom_export_option
@custom_ops_options
@report_options
def deploy(
    source: str,
    outdir: Path,
    framework: str | None,
    input_shapes: dict[str, tuple[int, ...]],
    inputs: str | None,
    dynamic: dict[str, dict[int, str]] | None,
    trust_pickle: bool,
    graph_outputs: list[str],
    bindings: dict[str, bool | int | float],
    dims: dict[str, int],
    assume_sizes: bool,
    max_drop: float,
    budget: str | None,
    eval_data: str | None,
    batches: list[int],
    custom_export: Path | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Convert (verified) -> optimize --auto -> bench, into OUTDIR with JSON and HTML reports.
    A torch model's custom layers export through --custom-export, as in `ferry convert`."""
    from ..deploy import deploy as deploy_model

    report = deploy_model(
        source,
        outdir,
        framework=framework,
        input_shapes=input_shapes,
        inputs=inputs,
        dynamic=dynamic,
        dims=dims,
        assume_sizes=assume_sizes,
        max_drop=max_drop,
        budget=budget,
        eval_data=eval_data,
        trust_pickle=trust_pickle,
        batches=batches,
        custom_export=custom_export,
        graph_outputs=graph_outputs,
        bindings=bindings,
    )
    code = emit(report, as_json, report_path)
    if not as_json:
        click.echo(f"report: {outdir / 'report.html'}", err=True)
    return code
