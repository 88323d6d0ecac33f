"""One route table: the router dispatches on it and /openapi.json is rendered from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.serve.app import ServeSettings
from onnxferry.serve.openapi import openapi_document
from onnxferry.serve.routes import AREAS, ROUTER, ROUTES, Route, Router
from tests.serve_asgi import InProcess, in_process
from tests.test_serve_app import KEY, affine, write


def test_paths_match_by_segment_with_their_parameters() -> None:
    found = ROUTER.match("/v2/models/resnet/versions/2/infer")
    route = found.route("POST")
    assert route is not None and route.endpoint == "infer"
    assert found.params == {"model": "resnet", "version": "2"} and found.auth == "api"
    assert found.route("GET") is None and found.allowed == "POST"
    assert ROUTER.match("/v2//models/resnet/").params == {"model": "resnet"}  # empty segments
    assert ROUTER.match("/v2/health/live").auth == "open"


def test_a_path_no_route_matches_keeps_the_keys_of_its_area() -> None:
    assert ROUTER.match("/v2/nowhere").routes == ()
    assert ROUTER.match("/v2/nowhere").auth == "api"
    assert ROUTER.match("/v2/repository/nowhere").auth == "repository"
    assert ROUTER.match("/nowhere").auth == "open"


def test_routes_on_one_path_must_agree_on_their_keys() -> None:
    routes = [Route("GET", "/a/{x}", "one", "api", ""), Route("POST", "/a/{y}", "two", "open", "")]
    with pytest.raises(ValueError, match="the same keys"):
        Router(routes, AREAS)


def test_the_document_has_exactly_the_routes_the_router_takes() -> None:
    documented = {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
    }
    assert documented == {(route.method, route.path) for route in ROUTES}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    path = write(tmp_path_factory.mktemp("routes") / "m.onnx", affine())
    with in_process(Path(path), ServeSettings(api_keys=(KEY,))) as app:
        yield app


def test_every_route_answers_without_an_internal_error(keyed: InProcess) -> None:
    good = {"Authorization": f"Bearer {KEY}"}
    for route in ROUTES:
        path = route.path.format(model="m", version="1", region="r")
        status, _, data = keyed.exchange(route.method, path, b"{}", good)
        assert status < 500, (route.method, path, data)


def test_401_comes_before_404_and_405_behind_the_keys(keyed: InProcess) -> None:
    for method, path in (("GET", "/v2/nowhere"), ("POST", "/v2/models/m"), ("GET", "/metrics")):
        assert keyed.error_of(method, path)[0] == 401, path
    good = {"Authorization": f"Bearer {KEY}"}
    assert keyed.error_of("GET", "/v2/nowhere", headers=good)[0] == 404
    status, headers, data = keyed.exchange("POST", "/v2/models/m", headers=good)
    assert status == 405 and headers["allow"] == "GET" and "use GET" in json.loads(data)["error"]
    assert keyed.error_of("GET", "/nowhere")[0] == 404  # outside /v2: no key needed to learn it
