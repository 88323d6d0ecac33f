"""Prometheus metrics for the server, per model and version.

    metrics = ServeMetrics()
    metrics.succeeded("resnet", "1", request_s=0.004, queue_s=0.001, compute_s=0.003, batch=4)
    metrics.failed("resnet", "1", "bad_request")
    body, content_type = metrics.render()     # GET /metrics

Histograms: request, queue and compute seconds and the batch size each request ran in;
counters: successes, and failures by reason (bad_request, not_found, unavailable, queue_full,
deadline, too_large, unauthorized, internal).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0)  # fmt: skip
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)
_LABELS = ("model", "version")


class ServeMetrics:
    """The server's metrics, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request = Histogram(
            "ferry_request_duration_seconds",
            "Inference request time, from the first body byte to the response",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.queue = Histogram(
            "ferry_queue_duration_seconds",
            "Time a request waited in the batcher's queue",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.compute = Histogram(
            "ferry_compute_duration_seconds",
            "ONNX Runtime time of the batch a request ran in",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.batch = Histogram(
            "ferry_batch_size",
            "Rows in the batch a request ran in",
            _LABELS,
            buckets=_BATCH,
            registry=r,
        )
        self.success = Counter(
            "ferry_inference_success", "Successful inference requests", _LABELS, registry=r
        )
        self._children = {}
        self.failure = Counter(
            "ferry_inference_failure",
            "Failed inference requests by reason",
            (*_LABELS, "reason"),
            registry=r,
        )

    _children: dict[tuple[str, str], tuple[Any, ...]]

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
        children = self._children.get((model, version))
        if children is None:  # labels() costs a lock and a dict lookup per metric: do it once
            children = self._children[(model, version)] = tuple(
                m.labels(model, version)
                for m in (self.request, self.queue, self.compute, self.batch, self.success)
            )
        request, queue, compute, batch_size, success = children
        request.observe(request_s)
        queue.observe(queue_s)
        compute.observe(compute_s)
        batch_size.observe(batch)
        success.inc()

    def failed(self, model: str, version: str, reason: str) -> None:
        self.failure.labels(model, version, reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
