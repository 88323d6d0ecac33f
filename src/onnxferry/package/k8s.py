"""`ferry package --target k8s`: Kubernetes manifests for ``ferry serve``, sized by measuring.

    from onnxferry.package import package
    report = package("model.onnx", "k8s", "out/k8s", {"replicas": "3", "ingress_host": "m.example"})
    footprint = measure_footprint(PackageSource.resolve("model.onnx"))
    footprint.load_s, footprint.peak_rss_bytes

Writes a Deployment (probes on ``/v2/health/ready`` and ``/v2/health/live``, a startup probe
sized from the measured load time, memory requests/limits from the measured peak RSS, non-root
with a read-only root filesystem, rolling updates with ``maxUnavailable: 0``), a Service, a
HorizontalPodAutoscaler (CPU, and the mean queue time from ``/metrics`` through a
prometheus-adapter rule, ``prometheus-adapter-rules.yaml``), a PodDisruptionBudget, a ConfigMap
holding ``ferry.toml``, an Ingress when ``ingress_host`` is set, a ``kustomization.yaml`` and
the observability target's files under ``observability/``. Each manifest is validated against
the Kubernetes ``K8S_VERSION`` schemas (kubernetes-validate, strict: unknown fields fail).

Options (``--set``): ``image`` (default ``onnxferry/<name>:<version>``, the docker target's
image, whose ENTRYPOINT serves /models on port 8000), ``replicas`` (2), ``max_replicas``
(5 x replicas), ``cpu`` (1: request and limit, so the server's thread count follows the
quota), ``queue_target_ms`` (10), ``ingress_host``.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError, read_user_text
from .base import Check, Options, Packaged, PackageSource, write_tree
from .kube import (
    BODY_HEADROOM_MIB,
    MEMORY_MARGIN,
    MIB,
    PORT,
    STARTUP_PERIOD_S,
    Footprint,
    default_image,
    k8s_name,
    measure_footprint,
    to_yaml,
)

K8S_VERSION = "1.31.0"
"""The Kubernetes release whose schemas every manifest is validated against."""
QUEUE_METRIC = "ferry_queue_seconds"
"""The custom metric the HPA reads: mean seconds a request waited in the batcher's queue,
from ``ferry_queue_duration_seconds`` (serve/metrics.py) through prometheus-adapter."""
OPTIONS = ("image", "replicas", "max_replicas", "cpu", "queue_target_ms", "ingress_host")


def ferry_toml(source: PackageSource) -> str:
    """The repository's ``<name>/ferry.toml`` if it has one, else the defaults written out."""
    if source.repository is not None:
        found = source.repository / source.name / "ferry.toml"
        if found.is_file():
            return read_user_text(found, "", UsageError)
    from ..serve.config import ModelConfig

    config = ModelConfig()
    return (
        "# ferry serve's settings for this model (serve/config.py); every key is optional\n"
        f"max_batch_size = {config.max_batch_size}\n"
        f"max_queue_delay_ms = {config.max_queue_delay_ms}\n"
        f"max_queue_size = {config.max_queue_size}\n"
    )


def manifests(
    source: PackageSource, options: Options, footprint: Footprint, config: str
) -> dict[str, dict[str, Any]]:
    """Every manifest by file name."""
    name = k8s_name(source.name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "onnxferry"}
    selector = {"app.kubernetes.io/name": name}
    replicas = options.integer("replicas", 2, low=1)
    memory = footprint.memory_request_mib
    cpu = options.text("cpu", "1")
    meta = {"name": name, "labels": labels}

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container = {
        "name": "ferry",
        "image": options.text("image", "") or default_image(source),
        "args": ["--access-log"],  # appended to the image's `ferry serve /models ...`
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": probe("/v2/health/ready", STARTUP_PERIOD_S, footprint.startup_failures),
        "readinessProbe": probe("/v2/health/ready", 5, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "resources": {
            "requests": {"cpu": cpu, "memory": f"{memory}Mi"},
            "limits": {"cpu": cpu, "memory": f"{memory + BODY_HEADROOM_MIB}Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {
                "name": "config",
                "mountPath": f"/models/{source.name}/ferry.toml",
                "subPath": "ferry.toml",
                "readOnly": True,
            },
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    digest = hashlib.sha256(config.encode()).hexdigest()[:16]
    found: dict[str, dict[str, Any]] = {
        "configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "labels": labels},
            "data": {"ferry.toml": config},
        },
        "deployment.yaml": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": labels,
                        # a subPath mount never sees a ConfigMap change: roll the pods instead
                        "annotations": {"onnxferry.io/config-sha256": digest},
                    },
                    "spec": {
                        "terminationGracePeriodSeconds": 40,  # --graceful-timeout 30 + slack
                        "securityContext": {
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [
                            {"name": "config", "configMap": {"name": f"{name}-config"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        ],
                    },
                },
            },
        },
        "service.yaml": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
            },
        },
        "hpa.yaml": {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": replicas,
                "maxReplicas": options.integer("max_replicas", 5 * replicas, low=replicas),
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    },
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": QUEUE_METRIC},
                            "target": {
                                "type": "AverageValue",
                                "averageValue": f"{options.integer('queue_target_ms', 10, low=1)}m",
                            },
                        },
                    },
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
        },
        "pdb.yaml": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta,
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        },
    }
    host = options.text("ingress_host", "")
    if host:
        backend = {"service": {"name": name, "port": {"name": "http"}}}
        found["ingress.yaml"] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": meta,
            "spec": {
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]
                        },
                    }
                ]
            },
        }
    return found


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter's rule exposing QUEUE_METRIC per pod."""
    window = "2m"
    matchers = "{<<.LabelMatchers>>}"
    return {
        "rules": [
            {
                "seriesQuery": 'ferry_queue_duration_seconds_sum{namespace!="",pod!=""}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {"matches": "^ferry_queue_duration_seconds_sum$", "as": QUEUE_METRIC},
                "metricsQuery": (
                    f"sum(rate(ferry_queue_duration_seconds_sum{matchers}[{window}])) by "
                    f"(<<.GroupBy>>) / clamp_min(sum(rate(ferry_queue_duration_seconds_count"
                    f"{matchers}[{window}])) by (<<.GroupBy>>), 1e-9)"
                ),
            }
        ]
    }


