"""`ferry bench`: models side by side in this process, or (--url) a running V2 server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from .options import (
    batch_option,
    custom_ops_options,
    devices_option,
    inputs_option,
    precision_options,
    report_options,
    seed_option,
    size_options,
)
from .render import emit
from .types import INT_LIST, NAME_LIST

if TYPE_CHECKING:
    from ..bench import Progress


@click.command()
@click.argument("models", nargs=-1)
@click.option("--url", help="Load-test a V2 server instead: http://HOST:PORT (with --model).")
@click.option("--model", "served_model", help="With --url: the served model's name.")
@click.option("--binary/--json-data", default=True, help="With --url: binary tensors or JSON.")
@batch_option(default="1")
@click.option("--threads", type=INT_LIST, help="Intra-op thread counts, e.g. 1,2 (default: ORT's).")
@click.option(
    "--provider",
    "providers",
    type=NAME_LIST,
    default="cpu",
    show_default=True,
    help="Providers, e.g. cpu,cuda.",
)
@devices_option
@precision_options
@click.option("--warmup", default=10, show_default=True, help="Untimed runs first.")
@click.option("--iterations", type=int, help="Timed runs per configuration.")
@click.option("--duration", type=float, help="Seconds per configuration instead.")
@click.option(
    "--concurrency",
    type=INT_LIST,
    default="1",
    show_default=True,
    help="Parallel requests, e.g. 1,8.",
)
@size_options
@inputs_option(
    "Feeds to time instead of generated ones (the first set; with --batch, its rows repeated "
    "to each batch)"
)
@seed_option("generated inputs")
@click.option(
    "--price-per-hour",
    type=float,
    help="USD per hour of this machine: adds the cost per million inferences.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print the results as CSV.")
@custom_ops_options
@report_options
def bench(
    models: tuple[str, ...],
    url: str | None,
    served_model: str | None,
    binary: bool,
    batches: list[int],
    threads: list[int] | None,
    providers: list[str],
    devices: str | None,
    precision: str,
    engine_cache: Path | None,
    calibration_table: Path | None,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: list[int],
    dims: dict[str, int],
    input_shapes: dict[str, tuple[int, ...]],
    inputs: str | None,
    seed: int,
    price_per_hour: float | None,
    as_csv: bool,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Measure latency, throughput and memory of one or more models side by side, or (--url)
    load-test a running V2 server like perf_analyzer. Energy per inference where RAPL
    counters can be read; cost per million inferences with --price-per-hour."""
    from ..bench import BenchSuite
    from ..bench import bench as run_bench

    if as_csv and as_json:
        raise UsageError("--csv and --json exclude each other", hint="pick one")
    if url is not None and devices is not None:
        raise UsageError(
            "--devices benches model files here, not a server",
            hint="start the server with --devices, then bench its --url",
        )
    counts: list[int | None] = [*threads] if threads else [None]
    pool = {} if devices is None else {"devices": devices}
    drawn = url is None and sys.stderr.isatty()
    with progress_bar(by_time=duration is not None) if drawn else nullcontext() as progress:
        report = run_bench(
            list(models),
            url=url,
            model=served_model,
            concurrency=concurrency,
            binary=binary,
            duration=duration,
            seed=seed,
            batches=batches,
            threads=counts,
            providers=providers,
            precision=precision,
            engine_cache=engine_cache,
            calibration_table=calibration_table,
            warmup=warmup,
            iterations=iterations,
            dims=dims,
            input_shapes=input_shapes,
            inputs=inputs,
            progress=progress,
            price_per_hour=price_per_hour,
            **pool,
        )
    if as_csv and isinstance(report.result, BenchSuite):
        click.echo(report.result.to_csv(), nl=False)
        if report_path is not None:
            report.write(report_path)
        return report.exit_code
    return emit(report, as_json, report_path)


@contextmanager
def progress_bar(*, by_time: bool) -> Iterator[Callable[[Progress], None]]:
    """A transient rich bar on stderr, drawn from the ``Progress`` reports of a local bench:
    one bar per configuration, in requests, or (``by_time``) in seconds."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as Bar

    amount = TextColumn("{task.completed:.1f}s") if by_time else MofNCompleteColumn()
    bar = Bar(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        amount,
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("bench", total=None)
        shown = [0]

        def show(p: Progress) -> None:
            if p.index != shown[0]:
                shown[0] = p.index
                what = f"[{p.index}/{p.total}] {p.configuration}"
                bar.reset(task, description=what, total=p.iterations or p.duration_s)
            done = p.done if p.duration_s is None else min(p.elapsed_s, p.duration_s)
            bar.update(task, completed=done)

        yield show
