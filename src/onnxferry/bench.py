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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FeedError, UsageError
from .feeds import FeedPlan, batch_symbols, describe_shapes, plan_feeds, unknown_dims
from .model import Model
from .report import Report, Table
from .runtime import (
    SessionConfig,
    available_providers,
    create_session,
    needs_ortvalue_outputs,
    ort_inputs,
    provider_name,
    quiet_run_options,
    run_errors,
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
    """Why ``batch`` cannot run (the model has no batch axis), else None.

    The batch axes are the open dims ``feeds.batch_symbols`` finds (dim 0 of inputs of rank 2
    or more, and dims named like a batch wherever they stand, so a state ``[2, batch, 128]``
    follows the batch); a model without one runs as it is, at batch 1.
    """
    if batch == 1 or batch_symbols(signature):
        return None
    fixed = next((s for s in signature.inputs if s.shape and isinstance(s.shape[0], int)), None)
    if fixed is not None and fixed.shape:
        return (
            f"input {fixed.name!r} has a fixed batch dim of {fixed.shape[0]}, "
            f"so batch {batch} cannot run"
        )
    return f"the model has no batch axis, so batch {batch} cannot run"


def batch_feeds(
    model: Model,
    batch: int,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Feeds by the one feed policy (``feeds.plan_feeds``) with every batch axis at ``batch``.
    FeedError if the model has no batch axis and ``batch`` is not 1."""
    conflict = batch_conflict(model.signature, batch)
    if conflict:
        raise FeedError(conflict, hint="bench it at batch 1")
    return _plan(model, dims, input_shapes).with_batch(batch).feeds(seed)


def _plan(
    model: Model,
    dims: Mapping[str, int] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
) -> FeedPlan:
    """The model's feed plan; UsageError if ``dims`` sizes a batch axis (``batches`` does)."""
    batch_keys = batch_symbols(model.signature)
    for key in dims or {}:
        if key in batch_keys:
            raise UsageError(
                f"dims sets {key!r}, a batch axis of {model.name}",
                hint="give the batch size with batches (--batch) instead",
            )
    return plan_feeds(model, dims=dims, input_shapes=input_shapes)


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
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Report[BenchSuite]:
    """Latency, throughput and peak memory of every model in every configuration.

        report = bench(["fp32.onnx", "int8.onnx"], batches=(1, 8), duration=2.0)
        report = bench(["vad.onnx"], inputs={"x": x, "state": s, "sr": np.array(16000)})
        report.result.results      # one BenchResult per (model, provider, threads, batch)
        report.result.skipped      # configurations that cannot run, with the reason

    Inputs come from ``inputs`` (one feed set, timed as given) or the one feed policy
    (``feeds.plan_feeds``, with ``dims`` and ``input_shapes``), with every batch axis at each
    of ``batches``. A model without a batch axis skips batch sizes other than 1; a provider
    this onnxruntime build lacks is skipped. UsageError if nothing at all can run.
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
    if inputs is not None and tuple(batches) != (1,):
        raise UsageError(
            "batches and inputs exclude each other", hint="the inputs' own batch is timed"
        )
    wanted = [_short(provider_name(p)) for p in providers]
    loaded = [m if isinstance(m, Model) else Model.load(m) for m in models]
    sources = [_source(m, dims, input_shapes, inputs) for m in loaded]
    _check_known(loaded, dims)
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS

    have = set(available_providers())
    plan: _Plan = []
    skipped: list[str] = []
    notes: list[str] = []
    for model, label, source in zip(loaded, _labels(loaded), sources, strict=True):
        if isinstance(source, FeedPlan):
            note = f"{label}: inputs {source.describe()}" + (
                f" ({'; '.join(source.choices)})" if source.choices else ""
            )
        else:
            note = f"{label}: inputs as given, {describe_shapes(_shapes_of(source))}"
        notes.append(note)
        for provider in dict.fromkeys(wanted):
            for t in dict.fromkeys(threads):
                for b in dict.fromkeys(batches):
                    where = f"{label} provider={provider} threads={t or 'default'} batch={b}"
                    if provider not in have:
                        skipped.append(
                            f"{where}: provider {provider!r} is not in this "
                            f"onnxruntime build (available: {', '.join(sorted(have))})"
                        )
                    elif isinstance(source, FeedPlan) and (
                        reason := batch_conflict(model.signature, b)
                    ):
                        skipped.append(f"{where}: {reason}")
                    elif isinstance(source, FeedPlan):
                        plan.append((model, label, provider, t, source.with_batch(b)))
                    else:
                        plan.append((model, label, provider, t, source))
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
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "inputs": "given" if inputs is not None else "generated",
        "seed": seed,
    }
    suite.environment = _environment()
    suite.results = _run(plan, warmup, iterations, duration, concurrency, seed, progress)
    return Report(verb="bench", result=suite, notes=notes)


_Feeds = FeedPlan | Mapping[str, np.ndarray]
_Plan = list[tuple[Model, str, str, int | None, _Feeds]]
"""(model, its label in the results, provider, threads, its feeds) per configuration: a
plan at one batch size, or the user's feeds."""


def _source(
    model: Model,
    dims: Mapping[str, int] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    inputs: Mapping[str, np.ndarray] | None,
) -> _Feeds:
    """The user's feeds (checked against the model), else the model's feed plan."""
    if inputs is None:
        known = {u.key for u in unknown_dims(model.signature)}
        known |= {u.symbol for u in unknown_dims(model.signature) if u.symbol}
        mine = {k: v for k, v in (dims or {}).items() if k in known}
        return _plan(model, mine, input_shapes)
    try:
        model.signature.validate(inputs)
    except FeedError as e:
        raise FeedError(f"{model.name}: {e.message}", hint=e.hint) from e
    return dict(inputs)


def _check_known(models: Sequence[Model], dims: Mapping[str, int] | None) -> None:
    """UsageError for a dim that no model has (a typo would otherwise be ignored)."""
    known: set[str] = set()
    for model in models:
        known |= {u.key for u in unknown_dims(model.signature)}
        known |= {u.symbol for u in unknown_dims(model.signature) if u.symbol}
        known |= set(model.signature.input_names)
    for key in dims or {}:
        if key not in known:
            raise UsageError(
                f"no model has an open dim {key!r}",
                hint=f"open dims are {', '.join(sorted(known)) or 'none'}",
            )


def _shapes_of(feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}


def _batch_of(model: Model, feeds: Mapping[str, np.ndarray]) -> int:
    """The size of the batch axis in feeds (1 when the model has none)."""
    for u in unknown_dims(model.signature):
        if u.kind == "batch":
            return int(feeds[u.input].shape[u.axis])
    return 1


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
        for i, (m, name, p, t, source) in enumerate(plan, 1):
            show: ProgressCallback | None = None
            arrays = source.feeds(seed) if isinstance(source, FeedPlan) else dict(source)
            b = _batch_of(m, arrays)
            if bar is not None:
                what = f"[{i}/{len(plan)}] {name} {p} threads={t or 'default'} batch={b}"
                bar.reset(task, description=what)

                def show(done: int, elapsed: float) -> None:
                    bar.update(task, completed=done if duration is None else min(elapsed, duration))

            results.append(
                _bench_one(
                    m, name, p, t, arrays, b, warmup, iterations, duration, concurrency, show
                )
            )
    return results


def _bench_one(
    model: Model,
    label: str,
    provider: str,
    threads: int | None,
    arrays: Mapping[str, np.ndarray],
    batch: int,
    warmup: int,
    iterations: int | None,
    duration: float | None,
    concurrency: int,
    on_progress: ProgressCallback | None,
) -> BenchResult:
    ortvalues = needs_ortvalue_outputs(model.signature)
    feeds = ort_inputs(arrays, all_ortvalues=ortvalues)
    gc.collect()
    method = _reset_peak_rss()
    t0 = time.perf_counter()
    session = create_session(
        model, SessionConfig(provider=provider, threads=threads, fallback=False)
    )
    init_ms = (time.perf_counter() - t0) * 1e3
    with run_errors(model.name, arrays):
        first = session.run_with_ort_values if ortvalues else session.run
        first(None, feeds, quiet_run_options())  # a run that fails says so once, on one line
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
        input_shapes=_shapes_of(arrays),
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
