"""Prometheus metrics for the server, per model and version.

    metrics = ServeMetrics()
    metrics.succeeded("resnet", "1", request_s=0.004, queue_s=0.001, compute_s=0.003, batch=4)
    metrics.failed("resnet", "1", "bad_request")
    metrics.rolled_back("resnet")             # the server returned to the previous version
    body, content_type = metrics.render()     # GET /metrics

Histograms: request, queue and compute seconds and the batch size each request ran in;
counters: successes, failures by reason (bad_request, not_found, unavailable, queue_full,
deadline, too_large, unauthorized, internal), and automatic rollbacks per model
(``ferry_auto_rollbacks_total``, registry_source.py).

Recording is on every request's path, so it is plain counting (one bisect and a few integer
adds per histogram, no locks: the event loop thread is the only writer); prometheus_client
builds the exposition from these counts when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
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


class ServeMetrics:
    """The server's metrics, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], tuple[_Histogram, ...]] = {}
        self._success: dict[tuple[str, str], int] = {}
        self._failure: dict[tuple[str, str, str], int] = {}
        self._rollbacks: dict[str, int] = {}
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

    def rolled_back(self, model: str) -> None:
        """The server returned ``model`` to its previous version by itself."""
        self._rollbacks[model] = self._rollbacks.get(model, 0) + 1

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


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it ("0.00025", "1.0", "+Inf")."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
