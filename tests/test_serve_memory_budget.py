"""The memory budget: three models of known size and a budget that fits two, served by a real
app (in process). The least recently used idle one is unloaded and the index says so; a
request to it reloads it and answers; a deadline shorter than the reload gets 504. A version
with a request in flight is never unloaded. Arena settings reach the sessions."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.errors import UsageError
from onnxferry.model import Model
from onnxferry.serve.app import ServeSettings
from onnxferry.serve.budget import UNLOADED, MemoryBudget
from onnxferry.serve.config import ModelConfig, RepositoryConfig
from onnxferry.serve.executor import ModelExecutor
from tests.helpers import save
from tests.serve_asgi import InProcess, in_process

WIDTH, OUT = 2048, 6144
WEIGHTS = WIDTH * OUT * 4  # 48 MiB of float32 per model
SMALL = "instances = 1\nintra_op_threads = 1\n"


def heavy(k: float, out: int = OUT) -> onnx.ModelProto:
    """y = sum(x @ W) with W[WIDTH, out] = k everywhere (48 MiB of weights by default), so
    y = k * out * sum(x)."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("ReduceSum", ["m", "axes"], ["y"]),
        ],
        "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(np.full((WIDTH, out), k, np.float32), "w"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


X = [1.0 / WIDTH] * WIDTH  # sum(x) == 1, so y == k * OUT


def body(timeout_us: int | None = None) -> bytes:
    request: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": X}]
    }
    if timeout_us is not None:
        request["parameters"] = {"timeout": timeout_us}
    return json.dumps(request).encode()


def states(app: InProcess) -> dict[str, tuple[str, int]]:
    status, data = app.request("POST", "/v2/repository/index")
    assert status == 200, data
    return {r["name"]: (r["state"], r["memory_bytes"]) for r in json.loads(data)}


def answer(app: InProcess, name: str) -> float:
    status, data = app.request("POST", f"/v2/models/{name}/infer", body())
    assert status == 200, data
    return float(json.loads(data)["outputs"][0]["data"][0])


