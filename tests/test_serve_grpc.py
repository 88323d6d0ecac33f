"""The KServe V2 gRPC front on a live server (REST and gRPC on loopback ports, one event loop),
driven by tritonclient.grpc and, for typed contents, the generated stub itself: health,
metadata, configuration, statistics and the repository equal to REST's answers; every
datatype raw and typed, equal to a direct ONNX Runtime run; keys, deadlines, message and
queue limits with their gRPC codes and REST's messages; `ferry serve --grpc-port` draining an
in-flight call on SIGTERM."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.cli import main
from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.repository import Repository
from tests.serve_probes import exchange
from tests.test_serve_app import V2_TYPES, affine, identity_all_types, infer_json, slow, write
from tests.test_serve_app import _sample as rest_sample

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from onnxferry.serve.grpc_server import running_grpc  # noqa: E402

KEY, REPO_KEY = "grpc-key-0123456789abcdef", "grpc-repo-0123456789abcdef"
AUTH = {"authorization": f"Bearer {KEY}"}
REPO_AUTH = {"authorization": f"Bearer {REPO_KEY}"}
TYPES = [t for t in V2_TYPES if t != "BF16"]  # ORT cannot feed strings and bfloat16 together
TYPED = [t for t in TYPES if t != "FP16"]  # FP16 (and BF16) have no typed contents field
FERRY = Path(sys.executable).with_name("ferry")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-repo")
    write(root / "types" / "1" / "model.onnx", identity_all_types(TYPES))
    write(root / "bf16" / "1" / "model.onnx", identity_all_types(["BF16"]))
    write(root / "typed" / "1" / "model.onnx", identity_all_types(TYPED))
    write(root / "affine" / "1" / "model.onnx", affine(2.0))
    write(root / "affine" / "2" / "model.onnx", affine(3.0))
    (root / "affine" / "ferry.toml").write_text("max_batch_size = 16\n[versions]\npolicy = 'all'\n")
    # A quarter second or more per run: a deadline's stop lands inside it even when a loaded
    # machine delays the server's timer (at tens of ms, a run could finish first).
    write(root / "slow" / "1" / "model.onnx", slow(repeats=400))
    write(root / "tiny_queue" / "1" / "model.onnx", slow())
    (root / "tiny_queue" / "ferry.toml").write_text("max_queue_size = 1\nmax_batch_size = 0\n")
    write(root / "spare" / "1" / "model.onnx", affine())
    return root


@pytest.fixture(scope="module")
def live(repo: Path) -> Iterator[tuple[str, str]]:
    settings = ServeSettings(
        api_keys=(KEY,), repository_keys=(REPO_KEY,), repository_api=True, body_limit=1 << 20
    )
    with running_grpc(ServeApp(Repository.open(repo), settings)) as addresses:
        yield addresses


@pytest.fixture(scope="module")
def client(live: tuple[str, str]) -> Iterator[Any]:
    c = grpcclient.InferenceServerClient(live[1])
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(live: tuple[str, str]) -> Iterator[Any]:
    with grpc.insecure_channel(live[1]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _rest(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    status, _, data = exchange(url, method, path, body, {"Authorization": f"Bearer {KEY}"})
    return status, json.loads(data) if data else None


def _error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def _sample(v2: str, rows: int = 2) -> np.ndarray:
    """REST's samples (test_serve_app), with non-ASCII BYTES."""
    if v2 == "BYTES":
        return np.array([[f"w{i}{j}é".encode() for j in range(3)] for i in range(rows)], object)
    return rest_sample(v2, rows)


def _ort(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model run directly by ONNX Runtime (BYTES fed as str, as the server feeds them)."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    fed = {
        k: np.vectorize(lambda b: b.decode(), otypes=[object])(v) if v.dtype == object else v
        for k, v in feeds.items()
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, fed), strict=True))


def _same(got: np.ndarray, want: np.ndarray, label: str) -> None:
    assert got.shape == want.shape, label
    if want.dtype == object:
        texts = [x if isinstance(x, bytes) else str(x).encode() for x in got.ravel()]
        assert texts == [str(x).encode() for x in want.ravel()], label
    else:
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), label)


