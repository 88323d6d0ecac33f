"""Measurement: latency percentiles, throughput and peak memory, models side by side.

    report = bench(["a.onnx", "b.onnx"], batches=(1, 8), threads=(1, None), iterations=200)
    print(report.to_text())          # one row per (model, provider, threads, batch)
    report.result.to_csv()           # one CSV row per BenchResult
    report.result.results[0].p50_ms

The timed region is only ``perf_counter()`` around ``session.run(output_names, feeds)``, the
same as a hand-written loop; feeds are built once, and progress is reported outside it.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FeedError, UsageError
from .model import Model
from .report import Report, Table
from .runtime import (
    SessionConfig,
    available_providers,
    create_session,
    needs_ortvalue_outputs,
    ort_inputs,
    provider_name,
)
from .runtime import short_provider_name as _short
from .signature import Signature

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_ITERATIONS = 100
"""Measured iterations when neither ``iterations`` nor ``duration`` is given."""

PROGRESS_INTERVAL_S = 0.1
"""How often ``measure`` calls ``on_progress`` (seconds, checked outside the timed region)."""

ProgressCallback = Callable[[int, float], None]
"""``on_progress(completed_requests, elapsed_seconds)``."""


@dataclass(frozen=True)
class BenchResult:
    """Figures for one model in one configuration (provider, threads, batch, concurrency).

    Latencies are per request in milliseconds; ``cv`` is std / mean. ``threads`` None means
    ONNX Runtime's default. ``memory_method`` says how ``peak_rss_bytes`` was read:
    "vmhwm-reset" (Linux, peak since this configuration began), "vmhwm" (Linux, peak since
    the process began) or "ru_maxrss" (peak since the process began).
    """

    model: str
    digest: str
    provider: str
    threads: int | None
    batch: int
    concurrency: int
    warmup: int
    iterations: int
    wall_s: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    iqr_ms: float
    cv: float
    inferences_per_s: float
    samples_per_s: float
    peak_rss_bytes: int
    memory_method: str
    session_init_ms: float
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return d


_CSV_COLUMNS = tuple(f.name for f in fields(BenchResult))


@dataclass
class BenchSuite:
    """Every BenchResult of one ``bench`` call, plus the configurations that could not run."""

    results: list[BenchResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped),
            "settings": dict(self.settings),
            "environment": dict(self.environment),
        }

    def to_csv(self) -> str:
        """Header row, then one row per result (input shapes as JSON; threads empty = default)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for r in self.results:
            d = r.to_dict()
            d["input_shapes"] = json.dumps(d["input_shapes"], sort_keys=True)
            writer.writerow(["" if d[c] is None else d[c] for c in _CSV_COLUMNS])
        return out.getvalue()

    def tables(self) -> list[Table]:
        several = len({r.model for r in self.results}) > 1
        # Request counts and inferences/s are in the title, the JSON and the CSV.
        columns = ["model", "provider", "threads", "batch", "p50 ms", "p90 ms", "p99 ms"]
        columns += ["max ms", "std ms", "samples/s", "peak MiB"]
        if several:
            columns.append("speedup (p50)")
        first_model = self.results[0].model if self.results else None
        baseline = {
            (r.provider, r.threads, r.batch): r.p50_ms
            for r in self.results
            if r.model == first_model
        }
        rows: list[list[Any]] = []
        for r in self.results:
            row: list[Any] = [r.model, r.provider, "auto" if r.threads is None else r.threads]
            row += [r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.std_ms]
            row += [r.samples_per_s, r.peak_rss_bytes / 2**20]
            if several:
                base = baseline.get((r.provider, r.threads, r.batch))
                row.append(base / r.p50_ms if base is not None and r.p50_ms > 0 else None)
            rows.append(row)
        title = "Benchmark"
        if self.settings:
            st = self.settings
            amount = (
                f"{st['duration_s']} s" if st.get("duration_s") else f"{st['iterations']} requests"
            )
            title += f" ({amount} per row, warmup {st['warmup']}, concurrency {st['concurrency']})"
        tables = [Table(title, columns, rows)]
        if self.skipped:
            tables.append(Table("Skipped", ["reason"], [[s] for s in self.skipped]))
        return tables


# --- feeds -----------------------------------------------------------------------------


def batch_conflict(signature: Signature, batch: int) -> str | None:
    """Why ``batch`` cannot run (an input with a fixed dim 0 of another size), else None."""
    for spec in signature.inputs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch:
            return (
                f"input {spec.name!r} has a fixed batch dim of {spec.shape[0]}, "
                f"so batch {batch} cannot run"
            )
    return None


