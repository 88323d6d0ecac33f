"""The timing engine under every verb that measures: the timed loop, LatencyStats, peak memory.

    lat = measure(session, feeds, warmup=10, iterations=500)      # seconds per request
    with PeakMemory() as peak:
        stats = measure_stats(session, feeds, Timing(warmup=10, duration=0.5, concurrency=2))
    stats.p50_ms, stats.p99_ms, stats.throughput_per_s
    peak.rss_bytes, peak.method                                    # the block's peak memory

``bench`` (local models), ``convert`` (choosing between exporters), ``optimize`` (is a pass
faster) and the load generator (``bench.remote``, whose requests are timed by its own async
loop) all report latencies as one ``LatencyStats``. The timed region is only
``perf_counter()`` around ``session.run(output_names, feeds)``, the same as a hand-written
loop; progress is reported outside it, at most every ``PROGRESS_INTERVAL_S``.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    from types import TracebackType

    import onnxruntime as ort

DEFAULT_ITERATIONS = 100
"""Measured iterations when neither ``iterations`` nor ``duration`` is given."""

PROGRESS_INTERVAL_S = 0.1
"""How often the loop calls ``on_progress`` (seconds, checked outside the timed region)."""

ProgressCallback = Callable[[int, float], None]
"""``on_progress(completed_requests, elapsed_seconds)``."""


@dataclass(frozen=True)
class Timing:
    """How much to measure: ``warmup`` untimed runs, then ``iterations`` timed runs in all, or
    every one of ``concurrency`` threads running until ``duration`` seconds have passed.

    Neither ``iterations`` nor ``duration`` means ``DEFAULT_ITERATIONS``. UsageError (one line,
    with the flag to fix) for a count or a duration that cannot be measured.
    """

    warmup: int = 10
    iterations: int | None = None
    duration: float | None = None
    concurrency: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise UsageError(
                f"warmup must be 0 or more, got {self.warmup}", hint="pass --warmup 10"
            )
        if self.iterations is not None and self.duration is not None:
            raise UsageError(
                "iterations and duration cannot both be given",
                hint="measure a fixed count (--iterations) or a fixed time (--duration), not both",
            )
        if self.iterations is not None and self.iterations < 1:
            raise UsageError(
                f"iterations must be at least 1, got {self.iterations}",
                hint="pass --iterations 100",
            )
        if self.duration is not None and not self.duration > 0:
            raise UsageError(
                f"duration must be more than 0 seconds, got {self.duration}",
                hint="pass --duration 5",
            )
        if self.concurrency < 1:
            raise UsageError(
                f"concurrency must be at least 1, got {self.concurrency}",
                hint="pass --concurrency 1 for one request at a time",
            )
        if self.iterations is None and self.duration is None:
            object.__setattr__(self, "iterations", DEFAULT_ITERATIONS)


@dataclass(frozen=True)
class LatencyStats:
    """Per-request latencies (ms) of ``count`` requests timed over a window of ``window_s``.

    ``cv`` is std / mean; ``iqr_ms`` is p75 - p25. The window is the measured region (local
    runs) or the span up to the last success (the load generator), so ``throughput_per_s``
    is what that window sustained.
    """

    count: int
    window_s: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    iqr_ms: float
    cv: float

    @classmethod
    def from_seconds(cls, latencies_s: Sequence[float], window_s: float) -> LatencyStats:
        """Figures of latencies given in seconds; ValueError for none at all."""
        if not latencies_s:
            raise ValueError("no latencies to summarize")
        a = np.asarray(latencies_s, dtype=np.float64) * 1e3
        p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(
            count=int(a.size),
            window_s=window_s,
            mean_ms=mean,
            std_ms=std,
            min_ms=float(a.min()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            max_ms=float(a.max()),
            iqr_ms=float(p75 - p25),
            cv=std / mean if mean > 0 else 0.0,
        )

    @property
    def throughput_per_s(self) -> float:
        """Requests per second over the window (0 for an empty window)."""
        return self.count / self.window_s if self.window_s > 0 else 0.0


# --- the timed loop ---------------------------------------------------------------------


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
    timing = Timing(warmup, iterations, duration, concurrency)
    return _timed(session, feeds, timing, on_progress, output_names, ortvalues=False)[0]


def within(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    seconds: float,
    *,
    warmup: int,
    iterations: int,
    least: int = 10,
) -> Timing:
    """A Timing of at most ``warmup`` and ``iterations`` runs, fewer where a run is so slow
    that they would take much longer than ``seconds`` (never under one warmup and ``least``
    timed runs). One run, made here, tells the cost.

        timing = within(session, feeds, 2.0, warmup=10, iterations=200)
        lat = measure(session, feeds, warmup=timing.warmup, iterations=timing.iterations)
    """
    run, arrays = _session_call(session, feeds, ortvalues=False)
    start = time.perf_counter()
    run(None, arrays)
    fits = int(seconds / max(time.perf_counter() - start, 1e-9))
    return Timing(
        warmup=max(1, min(warmup, fits // 10)), iterations=max(least, min(iterations, fits))
    )


def measure_stats(
    session: ort.InferenceSession,
    feeds: Mapping[str, Any],
    timing: Timing,
    *,
    on_progress: ProgressCallback | None = None,
    ortvalues: bool = False,
    window: AbstractContextManager[object] | None = None,
) -> LatencyStats:
    """``measure`` as LatencyStats over the measured region (fetching every output).

    ``ortvalues``: ``feeds`` are OrtValues and the loop calls ``run_with_ort_values`` (models
    with bfloat16 outputs, which ``session.run`` cannot return). ``window`` is entered after
    the warmup, just before the measured region, and left when it ends (an
    ``energy.EnergyMeter`` measures the timed runs' energy so).
    """
    latencies, wall = _timed(session, feeds, timing, on_progress, None, ortvalues, window)
    return LatencyStats.from_seconds(latencies, wall)


def _timed(
    session: ort.InferenceSession,
    feeds: Mapping[str, Any],
    timing: Timing,
    on_progress: ProgressCallback | None,
    output_names: Sequence[str] | None,
    ortvalues: bool,
    window: AbstractContextManager[object] | None = None,
) -> tuple[list[float], float]:
    """(latencies, wall seconds of the measured region); ``window`` spans that region."""
    names = None if output_names is None else list(output_names)
    run, arrays = _session_call(session, feeds, ortvalues)
    for _ in range(timing.warmup):
        run(names, arrays)
    with window or nullcontext():
        if timing.concurrency == 1:
            start = time.perf_counter()
            lat = _loop(run, names, arrays, timing.iterations, timing.duration, start, on_progress)
            return lat, time.perf_counter() - start
        return _threaded(run, names, arrays, timing, on_progress)


def _session_call(
    session: ort.InferenceSession, feeds: Mapping[str, Any], ortvalues: bool
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The call that runs ``session`` and its feeds: ``run_with_ort_values`` for feeds that
    are OrtValues already (``ortvalues``) or a model that returns bfloat16 (``session.run``
    cannot hand it to numpy), and bfloat16 arrays as OrtValues (numpy cannot name them to
    ONNX Runtime); else ``session.run`` on the arrays."""
    if ortvalues:
        return session.run_with_ort_values, dict(feeds)
    from .runtime import ort_inputs

    outputs: list[Any] = getattr(session, "get_outputs", list)()  # a device pool has none
    if any(o.type == "tensor(bfloat16)" for o in outputs):
        return session.run_with_ort_values, ort_inputs(feeds, all_ortvalues=True)
    return session.run, ort_inputs(feeds)


def _threaded(
    run: Callable[..., Any],
    names: list[str] | None,
    feeds: dict[str, Any],
    timing: Timing,
    on_progress: ProgressCallback | None,
) -> tuple[list[float], float]:
    """``timing.concurrency`` threads sharing the session, started together by a barrier;
    the count is split between them, progress summed over them."""
    concurrency, iterations = timing.concurrency, timing.iterations
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
            results[k] = _loop(
                run, names, feeds, counts[k], timing.duration, shared["start"], report(k)
            )
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
    feeds: dict[str, Any],
    iterations: int | None,
    duration: float | None,
    start: float,
    on_progress: ProgressCallback | None,
) -> list[float]:
    """The timed loop: perf_counter() around session.run and nothing else. It stops after
    ``iterations`` runs, or once ``duration`` seconds have passed since ``start``."""
    clock = time.perf_counter
    lat: list[float] = []
    append = lat.append
    count = sys.maxsize if iterations is None else iterations
    deadline = math.inf if duration is None else start + duration
    next_report = clock() + PROGRESS_INTERVAL_S
    t1 = clock()
    while len(lat) < count and t1 < deadline:
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


# --- peak memory ------------------------------------------------------------------------


class PeakMemory:
    """The process's peak resident memory (bytes) over a ``with`` block, and how it was read.

        with PeakMemory() as peak:
            session = create_session(model)
            measure(session, feeds, warmup=10)
        peak.rss_bytes, peak.method

    ``method``: "vmhwm-reset" (Linux, the high-water mark reset on entry, so the peak of the
    block), "vmhwm" (Linux, peak since the process began) or "ru_maxrss" (peak since the
    process began).
    """

    def __init__(self) -> None:
        self.method = ""
        self.rss_bytes = 0

    def __enter__(self) -> PeakMemory:
        # Garbage left in reference cycles just before the block (a previous configuration's
        # objects) is young: collecting the young generations frees it. A full collection
        # scans the whole heap: 0.7 s a call in a process holding TensorFlow and torch, all but
        # 0.02 s of `bench_models` on eight configurations of an MLP there.
        gc.collect(1)
        self.method = _reset_peak_rss()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.rss_bytes = _peak_rss(self.method)


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
