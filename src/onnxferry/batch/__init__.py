"""`ferry batch`: offline inference over a dataset, locally or on Ray, in bounded memory,
resumable, every output row traceable to its input row.

    summary = batch("model.onnx", "data.npy", "out", batch_size=64, shard_rows=1000)
    summary.rows, summary.shards_written, summary.rows_per_s, summary.peak_rss_bytes
    outputs = read_output("out")                       # {"row": ..., "probs": ...} by row
    batch("model.onnx", "data.npy", "out", batch_size=64, shard_rows=1000).shards_skipped  # 1

Input (``sources``): ``.npy``, ``.npz``, Parquet or Arrow files or folders, JSON lines, or a
folder of images with ``Preprocess`` (resize, layout, scale, mean/std). Output (``sinks``):
shards of ``shard_rows`` rows named by their row range, Parquet (``row``, the trace columns,
one column per model output) or ``.npy``, each written to a temporary name and renamed when
complete; ``OUTPUT/_ferry_batch.json`` records the model, the input and the sizes, so a rerun
of the same run skips finished shards and redoes a partial one, and a different run into the
same folder is refused.

Engines: ``local`` (``local``: a reader, ``workers`` ONNX Runtime sessions sized to the usable
cores, a writer, overlapping; at most as many batches in flight as ``max_memory`` allows) and
``ray`` (``ray_engine``: Ray Data, one session per actor; ``address`` for a cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..devices import Device, check_pool, describe_pool, parse_devices, pool_provider
from ..errors import DataError, UsageError
from ..graphs import sequence_outputs, sized_by_data, time_axis_error, time_major_inputs
from ..model import Model
from ..runtime import check_threads, usable_cores
from .images import Preprocess
from .plan import (
    DEFAULT_MAX_MEMORY,
    SHARD_BATCHES,
    Job,
    Manifest,
    current_rss,
    default_batch_size,
    parse_size,
)
from .sinks import FORMATS, read_output, shards
from .sources import Source, open_source
from .summary import BatchProgress, BatchSummary, ProgressCallback

ENGINES = ("local", "ray")


def batch(
    model: str | Path | Model,
    source: str | Path,
    output: str | Path,
    *,
    engine: str = "local",
    batch_size: int | None = None,
    shard_rows: int | None = None,
    max_memory: int | str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    output_format: str = "parquet",
    preprocess: Preprocess | None = None,
    address: str | None = None,
    provider: str = "cpu",
    devices: str | Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Run ``model`` over every row of ``source``, writing shards into the folder ``output``.

    ``batch_size``: rows per ``session.run`` (default: about 16 MiB of input, 1-1024 rows;
    a model with a fixed batch axis takes its own). ``shard_rows``: rows per output shard
    (default 64 batches). ``max_memory``: bytes or "2GiB" the process may hold while the local
    engine runs (default: 2 GiB more than it holds when the run starts). ``workers`` x
    ``threads``: sessions and intra-op threads each (default: the usable cores). ``devices``
    ("cuda:0,cuda:1", ``devices.parse_devices``): the local engine runs one session per
    device instead (not with ``workers``), and the summary's notes count the batches each ran.
    UsageError / DataError (exit 2) for options or input that cannot work, ProviderError
    naming a device that cannot be used.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", hint="use local or ray")
    if output_format not in FORMATS:
        raise UsageError(f"unknown output format {output_format!r}", hint="use parquet or npy")
    pool = _pool(devices, engine, workers, provider)
    loaded = model if isinstance(model, Model) else Model.load(model)
    _check_rows_are_not_indexed(loaded)
    src = open_source(source, loaded.signature, preprocess)
    try:
        return _run(loaded, src, Path(output), engine, batch_size, shard_rows, max_memory,
                    workers, threads, output_format, address, provider, progress,
                    pool)  # fmt: skip
    finally:
        src.close()


def _run(
    loaded: Model,
    src: Source,
    outdir: Path,
    engine: str,
    batch_size: int | None,
    shard_rows: int | None,
    max_memory: int | str | None,
    workers: int | None,
    threads: int | None,
    output_format: str,
    address: str | None,
    provider: str,
    progress: ProgressCallback | None,
    pool: list[Device],
) -> BatchSummary:
    if src.rows == 0:
        raise DataError(f"{src.path} holds no rows", hint="give an input with at least one row")
    notes: list[str] = []
    _check_no_sequences(loaded)
    _check_rows_are_not_time(loaded)
    fixed = fixed_batch(loaded)
    whole = _whole_rows(loaded)
    ragged = tuple(whole)
    if whole:
        _check_ragged(loaded, whole, fixed, output_format)
        if batch_size not in (None, 1):
            notes.append(
                f"{_whole_rows_why(whole)}: batches of 1 row, each row's value stored whole"
            )
        batch_size = fixed = 1
    if fixed is not None:
        if batch_size not in (None, fixed):
            notes.append(f"the model's batch axis is fixed at {fixed}: batches of {fixed} rows")
        batch_size = fixed
    elif batch_size is None:
        batch_size = default_batch_size(src.read(0, 1).nbytes)
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}", hint="--batch-size 64")
    shard_rows = shard_rows if shard_rows is not None else SHARD_BATCHES * batch_size
    if shard_rows < 1:
        raise UsageError(
            f"shard rows must be at least 1, got {shard_rows}", hint="--shard-rows 10000"
        )
    # Not given: 2 GiB on top of what the caller's process holds already (a notebook with
    # TensorFlow loaded is past 2 GiB before the run reads a row); given: the whole process.
    memory = (
        parse_size(max_memory) if max_memory is not None else current_rss() + DEFAULT_MAX_MEMORY
    )
    if pool:
        sizes = len(pool), threads or max(1, usable_cores() // len(pool))
        if threads is not None:
            check_threads(threads)
        notes.extend(n for n in [describe_pool(pool)] if n)
    else:
        sizes = worker_sizes(workers, threads, loaded.size_bytes, memory)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{outdir} is a file; -o names a folder for the shards")
    Manifest.of(loaded, src, shard_rows=shard_rows, output_format=output_format).claim(outdir)
    columns = ["row", *_trace(src.kind), *loaded.signature.output_names]
    every = shards(src.rows, shard_rows)
    finished = [s for s in every if s.done(outdir, output_format, columns)]
    skip = set(finished)
    job = Job(
        loaded, src, outdir, [s for s in every if s not in skip], batch_size,
        skipped=finished, output_format=output_format, workers=sizes[0], threads=sizes[1],
        max_memory=memory, provider=provider, fixed_batch=fixed, ragged=ragged, notes=notes,
        devices=pool,
    )  # fmt: skip
    if engine == "ray":
        from .ray_engine import run_ray

        job.threads = threads
        summary = run_ray(job, workers=workers, address=address, progress=progress)
    else:
        from .local import run_local

        summary = run_local(job, progress)
    summary.shard_rows = shard_rows
    return summary


def _pool(
    devices: str | Sequence[str] | None, engine: str, workers: int | None, provider: str
) -> list[Device]:
    """The parsed device pool (checked against this build), [] without one."""
    if devices is None:
        return []
    pool = parse_devices(devices)
    if engine != "local":
        raise UsageError("--devices runs on the local engine", hint="drop --engine ray")
    if workers is not None:
        raise UsageError(
            "--workers and --devices exclude each other", hint="--devices runs one per device"
        )
    pool_provider(pool, provider)
    check_pool(pool)
    return pool


def _check_no_sequences(model: Model) -> None:
    """A sequence of tensors (``SplitToSequence``) holds one tensor per element, whatever the
    rows: there is no row's value to write (it was a shape error about axis 0)."""
    sequences = sequence_outputs(model.proto)
    if sequences:
        names = ", ".join(repr(n) for n in sequences)
        raise UsageError(
            f"{model.name}: outputs {names} are sequences of tensors, which ferry batch "
            "cannot split into rows",
            hint="export the model with tensor outputs (ConcatFromSequence stacks a "
            "sequence into one)",
        )


