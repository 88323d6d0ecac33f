"""The Ray engine: the same shards as the local engine, spread over a Ray cluster with Ray Data.

    summary = run_ray(job, workers=2)          # job: plan.Job, as the local engine takes

The dataset is one item per shard still to do (``from_items``); one stage maps it over an
actor pool (``map_batches`` with a class, ``concurrency=workers``), each actor holding one ONNX
Runtime session of ``threads`` intra-op threads. An actor reads its shard's rows with the same
``Source`` the local engine uses (reading the next batch while this one runs), runs them in
batches and writes the shard with the same ``ShardWriter``: under a temporary name, renamed
when complete. So the output folder is the local engine's, file for file, and a run killed
part-way is resumed by either engine: finished shards are skipped, a partial one is redone.
The driver reads back one line per finished shard, which drives the progress bar.

Ray Data's own ``read_parquet`` / ``write_parquet`` are not used: they give no row's position
in the input and name files their own way, so a shard could not be traced, checked as finished
or redone. On a cluster the input, the output folder and the ``--custom-ops`` files must be at
the same path on every node (a shared volume).

``address`` connects to a running cluster (``auto``, ``ray://host:10001``, or the
``RAY_ADDRESS`` a RayJob sets); without one, a Ray instance already started in this process
is used, else a local one is started on the usable cores and shut down at the end. Default
workers: one single-threaded actor per cluster CPU, at most one per shard. An error inside an
actor (a bad row, a session that cannot be made) comes back as the one-line error the local
engine gives.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..customops import loaded_custom_ops
from ..errors import DataError, FerryError
from ..model import Model
from ..runtime import OrtRunner, usable_cores
from .local import run_batch, session_config
from .plan import Job
from .sinks import Shard, ShardWriter
from .sources import Source
from .summary import BatchProgress, BatchSummary, ProgressCallback


@dataclass(frozen=True)
class _Work:
    """What every actor is given: the model (a path, or its bytes when it has none), where
    rows come from and go, and how to run them."""

    model: str | bytes
    source: Source
    outdir: str
    output_format: str
    batch_size: int
    threads: int
    fixed_batch: int | None
    ragged: tuple[str, ...]
    provider: str
    custom_ops: tuple[str, ...]


class _ShardRunner:
    """One actor of the pool: one ONNX Runtime session; shards in (start, stop), each read,
    run and written whole; (start, stop, seconds) of each out. An actor is a process of its
    own: it imports the driver's ``--custom-ops`` files itself (their trust was given to the
    driver) before its session is made."""

    def __init__(self, work: _Work) -> None:
        self._work = work
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="ferry-ray-read")
        self._failed: FerryError | None = None
        try:
            self._runner = self._session()
        except FerryError as e:  # reported with the first shard, as one line on the driver
            self._failed = e

    def _session(self) -> OrtRunner:
        import onnx

        from ..customops import load_custom_ops

        work = self._work
        for file in work.custom_ops:
            load_custom_ops(file, trust=True)
        if isinstance(work.model, str):
            model = Model.load(work.model)
        else:
            model = Model.from_proto(onnx.load_model_from_string(work.model))
        config = session_config(work.provider, work.threads)
        return OrtRunner(model, config=config, validate=False)

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done: dict[str, list[Any]] = {"start": [], "stop": [], "seconds": [], "error": []}
        try:
            if self._failed is not None:
                raise self._failed
            for a, b in zip(items["start"], items["stop"], strict=True):
                began = time.perf_counter()
                self._write(Shard(int(a), int(b)))
                done["start"].append(int(a))
                done["stop"].append(int(b))
                done["seconds"].append(time.perf_counter() - began)
                done["error"].append(b"")
        except FerryError as e:
            # Handed back as data: Ray would wrap it in its own error and traceback text.
            done["start"].append(-1)
            done["stop"].append(-1)
            done["seconds"].append(0.0)
            done["error"].append(pickle.dumps(e))
        finally:
            self._work.source.close()
        return {k: np.asarray(v, dtype=object if k == "error" else None) for k, v in done.items()}

    def _write(self, shard: Shard) -> None:
        """Read, run and write ``shard``: the next batch is read while this one runs."""
        work, source = self._work, self._work.source
        ranges = shard.batches(work.batch_size)
        with ShardWriter(Path(work.outdir), shard, work.output_format) as writer:
            upcoming = self._reader.submit(source.read, *ranges[0])
            for following in [*ranges[1:], None]:
                chunk = upcoming.result()
                if following is not None:
                    upcoming = self._reader.submit(source.read, *following)
                writer.write(run_batch(self._runner, chunk, work.fixed_batch, work.ragged))
                source.recycle(chunk)
                del chunk
            writer.commit()


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the cluster at ``address``, or start a local Ray instance on ``num_cpus``
    (default: the cores usable here), without a dashboard or worker logs on the terminal.

        start_ray(num_cpus=2); ...; ray.shutdown()
    """
    import ray

    with warnings.catch_warnings():
        # Ray 2.55 announces a change to how it sets CUDA_VISIBLE_DEVICES for actors that ask
        # for no GPU; ferry's actors never do, so it is not the user's to act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=num_cpus or usable_cores(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )


