"""The live server against its own OpenAPI document, with schemathesis: every route gets
random requests, and every response check must hold (documented status codes, content types
and bodies, no 5xx), with and without API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.openapi import openapi_document
from onnxferry.serve.repository import Repository
from onnxferry.serve.server import running
from tests.test_serve_app import KEY, REPO_KEY, affine, write


@pytest.fixture(scope="module", params=["open", "keys"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("repo")
    write(root / "affine" / "1" / "model.onnx", affine())
    keys = request.param == "keys"
    settings_ = ServeSettings(
        api_keys=(KEY,) if keys else (),
        repository_keys=(REPO_KEY,) if keys else (),
        repository_api=True,
        body_limit=1 << 20,
    )
    with running(ServeApp(Repository.open(root), settings_)) as url:
        yield url, ({"Authorization": f"Bearer {KEY}"} if keys else {})


def test_the_server_keeps_to_its_openapi_document(served: tuple[str, dict[str, str]]) -> None:
    url, headers = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document parses into operations
        operations.append(result.ok())
    documented = {f"{m.upper()} {path}" for path, item in openapi_document()["paths"].items()
                  for m in item}  # fmt: skip
    # every route but the document itself, which schemathesis leaves out
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers)

        check()