def _check_rows_are_not_time(model: Model) -> None:
    """An input whose first axis is a recurrent operator's time axis (``graphs.
    time_major_inputs``) and names no other dim as the batch: its "rows" are time steps,
    and runs of them apart would each start the sequence over."""
    axes = model.signature.row_axes()
    timed = [name for name in time_major_inputs(model.proto) if axes.get(name) == 0]
    if timed:
        raise time_axis_error(model.name, timed[0])


def _check_rows_are_not_indexed(model: Model) -> None:
    """An input whose first axis another input's values index (``Signature.links``: a
    graph's nodes, numbered by its edges): its rows are one graph, not rows to run apart."""
    link = next((k for k in model.signature.links if k.axis == 0), None)
    if link is not None:
        raise UsageError(
            f"{model.name}: the rows of input {link.data!r} are what {link.index!r} numbers "
            "(a graph's nodes and its edges), so they are one sample, not rows ferry batch "
            "can take apart",
            hint="send each graph to `ferry serve` as one request, or run onnxruntime on each",
        )


def _whole_rows(model: Model) -> dict[str, str]:
    """Outputs whose batch value cannot be split into rows, each with why: sized by the data
    (``graphs.sized_by_data``) or rows folded into another axis
    (``Signature.merged_row_outputs``). They come from runs of one row, stored whole."""
    counted = "sized by the data (a count of boxes or selections per row)"
    whole = dict.fromkeys(sized_by_data(model.proto), counted)
    shapes = {o.name: o.shape for o in model.signature.outputs}
    for name in model.signature.merged_row_outputs():
        shape = ", ".join(str(d) for d in shapes[name] or ())
        whole.setdefault(name, f"shaped [{shape}], its rows folded into another axis")
    return whole


