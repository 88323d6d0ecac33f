"""ONNX Runtime sessions: providers by short name, fallback, threads, levels, the Runner."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxferry.errors import FeedError, ModelLoadError, ProviderError, UsageError
from onnxferry.model import Model
from onnxferry.runtime import (
    OrtRunner,
    Runner,
    SessionConfig,
    available_providers,
    create_session,
    provider_name,
    runtime_limits,
)
from tests.helpers import RELU, mlp, onnx_text


def test_provider_short_names() -> None:
    assert provider_name("cpu") == "CPUExecutionProvider"
    assert provider_name("CUDA") == "CUDAExecutionProvider"
    assert provider_name("tensorrt") == "TensorrtExecutionProvider"
    assert provider_name("CPUExecutionProvider") == "CPUExecutionProvider"
    with pytest.raises(UsageError, match="unknown execution provider 'tpu'"):
        provider_name("tpu")
    assert "cpu" in available_providers()


def _missing_provider() -> str:
    for short in ("tensorrt", "cuda", "rocm", "openvino", "coreml"):
        if short not in available_providers():
            return short
    pytest.skip("every accelerator provider is installed; no missing one to fall back from")


def test_missing_provider_falls_back_to_cpu_with_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = _missing_provider()
    with caplog.at_level(logging.WARNING, logger="onnxferry"):
        runner = OrtRunner(Model.from_proto(onnx_text(RELU)), provider=missing)
    assert runner.provider == "cpu"
    assert f"provider {missing!r} is not in this onnxruntime build" in caplog.text
    assert "falling back to cpu" in caplog.text


def test_missing_provider_without_fallback_is_an_error() -> None:
    missing = _missing_provider()
    with pytest.raises(ProviderError, match="not in this onnxruntime build"):
        create_session(Model.from_proto(onnx_text(RELU)), SessionConfig(missing, fallback=False))


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "layout", "all"])
def test_graph_levels_and_threads(level: str) -> None:
    model = Model.from_proto(mlp())
    runner = OrtRunner(model, config=SessionConfig(threads=1, graph_optimization=level))
    x = np.ones((2, 4), np.float32)
    reference = OrtRunner(model).run({"x": x})["probs"]
    np.testing.assert_allclose(runner.run({"x": x})["probs"], reference, rtol=1e-5)


def test_bad_session_settings() -> None:
    model = Model.from_proto(onnx_text(RELU))
    with pytest.raises(UsageError, match="graph optimization level 'max'"):
        create_session(model, SessionConfig(graph_optimization="max"))
    for threads in (0, 2**40):  # past 2**31 ONNX Runtime's binding raised a TypeError
        with pytest.raises(UsageError, match=r"threads must be from 1 to 1024, got"):
            create_session(model, SessionConfig(threads=threads))
    with pytest.raises(UsageError, match=r"inter-op threads must be from 1 to 1024, got -1"):
        create_session(model, SessionConfig(inter_threads=-1))


def test_runner_protocol_and_validation() -> None:
    runner = OrtRunner(Model.from_proto(onnx_text(RELU)))
    assert isinstance(runner, Runner)
    assert runner.name.endswith("@cpu")
    out = runner.run({"x": np.array([[-1, 2, -3, 4]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[0, 2, 0, 4]])
    with pytest.raises(FeedError, match="'x' expects dtype float32"):
        runner.run({"x": np.zeros((1, 4), np.int32)})


def test_runner_handles_bfloat16_and_strings() -> None:
    import ml_dtypes

    model = onnx_text("""
    <ir_version: 10, opset_import: ["" : 21]>
    g (bfloat16[n] b, string[n] s) => (float[n] f, string[n] s2) {
        f = Cast<to = 1>(b)
        s2 = Identity(s)
    }
    """)
    runner = OrtRunner(Model.from_proto(model))
    b = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    out = runner.run({"b": b, "s": np.array(["a", "bc"], dtype=object)})
    np.testing.assert_array_equal(out["f"], [1.5, -2.0])
    assert list(out["s2"]) == ["a", "bc"]


def test_runner_returns_bfloat16_outputs() -> None:
    import ml_dtypes

    model = onnx_text("""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[n] f) => (bfloat16[n] b) { b = Cast<to = 16>(f) }
    """)
    out = OrtRunner(Model.from_proto(model)).run({"f": np.array([1.5, -2.0], np.float32)})
    assert out["b"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["b"].astype(np.float32), [1.5, -2.0])


def test_unloadable_model_is_one_clear_error() -> None:
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="custom.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("custom.example", 1)],
        ir_version=10,
    )
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load") as info:
        create_session(Model.from_proto(proto))
    message = str(info.value)
    assert "\n" not in message
    assert "NoSuchOp" in message
    assert "onnxruntime_src" not in message and "[ONNXRuntimeError]" not in message


def test_runtime_limits_match_what_onnxruntime_loads() -> None:
    max_ir, max_opset = runtime_limits()
    assert max_ir >= 10 and max_opset >= 21

    def loads(ir: int, opset: int) -> bool:
        proto = onnx_text(RELU, check=False)
        proto.ir_version = ir
        proto.opset_import[0].version = opset
        try:
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            return False
        return True

    assert loads(max_ir, max_opset)
    assert not loads(max_ir + 1, max_opset)
    assert not loads(max_ir, max_opset + 1)


def test_blas_runs_on_one_thread_in_the_block_and_as_before_after() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")  # its own OpenBLAS loaded before the first block
    from onnxferry.runtime import blas_on_one_thread

    def blas_threads() -> list[int]:
        return [
            p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
        ]

    before = blas_threads()
    assert before, "numpy's BLAS is found"
    with blas_on_one_thread():
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


def test_explainers_run_with_blas_on_one_thread() -> None:
    """shap's and lime's regressions beside the model's runs: one BLAS thread while a library
    call runs (``quiet``)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")  # as shap and lime load it before their first call
    from onnxferry.explain.methods import quiet

    notes: list[str] = []
    with quiet(notes):
        inside = {
            p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
        }
    assert inside == {1}
