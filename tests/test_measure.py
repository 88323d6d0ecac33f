"""measure: the timing loop, LatencyStats and peak memory on real ONNX Runtime sessions;
structure and sanity, never timing ratios."""

from __future__ import annotations

import time
import weakref

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.errors import UsageError
from onnxferry.measure import (
    DEFAULT_ITERATIONS,
    LatencyStats,
    PeakMemory,
    Timing,
    measure,
    measure_stats,
    within,
)
from onnxferry.model import Model
from onnxferry.runtime import SessionConfig, create_session
from tests.helpers import RELU, onnx_text

FEEDS = {"x": np.ones((2, 4), np.float32)}


@pytest.fixture(scope="module")
def relu() -> Model:
    return Model.from_proto(onnx_text(RELU))


@pytest.fixture(scope="module")
def session(relu: Model) -> ort.InferenceSession:
    return create_session(relu, SessionConfig(threads=1))


FEEDS = {"x": np.ones((2, 4), np.float32)}


# --- measure ---------------------------------------------------------------------------


def test_measure_counts_iterations_exactly(session: ort.InferenceSession) -> None:
    lat = measure(session, FEEDS, warmup=3, iterations=37)
    assert len(lat) == 37
    assert all(x > 0 for x in lat)


def test_measure_default_is_a_fixed_count(session: ort.InferenceSession) -> None:
    assert len(measure(session, FEEDS, warmup=0)) == 100


def test_measure_duration_runs_at_least_the_duration(session: ort.InferenceSession) -> None:
    t0 = time.perf_counter()
    lat = measure(session, FEEDS, warmup=0, duration=0.2)
    assert time.perf_counter() - t0 >= 0.2
    assert len(lat) > 10


def test_within_keeps_the_counts_when_they_fit(session: ort.InferenceSession) -> None:
    timing = within(session, FEEDS, 60.0, warmup=10, iterations=200)
    assert (timing.warmup, timing.iterations) == (10, 200)


def test_within_cuts_the_runs_of_a_slow_model_to_its_least(
    session: ort.InferenceSession,
) -> None:
    """A run that takes longer than the whole allowance (a 3D network timed within a few
    seconds): one warmup and ``least`` timed runs, not the 10 and 200 asked for."""
    timing = within(session, FEEDS, 1e-9, warmup=10, iterations=200, least=7)
    assert (timing.warmup, timing.iterations) == (1, 7)
    assert len(measure(session, FEEDS, warmup=timing.warmup, iterations=timing.iterations)) == 7


def test_measure_concurrency_splits_the_requests(session: ort.InferenceSession) -> None:
    seen: list[int] = []
    lat = measure(
        session,
        FEEDS,
        warmup=2,
        iterations=101,
        concurrency=2,
        on_progress=lambda n, _: seen.append(n),
    )
    assert len(lat) == 101
    assert seen[-1] == 101
    assert seen == sorted(seen)


def test_measure_progress_reports_outside_the_loop(session: ort.InferenceSession) -> None:
    calls: list[tuple[int, float]] = []
    measure(session, FEEDS, warmup=0, iterations=50, on_progress=lambda n, t: calls.append((n, t)))
    assert calls[-1][0] == 50
    assert len(calls) < 50  # throttled, not once per iteration
    measure(session, FEEDS, warmup=0, duration=0.25, on_progress=lambda n, t: calls.append((n, t)))
    assert calls[-1][1] >= 0.25


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"iterations": 5, "duration": 1.0}, "both"),
        ({"iterations": 0}, "iterations"),
        ({"duration": 0.0}, "duration"),
        ({"duration": -1.0}, "duration"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_measure_rejects_bad_arguments(
    session: ort.InferenceSession, kwargs: dict[str, float], words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        measure(session, FEEDS, warmup=0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="warmup"):
        measure(session, FEEDS, warmup=-1)


# --- Timing, measure_stats ------------------------------------------------------------------


def test_timing_defaults_to_a_fixed_count() -> None:
    assert Timing().iterations == DEFAULT_ITERATIONS
    assert Timing(duration=1.0).iterations is None
    with pytest.raises(UsageError, match="both"):
        Timing(iterations=3, duration=1.0)


def test_measure_stats_over_threads(session: ort.InferenceSession) -> None:
    stats = measure_stats(session, FEEDS, Timing(warmup=1, iterations=41, concurrency=3))
    assert stats.count == 41
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.throughput_per_s == pytest.approx(41 / stats.window_s)
    # three threads share the window, so it is shorter than the latencies summed
    assert stats.window_s > 0


# --- LatencyStats ---------------------------------------------------------------------------


def test_latency_stats_from_seconds() -> None:
    stats = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004, 0.005], window_s=0.02)
    assert stats.count == 5
    assert stats.mean_ms == pytest.approx(3.0)
    assert stats.p50_ms == pytest.approx(3.0)
    assert (stats.min_ms, stats.max_ms) == pytest.approx((1.0, 5.0))
    assert stats.iqr_ms == pytest.approx(2.0)
    assert stats.std_ms == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    assert stats.cv == pytest.approx(stats.std_ms / 3.0)
    assert stats.throughput_per_s == pytest.approx(250.0)


def test_latency_stats_of_one_and_of_none() -> None:
    one = LatencyStats.from_seconds([0.002], window_s=0.0)
    assert one.std_ms == 0.0 and one.cv == 0.0 and one.p99_ms == pytest.approx(2.0)
    assert one.throughput_per_s == 0.0  # an empty window sustains nothing
    with pytest.raises(ValueError, match="no latencies"):
        LatencyStats.from_seconds([], window_s=1.0)


# --- peak memory ----------------------------------------------------------------------------


def test_peak_memory_frees_the_cyclic_garbage_just_before_it() -> None:
    """What the block before left in a reference cycle is freed before the peak is reset,
    with a collection of the young generations only (a full one scans the whole heap)."""

    class Holder:
        pass

    holder = Holder()
    holder.me, holder.buffer = holder, np.ones(16 * 2**20 // 8)  # type: ignore[attr-defined]
    gone = weakref.ref(holder)
    del holder
    with PeakMemory():
        assert gone() is None


def test_peak_memory_covers_what_the_block_allocates() -> None:
    with PeakMemory() as peak:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert peak.method in ("vmhwm-reset", "vmhwm", "ru_maxrss")
    assert peak.rss_bytes >= block.nbytes
