"""The server end to end, in two tiers. In process (``app``: the ASGI app driven by httpx's
ASGITransport, tests/serve_asgi.py): routing, metadata, errors, auth, limits the app enforces,
reloads. Live (``server``: the real app on uvicorn on a loopback port): tritonclient (binary and
JSON, every datatype), what is on the wire, slow and chunked clients, draining on stop."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.repository import Repository
from onnxferry.serve.server import ServerOptions, running
from tests.serve_asgi import InProcess, in_process
from tests.serve_probes import exchange, raw

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

V2_TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BF16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    "BYTES": (TensorProto.STRING, np.object_),
}
KEY, REPO_KEY = "s3cret-0123456789abcdef", "r3po-0123456789abcdef"


# --- models -----------------------------------------------------------------------------


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: Any = ()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def identity_all_types(names: Iterable[str]) -> bytes:
    """in_<TYPE>[batch, 3] -> out_<TYPE>, one Identity per V2 datatype in ``names``."""
    nodes, ins, outs = [], [], []
    for name in names:
        code = V2_TYPES[name][0]
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        ins.append(helper.make_tensor_value_info(f"in_{name}", code, ["batch", 3]))
        outs.append(helper.make_tensor_value_info(f"out_{name}", code, ["batch", 3]))
    return _model(nodes, ins, outs)


def affine(scale: float = 2.0, width: int = 4) -> bytes:
    """y = x @ (scale * I) + 1 and z = relu(x): batchable, two outputs."""
    w = (np.eye(width) * scale).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "one"], ["y"]),
        helper.make_node("Relu", ["x"], ["z"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", width]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )


def slow(size: int = 384, repeats: int = 40) -> bytes:
    """x[1, size] through ``repeats`` MatMuls with a [size, size] weight: tens of ms."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(repeats):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(w, "w")],
    )


def lookup() -> bytes:
    """y = Gather(table[8, 2], i): valid by signature for any i, but runs only for 0 <= i < 8
    (the warm-up's sample ints are in [0, 8))."""
    table = np.arange(16, dtype=np.float32).reshape(8, 2)
    return _model(
        [helper.make_node("Gather", ["table", "i"], ["y"])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(table, "table")],
    )


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    # ORT's Python API cannot feed strings and bfloat16 to one model: BF16 gets its own.
    write(root / "types" / "1" / "model.onnx", identity_all_types(set(V2_TYPES) - {"BF16"}))
    write(root / "bf16" / "1" / "model.onnx", identity_all_types(["BF16"]))
    write(root / "affine" / "1" / "model.onnx", affine(2.0))
    write(root / "affine" / "2" / "model.onnx", affine(3.0))
    (root / "affine" / "ferry.toml").write_text(
        "max_batch_size = 16\nmax_queue_delay_ms = 2.0\n[versions]\npolicy = 'all'\n"
    )
    write(root / "slow" / "1" / "model.onnx", slow())
    write(root / "broken" / "1" / "model.onnx", b"not an onnx model")
    write(root / "strict" / "1" / "model.onnx", affine())
    (root / "strict" / "ferry.toml").write_text("allow_nonfinite = false\n")
    write(root / "lookup" / "1" / "model.onnx", lookup())
    # batching off: no max_batch_size to hold a request to (large bodies below)
    write(root / "unbatched" / "1" / "model.onnx", affine(2.0))
    (root / "unbatched" / "ferry.toml").write_text("max_batch_size = 0\n")
    write(root / "tiny_queue" / "1" / "model.onnx", slow())
    (root / "tiny_queue" / "ferry.toml").write_text("max_queue_size = 1\nmax_batch_size = 0\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[str]:
    settings = ServeSettings(
        repository_keys=(REPO_KEY,), repository_api=True, body_limit=1 << 20, body_timeout_s=1.0
    )
    app = ServeApp(Repository.open(repo), settings)
    with running(app, ServerOptions(port=0, header_timeout_s=1.0)) as url:
        yield url


@pytest.fixture(scope="module")
def app(repo: Path) -> Iterator[InProcess]:
    settings = ServeSettings(
        repository_keys=(REPO_KEY,), repository_api=True, body_limit=1 << 20, body_timeout_s=1.0
    )
    with in_process(ServeApp(Repository.open(repo), settings)) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(server.removeprefix("http://"), concurrency=8)
    yield c
    c.close()


def infer_json(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, -2.0, 3.0, -4.0]}


