"""`ferry explain`: attributions for a model's predictions, written as pictures and a report.

    ferry explain model.onnx --inputs x.npz --method occlusion -o explained
    ferry explain model.onnx --inputs x.npz --background bg.npz --target 2 --max-evals 20000

The files (``explain.render``) go to ``-o DIR`` (default ``MODEL-explain``); the report's
tables go to stdout (``--json``: the JSON report), the report's path to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import custom_ops_options, report_options, runtime_options, seed_option
from .render import emit, progress_unless_piped

if TYPE_CHECKING:
    from ..explain import Progress


@click.command("explain")
@click.argument("model")
@click.option(
    "--inputs",
    required=True,
    help="The rows to explain: .npz (one array per model input), .npy or .pb.",
)
@click.option(
    "--method",
    default="kernelshap",
    show_default=True,
    help="kernelshap, permutation, lime, occlusion, integrated-gradients.",
)
@click.option("--input", "input_name", help="The input to explain (default: the first).")
@click.option(
    "--target",
    help="A class index of the first output, an output's name, or OUTPUT:INDEX "
    "(default: each row's top class).",
)
@click.option(
    "--background",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Background rows (.npz): SHAP's background, LIME's training data, the baseline.",
)
@click.option(
    "--kind",
    help="The input's kind: image, tabular, tokens, signal, text, volume (default: told from it).",
)
@click.option(
    "--vocab",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens: a vocabulary file, one token a line (line N is id N).",
)
@click.option(
    "--samples",
    type=int,
    help="The method's samples per input (integrated-gradients: steps; default: its own).",
)
@click.option(
    "--segments", default=50, show_default=True, help="Superpixels per image, blocks per signal."
)
@click.option(
    "--window",
    type=int,
    help="Occlusion's window in pixels (default: 1/8 side), steps along a signal's axes "
    "(default: 1/16 of its longest), or tokens (default: one at a time).",
)
@click.option("--max-evals", type=int, help="At most this many model evaluations in all.")
@click.option("--deadline", type=float, help="Stop after this many seconds.")
@click.option(
    "--batch-size", type=int, help="Rows per session.run (default: about 1 MiB of input)."
)
@seed_option("the explainer's sampling")
@runtime_options
@click.option(
    "-o",
    "--output-dir",
    "outdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the files (default: MODEL-explain).",
)
@custom_ops_options
@report_options
def explain_command(
    model: str,
    inputs: str,
    method: str,
    input_name: str | None,
    target: str | None,
    background: Path | None,
    kind: str | None,
    vocab: Path | None,
    samples: int | None,
    segments: int,
    window: int | None,
    max_evals: int | None,
    deadline: float | None,
    batch_size: int | None,
    seed: int,
    provider: str,
    threads: int | None,
    outdir: Path | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Attribute a model's predictions to its input's features: kernelshap, permutation, lime,
    occlusion. Writes heatmaps (images), bar and beeswarm charts (tabular) or coloured tokens,
    the attributions (.npz, JSON) and one HTML report."""
    from ..explain import explain, load_vocabulary, write_explanation
    from ..model import Model
    from ..runtime import OrtRunner

    vocabulary = load_vocabulary(vocab) if vocab is not None else None
    runner = OrtRunner(Model.load(model), provider=provider, threads=threads)
    with progress_unless_piped(lambda: progress_bar(method), as_json) as progress:
        explanation = explain(
            runner,
            inputs,
            method,
            input_name=input_name,
            target=target,
            background=background,
            max_evals=max_evals,
            deadline=deadline,
            kind=kind,
            batch_size=batch_size,
            samples=samples,
            segments=segments,
            window=window,
            seed=seed,
            progress=progress,
        )
    folder = outdir if outdir is not None else Path(f"{Path(model).stem}-explain")
    files = write_explanation(explanation, folder, vocabulary)
    code = emit(explanation.report, as_json, report_path)
    click.echo(f"report: {files['report']}", err=True)
    return code


@contextmanager
def progress_bar(method: str) -> Iterator[Callable[[Progress], None]]:
    """A transient rich bar on stderr, in model evaluations, one input after another."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as Bar

    # The file is fixed now: while a library runs, explain sends sys.stderr to its notes.
    bar = Bar(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    with bar:
        task = bar.add_task(method, total=None)

        def show(p: Progress) -> None:
            what = f"{method} [{p.input_index + 1}/{p.inputs}]"
            bar.update(task, description=what, total=p.planned or None, completed=p.evaluations)

        yield show
