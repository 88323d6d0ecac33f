"""`ferry package --target rayjob`: the RayJob validates against KubeRay's CRD schema
(tests/data/kuberay, vendored with its source), plainly and with unknown fields refused, and its
entrypoint is a command the real `ferry batch` parses."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from onnxferry.cli.batch import batch_command
from onnxferry.package import package
from tests.helpers import Run, mlp, save
from tests.test_package_kserve import _strict

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "kuberay" / "rayjob-v1.schema.json").read_text()
)
PLAIN = jsonschema.Draft202012Validator(SCHEMA)
STRICT = jsonschema.Draft202012Validator(_strict(SCHEMA))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("rayjob")
    save(mlp(), tmp / "Iris.onnx")
    options = {"workers": "3", "cpu": "4", "input": "/data/in.parquet", "pvc": "datasets"}
    report = package(tmp / "Iris.onnx", "rayjob", tmp / "out", options)
    assert report.ok, report.result.checks
    assert report.result.files == ["rayjob.yaml"]
    doc: dict[str, Any] = yaml.safe_load((tmp / "out" / "rayjob.yaml").read_text())
    return doc


def test_the_rayjob_validates_against_the_crd(job: dict[str, Any]) -> None:
    PLAIN.validate(job)
    STRICT.validate(job)
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == (
        "ray.io/v1",
        "RayJob",
        "iris-batch",
    )


def test_the_entrypoint_is_a_ferry_batch_on_ray_the_cli_parses(job: dict[str, Any]) -> None:
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["ferry", "batch"]
    ctx = batch_command.make_context("batch", command[2:])
    params = ctx.params
    assert params["engine"] == "ray" and params["as_json"]
    assert (params["model"], params["source"]) == ("/models/Iris/1/model.onnx", "/data/in.parquet")
    assert params["output"] == Path("/data/output")


def test_workers_cpu_and_the_shared_volume(job: dict[str, Any]) -> None:
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    for template in (cluster["headGroupSpec"]["template"], group["template"]):
        (container,) = template["spec"]["containers"]
        assert container["image"] == "onnxferry/iris:1"
        assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
        (volume,) = template["spec"]["volumes"]
        assert volume["persistentVolumeClaim"] == {"claimName": "datasets"}
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "4"
    assert int(resources["requests"]["memory"].removesuffix("Mi")) > 2048
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_the_schema_catches_wrong_types_and_unknown_fields(job: dict[str, Any]) -> None:
    wrong = copy.deepcopy(job)
    wrong["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        PLAIN.validate(wrong)
    typo = copy.deepcopy(job)
    typo["spec"]["entrypiont"] = "ferry batch"
    PLAIN.validate(typo)  # the CRD alone prunes unknown fields...
    with pytest.raises(jsonschema.ValidationError, match="entrypiont"):
        STRICT.validate(typo)  # ...strict validation refuses them


def test_unknown_option_is_a_one_line_error(tmp_path: Path, ferry: Run) -> None:
    save(mlp(), tmp_path / "model.onnx")
    code, _, err = ferry("package", tmp_path / "model.onnx", "-t", "rayjob", "-o", tmp_path / "o",
                         "--set", "replicas=2")  # fmt: skip
    assert code == 2 and "workers" in err and len(err.strip().splitlines()) == 1
