"""The OpenAPI document declares security exactly as the server enforces it."""

from __future__ import annotations

from typing import Any

import pytest

from onnxferry.serve.openapi import openapi_document


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }


def _needs_key(doc: dict[str, Any], op: dict[str, Any]) -> bool:
    return bool(op.get("security", doc.get("security", [])))


OPEN = {"GET /v2/health/live", "GET /v2/health/ready", "GET /openapi.json"}
REPOSITORY = {
    "POST /v2/repository/index",
    "POST /v2/repository/models/{model}/load",
    "POST /v2/repository/models/{model}/unload",
}


@pytest.mark.parametrize(
    ("api_keys", "repository_keys"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_security_and_401_follow_the_keys(api_keys: bool, repository_keys: bool) -> None:
    doc = openapi_document("1.0", api_keys=api_keys, repository_keys=repository_keys)
    ops = _operations(doc)
    # 13 server routes (5 of them shared memory), 6 per model with and without a version
    assert len(ops) == 25
    for name, op in ops.items():
        if name in OPEN:
            want = False
        elif name in REPOSITORY:
            want = api_keys or repository_keys
        else:
            want = api_keys
        assert _needs_key(doc, op) == want, name
        assert ("401" in op["responses"]) == want, name
    assert ("securitySchemes" in doc.get("components", {})) == (api_keys or repository_keys)


def test_every_model_route_documents_not_found() -> None:
    for name, op in _operations(openapi_document()).items():
        if "{model}" in name and not name.startswith("POST /v2/repository/index"):
            assert "404" in op["responses"], name
