"""`ferry finetune`: train an ONNX classifier further in torch and write it back, verified.

    ferry finetune digits.onnx --data train.npz --labels y --eval val.npz --epochs 2 -o t.onnx
    ferry finetune digits.onnx --data train.npz --labels y --freeze-until relu_1 -o t.onnx
    ferry finetune digits.onnx --data train.npz --labels y --new-head 4 -o t.onnx --report t.html
    ferry finetune digits.onnx --data train.npz --labels y --registry reg --name digits -o t.onnx
    ferry finetune digits.onnx --data train.npz --labels y --replace relu_1=blocks.py:Clip -o t.onnx

The report's tables go to stdout (``--json``: the JSON report); on a terminal a progress bar
shows the epoch, the batch and the loss on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..parity import Tolerance
from .options import (
    lineage_options,
    output_option,
    report_options,
    seed_option,
    tolerance_options,
)
from .render import emit, progress_unless_piped


@click.command("finetune")
@click.argument("model")
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training rows (.npz): the labels under --labels, every other array an input.",
)
@click.option("--labels", "labels_key", required=True, help="The labels' array name in the .npz.")
@click.option(
    "--eval",
    "eval_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out rows (.npz, same names); default: a seeded fifth of --data.",
)
@click.option("--freeze-until", help="Freeze every weight up to this tensor (or node), inclusive.")
@click.option("--new-head", type=int, help="Replace the classification head for this many classes.")
@click.option(
    "--replace",
    "replacements",
    multiple=True,
    metavar="NODES=FILE.py:NAME",
    help="Run your torch module instead of a node (or FIRST..LAST, a range); it may define its "
    "own torch.autograd.Function. Runs that file's code. Repeatable.",
)
@click.option("--epochs", default=10, show_default=True, help="Epochs at most.")
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--batch-size", default=32, show_default=True, help="Rows per step.")
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step", "constant"]),
    default="cosine",
    show_default=True,
    help="Learning-rate schedule over the epochs.",
)
@click.option(
    "--patience", default=3, show_default=True, help="Stop after this many epochs without gain."
)
@seed_option("shuffling and the head")
@lineage_options("the tuned model", "The parent version")
@output_option
@tolerance_options()
@report_options
def finetune_command(
    model: str,
    data: Path,
    labels_key: str,
    eval_path: Path | None,
    freeze_until: str | None,
    new_head: int | None,
    replacements: tuple[str, ...],
    epochs: int,
    lr: float,
    batch_size: int,
    schedule: str,
    patience: int,
    seed: int,
    registry: Path | None,
    name: str | None,
    parent: str | None,
    output: Path,
    tolerance: Tolerance | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Fine-tune an ONNX classifier in PyTorch (new head, frozen layers, your own blocks) and
    write it back as ONNX, verified against the tuned module; held-out accuracy before and
    after, the training curve and the parity figures go into the report."""
    from ..learn import FinetuneResult, finetune

    replace = dict(_replacement(text) for text in replacements)
    with progress_unless_piped(lambda: progress_bar(epochs), as_json) as progress:
        tuned = finetune(
            model,
            data,
            labels_key,
            eval_data=eval_path,
            freeze_until=freeze_until,
            new_head=new_head,
            replace=replace,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            schedule=schedule,
            patience=patience,
            seed=seed,
            output=output,
            tolerance=tolerance,
            registry=registry,
            name=name,
            parent=parent,
            progress=progress,
        )
    return emit(tuned.last_report(FinetuneResult), as_json, report_path)


def _replacement(text: str) -> tuple[str, str]:
    from ..errors import UsageError

    nodes, sep, factory = text.partition("=")
    if not sep or not nodes or not factory:
        raise UsageError(
            f"--replace {text!r}: expected NODES=FILE.py:NAME",
            hint="e.g. --replace relu_1=blocks.py:StraightThroughClip",
        )
    return nodes, factory


@contextmanager
def progress_bar(epochs: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A transient rich bar on stderr: batches of the current epoch, with the loss."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        console=Console(file=sys.stderr),
        transient=True,
    )
    with bar:
        task = bar.add_task(f"epoch 1/{epochs}", total=None, loss=float("nan"))

        def show(p: dict[str, Any]) -> None:
            bar.update(
                task,
                description=f"epoch {p['epoch']}/{p['epochs']}",
                total=p["batches"],
                completed=p["batch"],
                loss=p["loss"],
            )

        yield show
