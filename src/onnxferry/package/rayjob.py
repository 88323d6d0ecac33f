"""`ferry package --target rayjob`: a KubeRay RayJob (ray.io/v1) that runs `ferry batch --engine
ray` on a Ray cluster it creates, and deletes when the job ends.

    from onnxferry.package import package
    report = package("model.onnx", "rayjob", "out/rayjob", {"workers": "4", "input": "/data/in"})
    opts = Options("rayjob", {"cpu": "4"}, OPTIONS)     # what --set gave, checked
    job = ray_job(PackageSource.resolve("model.onnx"), opts, 512)

Writes ``rayjob.yaml``: the entrypoint is ``ferry batch <model> <input> -o <output> --engine
ray --batch-size N --json`` (the RayJob's submitter sets RAY_ADDRESS, which Ray joins); the head
takes no work (``num-cpus: 0``), so the engine's default of one actor per CPU fills the
``workers`` worker pods of ``cpu`` cores each. Head and workers mount the PersistentVolumeClaim
``pvc`` at ``/data``, where the input is read and the output written (Ray's reads and writes
run on the workers, so the paths must be the same on every pod). Worker memory is the measured
load-and-run peak of the model (kube.measure_footprint) plus ``WORKER_HEADROOM_MIB`` for the
batches in flight and Ray's object store.

The image (default ``onnxferry/<name>:<version>``, the docker target's, with the model at
``/models/<name>/1/model.onnx``) must also hold onnxferry's ``ray`` extra (ray[data], pyarrow,
pillow) and bash, which KubeRay's ``ray start`` runs in. The target checks the document's
structure; tests/test_package_rayjob.py validates it against the RayJob CRD's OpenAPI schema
(vendored in tests/data/kuberay) and parses its entrypoint with the real `ferry batch`.

Options (``--set``): ``image``, ``input`` (``/data/input``), ``output`` (``/data/output``),
``pvc`` (``ferry-batch-data``), ``workers`` (2), ``cpu`` (2 per worker), ``batch_size`` (256),
``ray_version`` (the installed ray's, else ``RAY_VERSION``), ``model_path``, ``ttl_s`` (600:
seconds the finished cluster is kept before deletion).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from .base import Check, Options, Packaged, PackageSource, write_tree
from .kube import MIB, default_image, k8s_name, measure_footprint, to_yaml

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"
"""rayVersion when ray is not installed here."""
WORKER_HEADROOM_MIB = 2048
DATA = "/data"
OPTIONS = (
    "image", "input", "output", "pvc", "workers", "cpu", "batch_size", "ray_version",
    "model_path", "ttl_s",
)  # fmt: skip


def _ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return RAY_VERSION


def entrypoint(source: PackageSource, options: Options) -> list[str]:
    """The job's command, as arguments."""
    model = options.text("model_path", f"/models/{source.name}/1/model.onnx")
    return [
        "ferry", "batch", model, options.text("input", f"{DATA}/input"),
        "-o", options.text("output", f"{DATA}/output"), "--engine", "ray",
        "--batch-size", str(options.integer("batch_size", 256, low=1)), "--json",
    ]  # fmt: skip


def ray_job(source: PackageSource, options: Options, memory_mib: int) -> dict[str, Any]:
    """The RayJob; ``memory_mib`` is each pod's measured need before headroom."""
    name = k8s_name(f"{source.name}-batch")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "onnxferry"}
    image = options.text("image", "") or default_image(source)
    cpu = options.text("cpu", "2")
    workers = options.integer("workers", 2, low=1)
    pvc = options.text("pvc", "ferry-batch-data")

    def pod(container: str, cpus: str, memory: int) -> dict[str, Any]:
        resources = {"cpu": cpus, "memory": f"{memory}Mi"}
        return {
            "metadata": {"labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": container,
                        "image": image,
                        "resources": {"requests": resources, "limits": resources},
                        "volumeMounts": [{"name": "data", "mountPath": DATA}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc}}],
            },
        }

    worker_memory = memory_mib + WORKER_HEADROOM_MIB
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "entrypoint": shlex.join(entrypoint(source, options)),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": options.integer("ttl_s", 600, low=0),
            "rayClusterSpec": {
                "rayVersion": options.text("ray_version", _ray_version()),
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": pod("ray-head", "1", 2048),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {},
                        "template": pod("ray-worker", cpu, worker_memory),
                    }
                ],
            },
        },
    }


def structure_problems(doc: Mapping[str, Any]) -> list[str]:
    """What makes ``doc`` not a RayJob that runs `ferry batch --engine ray` on a cluster with a
    head and at least one worker group."""
    problems = []
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "RayJob":
        problems.append(f"not a {API_VERSION} RayJob")
    spec = doc.get("spec", {})
    command = shlex.split(str(spec.get("entrypoint", "")))
    if command[:2] != ["ferry", "batch"] or "ray" not in command:
        problems.append("the entrypoint is not `ferry batch ... --engine ray`")
    cluster = spec.get("rayClusterSpec", {})
    if not cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {}).get("containers"):
        problems.append("the head group has no container")
    if not cluster.get("workerGroupSpecs"):
        problems.append("there is no worker group")
    return problems


def build(source: PackageSource, outdir: Path, options: dict[str, str]) -> Packaged:
    """Measure ``source`` and write the RayJob."""
    opts = Options("rayjob", options, OPTIONS)
    footprint = measure_footprint(source)
    result = Packaged("rayjob", source.name, str(outdir))
    doc = ray_job(source, opts, footprint.memory_request_mib)
    write_tree(outdir, {"rayjob.yaml": to_yaml(doc)}, result)
    problems = structure_problems(doc)
    detail = "; ".join(problems) or f"{API_VERSION} RayJob, `ferry batch --engine ray`"
    result.checks.append(Check("rayjob.yaml", not problems, detail, tool="structure"))
    result.notes.append(
        f"entrypoint: {doc['spec']['entrypoint']}; worker memory "
        f"{footprint.memory_request_mib + WORKER_HEADROOM_MIB}Mi from a measured peak RSS of "
        f"{footprint.peak_rss_bytes / MIB:.0f} MiB + {WORKER_HEADROOM_MIB} MiB; the image needs "
        "onnxferry's ray extra (ray[data], pyarrow, pillow)"
    )
    return result
