"""`ferry package --target kserve`: KServe InferenceServices (serving.kserve.io/v1beta1).

    from onnxferry.package import package
    report = package("model.onnx", "kserve", "out/kserve", {"storage_uri": "s3://models/m"})
    opts = Options("kserve", {"cpu": "2"}, OPTIONS)  # what --set gave, checked
    docs = inference_services(PackageSource.resolve("model.onnx"), opts, 256)

Writes ``inferenceservice.yaml``: a custom predictor running ``ferry serve`` (the docker
target's image, KServe V2 / Open Inference Protocol on port 8000, readiness on
``/v2/health/ready``, memory sized from a measured load as in the k8s target, Prometheus
scraping of its /metrics), and ``inferenceservice-onnxruntime.yaml``: the alternative on
KServe's built-in ONNX runtime (Triton, ``modelFormat: onnx``, ``protocolVersion: v2``),
reading the model from ``storage_uri`` laid out as ``<name>/<version>/model.onnx``.

The target checks each document's structure (kind, apiVersion, one predictor of the expected
form); tests/test_package_kserve.py validates both against the KServe CRD's OpenAPI schema
(vendored in tests/data/kserve).

Options (``--set``): ``image`` (default ``onnxferry/<name>:<version>``), ``storage_uri``
(default ``pvc://ferry-models``), ``min_replicas`` (1), ``max_replicas`` (5), ``cpu`` (1),
``runtime`` (``kserve-tritonserver``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Check, Options, Packaged, PackageSource, write_tree
from .kube import (
    BODY_HEADROOM_MIB,
    MIB,
    PORT,
    default_image,
    k8s_name,
    measure_footprint,
    to_yaml,
)

API_VERSION = "serving.kserve.io/v1beta1"
OPTIONS = ("image", "storage_uri", "min_replicas", "max_replicas", "cpu", "runtime")


def inference_services(
    source: PackageSource, options: Options, memory_mib: int
) -> dict[str, dict[str, Any]]:
    """Both InferenceServices by file name; ``memory_mib`` is the memory request."""
    name = k8s_name(source.name)
    cpu = options.text("cpu", "1")
    low = options.integer("min_replicas", 1, low=1)
    replicas = {"minReplicas": low, "maxReplicas": options.integer("max_replicas", 5, low=low)}
    resources = {
        "requests": {"cpu": cpu, "memory": f"{memory_mib}Mi"},
        "limits": {"cpu": cpu, "memory": f"{memory_mib + BODY_HEADROOM_MIB}Mi"},
    }
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "onnxferry"}
    custom = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "prometheus.kserve.io/port": str(PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
        },
        "spec": {
            "predictor": {
                **replicas,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": options.text("image", "") or default_image(source),
                        "args": ["--access-log"],  # after the image's `ferry serve /models ...`
                        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": PORT},
                            "periodSeconds": 5,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/v2/health/live", "port": PORT},
                            "periodSeconds": 10,
                        },
                        "resources": resources,
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            }
        },
    }
    builtin = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": f"{name}-onnxruntime"[:63], "labels": labels},
        "spec": {
            "predictor": {
                **replicas,
                "model": {
                    "modelFormat": {"name": "onnx"},
                    "protocolVersion": "v2",
                    "runtime": options.text("runtime", "kserve-tritonserver"),
                    "storageUri": options.text("storage_uri", "pvc://ferry-models"),
                    "resources": resources,
                },
            }
        },
    }
    return {"inferenceservice.yaml": custom, "inferenceservice-onnxruntime.yaml": builtin}


def structure_problems(doc: Mapping[str, Any], form: str) -> list[str]:
    """What makes ``doc`` not an InferenceService with one ``form`` ("containers" or "model")
    predictor."""
    problems = []
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "InferenceService":
        problems.append(f"not a {API_VERSION} InferenceService")
    if not str(doc.get("metadata", {}).get("name", "")):
        problems.append("metadata.name is empty")
    predictor = doc.get("spec", {}).get("predictor")
    if not isinstance(predictor, dict):
        return [*problems, "spec.predictor is missing"]
    if form == "containers":
        containers = predictor.get("containers")
        if not isinstance(containers, list) or len(containers) != 1:
            problems.append("the custom predictor needs exactly one container")
        elif not containers[0].get("image"):
            problems.append("the container has no image")
    elif not predictor.get("model", {}).get("modelFormat", {}).get("name"):
        problems.append("spec.predictor.model.modelFormat.name is missing")
    return problems


def build(source: PackageSource, outdir: Path, options: dict[str, str]) -> Packaged:
    """Measure ``source`` and write both InferenceServices."""
    opts = Options("kserve", options, OPTIONS)
    footprint = measure_footprint(source)
    result = Packaged("kserve", source.name, str(outdir))
    docs = inference_services(source, opts, footprint.memory_request_mib)
    write_tree(outdir, {rel: to_yaml(doc) for rel, doc in docs.items()}, result)
    for (rel, doc), form in zip(docs.items(), ("containers", "model"), strict=True):
        problems = structure_problems(doc, form)
        detail = "; ".join(problems) or f"{API_VERSION} InferenceService, {form} predictor"
        result.checks.append(Check(rel, not problems, detail, tool="structure"))
    uri = docs["inferenceservice-onnxruntime.yaml"]["spec"]["predictor"]["model"]["storageUri"]
    result.notes.append(
        f"memory request {footprint.memory_request_mib}Mi from a measured peak RSS of "
        f"{footprint.peak_rss_bytes / MIB:.0f} MiB; the ONNX runtime variant reads "
        f"{uri}/{source.name}/<version>/model.onnx"
    )
    return result