# --- health, metadata, configuration, statistics, repository ------------------------------------


def test_health_metadata_config_and_statistics_equal_rest(
    live: tuple[str, str], client: Any
) -> None:
    url, _ = live
    assert client.is_server_live() and client.is_server_ready()  # open, like REST's health
    assert client.is_model_ready("affine", headers=AUTH)
    assert client.is_model_ready("affine", "1", headers=AUTH)
    assert not client.is_model_ready("nope", headers=AUTH)
    meta = client.get_server_metadata(headers=AUTH, as_json=True)
    rest = _rest(url, "GET", "/v2")[1]
    assert (meta["name"], meta["extensions"]) == (rest["name"], rest["extensions"])
    assert "model_repository" in meta["extensions"]
    for version in ("", "1"):
        suffix = f"/versions/{version}" if version else ""
        grpc_meta = client.get_model_metadata("affine", version, headers=AUTH, as_json=True)
        rest_meta = _rest(url, "GET", f"/v2/models/affine{suffix}")[1]
        shapes = [[int(d) for d in t["shape"]] for t in grpc_meta["inputs"]]  # int64 as text
        assert shapes == [t["shape"] for t in rest_meta["inputs"]] == [[-1, 4]]
        assert grpc_meta["versions"] == rest_meta["versions"] == ["1", "2"]
    config = client.get_model_config("affine", headers=AUTH).config
    rest_config = _rest(url, "GET", "/v2/models/affine/config")[1]
    assert config.max_batch_size == rest_config["max_batch_size"] == 16
    assert config.platform == "onnxruntime_onnx" and list(config.input[0].dims) == [4]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert (
        config.dynamic_batching.default_queue_policy.max_queue_size
        == (rest_config["dynamic_batching"]["default_queue_policy"]["max_queue_size"])
    )
    x = np.array([[1, -2, 3, -4]], np.float32)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    client.infer("affine", [tensor], model_version="1", headers=AUTH)
    stats = client.get_inference_statistics("affine", "1", headers=AUTH, as_json=True)
    rest_stats = _rest(url, "GET", "/v2/models/affine/versions/1/stats")[1]["model_stats"][0]
    entry = stats["model_stats"][0]
    assert int(entry["inference_count"]) == rest_stats["inference_count"] >= 1
    assert int(entry["inference_stats"]["success"]["count"]) >= 1
    every = client.get_inference_statistics(headers=AUTH, as_json=True)["model_stats"]
    assert {"affine", "types", "slow"} <= {e["name"] for e in every}
    # one set of metrics for both protocols
    _, _, metrics = exchange(url, "GET", "/metrics", None, {"Authorization": f"Bearer {KEY}"})
    assert b'ferry_inference_success_total{model="affine",version="1"}' in metrics
    assert (
        "no shared memory"
        in _error(lambda: client.get_system_shared_memory_status(headers=AUTH)).message()
    )


def test_repository_index_unload_and_load(live: tuple[str, str], client: Any) -> None:
    index = client.get_model_repository_index(headers=REPO_AUTH, as_json=True)["models"]
    assert {"name": "spare", "version": "1", "state": "READY"} in index
    client.unload_model("spare", headers=REPO_AUTH)
    assert not client.is_model_ready("spare", headers=AUTH)
    ready = client.get_model_repository_index(headers=REPO_AUTH, as_json=True)
    assert "spare" not in {m["name"] for m in ready["models"] if m.get("state") == "READY"}
    client.load_model("spare", headers=REPO_AUTH)
    assert client.is_model_ready("spare", headers=AUTH)
    missing = _error(lambda: client.load_model("nope", headers=REPO_AUTH))
    assert missing.status() == "StatusCode.NOT_FOUND" and "nope" in missing.message()
    denied = _error(lambda: client.load_model("spare", config="{}", headers=REPO_AUTH))
    assert denied.status() == "StatusCode.INVALID_ARGUMENT" and "ferry.toml" in denied.message()


# --- inference: every datatype, raw and typed ------------------------------------------------