# --- endpoints --------------------------------------------------------------------------


def test_health_metadata_and_readiness(server: str, client: Any) -> None:
    assert client.is_server_live()
    status, _, _ = exchange(server, "GET", "/v2/health/ready")
    assert status == 400  # the broken model is not ready, so the server is not (protocol: 4xx)
    meta = client.get_server_metadata()
    assert meta["name"] == "onnxferry" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("affine") and client.is_model_ready("affine", "1")
    assert not client.is_model_ready("broken")
    model = client.get_model_metadata("affine")
    assert model["versions"] == ["1", "2"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_model_metadata("affine", "1")["name"] == "affine"
    config = client.get_model_config("affine")
    assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [4]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v2/models/affine/infer", infer_json([X]), 200),
        ("POST", "/v2/models/affine/infer", b"{not json", 400),
        ("GET", "/v2/models/affine", None, 200),
        ("GET", "/v2/health/live", None, 200),
        ("GET", "/nowhere", None, 404),
    ],
)
def test_responses_carry_their_length_not_chunks(
    server: str, method: str, path: str, body: bytes | None, status: int
) -> None:
    got, headers, data = exchange(server, method, path, body)
    assert got == status
    lowered = {k.lower(): v for k, v in headers.items()}
    assert "transfer-encoding" not in lowered
    assert int(lowered["content-length"]) == len(data)


def test_unknown_routes_models_and_versions_are_404(app: InProcess) -> None:
    assert app.error_of("GET", "/v2/models/nope")[0] == 404
    assert app.error_of("GET", "/v2/models/affine/versions/9")[0] == 404
    assert app.error_of("POST", "/v2/models/nope/infer", infer_json([X]))[0] == 404
    assert app.error_of("GET", "/v3")[0] == 404
    status, message = app.error_of("GET", "/v2/models/affine/infer")
    assert status == 405 and "POST" in message
    for path in ("/v2/models/affine", "/metrics", "/openapi.json"):
        status, headers, _ = app.exchange("TRACE", path)
        assert status == 405 and headers["allow"] == "GET"  # RFC 9110: 405 says what is allowed


def test_a_broken_model_is_reported_and_the_others_serve(app: InProcess) -> None:
    status, message = app.error_of("POST", "/v2/models/broken/infer", infer_json([X]))
    assert status == 503 and "not an ONNX model" in message
    status, _, data = app.exchange(
        "POST", "/v2/repository/index", headers={"Authorization": f"Bearer {REPO_KEY}"}
    )
    index = {(m["name"], m.get("version")): m for m in json.loads(data)}
    assert index[("broken", "1")]["state"] == "UNAVAILABLE"
    assert index[("affine", "2")]["state"] == "READY"


# --- inference: every datatype, binary and JSON -----------------------------------------


def _sample(v2: str, rows: int = 2) -> np.ndarray:
    rng = np.random.default_rng(len(v2))
    if v2 == "BYTES":
        return np.array([[f"w{i}{j}".encode() for j in range(3)] for i in range(rows)], object)
    if v2 == "BOOL":
        return rng.integers(0, 2, (rows, 3)).astype(bool)
    dtype = V2_TYPES[v2][1]
    if v2 in ("FP16", "FP32", "FP64", "BF16"):
        return rng.standard_normal((rows, 3)).astype(dtype)
    return rng.integers(0, 100, (rows, 3)).astype(dtype)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips(client: Any, binary: bool) -> None:
    for model, names in (("types", [t for t in V2_TYPES if t != "BF16"]), ("bf16", ["BF16"])):
        wire = binary or model == "bf16"  # tritonclient sends BF16 only as binary data
        inputs, outputs, sent = [], [], {}
        for v2 in names:
            data = _sample(v2)
            sent[v2] = data
            tensor = httpclient.InferInput(f"in_{v2}", list(data.shape), v2)
            tensor.set_data_from_numpy(data, binary_data=wire)
            inputs.append(tensor)
            outputs.append(httpclient.InferRequestedOutput(f"out_{v2}", binary_data=wire))
        result = client.infer(model, inputs, outputs=outputs, request_id="r-42")
        assert result.get_response()["id"] == "r-42"
        for v2, data in sent.items():
            got = result.as_numpy(f"out_{v2}")
            assert got.shape == data.shape, v2
            if v2 == "BYTES":
                texts = [x.encode() if isinstance(x, str) else bytes(x) for x in got.ravel()]
                assert texts == list(data.ravel()), v2
            else:
                np.testing.assert_array_equal(got.astype(np.float64), data.astype(np.float64))


