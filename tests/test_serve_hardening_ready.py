"""Readiness and version swaps, against the app in process (tests/serve_asgi.py):
/v2/health/ready means every model that should serve has a version serving; a new version with
other inputs does not take over unless ferry.toml allows it; a request runs on the version it
was validated against."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.repository import Repository
from onnxferry.serve.takeover import signature_changes
from onnxferry.signature import Signature
from tests.serve_asgi import InProcess, in_process

SMALL = ModelConfig(instances=1, intra_op_threads=1)
TOML = "instances = 1\nintra_op_threads = 1\n"
API = ServeSettings(repository_api=True)
FP32, FP64 = TensorProto.FLOAT, TensorProto.DOUBLE


def scale(k: float, dtype: int = FP32, width: int = 4, name: str = "x") -> bytes:
    """y = x * k for x of ``dtype`` [batch, width]: the answer tells which version served."""
    kind = helper.tensor_dtype_to_np_dtype(dtype)
    graph = helper.make_graph(
        [helper.make_node("Mul", [name, "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info(name, dtype, ["batch", width])],
        [helper.make_tensor_value_info("y", dtype, ["batch", width])],
        [numpy_helper.from_array(np.full(width, k, kind), "k")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data: bytes = proto.SerializeToString()
    return data


def put(repo: Path, name: str, number: int, data: bytes) -> None:
    """Write a version the way a deploy should: a temporary file, then a rename."""
    path = repo / name / str(number) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(".model.onnx.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def infer_body(datatype: str = "FP32", name: str = "x") -> bytes:
    x = {"name": name, "datatype": datatype, "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}
    return json.dumps({"inputs": [x]}).encode()


def infer(app: InProcess, datatype: str = "FP32") -> tuple[str, float]:
    """(the version that answered, y[0]) of an infer request that must succeed."""
    status, data = app.request("POST", "/v2/models/m/infer", infer_body(datatype))
    assert status == 200, data
    answer = json.loads(data)
    return answer["model_version"], float(answer["outputs"][0]["data"][0])


def ready(app: InProcess, path: str = "/v2/health/ready") -> int:
    return app.request("GET", path)[0]


def index(app: InProcess) -> dict[str, dict[str, Any]]:
    status, data = app.request("POST", "/v2/repository/index")
    assert status == 200, data
    return {f"{r['name']}/{r['version']}": r for r in json.loads(data)}


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# --- readiness ---------------------------------------------------------------------------


def test_versions_the_policy_does_not_select_leave_the_server_ready(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, scale(1))
    put(tmp_path, "m", 2, scale(2))
    with in_process(tmp_path, API, SMALL) as app:
        assert ready(app) == 200
        assert ready(app, "/v2/models/m/ready") == 200
        assert infer(app) == ("2", 2.0)
        rows = index(app)
        assert rows["m/1"]["state"] == "UNAVAILABLE"  # not selected: still listed
        assert rows["m/1"]["reason"] == "not selected by the version policy"


def test_ready_stays_true_across_hot_reloads_good_and_failed(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, scale(1))
    put(tmp_path, "m", 2, scale(2))
    with in_process(tmp_path, API, SMALL, poll_interval_s=0.05) as app:
        assert ready(app) == 200
        statuses: list[int] = []

        def failed() -> bool:
            statuses.append(ready(app))
            row = index(app).get("m/3", {})
            return "not an ONNX model" in row.get("reason", "")

        put(tmp_path, "m", 3, b"\x08\x07corrupt")
        until(failed)
        assert infer(app) == ("2", 2.0)  # the old version still serves
        assert ready(app, "/v2/models/m/ready") == 200

        def swapped() -> bool:
            statuses.append(ready(app))
            return infer(app)[0] == "3"

        put(tmp_path, "m", 3, scale(3))
        until(swapped)
        assert infer(app) == ("3", 3.0)
        assert statuses and set(statuses) == {200}, statuses
        assert ready(app) == 200


def test_a_model_serving_no_version_makes_the_server_unready(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, scale(1))
    put(tmp_path, "broken", 1, b"\x08\x07corrupt")
    put(tmp_path, "broken", 2, b"\x08\x07corrupt too")
    with in_process(tmp_path, API, SMALL) as app:
        status, data = app.request("GET", "/v2/health/ready")
        assert status == 400
        error = json.loads(data)["error"]
        assert "model 'broken' serves no version" in error and "not an ONNX model" in error
        assert infer(app) == ("1", 1.0)  # the others serve meanwhile

        assert app.request("POST", "/v2/repository/models/broken/unload")[0] == 200
        assert ready(app) == 200  # unloaded on purpose: not expected to serve
        put(tmp_path, "broken", 2, scale(5))
        assert app.request("POST", "/v2/repository/models/broken/load")[0] == 200
        assert ready(app) == 200


# --- a new version with another signature ------------------------------------------------


def test_a_new_version_with_other_inputs_is_refused_and_the_old_keeps_serving(
    tmp_path: Path,
) -> None:
    put(tmp_path, "m", 1, scale(1))
    with in_process(tmp_path, API, SMALL) as app:
        put(tmp_path, "m", 2, scale(2, FP64))  # another dtype
        status, data = app.request("POST", "/v2/repository/models/m/load")
        assert status == 400
        assert "input 'x' is FP64, was FP32" in json.loads(data)["error"]
        assert infer(app) == ("1", 1.0)
        rows = index(app)
        assert rows["m/1"]["state"] == "READY"
        assert rows["m/2"]["state"] == "UNAVAILABLE"
        reason = rows["m/2"]["reason"]
        assert "its signature differs from that of version 1, which keeps serving" in reason
        assert "allow_signature_change = true" in reason
        assert ready(app) == 200

        put(tmp_path, "m", 1, scale(7, width=5))  # the served version's own file: fixed dim
        assert app.request("POST", "/v2/repository/models/m/load")[0] == 400
        assert infer(app) == ("1", 1.0)
        reason = index(app)["m/1"]["reason"]
        assert reason.startswith("serving the previous files; reload failed: its signature")
        assert "input 'x' has shape [batch, 5], was [batch, 4]" in reason

        (tmp_path / "m" / "ferry.toml").write_text(TOML + "allow_signature_change = true\n")
        assert app.request("POST", "/v2/repository/models/m/load")[0] == 200
        assert infer(app, "FP64") == ("2", 2.0)  # the operator said so
        assert index(app)["m/2"]["reason"] == ""


def test_a_refused_version_serves_once_the_one_it_differs_from_is_gone(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, scale(1))
    with in_process(tmp_path, API, SMALL, poll_interval_s=0.05) as app:
        put(tmp_path, "m", 2, scale(2, name="image"))  # another input name
        until(lambda: "input 'image' is new" in index(app).get("m/2", {}).get("reason", ""))
        assert infer(app) == ("1", 1.0)
        for file in (tmp_path / "m" / "1").iterdir():
            file.unlink()
        (tmp_path / "m" / "1").rmdir()
        until(lambda: index(app).get("m/2", {}).get("state") == "READY")
        status, data = app.request("POST", "/v2/models/m/infer", infer_body(name="image"))
        assert status == 200 and json.loads(data)["model_version"] == "2"


def test_signature_changes_name_what_breaks_a_client() -> None:
    def signature(data: bytes) -> Signature:
        return Signature.from_onnx(onnx.load_from_string(data))

    base = signature(scale(1))
    assert signature_changes(base, signature(scale(9))) == []
    assert signature_changes(base, signature(scale(1, FP64))) == ["input 'x' is FP64, was FP32"]
    assert signature_changes(base, signature(scale(1, name="image"))) == [
        "input 'image' is new",
        "input 'x' is gone",
    ]
    assert signature_changes(base, signature(scale(1, width=3))) == [
        "input 'x' has shape [batch, 3], was [batch, 4]"
    ]


# --- a swap while a request's body arrives ---------------------------------------------------


def swap_during_body(tmp_path: Path, new_version: bytes, datatype: str) -> tuple[int, bytes]:
    """Send an infer request's first bytes; when the app asks for more (it has looked the model
    up and waits for the body), swap in version 2 through the load API and wait until the old
    one is closed; then send the rest. The status and body of the answer."""
    put(tmp_path, "m", 1, scale(1))
    (tmp_path / "m" / "ferry.toml").write_text(TOML + "allow_signature_change = true\n")
    with in_process(ServeApp(Repository.open(tmp_path), API)) as app:
        body = infer_body(datatype)

        async def pieces() -> AsyncIterator[bytes]:
            yield body[:10]
            old = app.app.repository.get("m")
            put(tmp_path, "m", 2, new_version)
            loaded = await app.client.post("/v2/repository/models/m/load")
            assert loaded.status_code == 200, loaded.text
            for _ in range(1000):
                if old.executor.closed:
                    break
                await asyncio.sleep(0.01)
            assert old.executor.closed
            yield body[10:]

        headers = {"Content-Length": str(len(body))}
        call = app.client.post("/v2/models/m/infer", content=pieces(), headers=headers)
        response = app.run(call)
    return response.status_code, response.content


def test_a_request_is_validated_by_the_version_that_runs_it(tmp_path: Path) -> None:
    status, data = swap_during_body(tmp_path, scale(2, FP64), "FP32")
    assert status == 400, data  # version 2 takes FP64: its own check says so, not ORT
    assert "input 'x' expects datatype FP64, got 'FP32'" in json.loads(data)["error"]


def test_a_request_whose_body_spans_a_swap_is_answered_by_the_new_version(
    tmp_path: Path,
) -> None:
    status, data = swap_during_body(tmp_path, scale(2), "FP32")
    assert status == 200, data
    answer = json.loads(data)
    assert answer["model_version"] == "2" and answer["outputs"][0]["data"][0] == 2.0