def test_every_datatype_raw_equals_onnx_runtime(repo: Path, client: Any) -> None:
    for model, names in (("types", TYPES), ("bf16", ["BF16"])):
        sent = {f"in_{v2}": _sample(v2) for v2 in names}
        inputs = []
        for v2 in names:
            tensor = grpcclient.InferInput(f"in_{v2}", [2, 3], v2)
            tensor.set_data_from_numpy(sent[f"in_{v2}"])
            inputs.append(tensor)
        result = client.infer(model, inputs, request_id="r-7", headers=AUTH)
        assert result.get_response().id == "r-7"
        if model == "bf16":  # ORT's Python API cannot feed bfloat16: Identity returns it as is
            expected = {"out_BF16": sent["in_BF16"]}
        else:
            expected = _ort((repo / model / "1" / "model.onnx").read_bytes(), sent)
        for name, want in expected.items():
            _same(result.as_numpy(name), want, name)


def _typed_request(model: str, sent: dict[str, np.ndarray]) -> Any:
    """A ModelInferRequest with every input in its typed contents field."""
    request = service_pb2.ModelInferRequest(model_name=model, id="typed")
    for name, array in sent.items():
        v2 = name.removeprefix("in_")
        tensor = request.inputs.add(name=name, datatype=v2, shape=array.shape)
        getattr(tensor.contents, FIELDS[v2]).extend(array.ravel().tolist())
    return request


FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
          "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
          "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
          "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}  # fmt: skip


def _rpc_error(stub: Any, request: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    return caught.value


def test_every_datatype_typed_equals_onnx_runtime(repo: Path, stub: Any) -> None:
    sent = {f"in_{v2}": _sample(v2) for v2 in TYPED}
    response = stub.ModelInfer(_typed_request("typed", sent), metadata=tuple(AUTH.items()))
    assert response.id == "typed" and len(response.raw_output_contents) == len(TYPED)
    result = grpcclient.InferResult(response)
    expected = _ort((repo / "typed" / "1" / "model.onnx").read_bytes(), sent)
    for name, want in expected.items():
        _same(result.as_numpy(name), want, name)
    # FP16 has no typed field: it travels raw, and then every input does (as Triton has it)
    fp16 = _sample("FP16")
    request = _typed_request("types", sent)
    request.inputs.add(name="in_FP16", datatype="FP16", shape=[2, 3])
    error = _rpc_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16" in error.details() and "raw_input_contents" in error.details()
    request.raw_input_contents.append(fp16.tobytes())
    error = _rpc_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in error.details()


def test_typed_contents_alone_infer(stub: Any) -> None:
    x = np.array([[1, -2, 3, -4]], np.float32)
    request = service_pb2.ModelInferRequest(model_name="affine", model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="z")
    response = stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert [o.name for o in response.outputs] == ["z"] and response.model_version == "1"
    np.testing.assert_array_equal(grpcclient.InferResult(response).as_numpy("z"), np.maximum(x, 0))
    tensor.contents.ClearField("fp32_contents")
    tensor.contents.int_contents.extend([1, 2, 3, 4])
    with pytest.raises(grpc.RpcError) as wrong:
        stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "use fp32_contents" in wrong.value.details()


# --- errors: REST's messages with gRPC's codes -------------------------------------------------


def test_bad_input_is_invalid_argument_with_rests_message(
    live: tuple[str, str], client: Any
) -> None:
    x = np.zeros((1, 3), np.float32)
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(x)
    error = _error(lambda: client.infer("affine", [tensor], headers=AUTH))
    body = infer_json([{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.0] * 3}])
    status, rest = _rest(live[0], "POST", "/v2/models/affine/infer", body)
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and status == 400
    assert error.message() == rest["error"]
    unknown = _error(lambda: client.infer("nope", [tensor], headers=AUTH))
    assert unknown.status() == "StatusCode.NOT_FOUND" and "nope" in unknown.message()
    version = _error(lambda: client.infer("affine", [tensor], model_version="9", headers=AUTH))
    assert version.status() == "StatusCode.NOT_FOUND"


