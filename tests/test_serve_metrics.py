"""The server's Prometheus metrics: exact counts, sums and labels, read back with
prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from onnxferry.serve.metrics import ServeMetrics


def samples(metrics: ServeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_histograms_and_counters_per_model_and_version() -> None:
    metrics = ServeMetrics()
    metrics.succeeded("m", "1", request_s=0.0004, queue_s=0.0001, compute_s=0.0002, batch=1)
    metrics.succeeded("m", "1", request_s=0.003, queue_s=0.00005, compute_s=0.002, batch=3)
    metrics.succeeded("m", "2", request_s=20.0, queue_s=0.0, compute_s=1.0, batch=200)
    metrics.failed("m", "1", "bad_request")
    metrics.failed("m", "1", "bad_request")
    metrics.failed("m", "-", "not_found")
    got = samples(metrics)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    request = "ferry_request_duration_seconds"
    # 0.0004 s falls in le=0.0005 and above; 0.003 s in le=0.005 and above
    assert value(f"{request}_bucket", model="m", version="1", le="0.00025") == 0
    assert value(f"{request}_bucket", model="m", version="1", le="0.0005") == 1
    assert value(f"{request}_bucket", model="m", version="1", le="0.0025") == 1
    assert value(f"{request}_bucket", model="m", version="1", le="0.005") == 2
    assert value(f"{request}_bucket", model="m", version="1", le="+Inf") == 2
    assert value(f"{request}_count", model="m", version="1") == 2
    assert abs(value(f"{request}_sum", model="m", version="1") - 0.0034) < 1e-12
    # a value on a bound counts in that bucket (le means <=)
    queue = "ferry_queue_duration_seconds"
    assert value(f"{queue}_bucket", model="m", version="1", le="0.0001") == 2
    # past the last bound: only +Inf
    assert value(f"{request}_bucket", model="m", version="2", le="10.0") == 0
    assert value(f"{request}_bucket", model="m", version="2", le="+Inf") == 1
    assert value("ferry_batch_size_bucket", model="m", version="1", le="2.0") == 1
    assert value("ferry_batch_size_bucket", model="m", version="1", le="4.0") == 2
    assert value("ferry_batch_size_bucket", model="m", version="2", le="128.0") == 0
    assert value("ferry_batch_size_sum", model="m", version="2") == 200
    assert value("ferry_compute_duration_seconds_count", model="m", version="2") == 1
    assert value("ferry_inference_success_total", model="m", version="1") == 2
    assert value("ferry_inference_success_total", model="m", version="2") == 1
    failure = "ferry_inference_failure_total"
    assert value(failure, model="m", version="1", reason="bad_request") == 2
    assert value(failure, model="m", version="-", reason="not_found") == 1


def test_no_requests_yet_renders_the_families_without_samples() -> None:
    body, _ = ServeMetrics().render()
    text = body.decode()
    for name, kind in (
        ("ferry_request_duration_seconds", "histogram"),
        ("ferry_queue_duration_seconds", "histogram"),
        ("ferry_compute_duration_seconds", "histogram"),
        ("ferry_batch_size", "histogram"),
        ("ferry_inference_success_total", "counter"),
        ("ferry_inference_failure_total", "counter"),
    ):
        assert f"# TYPE {name} {kind}\n" in text
    assert not any(s for f in text_string_to_metric_families(text) for s in f.samples)