def test_requested_outputs_and_parameters(client: Any) -> None:
    x = np.array([[1, -2, 3, -4]], np.float32)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    only_z = client.infer("affine", [tensor], outputs=[httpclient.InferRequestedOutput("z")])
    assert [o["name"] for o in only_z.get_response()["outputs"]] == ["z"]
    np.testing.assert_array_equal(only_z.as_numpy("z"), np.maximum(x, 0))
    both = client.infer("affine", [tensor], model_version="1")
    np.testing.assert_allclose(both.as_numpy("y"), x * 2 + 1)
    latest = client.infer("affine", [tensor])  # the highest version: scale 3
    np.testing.assert_allclose(latest.as_numpy("y"), x * 3 + 1)
    assert latest.get_response()["model_version"] == "2"


def test_compressed_request_bodies(app: InProcess) -> None:
    body = gzip.compress(infer_json([X]))
    status, _, data = app.exchange(
        "POST", "/v2/models/affine/infer", body, {"Content-Encoding": "gzip"}
    )
    assert status == 200, data
    assert json.loads(data)["outputs"][0]["data"] == [4.0, -5.0, 10.0, -11.0]


# --- bad input: 400 naming the tensor, and the server keeps serving ------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "JSON"),
        (infer_json([{**X, "name": "nope"}]), "nope"),
        (infer_json([{**X, "datatype": "INT64"}]), "datatype"),
        (infer_json([{**X, "shape": [4]}]), "rank"),
        (infer_json([{**X, "shape": [1, 5]}]), "x"),
        (infer_json([{**X, "shape": [2, 4]}]), "x"),
        (infer_json([{**X, "shape": [2**40, 2**40]}]), "x"),
        (infer_json([X], outputs=[{"name": "nope"}]), "nope"),
        (infer_json([X], parameters={"timeout": "soon"}), "timeout"),
        (infer_json([]), "x"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(app: InProcess, body: bytes, message: str) -> None:
    status, error = app.error_of("POST", "/v2/models/affine/infer", body)
    assert status == 400 and message in error
    assert app.error_of("POST", "/v2/models/affine/infer", infer_json([X]))[0] == 200


def test_binary_length_mismatch_is_400(app: InProcess) -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4]}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 16}}]}).encode()
    body = header + np.zeros(3, np.float32).tobytes()  # 12 bytes, 16 announced
    status, error = app.error_of(
        "POST", "/v2/models/affine/infer", body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    assert status == 400 and "x" in error


def test_non_finite_inputs_are_400_where_the_model_forbids_them(client: Any) -> None:
    x = np.array([[1, np.nan, 3, 4]], np.float32)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException, match="x") as info:
        client.infer("strict", [tensor])
    assert info.value.status() == "400"
    result = client.infer("affine", [tensor])  # affine allows them (the default)
    assert np.isnan(result.as_numpy("y")[0, 1])


def test_a_full_queue_answers_503_at_once(app: InProcess) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [384, 384], "data": [0.5] * 384 * 384}
    body = infer_json([x])
    statuses: list[tuple[int, str]] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(
                app.error_of("POST", "/v2/models/tiny_queue/infer", body)
            )
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(code for code, _ in statuses)
    assert codes[0] == 200 and codes[-1] == 503, statuses
    assert all("queue" in error for code, error in statuses if code == 503)


