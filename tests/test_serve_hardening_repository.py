"""Repository hardening: what clients read names models and versions, never the repository's
path on the server (the log keeps it); polling examines a bounded number of entries per
version and refuses a version directory linked to a place outside the repository.

Real files in tmp_path, real onnxruntime, the app in process for the client view
(tests/serve_asgi.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.serve.app import ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.repository import Repository
from onnxferry.serve.scan import MAX_VERSION_ENTRIES
from tests.serve_asgi import in_process

SMALL = ModelConfig(instances=1, intra_op_threads=1)
API = ServeSettings(repository_api=True)


def scale(k: float) -> bytes:
    """y = x * k for x float[batch, 4]."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.full(4, k, np.float32), "k")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data: bytes = proto.SerializeToString()
    return data


def put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


INFER = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
).encode()


def test_clients_see_model_and_version_not_the_repository_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "models"
    put(repo / "bad" / "1" / "model.onnx", b"not an onnx model")
    put(repo / "two" / "1" / "a.onnx", scale(1))
    put(repo / "two" / "1" / "b.onnx", scale(2))
    put(repo / "cfg" / "1" / "model.onnx", scale(3))
    (repo / "cfg" / "ferry.toml").write_text("max_batch_size = 'many'\n")
    (repo / "empty").mkdir()
    secret = str(tmp_path)
    with caplog.at_level(logging.WARNING), in_process(repo, API, SMALL) as app:
        bodies = {
            "index": app.request("POST", "/v2/repository/index"),
            "infer": app.request("POST", "/v2/models/bad/infer", INFER),
            "v1": app.request("POST", "/v2/models/bad/versions/1/infer", INFER),
            "ready": app.request("GET", "/v2/health/ready"),
            "meta": app.request("GET", "/v2/models/two"),
            "load": app.request("POST", "/v2/repository/models/bad/load"),
            "cfg": app.request("POST", "/v2/repository/models/cfg/load"),
            "empty": app.request("POST", "/v2/repository/models/empty/load"),
        }
    assert {k: status for k, (status, _) in bodies.items()} == {
        "index": 200,
        "infer": 503,
        "v1": 503,
        "ready": 400,
        "meta": 400,
        "load": 400,
        "cfg": 400,
        "empty": 400,
    }
    leaks = {k: body for k, (_, body) in bodies.items() if secret.encode() in body}
    assert not leaks
    rows = {f"{r['name']}/{r['version']}": r["reason"] for r in json.loads(bodies["index"][1])}
    assert rows["bad/1"].startswith("bad/1/model.onnx: ")
    assert "two/1: the directory holds 2 models" in rows["two/1"]
    assert "cfg/ferry.toml" in rows["cfg/1"]
    assert rows["empty/"] == "no version directories (expected empty/<version>/model.onnx)"
    assert b"bad/1/model.onnx" in bodies["load"][1]
    assert str(repo / "bad" / "1" / "model.onnx") in caplog.text  # the log keeps the path


def test_single_file_errors_name_the_file_not_its_directory(tmp_path: Path) -> None:
    file = tmp_path / "deep" / "adder.onnx"
    put(file, scale(1))
    repo = Repository.open(file, config=SMALL)

    async def main() -> None:
        await repo.start()
        try:
            put(file, b"garbage")
            await repo.poll_once()
            await repo.poll_once()
            reason = repo.index()[0]["reason"]
            assert reason.startswith("serving the previous files; reload failed: adder.onnx: ")
            file.unlink()
            await repo.poll_once()
            assert repo.unready() == {"adder": "adder.onnx: the model file is gone"}
        finally:
            await repo.stop()

    asyncio.run(main())


def test_a_version_with_thousands_of_files_polls_a_bounded_number(tmp_path: Path) -> None:
    put(tmp_path / "m" / "1" / "model.onnx", scale(2))
    clutter = tmp_path / "m" / "1" / "clutter"
    clutter.mkdir()
    for i in range(5000):
        (clutter / f"f{i}").touch()
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        await repo.start()
        try:
            started = time.monotonic()
            for _ in range(5):
                assert await repo.poll_once() == []
            assert time.monotonic() - started < 2.0
            [row] = repo.index()
            assert row["state"] == "READY"
            assert f"only the first {MAX_VERSION_ENTRIES}" in row["reason"]
            put(tmp_path / "m" / "1" / "model.onnx", scale(3))  # the model file is always watched
            await repo.poll_once()
            assert await repo.poll_once() == ["m/1 loaded"]
        finally:
            await repo.stop()

    asyncio.run(main())


def test_a_version_linked_outside_the_repository_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "elsewhere"
    put(outside / "model.onnx", scale(5))
    repo_dir = tmp_path / "models"
    put(repo_dir / "m" / "1" / "model.onnx", scale(1))
    put(repo_dir / "inside" / "1" / "model.onnx", scale(7))
    os.symlink(outside, repo_dir / "m" / "2")
    os.symlink(repo_dir / "inside" / "1", repo_dir / "m" / "3")  # inside: allowed
    repo = Repository.open(repo_dir, config=ModelConfig(instances=1, intra_op_threads=1))

    async def main() -> None:
        with caplog.at_level(logging.WARNING):
            await repo.start()
        try:
            rows = {r["version"]: r for r in repo.index() if r["name"] == "m"}
            assert rows["2"]["state"] == "UNAVAILABLE"
            assert rows["2"]["reason"] == (
                "the version directory links outside the model repository; refused"
            )
            assert rows["3"]["state"] == "READY"
            assert str(outside) not in json.dumps(repo.index())
            assert str(outside) in caplog.text
            assert repo.get("m").version == "3"
        finally:
            await repo.stop()

    asyncio.run(main())
