"""`ferry batch`: offline inference over a dataset into Parquet (or .npy) shards.

    ferry batch model.onnx data.npy -o out --batch-size 64 --json
    ferry batch model.onnx data.npy -o out --batch-size 64 --max-memory 1GiB   # skips its shards
    ferry batch model.onnx data.npy -o pooled --devices cpu,cpu   # or cuda:0,cuda:1: one each

INPUT is .npy, .npz, Parquet or Arrow (a file or a folder), JSON lines, or a folder of images
(``--resize 224x224 --layout nchw --scale 0.00392 --mean 0.485,0.456,0.406 --std ...``). On a
terminal a progress bar shows rows, rate and time left; ``--json`` prints the summary. A rerun
into the same folder resumes only with the same model, input and shard size (``--shard-rows``,
or ``--batch-size``, which sets its default); anything else is refused, not mixed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from .options import custom_ops_options, devices_option, provider_option, report_options
from .render import emit, progress_unless_piped

if TYPE_CHECKING:
    from ..batch import BatchProgress


@click.command("batch")
@click.argument("model")
@click.argument("source", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder for the output shards (a rerun into it resumes).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Run here (threads) or on Ray Data.",
)
@click.option("--address", help="--engine ray: the cluster to join (auto, ray://HOST:10001).")
@click.option("--batch-size", type=int, help="Rows per run (default: ~16 MiB of input, 1-1024).")
@click.option("--shard-rows", type=int, help="Rows per output shard (default: 64 batches).")
@click.option(
    "--max-memory",
    help="Memory the process may hold while the local engine runs, e.g. 1GiB (default: 2GiB "
    "more than at the start).",
)
@click.option("--workers", type=int, help="Sessions (local) or actors (ray); default: the cores.")
@click.option("--threads", type=int, help="Intra-op threads per session.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["parquet", "npy"]),
    default="parquet",
    show_default=True,
    help="Shard format.",
)
@click.option("--resize", metavar="WxH", help="Images: resize to width x height.")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="Images: channel layout.")
@click.option("--scale", type=float, help="Images: multiply pixels by this (default 1/255).")
@click.option("--mean", metavar="A,B,C", help="Images: per-channel mean, after --scale.")
@click.option("--std", metavar="A,B,C", help="Images: per-channel std, after --scale.")
@provider_option
@devices_option
@custom_ops_options
@report_options
def batch_command(
    model: str,
    source: str,
    output: Path,
    engine: str,
    address: str | None,
    batch_size: int | None,
    shard_rows: int | None,
    max_memory: str | None,
    workers: int | None,
    threads: int | None,
    output_format: str,
    resize: str | None,
    layout: str | None,
    scale: float | None,
    mean: str | None,
    std: str | None,
    provider: str,
    devices: str | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Run MODEL over every row of INPUT, writing shards into -o (resumable)."""
    from ..batch import Preprocess, batch
    from ..report import Report

    preprocess = Preprocess(
        resize=_size(resize) if resize else None,
        layout=layout,
        scale=scale,
        mean=_floats(mean, "--mean") if mean else None,
        std=_floats(std, "--std") if std else None,
    )
    with progress_unless_piped(lambda: progress_bar(), as_json) as progress:
        summary = batch(
            model,
            source,
            output,
            engine=engine,
            address=address,
            batch_size=batch_size,
            shard_rows=shard_rows,
            max_memory=max_memory,
            workers=workers,
            threads=threads,
            output_format=output_format,
            preprocess=preprocess if preprocess.given else None,
            provider=provider,
            devices=devices,
            progress=progress,
        )
    return emit(Report("batch", summary, notes=list(summary.notes)), as_json, report_path)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise UsageError(f"--resize {text!r} is not WIDTHxHEIGHT", hint="e.g. --resize 224x224")
    return int(w), int(h)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not comma-separated numbers", hint=f"e.g. {option} 0.5,0.5,0.5"
        ) from None


@contextmanager
def progress_bar() -> Iterator[Callable[[BatchProgress], None]]:
    """A transient rich bar on stderr: rows done of all, rows/s and time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s, {task.fields[eta]} left"),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("batch", total=None, rate="-", eta="-")

        def show(p: BatchProgress) -> None:
            eta = "-" if p.eta_s is None else f"{p.eta_s:.0f}s"
            bar.update(task, total=p.total, completed=p.done, rate=f"{p.rate_per_s:,.0f}", eta=eta)

        yield show
