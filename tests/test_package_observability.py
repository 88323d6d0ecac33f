"""`ferry package --target observability`: every metric and label the dashboard's queries use
is one a live `ferry serve` exports on /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from onnxferry.package import package
from onnxferry.package.observability import check_queries, dashboard_queries, query_references
from onnxferry.serve.server import running
from tests.helpers import Run, mlp, save
from tests.serve_probes import request


def _infer_body(rows: int) -> bytes:
    x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
    tensor = {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def test_dashboard_queries_use_only_what_a_live_server_exports(tmp_path: Path) -> None:
    save(mlp(), tmp_path / "repo" / "m" / "1" / "model.onnx")
    with running(tmp_path / "repo") as url:
        for rows in (1, 2, 3):
            status, _ = request(url, "POST", "/v2/models/m/infer", _infer_body(rows))
            assert status == 200
        status, _ = request(url, "POST", "/v2/models/m/infer", b'{"inputs": "nope"}')
        assert status == 400  # a failure, so ferry_inference_failure_total has its labels
        status, body = request(url, "GET", "/metrics")
    assert status == 200
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    assert check_queries(series) == []
    used = {metric for q in dashboard_queries() for metric, _ in query_references(q)}
    assert {
        "ferry_inference_success_total",
        "ferry_inference_failure_total",
        "ferry_request_duration_seconds_bucket",
        "ferry_queue_duration_seconds_bucket",
        "ferry_compute_duration_seconds_bucket",
        "ferry_batch_size_sum",
        "ferry_batch_size_count",
    } <= used
    # the check is not vacuous: a series without a label the queries group by is caught
    broken = {**series, "ferry_inference_failure_total": {"model", "version"}}
    assert check_queries(broken) == ["ferry_inference_failure_total: no label reason"]
    assert "ferry_batch_size_sum: not exported" in check_queries(
        {k: v for k, v in series.items() if k != "ferry_batch_size_sum"}
    )


def test_query_references_reads_matchers_and_grouping() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, model) (rate(ferry_x_bucket{version!="2"}[5m])))'
    assert query_references(expr) == [("ferry_x_bucket", {"le", "model", "version"})]
    assert query_references("sum by (le) (rate(ferry_y_sum[1m]))") == [("ferry_y_sum", set())]
    assert query_references("label_values(ferry_z_total, model)") == [("ferry_z_total", {"model"})]


def test_package_writes_a_dashboard_scrape_config_servicemonitor_and_notes(
    tmp_path: Path, ferry: Run
) -> None:
    save(mlp(), tmp_path / "my_model.onnx")
    out = tmp_path / "obs"
    code, stdout, _ = ferry(
        "package", tmp_path / "my_model.onnx", "--target", "observability", "-o", out, "--json"
    )
    assert code == 0, stdout
    board = json.loads((out / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert [*exprs, board["templating"]["list"][1]["query"]] == dashboard_queries()
    titles = " ".join(p["title"] for p in board["panels"])
    for word in ("rate", "p99", "Queue", "batch", "Failures", "Versions"):
        assert word in titles
    monitor = yaml.safe_load((out / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "my-model"}
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "15s",
    }
    scrape = yaml.safe_load((out / "prometheus-scrape.yaml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"] == [{"targets": ["localhost:8000"]}]
    notes = (out / "LOGGING.md").read_text()
    assert "--access-log" in notes and "Loki" in notes and "ELK" in notes
    report = package(tmp_path / "my_model.onnx", "observability", tmp_path / "again")
    assert report.ok and {c.name for c in report.result.checks} == {
        "dashboard queries",
        "grafana-dashboard.json",
    }