def test_keys_come_in_the_authorization_metadata(
    client: Any, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    x = np.ones((1, 4), np.float32)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    with caplog.at_level(logging.INFO, logger="onnxferry.serve.access"):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {KEY}"},
                        REPO_AUTH):  # fmt: skip
            error = _error(lambda h=headers: client.infer("affine", [tensor], headers=h))
            assert error.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in error.message()
        client.infer("affine", [tensor], headers=AUTH)
    denied = _error(lambda: client.get_model_repository_index(headers=AUTH))
    assert denied.status() == "StatusCode.UNAUTHENTICATED"  # the repository takes its own keys
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    assert [e["status"] for e in lines] == ["UNAUTHENTICATED"] * 4 + ["OK"], lines
    assert lines[-1]["protocol"] == "grpc" and lines[-1]["method"] == "ModelInfer"
    assert lines[-1]["model"] == "affine" and lines[-1]["client"] == "127.0.0.1"
    twice = (("authorization", f"Bearer {KEY}"), ("authorization", "Bearer wrong"))
    with pytest.raises(grpc.RpcError) as caught:  # tritonclient sends a dict: one of each name
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name="affine"), metadata=twice)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "the request has 2 Authorization headers; send one" in str(caught.value.details())


def test_deadlines_are_deadline_exceeded_and_stop_the_run(client: Any) -> None:
    x = np.full((384, 384), 0.5, np.float32)
    tensor = grpcclient.InferInput("x", [384, 384], "FP32")
    tensor.set_data_from_numpy(x)

    def executions() -> int:
        stats = client.get_inference_statistics("slow", headers=AUTH, as_json=True)
        return int(stats["model_stats"][0].get("execution_count", 0))

    before = executions()
    # the request's timeout parameter (µs): the server's deadline, the server's message
    error = _error(lambda: client.infer("slow", [tensor], timeout=2000, headers=AUTH))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED" and "deadline" in error.message()
    # the call's gRPC deadline becomes the request's: its run is stopped, not finished
    error = _error(lambda: client.infer("slow", [tensor], client_timeout=0.02, headers=AUTH))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert client.infer("slow", [tensor], headers=AUTH).as_numpy("y").shape == (384, 384)
    assert executions() == before + 1  # a run left going would have finished by now: + 2


def test_a_message_past_the_limit_is_resource_exhausted(client: Any) -> None:
    x = np.zeros((1 << 16, 4), np.float32)  # 1 MiB of data, past the 1 MiB message limit
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    error = _error(lambda: client.infer("affine", [tensor], headers=AUTH))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_live()


def test_a_full_queue_is_unavailable_at_once(live: tuple[str, str]) -> None:
    x = np.full((384, 384), 0.5, np.float32)
    codes: list[str] = []
    together = threading.Barrier(6)

    def call() -> None:
        c = grpcclient.InferenceServerClient(live[1])
        tensor = grpcclient.InferInput("x", [384, 384], "FP32")
        tensor.set_data_from_numpy(x)
        assert c.is_server_live()  # connected before the calls go out together
        together.wait(30)
        try:
            c.infer("tiny_queue", [tensor], headers=AUTH)
            codes.append("OK")
        except InferenceServerException as e:
            codes.append(f"{e.status()} {e.message()}")
        finally:
            c.close()

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert "OK" in codes, codes
    refused = [c for c in codes if c != "OK"]
    assert refused and all(c.startswith("StatusCode.UNAVAILABLE") and "queue" in c for c in refused)