def test_a_model_failing_on_valid_input_is_500_and_keeps_serving(app: InProcess) -> None:
    def index(i: int) -> bytes:
        return infer_json([{"name": "i", "datatype": "INT64", "shape": [1], "data": [i]}])

    status, error = app.error_of("POST", "/v2/models/lookup/infer", index(100))
    assert status == 500 and "lookup" in error
    status, _, data = app.exchange("POST", "/v2/models/lookup/infer", index(3))
    assert status == 200 and json.loads(data)["outputs"][0]["data"] == [6.0, 7.0]


def test_access_log_is_one_json_line_per_request(
    app: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="onnxferry.serve.access"):
        app.exchange("POST", "/v2/models/affine/infer", infer_json([X]))
        app.exchange("GET", "/v2/models/nope")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("POST", "/v2/models/affine/infer", 200),
        ("GET", "/v2/models/nope", 404),
    ]
    assert all(e["ms"] >= 0 and e["client"] == "127.0.0.1" for e in lines)
    assert (lines[0]["model"], lines[0]["version"]) == ("affine", "2")


# --- limits, auth, deadlines ----------------------------------------------------------------


def test_auth(tmp_path: Path) -> None:
    write(tmp_path / "m.onnx", affine())
    settings = ServeSettings(api_keys=(KEY,), repository_keys=(REPO_KEY,), repository_api=True)
    with in_process(ServeApp(Repository.open(tmp_path / "m.onnx"), settings)) as app:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": f"Bearer {REPO_KEY}"}):  # fmt: skip
            assert app.error_of("GET", "/v2/models/m", headers=headers)[0] == 401
            status, error = app.error_of("POST", "/v2/models/m/infer", infer_json([X]),
                                         headers=headers)  # fmt: skip
            assert status == 401 and "Bearer" in error
        assert app.exchange("GET", "/v2/health/live")[0] == 200
        assert app.exchange("GET", "/v2/health/ready")[0] == 200
        good = {"Authorization": f"Bearer {KEY}"}
        assert app.exchange("POST", "/v2/models/m/infer", infer_json([X]), good)[0] == 200
        # the repository API takes its own key only
        assert app.error_of("POST", "/v2/repository/index", headers=good)[0] == 401
        repo = {"Authorization": f"Bearer {REPO_KEY}"}
        assert app.exchange("POST", "/v2/repository/index", headers=repo)[0] == 200
        # the published document says so, and is readable without a key
        status, _, data = app.exchange("GET", "/openapi.json")
        doc = json.loads(data)
        assert status == 200 and doc["security"] == [{"bearer": []}]
        assert doc["paths"]["/v2/health/live"]["get"]["security"] == []


def test_body_limit_by_content_length(app: InProcess) -> None:
    body = b"{" + b" " * (2 << 20) + b"}"
    status, error = app.error_of("POST", "/v2/models/affine/infer", body)
    assert status == 413 and "limit" in error