def batch_feeds(
    signature: Signature,
    batch: int,
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Sample feeds with ``batch`` in dim 0 of every input whose dim 0 is symbolic or unknown;
    other symbolic dims come from ``dims`` (default 1). FeedError if a fixed dim 0 differs."""
    conflict = batch_conflict(signature, batch)
    if conflict:
        raise FeedError(conflict, hint=f"bench it at batch {_fixed_batch(signature)}")
    _check_dims(signature, dims)
    merged = dict(dims or {})
    inputs = []
    for spec in signature.inputs:
        if spec.shape:
            d0 = spec.shape[0]
            if isinstance(d0, str) and d0:
                merged[d0] = batch
            elif d0 is None or d0 == "":
                spec = replace(spec, shape=(batch, *spec.shape[1:]))
        inputs.append(spec)
    return Signature(tuple(inputs), signature.outputs).sample(dims=merged, seed=seed)


def _check_dims(signature: Signature, dims: Mapping[str, int] | None) -> None:
    """UsageError if ``dims`` sizes a batch dim (dim 0), which only the batch size may set."""
    for spec in signature.inputs:
        d0 = spec.shape[0] if spec.shape else None
        if isinstance(d0, str) and d0 in (dims or {}):
            raise UsageError(
                f"dims sets {d0!r}, the batch dim (dim 0) of input {spec.name!r}",
                hint="give the batch size with batches (--batch) instead",
            )


def _fixed_batch(signature: Signature) -> int | None:
    for spec in signature.inputs:
        if spec.shape and isinstance(spec.shape[0], int):
            return spec.shape[0]
    return None


# --- measurement -----------------------------------------------------------------------


def _check_counts(
    warmup: int, iterations: int | None, duration: float | None, concurrency: int
) -> None:
    if warmup < 0:
        raise UsageError(f"warmup must be 0 or more, got {warmup}", hint="pass --warmup 10")
    if iterations is not None and duration is not None:
        raise UsageError(
            "iterations and duration cannot both be given",
            hint="measure a fixed count (--iterations) or a fixed time (--duration), not both",
        )
    if iterations is not None and iterations < 1:
        raise UsageError(
            f"iterations must be at least 1, got {iterations}", hint="pass --iterations 100"
        )
    if duration is not None and not duration > 0:
        raise UsageError(
            f"duration must be more than 0 seconds, got {duration}", hint="pass --duration 5"
        )
    if concurrency < 1:
        raise UsageError(
            f"concurrency must be at least 1, got {concurrency}",
            hint="pass --concurrency 1 for one request at a time",
        )


def measure(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    *,
    warmup: int,
    iterations: int | None = None,
    duration: float | None = None,
    concurrency: int = 1,
    on_progress: ProgressCallback | None = None,
    output_names: Sequence[str] | None = None,
) -> list[float]:
    """Per-request latencies in seconds of ``session.run`` on ``feeds``.

        lat = measure(session, feeds, warmup=10, iterations=500)
        lat = measure(session, feeds, warmup=10, duration=2.0, concurrency=4)

    ``iterations`` is the total over all ``concurrency`` threads sharing the session;
    ``duration`` runs every thread until that many seconds have passed. ``output_names``
    None fetches every output, the same call as ``session.run(None, feeds)`` by hand
    (onnxruntime then rebuilds the name list on each call, part of what a user pays).
    """
    return _measure(
        session, feeds, warmup, iterations, duration, concurrency, on_progress, output_names
    )[0]


def _measure(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: int,
    on_progress: ProgressCallback | None,
    output_names: Sequence[str] | None = None,
    ortvalues: bool = False,
) -> tuple[list[float], float]:
    """(latencies, wall seconds of the measured region).

    ``ortvalues``: feeds are OrtValues and the loop calls ``run_with_ort_values`` (models
    with bfloat16 outputs, which ``session.run`` cannot return).
    """
    _check_counts(warmup, iterations, duration, concurrency)
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS
    names = None if output_names is None else list(output_names)
    feeds = dict(feeds)
    run = session.run_with_ort_values if ortvalues else session.run
    for _ in range(warmup):
        run(names, feeds)
    if concurrency == 1:
        start = time.perf_counter()
        lat = _loop(run, names, feeds, iterations, duration, start, on_progress)
        return lat, time.perf_counter() - start

    counts = (
        [iterations // concurrency + (k < iterations % concurrency) for k in range(concurrency)]
        if iterations is not None
        else [None] * concurrency
    )
    results: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    lock = threading.Lock()
    shared = {"start": 0.0, "done": 0}
    barrier = threading.Barrier(
        concurrency, action=lambda: shared.update(start=time.perf_counter())
    )
    reported = [0] * concurrency

    def report(k: int) -> ProgressCallback | None:
        if on_progress is None:
            return None

        def cb(done: int, elapsed: float) -> None:
            with lock:
                shared["done"] += done - reported[k]
                reported[k] = done
                on_progress(int(shared["done"]), elapsed)

        return cb

    def worker(k: int) -> None:
        try:
            barrier.wait()
            results[k] = _loop(run, names, feeds, counts[k], duration, shared["start"], report(k))
        except BaseException as e:  # re-raised in the calling thread
            barrier.abort()
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - shared["start"]
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return [x for lat in results for x in lat], wall


def _loop(
    run: Callable[..., Any],
    names: list[str] | None,
    feeds: dict[str, np.ndarray],
    iterations: int | None,
    duration: float | None,
    start: float,
    on_progress: ProgressCallback | None,
) -> list[float]:
    """The timed loop: perf_counter() around session.run and nothing else."""
    clock = time.perf_counter
    lat: list[float] = []
    append = lat.append
    next_report = clock() + PROGRESS_INTERVAL_S
    if iterations is not None:
        for _ in range(iterations):
            t0 = clock()
            run(names, feeds)
            t1 = clock()
            append(t1 - t0)
            if on_progress is not None and t1 >= next_report:
                on_progress(len(lat), t1 - start)
                next_report = t1 + PROGRESS_INTERVAL_S
    else:
        deadline = start + (duration or 0.0)
        t1 = clock()
        while t1 < deadline:
            t0 = clock()
            run(names, feeds)
            t1 = clock()
            append(t1 - t0)
            if on_progress is not None and t1 >= next_report:
                on_progress(len(lat), t1 - start)
                next_report = t1 + PROGRESS_INTERVAL_S
    if on_progress is not None:
        on_progress(len(lat), clock() - start)
    return lat


# --- peak memory -----------------------------------------------------------------------


def _reset_peak_rss() -> str:
    """Reset the process's RSS high-water mark if the OS allows; returns the method name."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return "vmhwm"
        return "vmhwm-reset"
    return "ru_maxrss"


def _peak_rss(method: str) -> int:
    if method.startswith("vmhwm"):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# --- the verb --------------------------------------------------------------------------


def latency_stats(lat_s: Sequence[float]) -> dict[str, float]:
    """Mean, spread and percentiles (ms) of latencies given in seconds."""
    a = np.asarray(lat_s, dtype=np.float64) * 1e3
    p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(a.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(a.max()),
        "iqr_ms": float(p75 - p25),
        "cv": std / mean if mean > 0 else 0.0,
    }


def bench(
    models: Sequence[str | Path | Model],
    *,
    batches: Sequence[int] = (1,),
    threads: Sequence[int | None] = (None,),
    providers: Sequence[str] = ("cpu",),
    warmup: int = 10,
    iterations: int | None = None,
    duration: float | None = None,
    concurrency: int = 1,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Report[BenchSuite]:
    """Latency, throughput and peak memory of every model in every configuration.

        report = bench(["fp32.onnx", "int8.onnx"], batches=(1, 8), duration=2.0)
        report.result.results      # one BenchResult per (model, provider, threads, batch)
        report.result.skipped      # configurations that cannot run, with the reason

    A model whose dim 0 is fixed skips other batch sizes; a provider this onnxruntime build
    lacks is skipped. UsageError if nothing at all can run.
    """
    _check_counts(warmup, iterations, duration, concurrency)
    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise UsageError("no model to bench", hint="give one or more .onnx files")
    for name, values in (("batches", batches), ("threads", threads), ("providers", providers)):
        if not values:
            raise UsageError(f"{name} is empty", hint=f"give at least one value for {name}")
    for b in batches:
        if b < 1:
            raise UsageError(f"batch must be at least 1, got {b}", hint="pass --batch 1")
    for t in threads:
        if t is not None and t < 1:
            raise UsageError(
                f"threads must be at least 1, got {t}", hint="omit it for ONNX Runtime's default"
            )
    for key, value in (dims or {}).items():
        if value < 1:
            raise UsageError(
                f"dims {key}={value} must be at least 1", hint=f"pass --dim {key}=1 or more"
            )
    wanted = [_short(provider_name(p)) for p in providers]
    loaded = [m if isinstance(m, Model) else Model.load(m) for m in models]
    for model in loaded:
        _check_dims(model.signature, dims)
        for spec in model.signature.inputs:
            if spec.shape is None:
                raise FeedError(
                    f"{model.name}: input {spec.name!r} has an unknown rank, so bench cannot "
                    "make inputs for it",
                    hint="give the input a shape in the model (e.g. with onnx shape inference)",
                )
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS

    have = set(available_providers())
    plan: _Plan = []
    skipped: list[str] = []
    for model, label in zip(loaded, _labels(loaded), strict=True):
        for provider in dict.fromkeys(wanted):
            for t in dict.fromkeys(threads):
                for b in dict.fromkeys(batches):
                    where = f"{label} provider={provider} threads={t or 'default'} batch={b}"
                    if provider not in have:
                        skipped.append(
                            f"{where}: provider {provider!r} is not in this "
                            f"onnxruntime build (available: {', '.join(sorted(have))})"
                        )
                    elif reason := batch_conflict(model.signature, b):
                        skipped.append(f"{where}: {reason}")
                    else:
                        plan.append((model, label, provider, t, b))
    if not plan:
        raise UsageError(
            "no configuration can run: " + "; ".join(skipped),
            hint="match --batch to the model's fixed batch dim or pick an available provider",
        )

    suite = BenchSuite(skipped=skipped)
    suite.settings = {
        "warmup": warmup,
        "iterations": iterations,
        "duration_s": duration,
        "concurrency": concurrency,
        "dims": dict(dims or {}),
        "seed": seed,
    }
    suite.environment = _environment()
    suite.results = _run(plan, warmup, iterations, duration, concurrency, dims, seed, progress)
    return Report(verb="bench", result=suite)


_Plan = list[tuple[Model, str, str, int | None, int]]
"""(model, its label in the results, provider, threads, batch) per configuration."""


def _labels(models: Sequence[Model]) -> list[str]:
    """Model names, numbered where two share one ("model", "model#2") so rows stay apart."""
    seen: dict[str, int] = {}
    labels = []
    for model in models:
        seen[model.name] = seen.get(model.name, 0) + 1
        count = seen[model.name]
        labels.append(model.name if count == 1 else f"{model.name}#{count}")
    return labels


def _run(
    plan: _Plan,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: int,
    dims: Mapping[str, int] | None,
    seed: int,
    progress: bool,
) -> list[BenchResult]:
    """Every planned configuration in order; ``progress`` draws a rich bar on stderr."""
    from contextlib import nullcontext

    bar: Any = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if duration is None else TextColumn("{task.completed:.1f}s"),
            console=Console(stderr=True),
            transient=True,
        )
    results: list[BenchResult] = []
    with bar if bar is not None else nullcontext():
        task = bar.add_task("bench", total=iterations or duration) if bar is not None else None
        for i, (m, name, p, t, b) in enumerate(plan, 1):
            show: ProgressCallback | None = None
            if bar is not None:
                what = f"[{i}/{len(plan)}] {name} {p} threads={t or 'default'} batch={b}"
                bar.reset(task, description=what)

                def show(done: int, elapsed: float) -> None:
                    bar.update(task, completed=done if duration is None else min(elapsed, duration))

            results.append(
                _bench_one(
                    m, name, p, t, b, warmup, iterations, duration, concurrency, dims, seed, show
                )
            )
    return results


def _bench_one(
    model: Model,
    label: str,
    provider: str,
    threads: int | None,
    batch: int,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: int,
    dims: Mapping[str, int] | None,
    seed: int,
    on_progress: ProgressCallback | None,
) -> BenchResult:
    ortvalues = needs_ortvalue_outputs(model.signature)
    arrays = batch_feeds(model.signature, batch, dims=dims, seed=seed)
    feeds = ort_inputs(arrays, all_ortvalues=ortvalues)
    gc.collect()
    method = _reset_peak_rss()
    t0 = time.perf_counter()
    session = create_session(
        model, SessionConfig(provider=provider, threads=threads, fallback=False)
    )
    init_ms = (time.perf_counter() - t0) * 1e3
    lat, wall = _measure(
        session, feeds, warmup, iterations, duration, concurrency, on_progress, None, ortvalues
    )
    peak = _peak_rss(method)
    used = _short(session.get_providers()[0])
    del session
    n = len(lat)
    return BenchResult(
        model=label,
        digest=model.digest,
        provider=used,
        threads=threads,
        batch=batch,
        concurrency=concurrency,
        warmup=warmup,
        iterations=n,
        wall_s=wall,
        **latency_stats(lat),
        inferences_per_s=n / wall if wall > 0 else 0.0,
        samples_per_s=n * batch / wall if wall > 0 else 0.0,
        peak_rss_bytes=peak,
        memory_method=method,
        session_init_ms=init_ms,
        input_shapes={k: tuple(int(d) for d in v.shape) for k, v in arrays.items()},
    )


def _environment() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
