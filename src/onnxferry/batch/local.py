"""The local engine: reading, running and writing overlap on threads, in bounded memory.

    job = Job(model, source, Path("out"), todo=shards(source.rows, 1000), batch_size=256)
    summary = run_local(job, progress=lambda p: print(p.done, p.rate_per_s, p.eta_s))

Scheduling. One reader thread reads the batches of the shards to do, in row order, into a
queue; ``workers`` threads, each with its own ONNX Runtime session of ``threads`` intra-op
threads (together the usable cores; ORT releases the GIL while it runs), take batches from
that queue and build each batch's output table; the calling thread writes the tables in row
order (a batch that finishes early waits in a small reorder map), one shard after another,
each committed by a rename when its last batch is written. A semaphore of ``slots`` counts
the batches between being read and being written, so memory holds at most ``slots`` batches
of data: the reader waits for a slot before it reads. ``slots`` comes from ``--max-memory``
with the sizes measured on the first batch, which runs on the calling thread before the
others start (plan.in_flight). Any error stops the reader, lets the workers drain, removes
the shard in progress and is raised on the calling thread.

Every input and output is rows first in the files; one whose rows lie on another axis in the
model (Silero VAD's ``state[2, batch, 128]``) is moved there to run and back.

A model whose batch axis is fixed (``[1, 3, 224, 224]``) runs batches of exactly that size;
the last, shorter one is padded with copies of its last row and the padding's outputs dropped.
When that size is 1, an output without a batch axis (a recognizer's time-major
``[time, 1, classes]``) is kept whole as the row's output.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..devices import device_session_config, naming
from ..errors import DataError
from ..measure import PeakMemory
from ..runtime import OrtRunner, SessionConfig
from ..signature import Signature
from .plan import Job, current_rss, in_flight
from .sinks import ShardWriter, output_table, ragged_row
from .sources import Chunk
from .summary import BatchProgress, BatchSummary, ProgressCallback

PROGRESS_INTERVAL_S = 0.2


@dataclass
class _Done:
    seq: int
    shard: int
    table: Any  # pyarrow.Table
    error: BaseException | None = None


def session_config(provider: str, threads: int | None) -> SessionConfig:
    """Each worker's session (a Ray actor's too): ``threads`` intra-op threads that do not
    spin between runs (a spinning thread burns a core the reader, the writer or another
    session needs), with its own copy of the model's external data (a run of hours outlives
    edits to the files: ``SessionConfig.own_weights``)."""
    entries = {"session.intra_op.allow_spinning": "0"}
    return SessionConfig(provider=provider, threads=threads, entries=entries, own_weights=True)


def _runners(job: Job) -> list[OrtRunner]:
    """One runner per worker, or per device of the pool (errors name the device)."""
    config = session_config(job.provider, job.threads)
    if not job.devices:
        return [OrtRunner(job.model, config=config, validate=False) for _ in range(job.workers)]
    runners = []
    for device in job.devices:
        with naming(device):
            on = device_session_config(config, device)
            runners.append(OrtRunner(job.model, config=on, validate=False))
    return runners


def run_outputs(
    runner: OrtRunner,
    feeds: dict[str, np.ndarray],
    fixed: int | None,
    ragged: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """One batch's outputs, rows first like its feeds; a batch shorter than a fixed batch axis
    is padded with copies of its last row, and the padding's outputs dropped. An input or
    output whose rows lie on another axis in the model (a recurrent state) has them moved
    there and back (``Signature.row_axes``, ``Signature.output_row_axis``). The ``ragged``
    outputs, sized by the data (``graphs.sized_by_data``), come from a run of one row and are
    that row's whole value (``sinks.ragged_row``)."""
    n = next((len(v) for v in feeds.values() if v.ndim), 0)
    if fixed is not None and n < fixed:
        feeds = {
            k: np.concatenate([v, np.repeat(v[-1:], fixed - n, axis=0)]) if v.ndim else v
            for k, v in feeds.items()
        }
    signature = runner.signature
    axes = signature.row_axes()
    feeds = {k: np.moveaxis(v, 0, axis) if (axis := axes[k]) else v for k, v in feeds.items()}
    outputs = runner.run(feeds)
    moved = {k: v if k in ragged else _rows_first(signature, k, v) for k, v in outputs.items()}
    return {k: ragged_row(v) if k in ragged else _rows(k, v, n, fixed) for k, v in moved.items()}


def _rows_first(signature: Signature, name: str, value: np.ndarray) -> np.ndarray:
    """An output with its row axis moved first (ZipMap's maps are rows already)."""
    if value.dtype == object or not value.ndim:
        return value
    axis = signature.output_row_axis(name, value.shape)
    return np.moveaxis(value, axis, 0) if axis else value


def _rows(name: str, value: np.ndarray, n: int, fixed: int | None) -> np.ndarray:
    """An output's ``n`` rows along axis 0. A run of one row may give an output without a
    batch axis (a batch-1 export's time-major ``[time, 1, classes]``; PyTorch's ``squeeze()``
    of every axis, as Microsoft's PLCMOS scores a batch of 1 as a scalar): its one row is all
    of it. Otherwise rows lie on axis 0, or the output cannot be split into rows."""
    ran = fixed or n
    if value.ndim and len(value) == ran:
        return value[:n]
    if ran == 1:
        return value[None]
    raise DataError(
        f"output {name!r} has shape {list(value.shape)} for a batch of {ran} rows: its rows are "
        "not along axis 0",
        hint="ferry batch needs each output's rows on its first axis, or on the axis its "
        "shape names as the batch",
    )