def build(source: PackageSource, outdir: Path, options: dict[str, str]) -> Packaged:
    """Measure ``source``, write the manifests, validate each."""
    from .observability import observability_checks, observability_files

    opts = Options("k8s", options, OPTIONS)
    footprint = measure_footprint(source)
    result = Packaged("k8s", source.name, str(outdir))
    docs = manifests(source, opts, footprint, ferry_toml(source))
    files: dict[str, str] = {rel: to_yaml(doc) for rel, doc in docs.items()}
    files["kustomization.yaml"] = to_yaml(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": list(docs),
        }
    )
    files["prometheus-adapter-rules.yaml"] = (
        f"# prometheus-adapter rules: serves {QUEUE_METRIC} to the HPA (hpa.yaml)\n"
        + to_yaml(adapter_rules())
    )
    files.update({f"observability/{k}": v for k, v in observability_files(source.name).items()})
    write_tree(outdir, files, result)
    result.notes.append(
        f"measured: load + first run {footprint.load_s:.2f} s, peak RSS "
        f"{footprint.peak_rss_bytes / MIB:.0f} MiB ({footprint.method}); memory request "
        f"{footprint.memory_request_mib}Mi (x{MEMORY_MARGIN}), limit +{BODY_HEADROOM_MIB}Mi; "
        f"startup probe {footprint.startup_failures} x {STARTUP_PERIOD_S} s"
    )
    result.notes.append(
        "the HPA's queue metric needs prometheus-adapter with prometheus-adapter-rules.yaml; "
        "observability/servicemonitor.yaml needs the Prometheus Operator (not in the kustomization)"
    )
    result.checks.extend(validate_manifests(docs))
    result.checks.append(_adapter_check())
    result.checks.append(_config_check(docs["configmap.yaml"]["data"]["ferry.toml"]))
    kustomize = _kustomize_check(outdir, len(docs))
    if kustomize is None:
        result.notes.append("kubectl not found: `kubectl kustomize` was not run")
    else:
        result.checks.append(kustomize)
    result.checks.extend(observability_checks(outdir, "observability"))
    return result


def validate_manifests(docs: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """One check per manifest: kubernetes-validate, strict, for K8S_VERSION."""
    try:  # a dev tool, not a dependency: loaded by name (it ships no type hints)
        kubernetes_validate = importlib.import_module("kubernetes_validate")
        validation_error = importlib.import_module("kubernetes_validate.utils").ValidationError
    except ImportError:
        detail = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        return [Check("kubernetes schemas", False, detail, tool="kubernetes-validate")]
    tool = f"kubernetes-validate, Kubernetes {K8S_VERSION} (strict)"
    checks = []
    for rel, doc in docs.items():
        try:
            kubernetes_validate.validate(dict(doc), K8S_VERSION, strict=True)
            checks.append(Check(rel, True, f"{doc['kind']} {doc['apiVersion']} valid", tool))
        except validation_error as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            checks.append(Check(rel, False, f"{where}: {e.message}", tool))
    return checks


def _adapter_check() -> Check:
    from .observability import exported_series

    series = exported_series()
    wanted = ["ferry_queue_duration_seconds_sum", "ferry_queue_duration_seconds_count"]
    missing = [m for m in wanted if m not in series]
    detail = f"missing: {', '.join(missing)}" if missing else f"{' and '.join(wanted)} exported"
    return Check("hpa queue metric", not missing, detail, tool="prometheus_client parser")


def _config_check(text: str) -> Check:
    from ..data import parse_toml
    from ..serve.config import ModelConfig

    try:
        ModelConfig.from_dict(parse_toml(text))
        return Check("ferry.toml", True, "parses as serve's ModelConfig", tool="onnxferry")
    except Exception as e:  # bad TOML (the parser's error) or a bad value (UsageError)
        return Check("ferry.toml", False, getattr(e, "message", str(e)), tool="onnxferry")


def _kustomize_check(outdir: Path, count: int) -> Check | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run(
        [kubectl, "kustomize", str(outdir)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return Check("kustomization.yaml", False, done.stderr.strip()[-300:], tool="kubectl")
    built = len(re.findall(r"^kind: ", done.stdout, flags=re.MULTILINE))
    return Check(
        "kustomization.yaml", built == count, f"kubectl kustomize: {built} resources", "kubectl"
    )
