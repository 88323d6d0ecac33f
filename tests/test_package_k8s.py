"""`ferry package --target k8s`: every manifest valid for the pinned Kubernetes (checked here
again, offline, with kubernetes-validate), sized from a real load of the model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from onnxferry.package import package
from onnxferry.package.k8s import K8S_VERSION, QUEUE_METRIC, adapter_rules, validate_manifests
from onnxferry.package.kube import BODY_HEADROOM_MIB, STARTUP_BASE_S, to_yaml
from onnxferry.package.observability import exported_series
from tests.helpers import Run, mlp, save


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("k8s")
    save(mlp(), tmp / "repo" / "fraud" / "3" / "model.onnx")
    (tmp / "repo" / "fraud" / "ferry.toml").write_text("max_batch_size = 4\n")
    options = {"replicas": "3", "ingress_host": "fraud.example.com", "queue_target_ms": "20"}
    report = package(tmp / "repo", "k8s", tmp / "out", options)
    return tmp / "out", report


def test_every_manifest_validates_against_the_kubernetes_schemas(built: tuple[Path, Any]) -> None:
    out, report = built
    assert report.ok, [c for c in report.result.checks if not c.ok]
    resources = _load(out / "kustomization.yaml")["resources"]
    assert sorted(resources) == sorted(
        [
            "configmap.yaml",
            "deployment.yaml",
            "service.yaml",
            "hpa.yaml",
            "pdb.yaml",
            "ingress.yaml",
        ]
    )
    for rel in resources:
        kubernetes_validate.validate(_load(out / rel), K8S_VERSION, strict=True)
    checked = {c.name for c in report.result.checks if "kubernetes-validate" in c.tool}
    assert checked == set(resources)
    assert set(report.result.files) >= {*resources, "observability/grafana-dashboard.json"}


def test_deployment_probes_security_and_sizing(built: tuple[Path, Any]) -> None:
    out, report = built
    deployment = _load(out / "deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "onnxferry/fraud:3"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= STARTUP_BASE_S
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    resources = container["resources"]
    request = int(resources["requests"]["memory"].removesuffix("Mi"))
    limit = int(resources["limits"]["memory"].removesuffix("Mi"))
    assert limit == request + BODY_HEADROOM_MIB
    # sized from the measured peak RSS the report states
    (measured,) = [n for n in report.result.notes if n.startswith("measured:")]
    peak_mib = float(measured.split("peak RSS ")[1].split(" MiB")[0])
    assert request == pytest.approx(math.ceil(peak_mib * 1.25), abs=2)
    # the repository's ferry.toml is the ConfigMap, mounted where the server reads it
    config = _load(out / "configmap.yaml")
    assert config["data"]["ferry.toml"] == "max_batch_size = 4\n"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/models/fraud/ferry.toml"


def test_hpa_scales_on_cpu_and_a_queue_metric_ferry_serve_exports(built: tuple[Path, Any]) -> None:
    out, _ = built
    hpa = _load(out / "hpa.yaml")["spec"]
    assert hpa["minReplicas"] == 3 and hpa["maxReplicas"] == 15
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == QUEUE_METRIC
    assert kinds["Pods"]["pods"]["target"]["averageValue"] == "20m"
    (rule,) = yaml.safe_load((out / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert rule == adapter_rules()["rules"][0] and rule["name"]["as"] == QUEUE_METRIC
    series = exported_series()
    for metric in ("ferry_queue_duration_seconds_sum", "ferry_queue_duration_seconds_count"):
        assert metric in rule["metricsQuery"] and metric in series
    service = _load(out / "service.yaml")
    monitor = _load(out / "observability" / "servicemonitor.yaml")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["name"] == monitor["spec"]["endpoints"][0]["port"]
    ingress = _load(out / "ingress.yaml")
    assert ingress["spec"]["rules"][0]["host"] == "fraud.example.com"


def test_an_invalid_manifest_fails_its_check() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    (check,) = validate_manifests({"deployment.yaml": bad})
    assert not check.ok and "replicas" in check.detail


def test_bad_options_are_one_line_errors(tmp_path: Path, ferry: Run) -> None:
    save(mlp(), tmp_path / "model.onnx")
    code, _, err = ferry("package", tmp_path / "model.onnx", "-t", "k8s", "-o", tmp_path / "o",
                         "--set", "replicaz=2")  # fmt: skip
    assert code == 2 and "k8s: unknown option 'replicaz'" in err and "replicas" in err
    code, _, err = ferry("package", tmp_path / "model.onnx", "-t", "k8s", "-o", tmp_path / "o",
                         "--set", "replicas=0")  # fmt: skip
    assert code == 2 and "replicas=0" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "value",
    [
        {"a": "yes", "b": "1", "c": "a: b", "d": "#x", "e": "", "f": "null", "g": " lead"},
        {"toml": 'max_batch_size = 8\n\n[versions]\npolicy = "all"\n', "two": "a\nb"},
        {"list": [{"k": [1, 2.5, True, None]}, [], {}, "- dash", "é\u2028"], "nested": {"x": []}},
        {"app.kubernetes.io/name": "m", "1": "/v2/health/ready", "tail\n\n": "x\n\n"},
    ],
)
def test_to_yaml_reads_back_as_the_same_value(value: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(value)) == value


def test_written_manifests_read_back_as_validated(built: tuple[Path, Any]) -> None:
    out, _ = built
    for rel in ("deployment.yaml", "configmap.yaml", "hpa.yaml", "prometheus-adapter-rules.yaml"):
        doc = _load(out / rel)
        assert to_yaml(doc).splitlines()[-3:] == (out / rel).read_text().splitlines()[-3:]
