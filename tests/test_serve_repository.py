"""Repository: single files and Triton layouts, version policies, failures, hot reload.

Real files in tmp_path, real onnxruntime; models are built here with onnx.helper.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.errors import InputError, ModelLoadError, UsageError
from onnxferry.serve.catalog import ModelNotFound, ModelNotReady
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.repository import Repository

SMALL = ModelConfig(instances=1, intra_op_threads=1)
TOML = "instances = 1\nintra_op_threads = 1\n"


def add_model(k: float) -> onnx.ModelProto:
    """y = x + k for x float[batch, 4]: the answer tells which model served."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.full(4, k, np.float32), "k")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def slow_model(sign: float, size: int = 1024, depth: int = 8) -> onnx.ModelProto:
    """y = x @ W @ ... @ W with W = sign * I (so y = x * sign**depth): ~100 ms for 512 rows
    on one thread."""
    w = (sign * np.eye(size)).astype(np.float32)
    nodes = []
    previous = "x"
    for i in range(depth):
        out = "y" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "w"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", size])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def unknown_op_model() -> onnx.ModelProto:
    """Passes the onnx checker, but onnxruntime has no kernel for it."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def failing_warmup_model() -> onnx.ModelProto:
    """Loads, but fails on any input: 4 elements cannot be reshaped to [3, -1]."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "cols"])],
        [numpy_helper.from_array(np.array([3, -1], np.int64), "shape")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def put(path: Path, model: onnx.ModelProto | bytes) -> Path:
    """Write a model (or raw bytes) the way a deploy should: temp file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
    return path


def version(repo: Path, name: str, number: int, model: onnx.ModelProto | bytes) -> Path:
    return put(repo / name / str(number) / "model.onnx", model)


def toml(repo: Path, name: str, text: str) -> None:
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / "ferry.toml").write_text(TOML + text)


async def answer(repo: Repository, name: str, number: str | None = None) -> float:
    mv = repo.get(name, number)
    result = await mv.executor.infer({"x": np.zeros((1, 4), np.float32)})
    return float(result.outputs["y"][0, 0])


def row(repo: Repository, name: str, number: str) -> dict[str, Any]:
    rows = [r for r in repo.index() if r["name"] == name and r["version"] == number]
    assert len(rows) == 1, repo.index()
    return rows[0]


async def settle(repo: Repository) -> list[str]:
    """Two polls: the first sees a change, the second finds it stable and applies it."""
    first = await repo.poll_once()
    return first + await repo.poll_once()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


# --- opening and layouts ---------------------------------------------------------------------


def serving(repo: Repository, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh event loop with ``repo`` started, stopping it afterwards."""

    async def main() -> None:
        await repo.start()
        try:
            await body()
        finally:
            await repo.stop()

    asyncio.run(main())


def test_single_file_is_one_model_version_1(tmp_path: Path) -> None:
    file = put(tmp_path / "adder.onnx", add_model(3))
    repo = Repository.open(file, config=SMALL)

    async def main() -> None:
        assert not repo.running
        await repo.start()
        assert repo.running
        try:
            mv = repo.get("adder")
            assert (mv.name, mv.version, mv.config) == ("adder", "1", SMALL)
            assert await answer(repo, "adder") == 3
            assert repo.versions("adder") == ["1"]
            assert repo.index() == [
                {"name": "adder", "version": "1", "state": "READY", "reason": ""}
            ]
            with pytest.raises(ModelNotFound, match="model 'adder' has no version '2'"):
                repo.get("adder", "2")
            with pytest.raises(ModelNotFound, match=r"unknown model 'other'.*models: adder"):
                repo.get("other")

            put(file, add_model(4))
            assert await settle(repo) == ["adder/1 loaded"]
            assert await answer(repo, "adder") == 4

            file.unlink()
            assert await repo.poll_once() == ["adder/1 unloaded"]
            with pytest.raises(ModelNotReady, match="the model file is gone"):
                repo.get("adder")
        finally:
            await repo.stop()

    asyncio.run(main())


def test_open_refuses_what_is_not_a_model_or_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        Repository.open(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"neither an \.onnx model nor a model repository"):
        Repository.open(tmp_path / "notes.txt")
    put(tmp_path / "flat" / "m.onnx", add_model(1))
    with pytest.raises(InputError, match=r"holds m.onnx directly, so it is not a model repo"):
        Repository.open(tmp_path / "flat")
    version(tmp_path, "m", 1, add_model(1))
    with pytest.raises(InputError, match=r"holds version directories \(1\).*serve its parent"):
        Repository.open(tmp_path / "m")
    with pytest.raises(UsageError, match=r"poll interval \(seconds\) must be positive"):
        Repository.open(tmp_path / "m" / "1" / "model.onnx", poll_interval_s=0)
    with pytest.raises(UsageError, match=r"poll interval \(seconds\) must be a finite number"):
        Repository.open(tmp_path / "m" / "1" / "model.onnx", poll_interval_s=float("inf"))

    (tmp_path / "empty").mkdir()
    empty = Repository.open(tmp_path / "empty")

    async def main() -> None:
        await empty.start()
        assert empty.index() == []
        with pytest.raises(ModelNotFound, match="the repository has no models"):
            empty.get("m")
        await empty.stop()

    asyncio.run(main())


def test_version_policies_pick_the_versions_served(tmp_path: Path) -> None:
    for name in ("latest", "two", "all", "pick"):
        for number in (1, 2, 3):
            version(tmp_path, name, number, add_model(number))
    toml(tmp_path, "two", "[versions]\nlatest = 2\n")
    toml(tmp_path, "all", '[versions]\npolicy = "all"\n')
    toml(tmp_path, "pick", '[versions]\npolicy = "specific"\nspecific = [1, 3]\n')
    (tmp_path / "README.md").write_text("not a model")
    put(tmp_path / ".hidden" / "1" / "model.onnx", add_model(9))
    put(tmp_path / "latest" / "v4" / "model.onnx", add_model(4))  # not a version number
    put(tmp_path / "latest" / ".5" / "model.onnx", add_model(5))  # hidden
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        await repo.start()
        try:
            assert repo.names() == ["all", "latest", "pick", "two"]
            assert repo.versions("latest") == ["3"]
            assert repo.versions("two") == ["2", "3"]
            assert repo.versions("all") == ["1", "2", "3"]
            assert repo.versions("pick") == ["1", "3"]
            assert await answer(repo, "latest") == 3
            assert await answer(repo, "all", "1") == 1
            assert await answer(repo, "pick") == 3
            assert repo.get("two", "2").config.version_policy.latest == 2
            assert [(r["version"], r["state"]) for r in repo.index() if r["name"] == "latest"] == [
                ("1", "UNAVAILABLE"),
                ("2", "UNAVAILABLE"),
                ("3", "READY"),
            ]
            assert row(repo, "pick", "2")["reason"] == "not selected by the version policy"
            with pytest.raises(
                ModelNotFound, match=r"version 2 is not served.*served versions: 1, 3"
            ):
                repo.get("pick", "2")
            with pytest.raises(
                ModelNotFound, match=r"has no version '4'.*versions on disk: 1, 2, 3"
            ):
                repo.get("pick", "4")
            with pytest.raises(ModelNotFound, match="has no version 'x'"):
                repo.get("pick", "x")
            with pytest.raises(ModelNotFound, match="unknown model 'hidden'"):
                repo.versions("hidden")
            assert len(repo.serving()) == 1 + 2 + 3 + 2
        finally:
            await repo.stop()
        assert repo.serving() == []

    asyncio.run(main())


def test_failing_models_are_reported_and_the_others_serve(tmp_path: Path) -> None:
    version(tmp_path, "good", 1, add_model(1))
    version(tmp_path, "corrupt", 1, b"this is not a protobuf model")
    version(tmp_path, "refused", 1, unknown_op_model())
    version(tmp_path, "warmfail", 1, failing_warmup_model())
    version(tmp_path, "badconf", 1, add_model(1))
    toml(tmp_path, "badconf", "max_bach_size = 4\n")
    version(tmp_path, "fallback", 1, add_model(1))
    version(tmp_path, "fallback", 2, b"\x08")  # truncated
    (tmp_path / "empty").mkdir()
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        assert await answer(repo, "good") == 1
        reasons = {r["name"]: (r["state"], r["reason"]) for r in repo.index()}
        assert reasons["good"] == ("READY", "")
        assert reasons["corrupt"][0] == "UNAVAILABLE"
        assert "not an ONNX model" in reasons["corrupt"][1]
        assert "onnxruntime cannot load" in reasons["refused"][1]
        assert "NoSuchOp" in reasons["refused"][1]
        assert "failed its warmup run" in reasons["warmfail"][1]
        assert "unknown key 'max_bach_size'" in reasons["badconf"][1]
        assert reasons["empty"] == (
            "UNAVAILABLE",
            "no version directories (expected empty/<version>/model.onnx)",
        )
        assert all("\n" not in reason for _, reason in reasons.values())
        with pytest.raises(ModelNotReady, match=r"model 'corrupt' is not ready: .*not an ONNX"):
            repo.get("corrupt")
        with pytest.raises(ModelNotReady, match=r"version 1 is not ready: .*unknown key"):
            repo.get("badconf", "1")
        # a failed latest version does not count: the next one down serves
        assert repo.versions("fallback") == ["1"]
        assert "not an ONNX model" in row(repo, "fallback", "2")["reason"]
        with pytest.raises(ModelNotReady, match="version 2 is not ready"):
            repo.get("fallback", "2")

        toml(tmp_path, "badconf", "max_batch_size = 4\n")  # fixed: picked up by polling
        assert await settle(repo) == ["badconf/1 loaded"]
        assert repo.get("badconf").config.max_batch_size == 4

    serving(repo, main)


# --- hot reload ------------------------------------------------------------------------------


def test_hot_reload_swaps_in_a_new_version(tmp_path: Path) -> None:
    version(tmp_path, "a", 1, add_model(1))
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        first = repo.get("a")
        version(tmp_path, "a", 2, add_model(2))
        assert await repo.poll_once() == []  # seen once: may still be copying
        assert row(repo, "a", "2")["reason"] == "waiting for its files to stop changing"
        assert await repo.poll_once() == ["a/2 loaded", "a/1 unloaded"]
        assert await answer(repo, "a") == 2
        assert repo.versions("a") == ["2"]
        await until(lambda: first.executor.closed)

        second = repo.get("a")
        path = tmp_path / "a" / "2" / "model.onnx"
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert await settle(repo) == []  # same bytes: not reloaded
        assert repo.get("a") is second

        put(path, add_model(5))  # the served version's file replaced
        assert await settle(repo) == ["a/2 loaded"]
        assert await answer(repo, "a") == 5
        await until(lambda: second.executor.closed)

    serving(repo, main)


def test_corrupt_new_version_leaves_the_old_one_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version(tmp_path, "a", 1, add_model(1))
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="onnxferry.serve"):
            version(tmp_path, "a", 2, b"garbage")
            assert await settle(repo) == ["a/2 failed"]
        assert await answer(repo, "a") == 1
        assert row(repo, "a", "1") == {
            "name": "a",
            "version": "1",
            "state": "READY",
            "reason": "",
        }
        failed = row(repo, "a", "2")
        assert failed["state"] == "UNAVAILABLE"
        assert "not an ONNX model" in failed["reason"]
        [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "model a version 2 failed to load" in record.getMessage()
        assert "not an ONNX model" in record.getMessage()
        assert await settle(repo) == []  # not retried until the files change

        version(tmp_path, "a", 2, add_model(2))  # fixed
        assert await settle(repo) == ["a/2 loaded", "a/1 unloaded"]
        assert await answer(repo, "a") == 2

        version(tmp_path, "a", 2, b"garbage again")  # the served version's file breaks
        assert await settle(repo) == ["a/2 failed"]
        assert await answer(repo, "a") == 2
        kept = row(repo, "a", "2")
        assert kept["state"] == "READY"
        assert kept["reason"].startswith("serving the previous files; reload failed: ")

    serving(repo, main)


def test_a_file_still_being_written_is_not_loaded(tmp_path: Path) -> None:
    version(tmp_path, "a", 1, add_model(1))
    repo = Repository.open(tmp_path, config=SMALL)
    data = add_model(2).SerializeToString()
    path = tmp_path / "a" / "2" / "model.onnx"

    async def main() -> None:
        path.parent.mkdir()
        path.write_bytes(data[: len(data) // 2])
        assert await repo.poll_once() == []
        with path.open("ab") as f:
            f.write(data[len(data) // 2 :])
        assert await repo.poll_once() == []  # changed since the last scan: still waiting
        assert row(repo, "a", "2")["reason"] == "waiting for its files to stop changing"
        assert await repo.poll_once() == ["a/2 loaded", "a/1 unloaded"]
        assert await answer(repo, "a") == 2

    serving(repo, main)


def test_removed_versions_and_models_are_unloaded(tmp_path: Path) -> None:
    for number in (1, 2):
        version(tmp_path, "all", number, add_model(number))
        version(tmp_path, "latest", number, add_model(number))
    toml(tmp_path, "all", '[versions]\npolicy = "all"\n')
    version(tmp_path, "gone", 1, add_model(7))
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        dropped = repo.get("all", "2")
        shutil.rmtree(tmp_path / "all" / "2")
        shutil.rmtree(tmp_path / "latest" / "2")
        shutil.rmtree(tmp_path / "gone")
        changes = await repo.poll_once()  # removal needs no second look
        assert changes == [
            "gone removed",
            "all/2 unloaded",
            "latest/1 loaded",
            "latest/2 unloaded",
        ]
        assert repo.versions("all") == ["1"]
        with pytest.raises(ModelNotFound, match="has no version '2'"):
            repo.get("all", "2")
        assert [r["version"] for r in repo.index() if r["name"] == "all"] == ["1"]
        assert await answer(repo, "latest") == 1  # the next version down under latest 1
        with pytest.raises(ModelNotFound, match="unknown model 'gone'"):
            repo.get("gone")
        await until(lambda: dropped.executor.closed)

    serving(repo, main)


def test_a_request_in_flight_completes_across_a_swap(tmp_path: Path) -> None:
    version(tmp_path, "slow", 1, slow_model(1.0))
    toml(tmp_path, "slow", "max_batch_size = 0\n")
    repo = Repository.open(tmp_path)
    x = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)

    async def main() -> None:
        old = repo.get("slow")
        # ~100 ms each, one instance: the queue outlasts loading and warming version 2
        requests = [asyncio.create_task(old.executor.infer({"x": x})) for _ in range(6)]
        await asyncio.sleep(0.02)
        version(tmp_path, "slow", 2, slow_model(-1.0))
        assert await settle(repo) == ["slow/2 loaded", "slow/1 unloaded"]
        assert not all(r.done() for r in requests), "the swap came after the requests"
        new = repo.get("slow")
        assert new.version == "2"
        results = await asyncio.gather(*requests)
        for result in results:
            np.testing.assert_array_equal(result.outputs["y"], x)  # served by version 1
        after = await new.executor.infer({"x": x[:2]})
        np.testing.assert_array_equal(after.outputs["y"], x[:2])  # (-1)**8 = 1
        await until(lambda: old.executor.closed)

    serving(repo, main)


def test_ferry_toml_changes_rebuild_executors_and_bad_ones_keep_the_old(tmp_path: Path) -> None:
    version(tmp_path, "a", 1, add_model(1))
    toml(tmp_path, "a", "max_batch_size = 8\n")
    repo = Repository.open(tmp_path)

    async def main() -> None:
        before = repo.get("a")
        toml(tmp_path, "a", "max_batch_size = 2\n")
        assert await settle(repo) == ["a config changed", "a/1 loaded"]
        after = repo.get("a")
        assert after.config.max_batch_size == 2
        assert after.model is before.model  # same file: only the executor is new
        assert after.executor is not before.executor

        toml(tmp_path, "a", "max_batch_size = -1\n")
        assert await settle(repo) == ["a config failed"]
        assert repo.get("a") is after
        reason = row(repo, "a", "1")["reason"]
        assert reason.startswith("serving with the previous settings; ")
        assert "max_batch_size must be >= 0" in reason

    serving(repo, main)


def test_the_poll_loop_reloads_in_the_background_and_survives_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    version(tmp_path, "a", 1, add_model(1))
    repo = Repository.open(tmp_path, poll_interval_s=0.02, config=SMALL)
    scan = repo._scan
    calls = 0

    def flaky_scan() -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first poll after start
            raise OSError("disk hiccup")
        return scan()

    monkeypatch.setattr(repo, "_scan", flaky_scan)

    async def main() -> None:
        version(tmp_path, "a", 2, add_model(2))
        await until(lambda: repo.versions("a") == ["2"])
        assert await answer(repo, "a") == 2

    serving(repo, main)
    assert calls > 3
    assert any("poll failed" in r.getMessage() for r in caplog.records)


# --- repository API --------------------------------------------------------------------------


def test_load_and_unload(tmp_path: Path) -> None:
    version(tmp_path, "a", 1, add_model(1))
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        await repo.start()
        try:
            served = repo.get("a")
            await repo.unload("a")
            assert served.executor.closed
            with pytest.raises(ModelNotReady, match="model 'a' is not ready: unloaded"):
                repo.get("a")
            with pytest.raises(ModelNotReady, match="version 1 is not ready: unloaded"):
                repo.get("a", "1")
            assert repo.index() == [
                {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
            ]
            version(tmp_path, "a", 2, add_model(2))
            assert await settle(repo) == []  # polling leaves it unloaded

            await repo.load("a")  # no waiting for stable files
            assert await answer(repo, "a") == 2

            version(tmp_path, "b", 1, add_model(3))  # a new model, loaded on request
            await repo.load("b")
            assert await answer(repo, "b") == 3

            version(tmp_path, "a", 3, b"corrupt")
            with pytest.raises(ModelLoadError, match=r"version 3 failed to load: .*not an ONNX"):
                await repo.load("a")
            assert await answer(repo, "a") == 2  # the old version keeps serving

            with pytest.raises(ModelNotFound, match="unknown model 'missing'"):
                await repo.load("missing")
            with pytest.raises(ModelNotFound, match="unknown model 'missing'"):
                await repo.unload("missing")
        finally:
            await repo.stop()
        assert not repo.running
        with pytest.raises(ModelNotReady, match="stopping"):
            await repo.load("a")
        with pytest.raises(ModelNotReady, match="stopping"):
            repo.get("a")

    asyncio.run(main())


def test_external_data_copied_over_a_served_version_neither_kills_nor_changes_it(
    tmp_path: Path,
) -> None:
    """ONNX Runtime maps a model's external data from its files. A served version's data
    file truncated in place (``cp`` over it) killed the whole server with SIGBUS at its next
    run, and one overwritten changed the answers before any reload. The server's sessions
    hold their own copy: the version answers as loaded until the poll loads the new files."""
    folder = tmp_path / "a" / "1"
    folder.mkdir(parents=True)
    onnx.save(add_model(1), str(folder / "model.onnx"), save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)  # fmt: skip
    data = folder / "model.onnx.data"
    repo = Repository.open(tmp_path, config=SMALL)

    async def main() -> None:
        assert await answer(repo, "a") == 1
        os.truncate(data, 0)  # what cp does first
        assert await answer(repo, "a") == 1
        data.write_bytes(np.full(4, 5, np.float32).tobytes())
        assert await answer(repo, "a") == 1
        assert await settle(repo) == ["a/1 loaded"]
        assert await answer(repo, "a") == 5

    serving(repo, main)
