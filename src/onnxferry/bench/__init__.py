"""The ``bench`` verb: models side by side in this process, or a running V2 server under load.

    report = bench(["a.onnx", "b.onnx"], batches=(1, 8), iterations=200)
    print(report.to_text())                  # one row per (model, provider, threads, batch)
    report.result.results[0].p50_ms          # a BenchSuite of BenchResult rows

With ``url`` it load-tests a server instead, ``bench(url="http://127.0.0.1:8000",
model="mlp", concurrency=(1, 8))``, and reports a LoadReport of LoadRow levels.

``local`` times model files with ``measure``'s loop (``bench_models``), ``remote`` is the load
generator (``load_test``; needs the ``serve`` extra, imported only when ``url`` is given), and
``results`` holds what both report, each built on one ``measure.LatencyStats``.

``onnxferry.bench`` is this function (the package's ``__init__`` imports it over the
subpackage's name), so ``onnxferry.bench(...)`` runs the verb while ``from onnxferry.bench
import batch_feeds`` and ``from onnxferry.bench.remote import load_test`` reach the modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from ..errors import UsageError
from ..model import Model
from ..report import Report
from .local import Progress, batch_conflict, batch_feeds, bench_models
from .results import BenchResult, BenchSuite, LoadReport, LoadRow, ServerSplit

__all__ = [
    "BenchResult",
    "BenchSuite",
    "LoadReport",
    "LoadRow",
    "Progress",
    "ServerSplit",
    "batch_conflict",
    "batch_feeds",
    "bench",
    "bench_models",
]

Models = str | Path | Model | Sequence[str | Path | Model]


@overload
def bench(
    models: Models = (),
    *,
    url: None = None,
    model: str | None = None,
    concurrency: int | Sequence[int] = 1,
    binary: bool = True,
    duration: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Report[BenchSuite]: ...


@overload
def bench(
    models: Models = (),
    *,
    url: str,
    model: str | None = None,
    concurrency: int | Sequence[int] = 1,
    binary: bool = True,
    duration: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Report[LoadReport]: ...


@overload
def bench(
    models: Models = (),
    *,
    url: str | None,
    model: str | None = None,
    concurrency: int | Sequence[int] = 1,
    binary: bool = True,
    duration: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Report[BenchSuite] | Report[LoadReport]: ...


def bench(
    models: Models = (),
    *,
    url: str | None = None,
    model: str | None = None,
    concurrency: int | Sequence[int] = 1,
    binary: bool = True,
    duration: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Report[BenchSuite] | Report[LoadReport]:
    """Measure models side by side, or load-test a running V2 server (``ferry bench``).

        report = onnxferry.bench(["fp32.onnx", "int8.onnx"], batches=(1, 8), duration=2.0)
        report = onnxferry.bench(url="http://127.0.0.1:8000", model="mlp", concurrency=(1, 8))

    Without ``url``: ``models`` run in this process at one ``concurrency`` level; ``options``
    are the keywords of ``bench_models`` (batches, threads, providers, warmup, iterations,
    dims, input_shapes, inputs, and ``progress``, a callback taking ``Progress``). With
    ``url`` (the ``serve`` extra): ``model`` names the served model, and each ``concurrency``
    level is loaded for ``duration`` seconds (default 5) with binary or JSON tensors;
    ``options`` are unused.
    """
    levels = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if isinstance(models, (str, Path, Model)):
        models = [models]
    if url is None:
        if not models:
            raise UsageError("give one or more models", hint="ferry bench model.onnx, or --url")
        if len(levels) > 1:
            raise UsageError(
                "several --concurrency levels need --url", hint="bench one level at a time"
            )
        level = levels[0] if levels else 0
        return bench_models(models, concurrency=level, duration=duration, seed=seed, **options)
    try:
        from .remote import run_load_test
    except ModuleNotFoundError as e:
        raise UsageError(
            f"this verb needs {(e.name or 'tritonclient').split('.')[0]}, which is not installed",
            hint="pip install 'onnxferry[serve]'",
        ) from None
    if models:
        raise UsageError("--url measures a server: give --model NAME, not model files")
    if options.get("price_per_hour") is not None:
        raise UsageError(
            "--price-per-hour prices the models benched here, not a server",
            hint="drop --url to bench the model files on this machine",
        )
    if not model:
        raise UsageError("--url needs --model NAME", hint="the name the server serves it under")
    timing = {} if duration is None else {"duration_s": duration}
    result = run_load_test(url, model, concurrency=levels, binary=binary, seed=seed, **timing)
    return Report("bench", result)
