"""SageMaker's hosting contract: `ferry serve --sagemaker` answers /ping and /invocations (JSON,
.npy and V2 bodies) on a real server, takes its model from $SM_MODEL_DIR, and `ferry package
--target sagemaker` writes the model.tar.gz that such a container serves."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxferry.cli.serve import sagemaker_defaults
from onnxferry.package import package
from onnxferry.serve.server import running
from onnxferry.serve.settings import ServeSettings
from tests.helpers import free_port
from tests.test_serve_app import affine, write

FERRY = Path(sys.executable).with_name("ferry")
NPY = "application/x-npy"
JSON = "application/json"
X = [[1.0, -2.0, 3.0, -4.0]]
Y = [[3.0, -3.0, 7.0, -7.0]]  # affine(2.0): 2x + 1
Z = [[1.0, 0.0, 3.0, 0.0]]  # relu(x)


def call(
    url: str, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one real request."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        conn.request(
            method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = write(tmp_path_factory.mktemp("sagemaker") / "affine.onnx", affine())
    with running(model, settings=ServeSettings(sagemaker=True)) as url:
        yield url


def test_ping_is_ready(server: str) -> None:
    assert call(server, "GET", "/ping")[0] == 200
    assert "/invocations" in json.loads(call(server, "GET", "/openapi.json")[2])["paths"]


@pytest.mark.parametrize("body", [X, {"instances": X}, {"inputs": X}, {"x": X}])
def test_plain_json_answers_predictions(server: str, body: Any) -> None:
    status, headers, data = call(
        server, "POST", "/invocations", json.dumps(body).encode(), Content_Type=JSON
    )
    assert status == 200 and headers["content-type"] == JSON
    assert json.loads(data) == {"predictions": Y, "outputs": {"y": Y, "z": Z}}


def test_a_v2_body_answers_the_v2_response(server: str) -> None:
    v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X[0]}]}
    status, _, data = call(
        server, "POST", "/invocations", json.dumps(v2).encode(), Content_Type=JSON
    )
    answer = json.loads(data)
    assert status == 200 and answer["model_name"] == "affine"
    assert {o["name"]: o["data"] for o in answer["outputs"]} == {"y": Y[0], "z": Z[0]}
    # Accept: .npy turns the V2 answer into its first output
    status, headers, data = call(
        server, "POST", "/invocations", json.dumps(v2).encode(), Accept=NPY
    )
    assert status == 200 and headers["content-type"] == NPY
    assert np.load(io.BytesIO(data)).tolist() == Y


def test_npy_in_npy_out_and_json_out(server: str) -> None:
    batch = np.arange(12, dtype=np.float32).reshape(3, 4)
    status, headers, data = call(server, "POST", "/invocations", npy(batch), Content_Type=NPY)
    assert status == 200 and headers["content-type"] == NPY
    answer = np.load(io.BytesIO(data), allow_pickle=False)
    assert answer.dtype == np.float32 and np.array_equal(answer, batch * 2 + 1)
    fortran = np.asfortranarray(batch)
    status, _, data = call(
        server, "POST", "/invocations", npy(fortran), Content_Type=NPY, Accept=JSON
    )
    assert status == 200 and json.loads(data)["predictions"] == (batch * 2 + 1).tolist()


def test_bad_input_is_a_4xx_and_the_server_keeps_serving(server: str) -> None:
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (json.dumps([[1.0, 2.0, 3.0]]).encode(), {"Content_Type": JSON}, 400, "expects shape"),
        (npy(np.zeros((1, 4), np.float64)), {"Content_Type": NPY}, 400, "expects datatype FP32"),
        (b"\x93NUMPY junk", {"Content_Type": NPY}, 400, "not a .npy array"),
        (npy(np.zeros((1, 4), np.float32))[:-4], {"Content_Type": NPY}, 400, "bytes follow it"),
        (b"[[1, 2", {"Content_Type": JSON}, 400, "not valid JSON"),
        (json.dumps({"w": X}).encode(), {"Content_Type": JSON}, 400, "names no inputs"),
        (b"1,2,3,4", {"Content_Type": "text/csv"}, 415, "text/csv"),
        (json.dumps(X).encode(), {"Accept": "text/html"}, 406, "Accept"),
    ]
    for body, headers, status, text in cases:
        got, _, data = call(server, "POST", "/invocations", body, **headers)
        assert got == status and text in json.loads(data)["error"], (text, data)
    assert call(server, "GET", "/invocations")[0] == 405
    status, _, data = call(server, "POST", "/invocations", json.dumps(X).encode())
    assert status == 200 and json.loads(data)["predictions"] == Y


def test_several_models_need_a_target(tmp_path: Path) -> None:
    write(tmp_path / "a" / "1" / "model.onnx", affine(2.0))
    write(tmp_path / "b" / "1" / "model.onnx", affine(3.0))
    with running(tmp_path, settings=ServeSettings(sagemaker=True)) as url:
        body = json.dumps(X).encode()
        status, _, data = call(url, "POST", "/invocations", body)
        assert status == 400 and "X-Amzn-SageMaker-Target-Model" in json.loads(data)["error"]
        status, _, data = call(url, "POST", "/invocations", body, X_Amzn_SageMaker_Target_Model="b")
        assert status == 200 and json.loads(data)["predictions"] == [[4.0, -5.0, 10.0, -11.0]]
        status, _, data = call(url, "POST", "/invocations?model=a", body)
        assert status == 200 and json.loads(data)["predictions"] == Y
        assert call(url, "POST", "/invocations?model=nope", body)[0] == 404


def test_sagemaker_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sagemaker_defaults("m.onnx", None, None, sagemaker=False) == (
        "m.onnx",
        "127.0.0.1",
        8000,
    )
    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    assert sagemaker_defaults(None, None, None, sagemaker=True) == (
        "/opt/ml/model",
        "0.0.0.0",
        8080,
    )
    assert sagemaker_defaults("m", "::1", 0, sagemaker=True) == ("m", "::1", 0)


def test_the_packaged_tarball_serves_from_sm_model_dir(tmp_path: Path) -> None:
    model = write(tmp_path / "affine.onnx", affine())
    report = package(model, "sagemaker", tmp_path / "out")
    assert report.ok and report.result.files == ["model.tar.gz", "sagemaker.json"]
    contract = json.loads((tmp_path / "out" / "sagemaker.json").read_text())
    assert contract["container"]["command"] == ["ferry", "serve", "--sagemaker"]
    assert contract["container"]["port"] == 8080
    tarball = tmp_path / "out" / "model.tar.gz"
    with tarfile.open(tarball) as tar:
        assert [(m.name, m.isfile(), m.mode) for m in tar] == [("affine/1/model.onnx", True, 0o644)]
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    again = package(model, "sagemaker", tmp_path / "again")
    assert (tmp_path / "again" / "model.tar.gz").read_bytes() == tarball.read_bytes()
    assert again.ok

    port = free_port()
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path / "opt-ml-model")}
    command = [str(FERRY), "serve", "--sagemaker", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ping(url, process)
        status, _, data = call(
            url, "POST", "/invocations", npy(np.array(X, np.float32)), Content_Type=NPY
        )
        assert status == 200 and np.load(io.BytesIO(data)).tolist() == Y
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _wait_ping(url: str, process: subprocess.Popen[bytes], limit: float = 60) -> None:
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if call(url, "GET", "/ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not answer /ping")