def run_batch(
    runner: OrtRunner, chunk: Chunk, fixed: int | None, ragged: tuple[str, ...] = ()
) -> Any:
    """The output table of one batch: its rows, trace columns and outputs."""
    outputs = run_outputs(runner, chunk.feeds, fixed, ragged)
    return output_table(chunk.rows, chunk.trace, outputs)


def _batches(job: Job) -> Iterator[tuple[int, int, int]]:
    """(shard index, start, stop) of every batch to run, in row order."""
    for i, shard in enumerate(job.todo):
        for start, stop in shard.batches(job.batch_size):
            yield i, start, stop


def run_local(job: Job, progress: ProgressCallback | None = None) -> BatchSummary:
    """Run ``job``; the summary of what was written and how fast."""
    total_batches = sum(math.ceil(s.rows / job.batch_size) for s in job.todo)
    skipped_rows = sum(s.rows for s in job.skipped)
    summary = job.summary("local")
    summary.workers, summary.threads_per_worker = job.workers, job.threads or 0
    summary.max_memory_bytes = job.max_memory
    with PeakMemory() as whole:
        import pyarrow  # noqa: F401 - loaded before the clock starts, not by the first table

        runners = _runners(job)
        ran = [0] * len(runners)
        started = time.perf_counter()
        if progress is not None:
            progress(BatchProgress(skipped_rows, job.source.rows, skipped_rows, 0.0))
        if total_batches:
            _pipeline(job, runners, total_batches, skipped_rows, started, summary, progress, ran)
        if job.devices:
            counts = ", ".join(f"{d} {n}" for d, n in zip(job.devices, ran, strict=True))
            summary.notes.append(f"batches per device: {counts}")
        summary.seconds = time.perf_counter() - started
    summary.peak_rss_bytes = whole.rss_bytes
    if progress is not None:
        done = skipped_rows + summary.processed
        progress(BatchProgress(done, job.source.rows, skipped_rows, summary.seconds))
    return summary


def _pipeline(
    job: Job,
    runners: list[OrtRunner],
    total: int,
    skipped_rows: int,
    started: float,
    summary: BatchSummary,
    progress: ProgressCallback | None,
    ran: list[int],
) -> None:
    batches = _batches(job)
    shard0, start0, stop0 = next(batches)
    baseline = current_rss()
    first = job.source.read(start0, stop0)
    table = run_batch(runners[0], first, job.fixed_batch, job.ragged)
    ran[0] += 1
    per_batch = first.nbytes + table.nbytes
    # What the first run left allocated besides its data: the session's arena, which each
    # worker's session grows as much (a cheap measure; a peak would need a gc and a reset).
    work = max(0, current_rss() - baseline - per_batch)
    slots = in_flight(
        budget=job.max_memory,
        baseline=baseline,
        per_batch=per_batch,
        work=work,
        workers=len(runners),
    )
    summary.in_flight = slots
    job.source.recycle(first)
    del first
    room = threading.Semaphore(slots - 1)  # the first batch holds one slot
    todo: queue.Queue[tuple[int, int, Chunk] | None] = queue.Queue()
    done: queue.Queue[_Done] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            for seq, (shard, start, end) in enumerate(batches, start=1):
                while not room.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                todo.put((seq, shard, job.source.read(start, end)))
        except BaseException as e:  # handed to the writer, raised there
            done.put(_Done(-1, -1, None, e))
        finally:
            for _ in runners:
                todo.put(None)

    def work_on(index: int, runner: OrtRunner) -> None:
        while (item := todo.get()) is not None:
            seq, shard, chunk = item
            del item
            if stop.is_set():
                continue
            try:
                table = run_batch(runner, chunk, job.fixed_batch, job.ragged)
            except BaseException as e:  # handed to the writer, raised there
                done.put(_Done(seq, shard, None, e))
                continue
            ran[index] += 1
            job.source.recycle(chunk)  # before the writer frees its slot
            del chunk
            done.put(_Done(seq, shard, table))

    threads = [threading.Thread(target=read, name="ferry-batch-read", daemon=True)]
    threads += [
        threading.Thread(target=work_on, args=(i, r), name=f"ferry-batch-run-{i}", daemon=True)
        for i, r in enumerate(runners)
    ]
    for t in threads:
        t.start()
    try:
        _write(job, total, shard0, table, done, room, skipped_rows, started, summary, progress)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def _write(
    job: Job,
    total: int,
    shard0: int,
    table0: Any,
    done: queue.Queue[_Done],
    room: threading.Semaphore,
    skipped_rows: int,
    started: float,
    summary: BatchSummary,
    progress: ProgressCallback | None,
) -> None:
    """Write batches 0..total-1 in order as they arrive; commit each shard when complete."""
    pending: dict[int, _Done] = {0: _Done(0, shard0, table0)}
    writer: ShardWriter | None = None
    last_report = 0.0
    try:
        for seq in range(total):
            while seq not in pending:
                item = done.get()
                if item.error is not None:
                    raise item.error
                pending[item.seq] = item
            item = pending.pop(seq)
            shard = job.todo[item.shard]
            if writer is None:
                writer = ShardWriter(job.outdir, shard, job.output_format)
            writer.write(item.table)
            summary.processed += item.table.num_rows
            del item
            room.release()
            if writer.written == shard.rows:
                writer.commit()
                writer.__exit__(None, None, None)
                writer = None
                summary.shards_written += 1
            now = time.perf_counter()
            if progress is not None and now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                rows = skipped_rows + summary.processed
                progress(BatchProgress(rows, job.source.rows, skipped_rows, now - started))
    finally:
        if writer is not None:
            writer.__exit__(None, None, None)  # not committed: its temporary files go
