"""`ferry package --target kserve`: both InferenceServices validate against KServe's CRD schema
(tests/data/kserve, vendored with its source), plainly and with unknown fields refused."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from onnxferry.package import package
from tests.helpers import Run, mlp, save

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "kserve" / "inferenceservice-v1beta1.schema.json").read_text()
)


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply --validate=strict` does: every
    object that lists its properties takes no others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


PLAIN = jsonschema.Draft202012Validator(SCHEMA)
STRICT = jsonschema.Draft202012Validator(_strict(SCHEMA))


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kserve")
    save(mlp(), tmp / "Iris.onnx")
    report = package(tmp / "Iris.onnx", "kserve", tmp / "out", {"storage_uri": "s3://b/models"})
    assert report.ok, report.result.checks
    return {rel: yaml.safe_load((tmp / "out" / rel).read_text()) for rel in report.result.files}


def test_both_inference_services_validate_against_the_crd(docs: dict[str, Any]) -> None:
    assert sorted(docs) == ["inferenceservice-onnxruntime.yaml", "inferenceservice.yaml"]
    for doc in docs.values():
        PLAIN.validate(doc)
        STRICT.validate(doc)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_custom_predictor_runs_ferry_serve_and_the_builtin_runs_onnx(docs: dict[str, Any]) -> None:
    (container,) = docs["inferenceservice.yaml"]["spec"]["predictor"]["containers"]
    assert container["image"] == "onnxferry/iris:1"
    assert container["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["requests"]["memory"].endswith("Mi")
    model = docs["inferenceservice-onnxruntime.yaml"]["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://b/models"


def test_the_schema_catches_wrong_types_and_unknown_fields(docs: dict[str, Any]) -> None:
    wrong = copy.deepcopy(docs["inferenceservice.yaml"])
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        PLAIN.validate(wrong)
    typo = copy.deepcopy(docs["inferenceservice.yaml"])
    typo["spec"]["predictor"]["containers"][0]["imagee"] = "x"
    PLAIN.validate(typo)  # the CRD alone prunes unknown fields...
    with pytest.raises(jsonschema.ValidationError, match="imagee"):
        STRICT.validate(typo)  # ...strict validation refuses them
    missing = copy.deepcopy(docs["inferenceservice.yaml"])
    del missing["spec"]["predictor"]
    with pytest.raises(jsonschema.ValidationError, match="predictor"):
        PLAIN.validate(missing)


def test_unknown_option_is_a_one_line_error(tmp_path: Path, ferry: Run) -> None:
    save(mlp(), tmp_path / "model.onnx")
    code, _, err = ferry("package", tmp_path / "model.onnx", "-t", "kserve", "-o", tmp_path / "o",
                         "--set", "replicas=2")  # fmt: skip
    assert code == 2 and "min_replicas" in err and len(err.strip().splitlines()) == 1
