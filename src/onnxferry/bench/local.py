"""Models side by side in this process: latency, throughput and peak memory per configuration.

    report = bench_models(["a.onnx", "b.onnx"], batches=(1, 8), threads=(1, None), iterations=50)
    print(report.to_text())          # one row per (model, provider, threads, batch)
    report.result.to_csv()           # one CSV row per BenchResult
    report.result.results[0].p50_ms
    bench_models(["a.onnx"], progress=lambda p: print(p.index, p.total, p.done))

Each configuration gets a fresh session, one untimed run that reports a failure on one line,
then ``measure``'s timed loop; feeds are built once per configuration, and progress goes to
the ``progress`` callback (the CLI draws it as a bar), never from inside the timed region.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..data import load_feeds
from ..denormals import MODEL_KEY, flushes
from ..devices import (
    Device,
    SessionPool,
    check_pool,
    describe_pool,
    device_session,
    parse_devices,
    pool_provider,
)
from ..energy import POWERCAP, EnergyMeter, Rapl
from ..errors import FeedError, UsageError
from ..feeds import (
    FeedPlan,
    batch_symbols,
    checked_feeds,
    describe_shapes,
    plan_feeds,
    rebatched,
    unknown_dims,
)
from ..measure import PeakMemory, ProgressCallback, Timing, measure_stats
from ..model import Model
from ..precision import check_precision
from ..report import Report
from ..runtime import (
    SessionConfig,
    check_threads,
    create_session,
    needs_ortvalue_outputs,
    ort_inputs,
    provider_name,
    quiet_run_options,
    run_errors,
    session_providers,
)
from ..runtime import short_provider_name as _short
from ..signature import Signature
from .results import BenchResult, BenchSuite

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class Progress:
    """Where a bench run is: configuration ``index`` of ``total`` (from 1), which one it is,
    and how far its timed loop has got (``done`` requests after ``elapsed_s`` seconds).

    ``iterations`` is the request count of each configuration, None when each runs for
    ``duration_s`` seconds instead. A configuration reports once with ``done`` 0 before its
    session is made, then from its timed loop at most every ``measure.PROGRESS_INTERVAL_S``.
    """

    index: int
    total: int
    configuration: str  # "relu cpu threads=default batch=8"
    done: int
    elapsed_s: float
    iterations: int | None
    duration_s: float | None


# --- feeds ------------------------------------------------------------------------------


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


# --- the verb ---------------------------------------------------------------------------


def bench_models(
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
    inputs: str | Path | Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    progress: Callable[[Progress], None] | None = None,
    precision: str = "fp32",
    engine_cache: str | Path | None = None,
    calibration_table: str | Path | None = None,
    price_per_hour: float | None = None,
    powercap: str | Path = POWERCAP,
    devices: str | Sequence[str] | None = None,
) -> Report[BenchSuite]:
    """Latency, throughput and peak memory of every model in every configuration.

        report = bench_models(["fp32.onnx", "int8.onnx"], batches=(1, 8), duration=2.0)
        report = bench_models(["vad.onnx"], inputs={"x": x, "state": s, "sr": np.array(16000)})
        report.result.results      # one BenchResult per (model, provider, threads, batch)
        report.result.skipped      # configurations that cannot run, with the reason

    Inputs come from ``inputs`` (one feed set; from a file, its first set: timed as given, or
    with ``batches`` other than (1,), its rows repeated to each batch, ``feeds.rebatched``) or
    the one feed policy (``feeds.plan_feeds``, with ``dims`` and ``input_shapes``), with every
    batch axis at each of ``batches``. A model without a batch axis skips batch sizes
    other than 1; a provider this onnxruntime build lacks is skipped. UsageError if nothing
    at all can run. ``progress`` is called with a ``Progress`` as the run goes.
    ``precision`` (with ``engine_cache`` and ``calibration_table``) is what tensorrt / openvino
    compute in (``runtime.SessionConfig``); UsageError when a provider asked for takes no such
    precision. openvino runs through the OpenVINO runtime when onnxruntime lacks it.
    Energy per inference comes from the RAPL package counters under ``powercap`` (see
    ``energy``) where they can be read; ``price_per_hour`` (USD) prices a million inferences.
    ``devices`` ("cuda:0,cuda:1", ``devices.parse_devices``) replaces ``providers``: each
    configuration runs on each device (its row's provider is the device, "cuda:1"), and with
    several devices once more on all of them together (provider "cuda:0+cuda:1", a
    ``devices.SessionPool`` driven by ``concurrency`` threads per device: the aggregate
    throughput). ProviderError naming a device that cannot be used.
    """
    timing = Timing(warmup, iterations, duration, concurrency)
    if price_per_hour is not None and not price_per_hour > 0:
        raise UsageError(
            f"price per hour must be more than 0, got {price_per_hour}",
            hint="pass --price-per-hour 3.5 (USD per hour of this machine)",
        )
    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise UsageError("no model to bench", hint="give one or more .onnx files")
    _check_values(batches, threads, providers, dims)
    rebatch = inputs is not None and tuple(batches) != (1,)
    wanted = [_short(provider_name(p)) for p in providers]
    pool = _pool(devices, wanted)
    notes: list[str] = []
    if pool:
        wanted = [pool[0].provider]
        notes.extend(n for n in [describe_pool(pool)] if n)
    if len(pool) > 1:
        notes.append(
            f"{'+'.join(str(d) for d in pool)}: every device at once, {concurrency} request(s) "
            f"in flight per device (concurrency {concurrency * len(pool)})"
        )
    for provider in wanted:
        check_precision(provider, precision)
    loaded = [m if isinstance(m, Model) else Model.load(m) for m in models]
    if isinstance(inputs, (str, Path)):  # a table's columns are named by the signature
        inputs = load_feeds(inputs, loaded[0].signature)[0]
    sources = [_source(m, dims, input_shapes, inputs) for m in loaded]
    _check_known(loaded, dims)

    have = set(session_providers())
    plan: list[_Config] = []
    skipped: list[str] = []
    for model, label, source in zip(loaded, _labels(loaded), sources, strict=True):
        if isinstance(source, FeedPlan):
            note = f"{label}: inputs {source.describe()}" + (
                f" ({'; '.join(source.choices)})" if source.choices else ""
            )
        else:
            how = "rows repeated to each batch" if rebatch else "as given"
            note = f"{label}: inputs {how}, {describe_shapes(_shapes_of(source))}"
        notes.append(note)
        if flushes(model):
            notes.append(f"{label}: runs with denormal floats flushed to zero ({MODEL_KEY})")
        for provider in dict.fromkeys(wanted):
            for t in dict.fromkeys(threads):
                for b in dict.fromkeys(batches):
                    where = f"{label} provider={provider} threads={t or 'default'} batch={b}"
                    if provider not in have:
                        skipped.append(
                            f"{where}: provider {provider!r} is not in this "
                            f"onnxruntime build (available: {', '.join(sorted(have))})"
                        )
                    elif (isinstance(source, FeedPlan) or rebatch) and (
                        reason := batch_conflict(model.signature, b)
                    ):
                        skipped.append(f"{where}: {reason}")
                    else:
                        feeds: FeedPlan | Mapping[str, np.ndarray] = source
                        if isinstance(source, FeedPlan):
                            feeds = source.with_batch(b)
                        elif rebatch:
                            feeds = rebatched(source, model.signature, b)
                        config = _Config(
                            model,
                            label,
                            provider,
                            t,
                            feeds,
                            precision,
                            None if engine_cache is None else Path(engine_cache),
                            None if calibration_table is None else Path(calibration_table),
                        )
                        plan.extend(_on_devices(config, pool))
    if not plan:
        raise UsageError(
            "no configuration can run: " + "; ".join(skipped),
            hint="match --batch to the model's fixed batch dim or pick an available provider",
        )

    suite = BenchSuite(skipped=skipped)
    suite.settings = {
        "warmup": timing.warmup,
        "iterations": timing.iterations,
        "duration_s": timing.duration,
        "concurrency": timing.concurrency,
        "dims": dict(dims or {}),
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "inputs": "given" if inputs is not None else "generated",
        "seed": seed,
        "precision": precision,
    }
    suite.environment = _environment()
    suite.settings["price_per_hour"] = price_per_hour
    rapl = Rapl.find(powercap)
    suite.energy = rapl.describe()
    notes += [f"energy: {suite.energy}", f"cost: {suite.cost}"]
    results = _run(plan, timing, seed, progress, rapl=rapl)
    suite.results = [replace(r, price_per_hour=price_per_hour) for r in results]
    return Report(verb="bench", result=suite, notes=notes)


def _check_values(
    batches: Sequence[int],
    threads: Sequence[int | None],
    providers: Sequence[str],
    dims: Mapping[str, int] | None,
) -> None:
    for name, values in (("batches", batches), ("threads", threads), ("providers", providers)):
        if not values:
            raise UsageError(f"{name} is empty", hint=f"give at least one value for {name}")
    for b in batches:
        if b < 1:
            raise UsageError(f"batch must be at least 1, got {b}", hint="pass --batch 1")
    for t in threads:
        if t is not None:
            check_threads(t)
    for key, value in (dims or {}).items():
        if value < 1:
            raise UsageError(
                f"dims {key}={value} must be at least 1", hint=f"pass --dim {key}=1 or more"
            )


@dataclass(frozen=True)
class _Config:
    """One configuration: a model (``label`` names it in the results) on one provider at one
    thread count, with its feeds (a plan at one batch size, or the user's feeds)."""

    model: Model
    label: str
    provider: str
    threads: int | None
    feeds: FeedPlan | Mapping[str, np.ndarray]
    precision: str = "fp32"
    engine_cache: Path | None = None
    calibration_table: Path | None = None
    devices: tuple[Device, ...] = ()
    """A device pool's members this configuration runs on together (() : ``provider``)."""

    @property
    def where(self) -> str:
        """The provider, or the devices ("cuda:0", "cuda:0+cuda:1")."""
        return "+".join(str(d) for d in self.devices) if self.devices else self.provider

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            provider=self.provider,
            threads=self.threads,
            fallback=False,
            precision=self.precision,
            engine_cache=self.engine_cache,
            calibration_table=self.calibration_table,
        )

    def arrays(self, seed: int) -> dict[str, np.ndarray]:
        return self.feeds.feeds(seed) if isinstance(self.feeds, FeedPlan) else dict(self.feeds)


def _pool(devices: str | Sequence[str] | None, providers: Sequence[str]) -> list[Device]:
    """The parsed device pool, checked against this build ([] without one)."""
    if devices is None:
        return []
    pool = parse_devices(devices)
    for provider in providers:
        pool_provider(pool, provider)
    check_pool(pool)
    return pool


def _on_devices(config: _Config, pool: Sequence[Device]) -> list[_Config]:
    """``config`` on each device of ``pool``, then (several devices) on all together."""
    if not pool:
        return [config]
    each = [replace(config, devices=(d,)) for d in pool]
    return each + ([replace(config, devices=tuple(pool))] if len(pool) > 1 else [])


def _source(
    model: Model,
    dims: Mapping[str, int] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    inputs: Mapping[str, np.ndarray] | None,
) -> FeedPlan | Mapping[str, np.ndarray]:
    """The user's feeds (checked against the model), else the model's feed plan."""
    if inputs is None:
        known = {u.key for u in unknown_dims(model.signature)}
        known |= {u.symbol for u in unknown_dims(model.signature) if u.symbol}
        mine = {k: v for k, v in (dims or {}).items() if k in known}
        return _plan(model, mine, input_shapes)
    return checked_feeds(inputs, model.signature, where=model.name)[0]


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
    plan: Sequence[_Config],
    timing: Timing,
    seed: int,
    progress: Callable[[Progress], None] | None,
    *,
    rapl: Rapl,
) -> list[BenchResult]:
    """Every planned configuration in order, reporting to ``progress`` as they go."""
    results: list[BenchResult] = []
    for index, config in enumerate(plan, 1):
        arrays = config.arrays(seed)
        batch = _batch_of(config.model, arrays)
        on_progress: ProgressCallback | None = None
        if progress is not None:
            what = f"{config.label} {config.where} threads={config.threads or 'default'}"
            report = _reporter(progress, index, len(plan), f"{what} batch={batch}", timing)
            report(0, 0.0)
            on_progress = report
        results.append(
            _bench_one(
                config, timing, arrays=arrays, batch=batch, on_progress=on_progress, rapl=rapl
            )
        )
    return results


