"""Device pools (``--devices``): parsing and its one-line errors, and real pools of cpu
sessions in serve's executor, batch and bench; a pool of GPUs where CUDA is available."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxferry.devices import (
    Device,
    SessionPool,
    check_pool,
    device_session,
    device_session_config,
    parse_devices,
)
from onnxferry.doctor import gpu_list
from onnxferry.errors import ProviderError, UsageError
from onnxferry.model import Model
from onnxferry.runtime import SessionConfig, available_providers
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.executor import ModelExecutor
from tests.helpers import Run, mlp, save, wait_ready
from tests.test_serve_executor import slow_model

FERRY = Path(sys.executable).with_name("ferry")
GPU = "cuda" in available_providers()


def chain(nodes: int = 12, width: int = 64) -> onnx.ModelProto:
    """x[N, width] through identity MatMuls: a run takes long enough for threads to overlap."""
    return slow_model(nodes, width)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ferry: error: "), err
    return lines[0]


# --- parsing ------------------------------------------------------------------------------


def test_parse_devices_reads_kinds_and_indices() -> None:
    assert parse_devices("cuda:0,cuda:1") == [Device("cuda", 0), Device("cuda", 1)]
    assert parse_devices(["tensorrt:2"]) == [Device("tensorrt", 2)]
    assert [str(d) for d in parse_devices(" cpu , cpu ")] == ["cpu:0", "cpu:1"]
    assert [str(d) for d in parse_devices("cpu:1,cpu")] == ["cpu:1", "cpu:0"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gpu:0", "unknown device kind 'gpu'"),
        ("cuda", "device 'cuda' needs an index"),
        ("cuda:x", "the index must be a whole number"),
        ("cuda:-1", "the index must be a whole number"),
        ("cuda:0,cuda:0", "device cuda:0 is listed twice"),
        ("cuda:0,cpu", "mix cpu and cuda"),
        ("cuda:0,", "holds an empty entry"),
    ],
)
def test_parse_devices_refuses_bad_lists_in_one_line(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as caught:
        parse_devices(text)
    assert "\n" not in str(caught.value)


def test_device_session_config_sets_device_id_and_no_fallback() -> None:
    config = device_session_config(SessionConfig(threads=2, fallback=True), Device("cuda", 1))
    assert (config.provider, dict(config.provider_options), config.fallback) == (
        "cuda",
        {"device_id": 1},
        False,
    )
    on_cpu = device_session_config(SessionConfig(), Device("cpu", 3))
    assert on_cpu.provider == "cpu" and dict(on_cpu.provider_options) == {}


@pytest.mark.skipif(GPU, reason="this onnxruntime build has CUDA")
def test_a_gpu_device_missing_from_the_build_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"^cuda:1: provider 'cuda' is not in this"):
        check_pool(parse_devices("cuda:1"))
    model = Model.from_proto(mlp())
    with pytest.raises(ProviderError, match=r"^cuda:1: provider 'cuda' is not in this"):
        device_session(model, SessionConfig(), Device("cuda", 1))


def test_session_pool_takes_turns() -> None:
    model = Model.from_proto(mlp())
    pool = SessionPool(
        [device_session(model, SessionConfig(), d) for d in parse_devices("cpu,cpu")]
    )
    x = np.ones((2, 4), np.float32)
    for _ in range(6):
        pool.run(None, {"x": x})
    assert pool.runs == [3, 3]


# --- serve ----------------------------------------------------------------------------------


def _serve_spread(devices: tuple[str, ...], requests: int) -> tuple[list[int], dict[str, int]]:
    model = Model.from_proto(chain())
    executor = ModelExecutor(model, ModelConfig(devices=devices, max_batch_size=4), cores=2)
    executor.warmup()
    assert [str(d) for d in executor.devices] == [str(d) for d in parse_devices(devices)]
    executor.instance_runs = [0] * executor.instances  # the warmup runs are no batches
    x = np.ones((1, 64), np.float32)

    async def drive() -> None:
        for _ in range(requests):  # one at a time: turns alone spread them
            await executor.infer({"x": x})
        results = await asyncio.gather(*(executor.infer({"x": x}) for _ in range(4 * requests)))
        assert all(np.allclose(r.outputs["y"], x) for r in results)
        await executor.close()

    asyncio.run(drive())
    return executor.instance_runs, executor.device_runs()


def test_serve_executor_spreads_batches_over_a_cpu_pool() -> None:
    runs, per_device = _serve_spread(("cpu", "cpu"), 10)
    assert len(runs) == 2 and min(runs) >= 5, runs  # 10 single requests alone make 5 + 5
    assert set(per_device) == {"cpu:0", "cpu:1"}


def test_serve_pool_instances_per_device_interleave() -> None:
    model = Model.from_proto(mlp())
    config = ModelConfig(devices=("cpu:0", "cpu:1"), instances=2)
    executor = ModelExecutor(model, config, cores=4)
    assert [str(d) for d in executor.devices] == ["cpu:0", "cpu:1", "cpu:0", "cpu:1"]
    assert (executor.instances, executor.threads) == (4, 1)
    asyncio.run(executor.close())


def test_ferry_toml_devices_are_checked(tmp_path: Path) -> None:
    file = tmp_path / "ferry.toml"
    file.write_text('devices = ["cpu", "cpu"]\n')
    assert ModelConfig.from_toml(file).devices == ("cpu", "cpu")
    file.write_text('devices = "cuda:0"\n')
    with pytest.raises(UsageError, match="devices must be a list of strings"):
        ModelConfig.from_toml(file)
    file.write_text('devices = ["cuda:0", "cpu"]\n')
    with pytest.raises(UsageError, match="mix cpu and cuda"):
        ModelConfig.from_toml(file)
    with pytest.raises(UsageError, match="provider 'openvino' and devices on cpu disagree"):
        ModelConfig(provider="openvino", devices=("cpu",))


def test_ferry_serve_devices_makes_one_instance_per_device(tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "mlp.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(FERRY), "serve", str(path), "--port", str(port), "--devices", "cpu,cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/v2/models/mlp/config") as r:
            config = json.load(r)
        assert config["instance_group"][0]["count"] == 2
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        for _ in range(6):  # one at a time: turns alone spread them over the pool
            request = urllib.request.Request(
                f"{base}/v2/models/mlp/infer", json.dumps(body).encode(), method="POST"
            )
            with urllib.request.urlopen(request) as r:
                assert r.status == 200
        with urllib.request.urlopen(f"{base}/v2/models/mlp/stats") as r:
            (stats,) = json.load(r)["model_stats"]
        per_device = {d["device"]: d["execution_count"] for d in stats["device_stats"]}
        assert set(per_device) == {"cpu:0", "cpu:1"} and min(per_device.values()) >= 1
        assert sum(per_device.values()) == stats["execution_count"] == 6
        with urllib.request.urlopen(f"{base}/metrics") as r:
            metrics = r.read().decode()
        for device, count in per_device.items():
            series = f'ferry_device_batches_total{{device="{device}",model="mlp",version="1"}}'
            assert f"{series} {float(count)}" in metrics, metrics
    finally:
        process.kill()
        process.communicate()


# --- batch and bench --------------------------------------------------------------------


def test_batch_runs_one_session_per_device(ferry: Run, tmp_path: Path) -> None:
    path = save(chain(width=128), tmp_path / "chain.onnx")  # ~1 ms a batch: runs overlap
    np.save(tmp_path / "x.npy", np.ones((64 * 40, 128), np.float32))
    code, out, err = ferry(
        "batch", path, tmp_path / "x.npy", "-o", tmp_path / "out",
        "--batch-size", 64, "--devices", "cpu,cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    note = next(n for n in report["notes"] if n.startswith("batches per device: "))
    counts = dict(
        part.rsplit(" ", 1) for part in note.removeprefix("batches per device: ").split(", ")
    )
    assert set(counts) == {"cpu:0", "cpu:1"}
    assert sum(int(n) for n in counts.values()) == 40 and min(int(n) for n in counts.values()) > 0
    assert any("2 cpu devices are 2 sessions" in n for n in report["notes"])
    assert report["result"]["workers"] == 2


def test_batch_devices_refuse_workers_and_ray(ferry: Run, tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((8, 4), np.float32))
    base = ["batch", path, tmp_path / "x.npy", "-o", tmp_path / "out", "--devices", "cpu,cpu"]
    code, _, err = ferry(*base, "--workers", 2)
    assert code == 2 and "--workers and --devices exclude each other" in _one_error_line(err)
    code, _, err = ferry(*base, "--engine", "ray")
    assert code == 2 and "--devices runs on the local engine" in _one_error_line(err)


def test_bench_runs_each_device_and_all_together(ferry: Run, tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "mlp.onnx")
    code, out, err = ferry(
        "bench", path, "--devices", "cpu,cpu", "--iterations", 20, "--warmup", 1, "--json"
    )
    assert code == 0, err
    rows = json.loads(out)["result"]["results"]
    assert [(r["provider"], r["concurrency"]) for r in rows] == [
        ("cpu:0", 1),
        ("cpu:1", 1),
        ("cpu:0+cpu:1", 2),
    ]
    assert all(r["iterations"] == 20 and r["samples_per_s"] > 0 for r in rows), rows
    assert any("cpu:0+cpu:1: every device at once" in n for n in json.loads(out)["notes"])


@pytest.mark.skipif(GPU, reason="this onnxruntime build has CUDA")
@pytest.mark.parametrize("verb", ["serve", "batch", "bench"])
def test_cuda_devices_on_a_cpu_build_exit_2_in_one_line(
    ferry: Run, tmp_path: Path, verb: str
) -> None:
    path = save(mlp(), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((8, 4), np.float32))
    args = {
        "serve": ["serve", path, "--port", "0"],
        "batch": ["batch", path, tmp_path / "x.npy", "-o", tmp_path / "out"],
        "bench": ["bench", path, "--iterations", 2],
    }[verb]
    code, _, err = ferry(*args, "--devices", "cuda:0")
    assert code == 2
    assert "cuda:0: provider 'cuda' is not in this onnxruntime build" in _one_error_line(err)
    code, _, err = ferry(*args, "--devices", "cuda:0,cuda:0")
    assert code == 2 and "cuda:0 is listed twice" in _one_error_line(err)


# --- GPUs -----------------------------------------------------------------------------------


@pytest.mark.skipif(not GPU, reason="needs onnxruntime-gpu with CUDAExecutionProvider")
def test_a_cuda_pool_spreads_batches_over_the_gpus() -> None:
    gpus = len(gpu_list()) or 1
    devices = tuple(f"cuda:{i}" for i in range(gpus))
    runs, per_device = _serve_spread(devices, 4 * gpus)
    assert set(per_device) == set(devices) and min(runs) > 0, per_device