def _whole_rows_why(whole: dict[str, str]) -> str:
    return "; ".join(f"output {name!r} is {why}" for name, why in whole.items())


def _check_ragged(
    model: Model, whole: dict[str, str], fixed: int | None, output_format: str
) -> None:
    """Outputs stored a row at a time (``_whole_rows``) are stored as lists: Parquet only, and
    only where a run can be one row."""
    if output_format != "parquet":
        raise UsageError(
            f"{model.name}: {_whole_rows_why(whole)}, which {output_format} shards cannot hold",
            hint="write Parquet (--format parquet): each row's value is a list there",
        )
    if fixed not in (None, 1):
        raise UsageError(
            f"{model.name}: {_whole_rows_why(whole)}, and the model runs {fixed} rows at "
            "once: its outputs cannot be told apart by row",
            hint="export the model with a batch of 1 or a dynamic batch",
        )


def fixed_batch(model: Model) -> int | None:
    """The batch size a model's first input fixes (its dim 0 is a number), else None."""
    shape = model.signature.inputs[0].shape if model.signature.inputs else None
    return shape[0] if shape and isinstance(shape[0], int) else None


def worker_sizes(
    workers: int | None, threads: int | None, model_bytes: int = 0, memory: int = 0
) -> tuple[int, int]:
    """(sessions, intra-op threads each). Not given: one single-threaded session per usable
    core (no intra-op sync, no spinning threads; measured faster than one session on every
    core, benchmarks/RESULTS.md), fewer when twice the model per session would pass half of
    ``memory``; the threads share out the cores."""
    cores = usable_cores()
    if workers is not None:
        check_threads(workers, "workers")
    if threads is not None:
        check_threads(threads)
    if workers is None:
        fit = (memory // 2) // max(1, 2 * model_bytes) if memory else cores
        workers = max(1, min(cores // (threads or 1), fit))
    return workers, threads or max(1, cores // workers)


def _trace(kind: str) -> list[str]:
    return {"images": ["file"], "jsonl": ["line"]}.get(kind, [])


__all__ = [
    "ENGINES",
    "BatchProgress",
    "BatchSummary",
    "Preprocess",
    "batch",
    "read_output",
]
