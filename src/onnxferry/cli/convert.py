"""`ferry convert`: a framework model to a verified ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import (
    custom_export_option,
    custom_ops_options,
    output_option,
    report_options,
    source_options,
    tolerance_options,
)
from .render import emit

if TYPE_CHECKING:
    from ..parity import Tolerance


@click.command()
@click.argument("source")
@output_option
@source_options(inputs="Sample inputs")
@click.option("--opset", type=int, help="ai.onnx opset (default: the exporter's, capped).")
@tolerance_options(source="the framework's own when neither is given")
@click.option("--no-verify", is_flag=True, help="Skip the parity check (loudly reported).")
@custom_export_option
@custom_ops_options
@report_options
def convert(
    source: str,
    output: Path,
    framework: str | None,
    input_shapes: dict[str, tuple[int, ...]],
    inputs: str | None,
    dynamic: dict[str, dict[int, str]] | None,
    trust_pickle: bool,
    graph_outputs: list[str],
    bindings: dict[str, bool | int | float],
    opset: int | None,
    tolerance: Tolerance | None,
    no_verify: bool,
    custom_export: Path | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Convert a PyTorch, Keras/TF, TFLite, scikit-learn or ONNX model to a verified ONNX file.

    SOURCE is a file.py:function factory (it builds a torch, Keras or scikit-learn model and
    returns it; importing the file runs its code), .pt/.pth/.jit (TorchScript), .pt2
    (torch.export), a Hugging Face model folder (config.json and its weights, as
    save_pretrained writes it), .keras, a SavedModel directory, a frozen TensorFlow graph (.pb),
    a TF1 checkpoint (its .meta beside .index and .data-*, or their folder), .tflite,
    .pkl/.joblib (scikit-learn; needs --trust-pickle, since loading a pickle executes code), a
    LightGBM .txt or XGBoost .json/.ubj model file, or .onnx (re-targeted to --opset). A
    TensorFlow graph's outputs are its ends unless --graph-outputs names them; --bind fixes a
    placeholder (keep_prob=1.0). A torch model's custom layers export through --custom-export;
    custom ONNX operators run in the parity check through onnxruntime-extensions or
    --custom-ops.
    """
    from ..convert import Conversion, ParityFailure, convert

    try:
        model = convert(
            source,
            output,
            framework=framework,
            input_shapes=input_shapes,
            inputs=inputs,
            dynamic=dynamic,
            opset=opset,
            tolerance=tolerance,
            verify=not no_verify,
            trust_pickle=trust_pickle,
            custom_export=custom_export,
            graph_outputs=graph_outputs,
            bindings=bindings,
        )
    except ParityFailure as e:
        emit(e.report, as_json, report_path)
        raise
    code = emit(model.last_report(Conversion), as_json, report_path)
    if not as_json:
        click.echo(f"wrote {output}", err=True)
    return code
