"""`--provider openvino`: the OpenVINO runtime behind the session slice ferry uses
(``ovsession``), in bench, compare and serve, at fp32 and fp16.

OpenVINO runs in this process here (the package target keeps it in a child process; importing
and running it in-process did not disturb pytest's capture when tried: a test that compiled
and ran a model, followed by tests/test_cli.py's capsys tests, passed). `ferry serve` runs as
a real server process on a loopback port.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from onnxferry.compare import compare
from onnxferry.errors import ModelLoadError, UsageError
from onnxferry.model import Model
from onnxferry.ovsession import OpenVinoSession
from onnxferry.runtime import OrtRunner, SessionConfig, create_session, session_providers
from onnxferry.serve.config import ModelConfig
from tests.helpers import free_port

from .helpers import Run, conv_bn_mlp, mlp, onnx_text, save, wait_ready

pytest.importorskip("openvino", reason="the openvino package is not installed")


@pytest.fixture
def net(tmp_path: Path) -> Path:
    return save(conv_bn_mlp(), tmp_path / "net.onnx")


def _x(rows: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 8, 8)).astype(np.float32)


def test_session_runs_the_model_like_onnxruntime(net: Path) -> None:
    model = Model.load(net)
    runner = OrtRunner(model, config=SessionConfig(provider="openvino", threads=1))
    assert runner.provider == "openvino"
    session = runner.session
    assert isinstance(session, OpenVinoSession) and session.precision == "f32"
    assert session.get_providers() == ["OpenVINOExecutionProvider"]
    assert [(a.name, a.shape, a.type) for a in session.get_inputs()] == [
        ("x", ["N", 3, 8, 8], "tensor(float)")
    ]
    assert [(a.name, a.type) for a in session.get_outputs()] == [("y", "tensor(float)")]
    x = _x()
    want = OrtRunner(model).run({"x": x})["y"]
    np.testing.assert_allclose(runner.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    # open dims stay open: another batch size on the same compiled model
    (other,) = session.run(None, {"x": _x(rows=5)})
    assert other.shape == (5, 5)


def test_concurrent_runs_each_get_their_own_request(net: Path) -> None:
    session = create_session(Model.load(net), SessionConfig(provider="openvino"))
    inputs = [_x(seed=k) for k in range(8)]
    alone = [session.run(["y"], {"x": x})[0] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda x: session.run(["y"], {"x": x})[0], inputs * 3))
    for k, got in enumerate(together):
        np.testing.assert_array_equal(got, alone[k % 8])


def test_fp16_sets_the_precision_hint(net: Path) -> None:
    session = create_session(Model.load(net), SessionConfig(provider="openvino", precision="fp16"))
    assert isinstance(session, OpenVinoSession)
    # OpenVINO's CPU plugin picks f16, or bf16 / f32 on CPUs without native fp16
    assert session.precision in ("f16", "bf16", "f32")
    assert session.get_provider_options()["OpenVINOExecutionProvider"]["precision"] in (
        "f16",
        "bf16",
        "f32",
    )


def test_int8_is_refused_in_one_line(ferry: Run, net: Path) -> None:
    with pytest.raises(UsageError, match="openvino takes no int8 precision setting"):
        create_session(Model.load(net), SessionConfig(provider="openvino", precision="int8"))
    code, out, err = ferry("bench", net, "--provider", "openvino", "--precision", "int8")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "QDQ model" in err


def test_a_model_openvino_cannot_read_is_one_line(tmp_path: Path) -> None:
    mystery = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17, "mystery.ops" : 1]>
        g (float[2] x) => (float[2] y) { y = mystery.ops.Mystery(x) }
        """,
        check=False,
    )
    model = Model.load(save(mystery, tmp_path / "m.onnx"))
    with pytest.raises(ModelLoadError, match=r"^openvino cannot load .*m\.onnx: ") as e:
        create_session(model, SessionConfig(provider="openvino", fallback=False))
    assert "\n" not in str(e.value) and "Exception from src" not in str(e.value)


def test_bench_reports_the_openvino_rows(ferry: Run, net: Path) -> None:
    assert "openvino" in session_providers()
    code, out, err = ferry(
        "bench", net, "--provider", "cpu,openvino", "--iterations", "20", "--warmup", "2", "--json"
    )
    assert code == 0, err
    suite = json.loads(out)["result"]
    assert [r["provider"] for r in suite["results"]] == ["cpu", "openvino"]
    assert all(r["iterations"] == 20 and r["p50_ms"] > 0 for r in suite["results"])
    assert suite["settings"]["precision"] == "fp32"
    assert suite["skipped"] == []


def test_compare_cpu_against_openvino(ferry: Run, net: Path) -> None:
    code, out, err = ferry(
        "compare", net, "--provider", "cpu", "--provider-b", "openvino", "--samples", "2", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["result"]["candidate"].endswith("@openvino")
    assert not any("was not used" in n for n in report["notes"])


def test_compare_at_fp16_says_what_the_precision_loses(net: Path) -> None:
    fp32 = compare(net, provider_b="openvino", samples=2)
    fp16 = compare(net, provider_b="openvino", precision="fp16", samples=2, bisect_on_failure=False)
    worst32 = max(o.max_abs or 0.0 for o in fp32.result.outputs)
    worst16 = max(o.max_abs or 0.0 for o in fp16.result.outputs)
    assert worst32 < 1e-3
    session = create_session(Model.load(net), SessionConfig(provider="openvino", precision="fp16"))
    assert isinstance(session, OpenVinoSession)
    if session.precision != "f32":  # a CPU without any low precision keeps f32
        assert worst16 > 10 * worst32


def test_ferry_toml_picks_the_provider(tmp_path: Path) -> None:
    (tmp_path / "ferry.toml").write_text('provider = "openvino"\nprecision = "fp16"\n')
    config = ModelConfig.from_toml(tmp_path / "ferry.toml")
    assert (config.provider, config.precision) == ("openvino", "fp16")
    (tmp_path / "ferry.toml").write_text('provider = "openvino"\nprecision = "int8"\n')
    with pytest.raises(UsageError, match=r"ferry\.toml: openvino takes no int8"):
        ModelConfig.from_toml(tmp_path / "ferry.toml")
    (tmp_path / "ferry.toml").write_text("provider = 3\n")
    with pytest.raises(UsageError, match="provider must be a string"):
        ModelConfig.from_toml(tmp_path / "ferry.toml")


def test_serve_answers_v2_requests_on_openvino(tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "mlp.onnx")
    port = free_port()
    ferry = [sys.executable, "-m", "onnxferry", "-v"]
    command = [*ferry, "serve", str(model), "--port", str(port), "--provider", "openvino"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
        tensor = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}
        body = {"inputs": [tensor]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        got = np.array(output["data"], np.float32).reshape(output["shape"])
        want = OrtRunner(Model.load(model)).run({"x": x})["probs"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert b"running the OpenVINO runtime directly" in err  # the -v debug line
