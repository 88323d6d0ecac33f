"""The Ray engine: the same rows, the same outputs, spread over a Ray cluster with Ray Data.

    summary = run_ray(model, source, Path("out"), batch_size=256, shard_rows=4096, workers=2)

The dataset is one item per shard (``from_items``); a read stage (``map_batches``, one task per
shard) reads the shard's rows with the same ``Source`` the local engine uses, so row numbers,
trace columns and image preprocessing are identical; the predict stage is an actor pool
(``map_batches`` with a class, ``concurrency=workers``), each actor holding one ONNX Runtime
session of ``threads`` intra-op threads, building the same output tables as the local
engine; ``write_parquet`` writes them (Ray names the files; sort by ``row``, as
``read_output`` does, to compare). Ray's own ``read_parquet`` / ``read_images`` give no row's
position in the input, which is why reading goes through ``Source``: on a cluster the input
must be at the same path on every node (a shared volume), the output a shared path or a URI;
so must the ``--custom-ops`` files, which every actor imports.

``address`` connects to a running cluster (``auto``, ``ray://host:10001``, or the
``RAY_ADDRESS`` a RayJob sets); without one, a Ray instance already started in this process
is used, else a local one is started on the usable cores and shut down at the end. Default
workers: one single-threaded actor per cluster CPU (reading and writing reserve none).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..customops import loaded_custom_ops
from ..errors import UsageError
from ..model import Model
from ..runtime import OrtRunner, SessionConfig, usable_cores
from .sinks import output_table, shards
from .sources import Source
from .summary import BatchSummary

INPUT_PREFIX = "input:"
"""Model inputs travel between the stages as columns ``input:<name>`` (no clash with trace
columns)."""


class _Predict:
    """One actor of the pool: one ONNX Runtime session, batches in, output tables out. An
    actor is a process of its own: it imports the driver's ``--custom-ops`` files itself
    (their trust was given to the driver) before its session is made."""

    def __init__(
        self,
        model: str | bytes,
        threads: int,
        fixed: int | None,
        provider: str,
        custom_ops: tuple[str, ...] = (),
    ) -> None:
        import onnx

        from ..customops import load_custom_ops

        for file in custom_ops:
            load_custom_ops(file, trust=True)
        if isinstance(model, str):
            loaded = Model.load(model)
        else:
            loaded = Model.from_proto(onnx.load_model_from_string(model))
        config = SessionConfig(provider=provider, threads=threads)
        self._runner = OrtRunner(loaded, config=config, validate=False)
        self._names = loaded.signature.input_names
        self._fixed = fixed

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        from .local import run_outputs

        feeds = {n: np.asarray(batch[INPUT_PREFIX + n]) for n in self._names}
        trace = {k: np.asarray(v) for k, v in batch.items() if k in ("file", "line")}
        outputs = run_outputs(self._runner, feeds, self._fixed)
        return output_table(np.asarray(batch["row"], dtype=np.int64), trace, outputs)


def _read(items: dict[str, np.ndarray], source: Source) -> dict[str, np.ndarray]:
    """The read stage: the rows of the shards in ``items`` (start, stop) as columns."""
    try:
        ranges = zip(items["start"], items["stop"], strict=True)
        parts = [source.read(int(a), int(b)) for a, b in ranges]
    finally:
        source.close()
    out: dict[str, np.ndarray] = {"row": np.concatenate([p.rows for p in parts])}
    for name in parts[0].trace:
        out[name] = np.concatenate([p.trace[name] for p in parts])
    for name in parts[0].feeds:
        out[INPUT_PREFIX + name] = np.concatenate([p.feeds[name] for p in parts])
    return out


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
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus or usable_cores(), include_dashboard=False, log_to_driver=False
            )


def run_ray(
    model: Model,
    source: Source,
    outdir: Path,
    *,
    batch_size: int,
    shard_rows: int,
    workers: int | None,
    threads: int | None,
    address: str | None = None,
    fixed_batch: int | None = None,
    notes: list[str] | None = None,
    provider: str = "cpu",
) -> BatchSummary:
    """Run the model over ``source`` on Ray; the summary (shards: the files Ray wrote)."""
    import ray
    import ray.data

    if outdir.is_dir() and any(p for p in outdir.iterdir() if not p.name.startswith(".")):
        raise UsageError(
            f"{outdir} is not empty; --engine ray writes into an empty folder",
            hint="give a new -o folder, or remove this one",
        )
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(address)
    try:
        with warnings.catch_warnings():
            # Ray Data reads deprecated settings of its own (use_polars,
            # use_push_based_shuffle) whenever it copies its context, and advises on
            # concurrency when there are fewer shards than workers: not the user's to fix.
            for category in (DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=r"ray(\.|$)")
            workers, threads, seconds = _execute(
                model, source, outdir, batch_size, shard_rows, workers, threads, fixed_batch,
                provider,
            )  # fmt: skip
    finally:
        if started_here:
            ray.shutdown()
    files = list(outdir.glob("*.parquet"))
    return BatchSummary(
        engine="ray",
        model=model.name,
        source=str(source.path),
        output=str(outdir),
        rows=source.rows,
        processed=source.rows,
        shards_written=len(files),
        shards_skipped=0,
        seconds=seconds,
        batch_size=batch_size,
        shard_rows=shard_rows,
        workers=workers,
        threads_per_worker=threads,
        notes=list(notes or []),
    )


def _execute(
    model: Model,
    source: Source,
    outdir: Path,
    batch_size: int,
    shard_rows: int,
    workers: int | None,
    threads: int | None,
    fixed_batch: int | None,
    provider: str,
) -> tuple[int, int, float]:
    """Build and run the dataset; (workers, threads, seconds)."""
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    threads = threads or 1
    workers = workers or max(1, cpus // threads)
    items = [{"start": s.start, "stop": s.stop} for s in shards(source.rows, shard_rows)]
    blob: str | bytes = str(model.path) if model.path else model.proto.SerializeToString()
    custom_ops = tuple(loaded_custom_ops())  # on a cluster: at the same path on every node
    started = time.perf_counter()
    ds: Any = ray.data.from_items(items, override_num_blocks=len(items))
    # Reading and writing reserve no CPU (the actors hold the cores; a stage waiting for a
    # free CPU would wait forever), and at most one read per worker runs at a time.
    ds = ds.map_batches(
        _read,
        fn_args=(source,),
        batch_size=1,
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=workers),
    )
    ds = ds.map_batches(
        _Predict,
        fn_constructor_args=(blob, threads, fixed_batch, provider, custom_ops),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(outdir.resolve()), ray_remote_args={"num_cpus": 0})
    return workers, threads, time.perf_counter() - started