def _reporter(
    progress: Callable[[Progress], None], index: int, total: int, what: str, timing: Timing
) -> ProgressCallback:
    """The timed loop's ``on_progress(done, elapsed)`` as Progress values."""

    def report(done: int, elapsed: float) -> None:
        progress(Progress(index, total, what, done, elapsed, timing.iterations, timing.duration))

    return report


def _bench_one(
    config: _Config,
    timing: Timing,
    *,
    arrays: Mapping[str, np.ndarray],
    batch: int,
    on_progress: ProgressCallback | None,
    rapl: Rapl,
) -> BenchResult:
    """One configuration: a fresh session, one untimed run, then the timed loop (its energy
    read from ``rapl`` around the timed window)."""
    meter = EnergyMeter(rapl)
    model = config.model
    ortvalues = needs_ortvalue_outputs(model.signature)
    feeds = ort_inputs(arrays, all_ortvalues=ortvalues)
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        session = _session(config)
        init_ms = (time.perf_counter() - t0) * 1e3
        if len(config.devices) > 1:  # every device kept as busy as one alone
            timing = replace(timing, concurrency=timing.concurrency * len(config.devices))
        with run_errors(model.name, arrays):
            first = session.run_with_ort_values if ortvalues else session.run
            first(None, feeds, quiet_run_options())  # a run that fails says so once, on one line
            latency = measure_stats(
                session, feeds, timing, on_progress=on_progress, ortvalues=ortvalues, window=meter
            )
    used = config.where if config.devices else _short(session.get_providers()[0])
    del session
    return BenchResult(
        model=config.label,
        digest=model.digest,
        provider=used,
        threads=config.threads,
        batch=batch,
        concurrency=timing.concurrency,
        warmup=timing.warmup,
        latency=latency,
        peak_rss_bytes=peak.rss_bytes,
        memory_method=peak.method,
        session_init_ms=init_ms,
        input_shapes=_shapes_of(arrays),
        energy_j=meter.joules,
    )


def _session(config: _Config) -> ort.InferenceSession:
    """The configuration's session: on its provider, its device, or its devices pooled."""
    if not config.devices:
        return create_session(config.model, config.session_config())
    sessions = [device_session(config.model, config.session_config(), d) for d in config.devices]
    if len(sessions) == 1:
        return sessions[0]
    return cast("ort.InferenceSession", SessionPool(sessions))  # the slice measure uses


def _environment() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
