"""`ferry package --target observability`: watching ``ferry serve`` in production.

    from onnxferry.package import package
    report = package("model.onnx", "observability", "out/observability")
    files = observability_files("model", port=8000)          # {path: text}, what k8s includes
    [(m, labels) for q in dashboard_queries() for m, labels in query_references(q)]

Writes a Grafana dashboard (``grafana-dashboard.json``: request rate, p50/p99 latency from the
histograms, queue vs compute time, batch size, failures by reason, versions serving), a
Prometheus scrape config (``prometheus-scrape.yaml``), a Prometheus Operator ServiceMonitor
(``servicemonitor.yaml``) and notes on shipping the JSON-lines access log to ELK or Loki
(``LOGGING.md``). Every query uses only the metrics and labels ``serve/metrics.py`` exports:
the target's own check renders a ``ServeMetrics`` and reads it back with prometheus_client's
parser; tests/test_package_observability.py checks them against a live server's /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .base import Check, Options, Packaged, PackageSource, write_tree
from .kube import k8s_name, to_yaml

RATE = "$__rate_interval"
_SELECT = '{model=~"$model"}'

# title, unit, [(PromQL, legend)]
_PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Request rate",
        "reqps",
        (
            (
                f"sum by (model, version) (rate(ferry_inference_success_total{_SELECT}[{RATE}]))",
                "{{model}} v{{version}}",
            ),
        ),
    ),
    (
        "Request latency p50 / p99",
        "s",
        tuple(
            (
                f"histogram_quantile({q}, sum by (le, model) "
                f"(rate(ferry_request_duration_seconds_bucket{_SELECT}[{RATE}])))",
                f"{{{{model}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.99)
        ),
    ),
    (
        "Queue vs compute time (p99)",
        "s",
        tuple(
            (
                f"histogram_quantile(0.99, sum by (le, model) "
                f"(rate(ferry_{part}_duration_seconds_bucket{_SELECT}[{RATE}])))",
                f"{{{{model}}}} {part}",
            )
            for part in ("queue", "compute")
        ),
    ),
    (
        "Mean batch size",
        "short",
        (
            (
                f"sum by (model) (rate(ferry_batch_size_sum{_SELECT}[{RATE}])) / "
                f"sum by (model) (rate(ferry_batch_size_count{_SELECT}[{RATE}]))",
                "{{model}}",
            ),
        ),
    ),
    (
        "Failures by reason",
        "reqps",
        (
            (
                f"sum by (model, reason) (rate(ferry_inference_failure_total{_SELECT}[{RATE}]))",
                "{{model}} {{reason}}",
            ),
        ),
    ),
    (
        "Versions serving (requests in the range)",
        "short",
        (
            (
                f"sum by (model, version) "
                f"(increase(ferry_request_duration_seconds_count{_SELECT}[$__range]))",
                "{{model}} v{{version}}",
            ),
        ),
    ),
)
MODEL_VARIABLE_QUERY = "label_values(ferry_inference_success_total, model)"

_METRIC = re.compile(r"\b(ferry_[a-z_]+)(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard_queries() -> list[str]:
    """Every PromQL expression the dashboard runs (panels, then the model variable)."""
    return [expr for _, _, targets in _PANELS for expr, _ in targets] + [MODEL_VARIABLE_QUERY]


def query_references(expr: str) -> list[tuple[str, set[str]]]:
    """The series ``expr`` reads: each metric name with the labels the query needs on it
    (its matchers, ``by (...)`` labels, ``label_values``' label)."""
    grouped = {
        label.strip()
        for group in _GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }
    values = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
    if values:
        return [(values.group(1), {values.group(2)})]
    found = []
    for name, matchers in _METRIC.findall(expr):
        labels = set(_MATCHER.findall(matchers)) | grouped
        if not name.endswith("_bucket"):
            labels.discard("le")
        found.append((name, labels))
    return found


def dashboard(name: str) -> dict[str, Any]:
    """The Grafana dashboard (schema 39) for ``ferry serve``; model picked by ``$model``."""
    panels = []
    for i, (title, unit, targets) in enumerate(_PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "title": f"ferry serve: {name}",
        "uid": f"ferry-{name}"[:40],
        "tags": ["onnxferry", "ferry-serve"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": MODEL_VARIABLE_QUERY,
                    "definition": MODEL_VARIABLE_QUERY,
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {"text": name, "value": name},
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def observability_files(name: str, *, port: int = 8000) -> dict[str, str]:
    """The files this target writes, by relative path (the k8s target includes them)."""
    app = k8s_name(name)
    selector = {"app.kubernetes.io/name": app}
    scrape = {
        "scrape_configs": [
            {
                "job_name": f"ferry-{name}",
                "metrics_path": "/metrics",
                "scrape_interval": "15s",
                "static_configs": [{"targets": [f"localhost:{port}"]}],
            },
            {
                "job_name": f"ferry-{name}-pods",
                "metrics_path": "/metrics",
                "scrape_interval": "15s",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                        "regex": app,
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "http",
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            },
        ]
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": app, "labels": dict(selector)},
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
    head = (
        "# With --api-key, /metrics needs the key too: add `authorization: {credentials_file: "
        "...}`.\n"
    )
    return {
        "grafana-dashboard.json": json.dumps(dashboard(name), indent=2) + "\n",
        "prometheus-scrape.yaml": head + to_yaml(scrape),
        "servicemonitor.yaml": head + to_yaml(monitor),
        "LOGGING.md": LOGGING.format(name=name),
    }


def exported_series() -> dict[str, set[str]]:
    """Every series name ``ServeMetrics`` exposes, with its labels (one of each recorded and
    read back with prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    from ..serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    metrics.succeeded("m", "1", request_s=0.001, queue_s=0.0, compute_s=0.001, batch=1)
    metrics.failed("m", "1", "bad_request")
    metrics.rolled_back("m")
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def check_queries(series: dict[str, set[str]]) -> list[str]:
    """What the dashboard's queries read that ``series`` lacks (empty: all there)."""
    problems = []
    for expr in dashboard_queries():
        for metric, labels in query_references(expr):
            if metric not in series:
                problems.append(f"{metric}: not exported")
            elif labels - series[metric]:
                problems.append(f"{metric}: no label {', '.join(sorted(labels - series[metric]))}")
    return problems


def build(source: PackageSource, outdir: Path, options: dict[str, str]) -> Packaged:
    """The dashboard, scrape config, ServiceMonitor and logging notes for ``source``."""
    port = Options("observability", options, ("port",)).integer("port", 8000, low=1)
    result = Packaged("observability", source.name, str(outdir))
    write_tree(outdir, observability_files(source.name, port=port), result)
    result.checks.extend(observability_checks(outdir, ""))
    return result


def observability_checks(outdir: Path, prefix: str) -> list[Check]:
    """The written files parse, and every dashboard query reads series ``ferry serve``
    exports."""
    problems = check_queries(exported_series())
    count = sum(len(query_references(q)) for q in dashboard_queries())
    checks = [
        Check(
            "dashboard queries",
            not problems,
            "; ".join(problems) or f"{count} series references, all exported by ferry serve",
            tool="prometheus_client parser",
        )
    ]
    try:
        json.loads((outdir / prefix / "grafana-dashboard.json").read_text(encoding="utf-8"))
        checks.append(Check("grafana-dashboard.json", True, "valid JSON", tool="json"))
    except ValueError as e:
        checks.append(Check("grafana-dashboard.json", False, str(e), tool="json"))
    return checks


LOGGING = """# Logs of `ferry serve` ({name})

Run the server with `--access-log`: one JSON line per request on stderr, after the
`ferry: info: ` prefix every server log line carries:

    ferry: info: {{"method": "POST", "path": "/v2/models/{name}/infer", "status": 200, \
"model": "{name}", "version": "1", "ms": 1.234, "client": "10.0.0.7"}}

Other lines (`ferry: warning: ...`, `ferry: error: ...`) are plain text. Ship both: parse the
JSON after the prefix, keep the rest as the message. Fields: method, path, status, model,
version (null when the request named none), ms (server time), client (peer address).

## Loki (Promtail / Grafana Alloy)

    pipeline_stages:
      - regex:
          expression: '^ferry: (?P<level>\\w+): (?P<message>.*)$'
      - json:
          source: message
          expressions: {{status: status, model: model, version: version, ms: ms}}
      - labels: {{level: "", model: ""}}      # keep status/version/ms as fields, not labels

Query: `{{app="{name}"}} | regexp "^ferry: info: (?P<j>.*)" | line_format "{{{{.j}}}}" | json
| status >= 500`.

## ELK (Filebeat -> Elasticsearch)

    processors:
      - dissect:
          tokenizer: "ferry: %{{level}}: %{{message}}"
          target_prefix: ""
          overwrite_keys: true
      - decode_json_fields:
          fields: ["message"]
          target: "ferry"
          when.equals.level: "info"

In Kubernetes the container's stderr is in the node's log files: the usual DaemonSet
(Promtail, Alloy, Filebeat, Fluent Bit) picks it up; no sidecar is needed.
"""