def run_ray(
    job: Job,
    *,
    workers: int | None = None,
    address: str | None = None,
    progress: ProgressCallback | None = None,
) -> BatchSummary:
    """Run ``job``'s shards on Ray; the summary of what was written and how fast.
    ``job.threads`` (default 1) are each actor's intra-op threads; ``job.workers`` and
    ``job.max_memory`` are the local engine's and not used here."""
    import ray

    skipped_rows = sum(s.rows for s in job.skipped)
    summary = job.summary("ray")
    summary.threads_per_worker = job.threads or 1
    if progress is not None:
        progress(BatchProgress(skipped_rows, job.source.rows, skipped_rows, 0.0))
    if not job.todo:
        return summary
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(address)
    try:
        with warnings.catch_warnings():
            # Ray Data reads deprecated settings of its own (use_polars,
            # use_push_based_shuffle) whenever it copies its context: not the user's to fix.
            for category in (DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=r"ray(\.|$)")
            with _quiet_ray_data():
                _execute(job, workers, summary, skipped_rows, progress)
    finally:
        if started_here:
            ray.shutdown()
    return summary


def _execute(
    job: Job,
    workers: int | None,
    summary: BatchSummary,
    skipped_rows: int,
    progress: ProgressCallback | None,
) -> None:
    """Build the dataset and consume it, a line per finished shard, into ``summary``."""
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = summary.threads_per_worker
    workers = min(workers or max(1, cpus // threads), len(job.todo))
    summary.workers = workers
    work = _Work(
        model=str(job.model.path) if job.model.path else job.model.proto.SerializeToString(),
        source=job.source,
        outdir=str(job.outdir.resolve()),
        output_format=job.output_format,
        batch_size=job.batch_size,
        threads=threads,
        fixed_batch=job.fixed_batch,
        ragged=job.ragged,
        provider=job.provider,
        custom_ops=tuple(loaded_custom_ops()),  # on a cluster: at the same path on every node
    )
    items = [{"start": s.start, "stop": s.stop} for s in job.todo]
    started = time.perf_counter()
    ds: Any = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _ShardRunner,
        fn_constructor_args=(work,),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=threads,
    )
    for done in ds.iter_rows():
        if done["error"]:
            raise _unpickled(done["error"])
        summary.processed += int(done["stop"]) - int(done["start"])
        summary.shards_written += 1
        summary.seconds = time.perf_counter() - started
        if progress is not None:
            rows = skipped_rows + summary.processed
            progress(BatchProgress(rows, job.source.rows, skipped_rows, summary.seconds))
    summary.seconds = time.perf_counter() - started


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's terminal lines (plan, start, finish, advice on its own settings) only from
    errors up while the job runs; its log files keep everything."""
    import ray.data  # noqa: F401 - sets up the ray.data logger and its handlers

    consoles = [
        h
        for h in logging.getLogger("ray.data").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in consoles]
    for h in consoles:
        h.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for h, level in zip(consoles, levels, strict=True):
            h.setLevel(level)


def _unpickled(blob: bytes) -> FerryError:
    """The ferry error an actor handed back; a DataError with its text should it not load."""
    try:
        error = pickle.loads(blob)
    except Exception as e:  # a FerryError subclass whose arguments do not round-trip
        return DataError(f"a Ray worker failed and its error could not be read back: {e}")
    return error if isinstance(error, FerryError) else DataError(str(error))