def test_body_limit_for_chunked_bodies(server: str) -> None:
    head = (b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")  # fmt: skip
    chunk = b" " * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))  # 1.25 MiB
    answer = raw(server, head + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_slow_headers_and_bodies_time_out(server: str) -> None:
    started = time.monotonic()
    answer = raw(server, b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    head = (b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\n{")  # fmt: skip
    answer = raw(server, head)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_deadline_is_504_and_the_model_keeps_serving(app: InProcess) -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [384, 384], "data": [0.5] * 384 * 384}
    started = time.monotonic()
    status, error = app.error_of(
        "POST", "/v2/models/slow/infer", infer_json([x], parameters={"timeout": 2000})
    )
    assert status == 504, error
    assert time.monotonic() - started < 2.0
    status, _, _ = app.exchange("POST", "/v2/models/slow/infer", infer_json([x]))
    assert status == 200


# --- batching ---------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_answers_equal_unbatched(client: Any) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(48)]

    def call(x: np.ndarray) -> Any:
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.async_infer("affine", [tensor], model_version="1")

    pending = [call(x) for x in xs]
    for x, p in zip(xs, pending, strict=True):
        result = p.get_result()
        np.testing.assert_array_equal(
            result.as_numpy("y"), x @ (np.eye(4, dtype=np.float32) * 2) + 1
        )
        np.testing.assert_array_equal(result.as_numpy("z"), np.maximum(x, 0))
    stats = client.get_inference_statistics("affine", "1")["model_stats"][0]
    assert stats["inference_count"] >= sum(len(x) for x in xs)
    assert stats["execution_count"] < stats["inference_count"]  # some requests shared a run


@pytest.mark.parametrize(("binary", "rows"), [(True, 40_000), (False, 10_000)])
def test_large_bodies_arrive_in_pieces_and_decode_exactly(
    client: Any, binary: bool, rows: int
) -> None:
    """Bodies of hundreds of KB reach the app in several pieces (the aligned-buffer path)."""
    x = np.random.default_rng(1).standard_normal((rows, 4)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("unbatched", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), x @ (np.eye(4, dtype=np.float32) * 2) + 1)
    np.testing.assert_array_equal(result.as_numpy("z"), np.maximum(x, 0))


# --- observability -----------------------------------------------------------------------------


def test_metrics_and_openapi(app: InProcess) -> None:
    app.exchange("POST", "/v2/models/affine/infer", infer_json([X]))  # one success
    app.exchange("POST", "/v2/models/affine/infer", b"{not json")  # one bad request
    status, _, text = app.exchange("GET", "/metrics")
    assert status == 200
    assert b'ferry_request_duration_seconds_bucket{le="0.001",model="affine"' in text
    assert b'ferry_inference_failure_total{model="affine",reason="bad_request"' in text
    status, _, doc = app.exchange("GET", "/openapi.json")
    paths = json.loads(doc)["paths"]
    for route in (
        "/v2/health/live",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/stats",
        "/v2/repository/index",
    ):
        assert route in paths


# --- hot reload and the repository API ---------------------------------------------------------


def test_hot_reload_swaps_versions_and_a_corrupt_one_leaves_the_old_serving(
    tmp_path: Path,
) -> None:
    write(tmp_path / "m" / "1" / "model.onnx", affine(2.0))
    settings = ServeSettings(repository_api=True)
    served = ServeApp(Repository.open(tmp_path, config=ModelConfig()), settings)
    with in_process(served) as app:

        def y() -> float:
            status, _, data = app.exchange("POST", "/v2/models/m/infer", infer_json([X]))
            assert status == 200, data
            return float(json.loads(data)["outputs"][0]["data"][0])

        assert y() == 3.0
        write(tmp_path / "m" / "2" / "model.onnx", affine(5.0))
        assert app.exchange("POST", "/v2/repository/models/m/load")[0] == 200
        assert y() == 6.0
        write(tmp_path / "m" / "3" / "model.onnx", b"\x08\x07garbage")
        status, error = app.error_of("POST", "/v2/repository/models/m/load")
        assert status == 400 and "3" in error
        assert y() == 6.0  # version 2 still serves
        assert app.exchange("POST", "/v2/repository/models/m/unload")[0] == 200
        assert app.error_of("POST", "/v2/models/m/infer", infer_json([X]))[0] == 503


def test_repository_api_is_off_unless_enabled(tmp_path: Path) -> None:
    write(tmp_path / "m.onnx", affine())
    with in_process(tmp_path / "m.onnx") as app:
        assert app.error_of("POST", "/v2/repository/index")[0] == 403
        status, _, data = app.exchange("POST", "/v2/models/m/infer", infer_json([X]))
        assert status == 200


def test_in_flight_requests_finish_when_the_server_stops(tmp_path: Path) -> None:
    write(tmp_path / "slow.onnx", slow())
    x = {"name": "x", "datatype": "FP32", "shape": [384, 384], "data": [0.5] * 384 * 384}
    results: list[int] = []
    with running(tmp_path / "slow.onnx") as url:
        thread = threading.Thread(
            target=lambda: results.append(
                exchange(url, "POST", "/v2/models/slow/infer", infer_json([x]))[0]
            )
        )
        thread.start()
        time.sleep(0.05)
    thread.join(30)
    assert results == [200]