# --- ferry serve --grpc-port ---------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_call_finish_and_exits_0(tmp_path: Path) -> None:
    model = write(tmp_path / "slow.onnx", slow(repeats=400))  # a quarter second or more
    process = subprocess.Popen(
        [str(FERRY), "serve", str(model), "--port", "0", "--grpc-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        target = None
        for line in process.stderr:
            found = re.search(r"gRPC listening on (\S+)", line)
            if found:
                target = found.group(1)
                break
        assert target, "ferry serve did not print its gRPC address"
        c = grpcclient.InferenceServerClient(target)
        end = time.monotonic() + 60
        while not c.is_server_ready():
            assert time.monotonic() < end and process.poll() is None
            time.sleep(0.05)
        tensor = grpcclient.InferInput("x", [384, 384], "FP32")
        tensor.set_data_from_numpy(np.full((384, 384), 0.5, np.float32))
        started = time.monotonic()
        c.infer("slow", [tensor])
        took = time.monotonic() - started  # one call, here and now
        answers: list[Any] = []
        call = threading.Thread(target=lambda: answers.append(c.infer("slow", [tensor])))
        call.start()
        time.sleep(took / 3)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        call.join(60)
        assert time.monotonic() - sent > took / 10  # it was still running when SIGTERM came
        assert answers and answers[0].as_numpy("y").shape == (384, 384)
        assert process.wait(60) == 0
        c.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_grpc_options_are_checked_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write(tmp_path / "m.onnx", affine())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        for args, text in (
            (["--grpc-port", "70000"], "--grpc-port takes a port from 0 to 65535, got '70000'"),
            (["--port", str(10**20)], "--port takes a port from 0 to 65535"),  # an OverflowError
            (["--port", "8123", "--grpc-port", "8123"], "pick two"),
            (["--grpc-port", "0", "--grpc-max-message-bytes", "0"], "must be positive"),
            (["--grpc-port", "0", "--grpc-max-message-bytes", str(2**31)], "gRPC's own"),
            (["--port", "0", "--grpc-port", str(port)], f"gRPC: cannot listen on 127.0.0.1:{port}"),
        ):
            assert main(["serve", str(model), *args]) == 2, args
            err = capsys.readouterr().err.strip()
            assert text in err and len(err.splitlines()) == 1, err


def test_without_grpcio_the_grpc_port_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxferry.errors import UsageError
    from onnxferry.serve.server import ServerOptions, build_app, grpc_front

    app = build_app(write(tmp_path / "m.onnx", affine()))
    for module in ("grpc", "onnxferry.serve.grpc_server"):
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc fails, as without grpcio
    with pytest.raises(UsageError) as caught:
        grpc_front(app, ServerOptions(port=0, grpc_port=0))
    assert caught.value.message == "gRPC needs grpcio, which is not installed"
    assert "onnxferry[serve]" in str(caught.value.hint)


def test_a_body_limit_past_grpcs_own_is_held_to_it(tmp_path: Path) -> None:
    """--max-body 5000 (MiB) with --grpc-port: gRPC takes at most 2**31 - 1 bytes a message
    (a larger limit failed the server's start with "Python int too large to convert")."""
    from onnxferry.serve.server import GRPC_MAX_MESSAGE_BYTES, ServerOptions, build_app, grpc_front
    from onnxferry.serve.settings import ServeSettings

    settings = ServeSettings(body_limit=5000 << 20)
    app = build_app(write(tmp_path / "m.onnx", affine()), settings)
    front = grpc_front(app, ServerOptions(port=0, grpc_port=0))
    assert getattr(front, "max_message_bytes", None) == GRPC_MAX_MESSAGE_BYTES
    with running_grpc(tmp_path / "m.onnx", settings=settings) as (_, target):
        channel = grpc.insecure_channel(target)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
        channel.close()


def test_malformed_calls_get_client_codes_and_the_server_keeps_serving() -> None:
    """benchmarks/grpc_fuzz.py on a server of its own: every field of a ModelInferRequest made
    wrong one at a time (names, datatypes, shapes, raw and typed contents, parameters,
    outputs), bad keys, every other RPC with bad names, and random mixes of those: each call
    ends in a client-error code (never INTERNAL or UNKNOWN), a bad key is never let through,
    and valid calls in between still answer right."""
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        from grpc_fuzz import run_fuzz
    finally:
        sys.path.remove(benchmarks)
    fuzz = run_fuzz(random_calls=300, seed=3)
    assert fuzz.findings == [], fuzz.findings
    assert fuzz.calls > 1000
    for code in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "UNIMPLEMENTED"):
        assert fuzz.codes.get(code, 0) > 0, fuzz.codes
