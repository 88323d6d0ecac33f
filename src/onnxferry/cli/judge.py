"""The judging verbs: inspect, check, compare, test (each a shell over the API function)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import (
    bind_option,
    custom_ops_options,
    framework_option,
    graph_outputs_option,
    inputs_option,
    precision_options,
    report_options,
    runtime_options,
    seed_option,
    size_options,
    tolerance_options,
    trust_pickle_option,
)
from .render import emit
from .types import NAME_LIST

if TYPE_CHECKING:
    from ..parity import Tolerance


@click.command()
@click.argument("model")
@report_options
def inspect(model: str, as_json: bool, report_path: Path | None) -> int:
    """Show a model's signature, opsets, operators, parameters, size and metadata."""
    from ..inspection import inspect as inspect_model

    return emit(inspect_model(model), as_json, report_path)


@click.command()
@click.argument("model")
@click.option(
    "--provider", "providers", type=NAME_LIST, help="Providers to try loading on (default: all)."
)
@custom_ops_options
@report_options
def check(model: str, providers: list[str] | None, as_json: bool, report_path: Path | None) -> int:
    """Check that a model can be deployed; exit 1 when anything blocks it."""
    from ..check import check as check_model

    return emit(check_model(model, providers=providers or None), as_json, report_path)


@click.command()
@click.argument("model_a")
@click.argument("model_b", required=False)
@runtime_options
@click.option("--provider-b", help="Provider for B (default: --provider).")
@precision_options
@inputs_option("Feeds")
@click.option("--samples", default=3, show_default=True, help="Generated input sets.")
@size_options
@seed_option("generated inputs")
@tolerance_options(source="the framework's own when B is a source")
@click.option("--no-bisect", is_flag=True, help="Skip the search for the first divergence.")
@framework_option
@trust_pickle_option
@graph_outputs_option
@bind_option
@custom_ops_options
@report_options
def compare(
    model_a: str,
    model_b: str | None,
    provider: str,
    threads: int | None,
    provider_b: str | None,
    precision: str,
    engine_cache: Path | None,
    calibration_table: Path | None,
    inputs: str | None,
    samples: int,
    dims: dict[str, int],
    input_shapes: dict[str, tuple[int, ...]],
    seed: int,
    tolerance: Tolerance | None,
    no_bisect: bool,
    framework: str | None,
    trust_pickle: bool,
    graph_outputs: list[str],
    bindings: dict[str, bool | int | float],
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Compare two models, one model on two providers (--provider-b), or an ONNX model A with
    the framework model B it came from (file.py:function, .pt, .keras, .tflite, .pkl, ...).
    --precision is B's (A, the reference, runs at fp32)."""
    from ..compare import compare as compare_models

    report = compare_models(
        model_a,
        model_b,
        framework=framework,
        provider=provider,
        provider_b=provider_b,
        threads=threads,
        inputs=inputs,
        samples=samples,
        dims=dims,
        input_shapes=input_shapes,
        seed=seed,
        tolerance=tolerance,
        bisect_on_failure=not no_bisect,
        trust_pickle=trust_pickle,
        precision=precision,
        engine_cache=engine_cache,
        calibration_table=calibration_table,
        graph_outputs=graph_outputs,
        bindings=bindings,
    )
    return emit(report, as_json, report_path)


@click.command(name="test")
@click.argument("model")
@click.argument("data", required=False)
@runtime_options
@tolerance_options()
@custom_ops_options
@report_options
def test_command(
    model: str,
    data: str | None,
    provider: str,
    threads: int | None,
    tolerance: Tolerance | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Run a model on golden data (test_data_set_N/*.pb or .npz) and judge each set; DATA
    defaults to the model's directory (the model zoo's layout)."""
    from ..golden import test

    report = test(model, data, provider=provider, threads=threads, tolerance=tolerance)
    return emit(report, as_json, report_path)
