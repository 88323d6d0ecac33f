"""ONNX Runtime sessions: providers by short name, fallback, threads, levels, the Runner."""

from __future__ import annotations

import logging
import os
from pathlib import Path

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


# --- own_weights: a session's own copy of the external data ----------------------------------


def _add_external(
    folder: Path, weights: dict[str, np.ndarray], *, one_file: bool, location: str = "w.bin"
) -> Path:
    """y = x + sum of ``weights`` (float[1, 4] each), every initializer in external data."""
    from onnx import numpy_helper, save_model

    names = list(weights)
    nodes, previous = [], "x"
    for i, name in enumerate(names):
        out = "y" if i == len(names) - 1 else f"h{i}"
        nodes.append(helper.make_node("Add", [previous, name], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "adds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (folder / Path(location).parent).mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=one_file,
               location=location, size_threshold=0)  # fmt: skip
    return path


def _run(session: ort.InferenceSession) -> np.ndarray:
    return np.asarray(session.run(None, {"x": np.zeros((1, 4), np.float32)})[0])


@pytest.mark.parametrize(
    ("one_file", "location"), [(True, "w.bin"), (True, "weights/w.bin"), (False, "w.bin")]
)
def test_own_weights_survive_their_files_truncated_and_overwritten(
    tmp_path: Path, one_file: bool, location: str
) -> None:
    """ONNX Runtime maps external data from the files it is given the path of; an Add reads
    the mapping at every run, so a file truncated in place killed the process (SIGBUS) and one
    overwritten changed the answers. ``own_weights`` hands it the files' bytes to copy."""
    weights = {"a": np.arange(4, dtype=np.float32).reshape(1, 4), "b": np.ones((1, 4), np.float32)}
    model = Model.load(_add_external(tmp_path, weights, one_file=one_file, location=location))
    assert len(model.external_files) == (1 if one_file else 2)
    session = create_session(model, SessionConfig(own_weights=True))
    want = weights["a"] + weights["b"]
    np.testing.assert_array_equal(_run(session), want)
    for file in model.external_files:
        size = file.stat().st_size
        os.truncate(file, 0)
        np.testing.assert_array_equal(_run(session), want)
        file.write_bytes(b"\x07" * size)
        np.testing.assert_array_equal(_run(session), want)


def test_own_weights_leave_external_data_outside_the_main_graph_mapped(tmp_path: Path) -> None:
    """ONNX Runtime copies only the main graph's initializers from memory: a model keeping a
    subgraph's tensor in external data is loaded from its path as before, and runs right."""
    from onnx import numpy_helper, save_model

    k = np.full((1, 4), 3, np.float32)
    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["out"])],
        "then",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(k, "k")],
    )
    neg = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["out2"])],
        "else",
        [],
        [helper.make_tensor_value_info("out2", TensorProto.FLOAT, [1, 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=neg)],
        "if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    save_model(proto, str(path), save_as_external_data=True, location="k.bin", size_threshold=0)
    model = Model.load(path)
    assert model.external_files
    session = create_session(model, SessionConfig(own_weights=True))
    feeds = {"x": np.ones((1, 4), np.float32), "c": np.array(True)}
    np.testing.assert_array_equal(session.run(None, feeds)[0], np.full((1, 4), 4, np.float32))


def test_own_weights_past_half_the_free_memory_are_mapped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxferry.runtime as runtime

    weights = {"a": np.arange(4, dtype=np.float32).reshape(1, 4)}
    model = Model.load(_add_external(tmp_path, weights, one_file=True))
    monkeypatch.setattr(runtime, "available_memory", lambda: 20)  # bytes: under twice 16
    with caplog.at_level(logging.WARNING, logger="onnxferry"):
        session = create_session(model, SessionConfig(own_weights=True))
    np.testing.assert_array_equal(_run(session), weights["a"])
    [record] = [r for r in caplog.records if "mapped from its files" in r.getMessage()]
    assert "write a new version instead" in record.getMessage()
