"""Memory and event-loop hardening against the real server on loopback: responses are capped
and large ones encoded off the loop, large JSON bodies are parsed off the loop, request bodies
in flight share a server-wide byte budget (503 past it, never leaked), and absurd numbers in a
request are 400/404, not 500."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.responses import encode_infer_response
from onnxferry.serve.server import ServerOptions, build_app, running
from tests.helpers import onnx_text, save
from tests.serve_probes import connection, kept_answering_while

MIB = 1 << 20
WIDTH = 1_000_000
SHAPE = """
<ir_version: 10, opset_import: ["" : 21]>
shape (uint8[n] x) => (int64[1] y) { y = Shape(x) }
"""
CONFIG = ModelConfig(max_batch_size=0, instances=1, intra_op_threads=1)


def tile_model() -> onnx.ModelProto:
    """x float[batch, 4] -> y float[batch, WIDTH]: x tiled, a large answer to a small request."""
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [1, WIDTH // 4])
    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "reps"], ["y"])],
        "tile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [reps],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def tile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = save(tile_model(), tmp_path_factory.mktemp("tile") / "tile.onnx")
    with running(path, ServerOptions(port=0), ServeSettings(), CONFIG) as url:
        yield url


@pytest.fixture(scope="module")
def shape_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(onnx_text(SHAPE), tmp_path_factory.mktemp("shape") / "shape.onnx")


@pytest.fixture(scope="module")
def shape(shape_path: Path) -> Iterator[str]:
    with running(shape_path, ServerOptions(port=0), ServeSettings(), CONFIG) as url:
        yield url


def request(
    url: str, path: str, body: bytes | None = None, method: str = "POST"
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = connection(url)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def tile_request(batch: int, binary: bool = False) -> bytes:
    x = {"name": "x", "datatype": "FP32", "shape": [batch, 4], "data": [1.5, 2, 3, 4] * batch}
    return json.dumps({"inputs": [x], "parameters": {"binary_data_output": binary}}).encode()


def shape_request(size: int) -> bytes:
    x = {"name": "x", "datatype": "UINT8", "shape": [size], "data": [7] * size}
    return json.dumps({"inputs": [x]}).encode()


def error_of(data: bytes) -> str:
    return str(json.loads(data)["error"])


# --- 1. response size ---------------------------------------------------------------------


def test_a_response_past_the_limit_is_400_naming_sizes(tile: str) -> None:
    started = time.monotonic()
    status, data, _ = request(tile, "/v2/models/tile/infer", tile_request(40))  # 40 M floats
    assert status == 400, data[:200]
    message = error_of(data)
    assert f"limit of {64 * MIB} bytes" in message
    assert "binary" in message and "smaller batch" in message
    assert time.monotonic() - started < 5  # refused before building ~400 MB of JSON


def test_a_binary_response_under_the_limit_is_served(tile: str) -> None:
    status, data, response = request(tile, "/v2/models/tile/infer", tile_request(2, True))
    assert status == 200, data[:200]
    header = int(response.getheader("inference-header-content-length") or 0)
    y = np.frombuffer(data[header:], dtype=np.float32)
    assert y.size == 2 * WIDTH and y[:4].tolist() == [1.5, 2, 3, 4]


def test_health_answers_while_a_large_response_encodes(tile: str) -> None:
    batch = 3
    outputs = {"y": np.tile(np.array([[1.5, 2, 3, 4]], np.float32), (batch, WIDTH // 4))}
    started = time.monotonic()
    expected, _ = encode_infer_response(
        model_name="tile",
        model_version="1",
        request_id=None,
        outputs=outputs,
        requested=None,
        binary_default=False,
    )
    encode_s = time.monotonic() - started  # what the server spends encoding it
    del outputs

    def big() -> tuple[int, int]:
        status, data, _ = request(tile, "/v2/models/tile/infer", tile_request(batch))
        return status, len(data)

    answer = kept_answering_while(tile, big, encode_s)
    assert answer == [(200, len(expected))]


# --- 2. large JSON bodies -----------------------------------------------------------------


def test_health_answers_while_a_large_json_body_parses(shape: str) -> None:
    size = 4_000_000
    body = shape_request(size)  # 12 MB
    started = time.monotonic()
    np.array(json.loads(body)["inputs"][0]["data"], dtype=np.uint8)
    parse_s = time.monotonic() - started  # about what the server spends parsing it

    def big() -> tuple[int, bytes]:
        status, data, _ = request(shape, "/v2/models/shape/infer", body)
        return status, data

    status, data = kept_answering_while(shape, big, parse_s)[0]
    assert status == 200, data[:200]
    assert json.loads(data)["outputs"][0]["data"] == [size]


@pytest.fixture
def parse_app(shape_path: Path) -> Iterator[tuple[ServeApp, str]]:
    app = build_app(shape_path, ServeSettings(parse_memory=32 * MIB), CONFIG)
    with running(app, ServerOptions(port=0)) as url:
        yield app, url


def test_a_json_body_past_the_parse_memory_limit_is_413_and_the_next_is_served(
    parse_app: tuple[ServeApp, str],
) -> None:
    _, url = parse_app
    status, data, _ = request(url, "/v2/models/shape/infer", shape_request(8_000_000))
    assert status == 413, data[:200]
    message = error_of(data)
    assert "32 MiB" in message and "binary" in message
    status, data, _ = request(url, "/v2/models/shape/infer", shape_request(500_000))
    assert status == 200, data[:200]
    assert json.loads(data)["outputs"][0]["data"] == [500_000]


def test_a_killed_parsing_process_is_replaced(parse_app: tuple[ServeApp, str]) -> None:
    app, url = parse_app
    body = shape_request(500_000)  # past PARSE_ON_LOOP: parsed by the process
    assert request(url, "/v2/models/shape/infer", body)[0] == 200
    pid = app.parser.worker_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    status, data, _ = request(url, "/v2/models/shape/infer", body)
    assert status == 200, data[:200]
    assert app.parser.worker_pid() not in (None, pid)


# --- 3. bodies in flight ------------------------------------------------------------------


@pytest.fixture
def budget_app(shape_path: Path) -> Iterator[tuple[ServeApp, str]]:
    settings = ServeSettings(body_limit=4 * MIB, inflight_limit=8 * MIB)
    app = build_app(shape_path, settings, CONFIG)
    with running(app, ServerOptions(port=0)) as url:
        yield app, url


def start_body(url: str, size: int) -> socket.socket:
    """A connection that has sent the headers of a ``size`` byte infer body and one byte."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST /v2/models/shape/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n{{"
    sock.sendall(head.encode())
    return sock


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_bodies_past_the_inflight_budget_are_503_and_released(
    budget_app: tuple[ServeApp, str],
) -> None:
    app, url = budget_app
    size = 3 * MIB
    held = [start_body(url, size), start_body(url, size)]  # 6 of 8 MiB
    try:
        wait_for(lambda: app.inflight.used == 2 * size)
        status, data, response = request(url, "/v2/models/shape/infer", shape_request(size // 3))
        assert status == 503, data[:200]
        assert response.getheader("retry-after") == "1"
        assert "in flight" in error_of(data) and f"{8 * MIB}" in error_of(data)
        status, data, _ = request(url, "/v2/models/shape/infer", shape_request(1000))
        assert status == 200, data  # small ones still fit
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: app.inflight.used == 0)  # disconnected mid-body: released
    status, data, _ = request(url, "/v2/models/shape/infer", shape_request(size // 3))
    assert status == 200, data[:200]
    assert json.loads(data)["outputs"][0]["data"] == [size // 3]
    wait_for(lambda: app.inflight.used == 0)  # released as the handler returns, after the send


def test_the_budget_is_released_on_errors(budget_app: tuple[ServeApp, str]) -> None:
    app, url = budget_app
    bad = [b"{not json", json.dumps({"inputs": [{"name": "z"}]}).encode(), bytes(5 * MIB)]
    statuses = [request(url, "/v2/models/shape/infer", body)[0] for body in bad]
    assert statuses == [400, 400, 413]
    wait_for(lambda: app.inflight.used == 0)


def test_an_inflight_limit_below_the_body_limit_is_refused(shape_path: Path) -> None:
    with pytest.raises(Exception, match="inflight_limit"):
        build_app(shape_path, ServeSettings(body_limit=4 * MIB, inflight_limit=MIB), CONFIG)


# --- 4. absurd numbers --------------------------------------------------------------------


def test_a_huge_timeout_is_400(shape: str) -> None:
    for timeout in (10**400, 10**30):
        body = json.loads(shape_request(3))
        body["parameters"] = {"timeout": timeout}
        status, data, _ = request(shape, "/v2/models/shape/infer", json.dumps(body).encode())
        assert status == 400, data
        assert "timeout" in error_of(data)


def test_a_long_version_is_404_and_cut_in_the_log(
    shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onnxferry.serve.access")
    version = "1" * 5000
    paths = [f"/v2/models/shape/versions/{version}/infer", f"/v2/models/shape/versions/{version}"]
    for path, method in zip(paths, ["POST", "GET"], strict=True):
        status, data, _ = request(shape, path, shape_request(3), method)
        assert status == 404, data[:200]
        assert len(error_of(data)) < 300
    wait_for(lambda: len([r for r in caplog.records if r.name.endswith("access")]) >= 2)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("access")]
    assert all(len(line) < 1000 for line in lines), [len(line) for line in lines]
