"""Prometheus metrics for the server, per model and version.

    metrics = ServeMetrics()
    metrics.succeeded("resnet", "1", request_s=0.004, queue_s=0.001, compute_s=0.003, batch=4)
    metrics.failed("resnet", "1", "bad_request")
    metrics.rolled_back("resnet")             # the server returned to the previous version
    metrics.explained("resnet", "1", "occlusion", seconds=0.8, evaluations=600)
    metrics.watch(lambda: [VersionGauges("resnet", "1", 5, 2, 4096, 50 << 20)])  # repo.gauges
    body, content_type = metrics.render()     # GET /metrics

Histograms: request, queue and compute seconds and the batch size each request ran in;
counters: successes, failures by reason (bad_request, not_found, unavailable, queue_full,
deadline, too_large, unauthorized, internal), and automatic rollbacks per model
(``ferry_auto_rollbacks_total``, registry_source.py); explanations served per method, the
model evaluations they took and their seconds (``ferry_explanations_total``,
``ferry_explain_evaluations_total``, ``ferry_explain_seconds_total``; a failed explanation
counts among the failures by reason). Read from the repository when /metrics is
read (``watch``): response cache hits and misses (``ferry_cache_hits_total``,
``ferry_cache_misses_total``) and the bytes of answers kept (``ferry_cache_bytes``) of each
version with a cache, the memory each version's sessions hold (``ferry_model_memory_bytes``,
0 while the memory budget has unloaded them), and the batches each device of a ``--devices``
pool ran (``ferry_device_batches_total``, a ``device`` label). A version's counts start again
when it reloads.

Recording is on every request's path, so it is plain counting (one bisect and a few integer
adds per histogram, no locks: the event loop thread is the only writer); prometheus_client
builds the exposition from these counts when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)  # fmt: skip
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)
_LABELS = ["model", "version"]

# name, help, buckets; in the order ``succeeded`` takes its values
_HISTOGRAMS = (
    (
        "ferry_request_duration_seconds",
        "Inference request time, from the first body byte to the response",
        _SECONDS,
    ),
    ("ferry_queue_duration_seconds", "Time a request waited in the batcher's queue", _SECONDS),
    ("ferry_compute_duration_seconds", "ONNX Runtime time of the batch a request ran in", _SECONDS),
    ("ferry_batch_size", "Rows in the batch a request ran in", _BATCH),
)


class _Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append((_le(bound), cumulative))
        return out


class VersionGauges(NamedTuple):
    """What a served version reports at /metrics: its response cache and its memory."""

    model: str
    version: str
    cache_hits: int
    cache_misses: int
    cache_bytes: int | None  # None: the version has no response cache
    memory_bytes: int
    device_batches: tuple[tuple[str, int], ...] = ()  # (device, batches); () without a pool


class ServeMetrics:
    """The server's metrics, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], tuple[_Histogram, ...]] = {}
        self._success: dict[tuple[str, str], int] = {}
        self._failure: dict[tuple[str, str, str], int] = {}
        self._rollbacks: dict[str, int] = {}
        self._explained: dict[tuple[str, str, str], list[float]] = {}
        self._sources: list[Callable[[], Sequence[VersionGauges]]] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def succeeded(
        self,
        model: str,
        version: str,
        *,
        request_s: float,
        queue_s: float,
        compute_s: float,
        batch: int,
    ) -> None:
        key = (model, version)
        histograms = self._versions.get(key)
        if histograms is None:
            histograms = self._versions[key] = tuple(_Histogram(b) for _, _, b in _HISTOGRAMS)
        request, queue, compute, batch_size = histograms
        request.observe(request_s)
        queue.observe(queue_s)
        compute.observe(compute_s)
        batch_size.observe(batch)
        self._success[key] = self._success.get(key, 0) + 1

    def failed(self, model: str, version: str, reason: str) -> None:
        key = (model, version, reason)
        self._failure[key] = self._failure.get(key, 0) + 1

    def explained(
        self, model: str, version: str, method: str, *, seconds: float, evaluations: int
    ) -> None:
        """One explanation answered (the explain endpoint)."""
        counts = self._explained.setdefault((model, version, method), [0, 0, 0.0])
        counts[0] += 1
        counts[1] += evaluations
        counts[2] += seconds

    def rolled_back(self, model: str) -> None:
        """The server returned ``model`` to its previous version by itself."""
        self._rollbacks[model] = self._rollbacks.get(model, 0) + 1

    def watch(self, source: Callable[[], Sequence[VersionGauges]]) -> None:
        """Read ``source`` (a repository's ``gauges``) each time the metrics are collected."""
        self._sources.append(source)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol: the metric families, built now."""
        for i, (name, text, _) in enumerate(_HISTOGRAMS):
            family = HistogramMetricFamily(name, text, labels=_LABELS)
            for labels, histograms in self._versions.items():
                h = histograms[i]
                family.add_metric(list(labels), h.buckets(), h.total)
            yield family
        success = CounterMetricFamily(
            "ferry_inference_success", "Successful inference requests", labels=_LABELS
        )
        for labels, count in self._success.items():
            success.add_metric(list(labels), count)
        yield success
        failure = CounterMetricFamily(
            "ferry_inference_failure",
            "Failed inference requests by reason",
            labels=[*_LABELS, "reason"],
        )
        for labels3, count in self._failure.items():
            failure.add_metric(list(labels3), count)
        yield failure
        rollbacks = CounterMetricFamily(
            "ferry_auto_rollbacks",
            "Times the server returned a model to its previous version by itself",
            labels=["model"],
        )
        for model, count in self._rollbacks.items():
            rollbacks.add_metric([model], count)
        yield rollbacks
        yield from self._explanations()
        yield from self._gauges()

    def _explanations(self) -> Iterator[Metric]:
        labels = [*_LABELS, "method"]
        families = (
            CounterMetricFamily("ferry_explanations", "Explanations answered", labels=labels),
            CounterMetricFamily(
                "ferry_explain_evaluations", "Model rows explanations evaluated", labels=labels
            ),
            CounterMetricFamily(
                "ferry_explain_seconds", "Seconds spent answering explanations", labels=labels
            ),
        )
        for key, counts in self._explained.items():
            for family, value in zip(families, counts, strict=True):
                family.add_metric(list(key), value)
        yield from families

    def _gauges(self) -> Iterator[Metric]:
        """The response cache and memory families, read from the watched sources."""
        rows = [row for source in self._sources for row in source()]
        hits = CounterMetricFamily("ferry_cache_hits", "Response cache hits", labels=_LABELS)
        misses = CounterMetricFamily("ferry_cache_misses", "Response cache misses", labels=_LABELS)
        kept = GaugeMetricFamily(
            "ferry_cache_bytes", "Bytes of answers the response cache keeps", labels=_LABELS
        )
        memory = GaugeMetricFamily(
            "ferry_model_memory_bytes",
            "Memory the version's sessions hold (measured at load; 0 while unloaded)",
            labels=_LABELS,
        )
        devices = CounterMetricFamily(
            "ferry_device_batches",
            "Batches each device of the version's pool ran (--devices)",
            labels=[*_LABELS, "device"],
        )
        for row in rows:
            labels = [row.model, row.version]
            if row.cache_bytes is not None:
                hits.add_metric(labels, row.cache_hits)
                misses.add_metric(labels, row.cache_misses)
                kept.add_metric(labels, row.cache_bytes)
            memory.add_metric(labels, row.memory_bytes)
            for device, count in row.device_batches:
                devices.add_metric([*labels, device], count)
        yield from (hits, misses, kept, memory, devices)


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it ("0.00025", "1.0", "+Inf")."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