def wait_for(app: InProcess, name: str, state: str, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while states(app)[name][0] != state:
        assert time.monotonic() < end, states(app)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("budget") / "repo"
    for i in range(3):
        save(heavy(float(i + 1)), repo / f"m{i}" / "1" / "model.onnx")
        (repo / f"m{i}" / "ferry.toml").write_text(SMALL)
    # Two fit, three do not: each measures about its 48 MiB of weights (a few MiB either way;
    # the first session of a process also carries ONNX Runtime's setup, about 10 MiB).
    (repo / "ferry.toml").write_text(f"memory_budget = {int(WEIGHTS * 2.6)}\n")
    return repo


def test_the_least_recently_used_idle_model_is_unloaded_and_reloaded_on_demand(
    repo: Path,
) -> None:
    with in_process(repo, ServeSettings(repository_api=True)) as app:
        budget = app.app.repository.budget
        assert budget is not None and budget.limit == int(WEIGHTS * 2.6)
        # loaded in name order: the third load pushed out m0, the least recently used
        found = states(app)
        assert [found[f"m{i}"][0] for i in range(3)] == [UNLOADED, "READY", "READY"]
        for _, memory in found.values():  # measured at load: about the weights
            assert 0.8 * WEIGHTS < memory < 1.5 * WEIGHTS, found
        assert budget.used() <= budget.limit
        assert _gauge(app, "m0") == 0 and _gauge(app, "m1") == found["m1"][1]

        # a request to m0 reloads it (and pushes out m1, now the least recently used)
        assert answer(app, "m0") == pytest.approx(1.0 * OUT, rel=1e-4)
        found = states(app)
        assert [found[f"m{i}"][0] for i in range(3)] == ["READY", UNLOADED, "READY"]
        assert budget.used() <= budget.limit

        # a deadline shorter than the reload: 504, and the reload goes on for the next one
        status, error = app.error_of("POST", "/v2/models/m1/infer", body(timeout_us=1000))
        assert status == 504, error
        assert "unloaded to stay within the memory budget" in error
        wait_for(app, "m1", "READY")
        assert states(app)["m2"][0] == UNLOADED  # m2 was idle longest
        assert answer(app, "m1") == pytest.approx(2.0 * OUT, rel=1e-4)
        assert answer(app, "m2") == pytest.approx(3.0 * OUT, rel=1e-4)
        assert budget.reloads == 3 and budget.unloads == 4
        # metadata, config and readiness answer whatever the state
        unloaded = next(n for n, (s, _) in states(app).items() if s == UNLOADED)
        assert app.request("GET", f"/v2/models/{unloaded}/ready")[0] == 200
        assert app.request("GET", f"/v2/models/{unloaded}")[0] == 200


def _gauge(app: InProcess, model: str) -> float:
    text = app.request("GET", "/metrics")[1].decode()
    found = re.search(
        rf'^ferry_model_memory_bytes{{model="{model}",version="1"}} (\S+)$', text, re.MULTILINE
    )
    assert found is not None, text
    return float(found[1])


def test_a_model_with_a_request_in_flight_is_never_unloaded(tmp_path: Path) -> None:
    """A budget of one byte: each load or reload unloads every idle version; a busy one
    stays."""
    path = save(heavy(1.0, out=512), tmp_path / "heavy.onnx")
    config = ModelConfig(instances=1, intra_op_threads=1, inline_max_ms=0, max_batch_size=0)

    async def scenario() -> None:
        busy, idle, new = (ModelExecutor(Model.load(path), config) for _ in range(3))
        budget = MemoryBudget(1)
        for executor in (busy, idle):
            budget.track(executor)
        assert not busy.loaded  # the budget of one byte unloaded the first one at once
        await busy.infer({"x": np.full((1, WIDTH), 1 / WIDTH, np.float32)})  # reloads it
        assert busy.loaded and not idle.loaded
        await idle.infer({"x": np.full((1, WIDTH), 1 / WIDTH, np.float32)})
        assert idle.loaded and not busy.loaded
        await busy.infer({"x": np.full((1, WIDTH), 1 / WIDTH, np.float32)})
        many = np.full((256, WIDTH), 1 / WIDTH, np.float32)
        running = asyncio.create_task(busy.infer({"x": many}))
        await asyncio.sleep(0)  # admitted: queued or running in its worker thread
        assert not busy.idle
        assert budget.track(new) == []  # only busy is loaded, and it is busy
        assert busy.loaded
        result = await running
        assert result.outputs["y"][:, 0] == pytest.approx(512, rel=1e-4)
        assert busy.idle
        for executor in (busy, idle, new):
            await executor.close()

    asyncio.run(scenario())


def test_arena_settings_reach_the_sessions(tmp_path: Path) -> None:
    path = save(heavy(1.0, out=512), tmp_path / "heavy.onnx")
    x = {"x": np.full((1, WIDTH), 1 / WIDTH, np.float32)}

    async def run(config: ModelConfig) -> Any:
        executor = ModelExecutor(Model.load(path), config)
        try:
            result = await executor.infer(x)
            assert result.outputs["y"][0, 0] == pytest.approx(512, rel=1e-4)
            return executor._instances[0].session.get_session_options()
        finally:
            await executor.close()

    off = asyncio.run(run(ModelConfig(instances=1, arena=False)))
    assert off.enable_cpu_mem_arena is False
    shared = asyncio.run(run(ModelConfig(instances=1, arena_extend_strategy="same_as_requested")))
    assert shared.enable_cpu_mem_arena is True
    assert shared.get_session_config_entry("session.use_env_allocators") == "1"
    default = asyncio.run(run(ModelConfig(instances=1)))
    assert default.enable_cpu_mem_arena is True


def test_bad_budget_and_arena_settings_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "ferry.toml").write_text('memory_budget = "2GiB"\n')
    assert RepositoryConfig.read(tmp_path).memory_budget == 2 << 30
    (tmp_path / "ferry.toml").write_text('memory_budget = "plenty"\n')
    with pytest.raises(UsageError, match="memory_budget must be a size, got 'plenty'"):
        RepositoryConfig.read(tmp_path)
    (tmp_path / "ferry.toml").write_text("max_batch_size = 4\n")
    with pytest.raises(UsageError, match="unknown key 'max_batch_size'"):
        RepositoryConfig.read(tmp_path)
    with pytest.raises(UsageError, match="arena_extend_strategy must be one of"):
        ModelConfig.from_dict({"arena_extend_strategy": "kBiggest"})
    with pytest.raises(UsageError, match="arena = false turns it off"):
        ModelConfig.from_dict({"arena": False, "arena_extend_strategy": "same_as_requested"})
