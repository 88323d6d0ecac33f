"""`--provider tensorrt`: precision (fp16, int8) and the engine cache as TensorRT execution
provider options, refused combinations as one line, and the clean line a build without
TensorRT gives. The GPU test at the end runs only where onnxruntime has the provider
(benchmarks/gpu_check.py measures it on a lent GPU)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.errors import ProviderError, UsageError
from onnxferry.model import Model
from onnxferry.optimize import optimize
from onnxferry.precision import (
    CALIBRATION_TABLE,
    check_precision,
    engine_cache_root,
    has_qdq,
    precision_options,
    prepare_engine_cache,
)
from onnxferry.runtime import OrtRunner, SessionConfig, create_session
from onnxferry.serve.config import ModelConfig

from .helpers import Run, mlp, onnx_text, save

HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()

QDQ = """
<ir_version: 8, opset_import: ["" : 17]>
qdq (float[batch, 4] x) => (float[batch, 4] y)
<float s = {0.05}, uint8 z = {128}>
{
    q = QuantizeLinear(x, s, z)
    d = DequantizeLinear(q, s, z)
    y = Relu(d)
}
"""


@pytest.fixture
def model(tmp_path: Path) -> Model:
    return Model.load(save(mlp(), tmp_path / "mlp.onnx"))


@pytest.fixture
def qdq(tmp_path: Path) -> Model:
    return Model.load(save(onnx_text(QDQ), tmp_path / "qdq.onnx"))


def test_fp16_and_the_engine_cache_are_provider_options(model: Model, tmp_path: Path) -> None:
    options = precision_options(model, "tensorrt", "fp16", engine_cache=tmp_path / "cache")
    assert options == {
        "trt_fp16_enable": True,
        "trt_int8_enable": False,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path / "cache" / f"{model.digest[:16]}-fp16"),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(tmp_path / "cache" / "timing"),
    }
    fp32 = precision_options(model, "tensorrt", engine_cache=tmp_path / "cache")
    assert not fp32["trt_fp16_enable"] and not fp32["trt_int8_enable"]
    assert fp32["trt_engine_cache_path"] != options["trt_engine_cache_path"]


def test_engines_are_keyed_by_weights_not_only_names(tmp_path: Path) -> None:
    # same file name, same node names, other weights: the execution provider's own engine
    # name would be the same, so each digest gets its own directory
    a = Model.load(save(mlp(seed=0), tmp_path / "a" / "model.onnx"))
    b = Model.load(save(mlp(seed=1), tmp_path / "b" / "model.onnx"))
    path_a = precision_options(a, "tensorrt", "fp16")["trt_engine_cache_path"]
    path_b = precision_options(b, "tensorrt", "fp16")["trt_engine_cache_path"]
    assert path_a != path_b and Path(path_a).parent == Path(path_b).parent


def test_default_cache_follows_xdg(
    model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache_root() == tmp_path / "xdg" / "onnxferry" / "tensorrt"
    options = precision_options(model, "tensorrt")
    assert options["trt_engine_cache_path"].startswith(str(tmp_path / "xdg" / "onnxferry"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert engine_cache_root() == Path.home() / ".cache" / "onnxferry" / "tensorrt"


def test_int8_takes_a_qdq_models_scales(qdq: Model, model: Model) -> None:
    assert has_qdq(qdq) and not has_qdq(model)
    assert precision_options(qdq, "tensorrt", "int8")["trt_int8_enable"] is True
    # TensorRT refuses int8 layers without the int8 flag, so a QDQ model always gets it
    fp16 = precision_options(qdq, "tensorrt", "fp16")
    assert fp16["trt_int8_enable"] is True and fp16["trt_fp16_enable"] is True
    with pytest.raises(UsageError, match=r"int8 on tensorrt needs scales, and mlp has no Q/DQ"):
        precision_options(model, "tensorrt", "int8")


def test_a_calibration_table_is_copied_where_tensorrt_reads_it(
    model: Model, qdq: Model, tmp_path: Path
) -> None:
    native = tmp_path / "calib.cache"
    native.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n")
    options = precision_options(
        model, "tensorrt", "int8", engine_cache=tmp_path / "c", calibration_table=native
    )
    assert options["trt_int8_enable"] is True
    assert options["trt_int8_calibration_table_name"] == CALIBRATION_TABLE
    assert options["trt_int8_use_native_calibration_table"] is True
    prepare_engine_cache(options, native)
    copied = Path(options["trt_engine_cache_path"]) / CALIBRATION_TABLE
    assert copied.read_bytes() == native.read_bytes()
    assert Path(options["trt_timing_cache_path"]).is_dir()

    flatbuffers = tmp_path / "calibration.flatbuffers"
    flatbuffers.write_bytes(b"\x10\x00\x00\x00flatbuffers")
    onnxruntime_table = precision_options(model, "tensorrt", "int8", calibration_table=flatbuffers)
    assert onnxruntime_table["trt_int8_use_native_calibration_table"] is False

    with pytest.raises(UsageError, match="has Q/DQ nodes, which carry its int8 scales"):
        precision_options(qdq, "tensorrt", "int8", calibration_table=native)
    with pytest.raises(UsageError, match="a calibration table is for --provider tensorrt"):
        precision_options(model, "tensorrt", "fp16", calibration_table=native)
    with pytest.raises(UsageError, match="cannot read the calibration table"):
        precision_options(model, "tensorrt", "int8", calibration_table=tmp_path / "none")


@pytest.mark.parametrize(
    ("provider", "precision", "message"),
    [
        ("cpu", "fp16", "provider 'cpu' computes the model as written (fp32), not fp16"),
        ("cuda", "int8", "provider 'cuda' computes the model as written (fp32), not int8"),
        ("openvino", "int8", "openvino takes no int8 precision setting"),
        ("tensorrt", "fp8", "unknown precision 'fp8'"),
    ],
)
def test_precisions_a_provider_does_not_take(provider: str, precision: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        check_precision(provider, precision)
    check_precision(provider, "fp32")


def test_other_providers_get_no_precision_options(model: Model) -> None:
    assert precision_options(model, "cpu") == {}
    assert precision_options(model, "openvino", "fp16") == {
        "device_type": "CPU",
        "precision": "FP16",
    }


@pytest.mark.skipif(HAS_TRT, reason="this onnxruntime build has TensorRT")
def test_a_build_without_tensorrt_says_so(
    model: Model, ferry: Run, caplog: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(provider="tensorrt", precision="fp16", fallback=False)
    with pytest.raises(
        ProviderError, match="provider 'tensorrt' is not in this onnxruntime build"
    ) as e:
        create_session(model, config)
    assert "onnxruntime-gpu and tensorrt-cu12" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="onnxferry"):
        runner = OrtRunner(model, config=SessionConfig(provider="tensorrt", precision="fp16"))
    assert runner.provider == "cpu"  # fell back, at fp32
    assert "falling back to cpu" in caplog.text

    code, out, err = ferry("bench", model.path, "--provider", "tensorrt", "--precision", "fp16")
    assert code == 2 and out == ""
    assert "provider 'tensorrt' is not in this onnxruntime build" in err
    assert err.strip().count("\n") == 0


def test_cli_refusals_are_one_line(model: Model, ferry: Run, tmp_path: Path) -> None:
    cases = [
        ["bench", model.path, "--provider", "cpu", "--precision", "fp16"],
        ["compare", model.path, "--provider-b", "tensorrt", "--precision", "int8"],
        ["compare", model.path, "--provider-b", "cuda", "--precision", "fp16"],
        ["optimize", model.path, "-o", tmp_path / "o.onnx", "--auto", "--precision", "int8",
         "--provider", "tensorrt"],
        ["optimize", model.path, "-o", tmp_path / "o.onnx", "--auto", "--precision", "fp16"],
        ["serve", model.path, "--provider", "cpu", "--precision", "fp16"],
    ]  # fmt: skip
    for args in cases:
        code, out, err = ferry(*args)
        assert code == 2, (args, err)
        assert err.strip().count("\n") == 0 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o.onnx").exists()


def test_optimize_refuses_int8_as_a_precision(model: Model) -> None:
    with pytest.raises(UsageError, match="optimize takes int8 from a static int8 pass"):
        optimize(model, auto=True, provider="tensorrt", precision="int8")


def test_serve_config_takes_tensorrt_settings() -> None:
    config = ModelConfig.from_dict(
        {"provider": "tensorrt", "precision": "int8", "engine_cache": "/var/cache/engines"}
    )
    assert (config.provider, config.precision, config.engine_cache) == (
        "tensorrt",
        "int8",
        "/var/cache/engines",
    )
    with pytest.raises(UsageError, match="unknown execution provider 'tpu'"):
        ModelConfig(provider="tpu")


@pytest.mark.skipif(not HAS_TRT, reason="needs onnxruntime's TensorrtExecutionProvider (a GPU)")
def test_gpu_fp16_engine_is_cached_and_reused(model: Model, tmp_path: Path) -> None:
    config = SessionConfig(
        provider="tensorrt", precision="fp16", engine_cache=tmp_path, fallback=False
    )
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    runner = OrtRunner(model, config=config)
    assert runner.provider == "tensorrt"
    got = runner.run({"x": x})["probs"]
    want = OrtRunner(model).run({"x": x})["probs"]
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-2)
    engines = sorted(tmp_path.rglob("*.engine"))
    assert engines and all("fp16" in e.name for e in engines)
    stamp = [e.stat().st_mtime_ns for e in engines]
    OrtRunner(model, config=config).run({"x": x})  # loads the cached engine
    assert [e.stat().st_mtime_ns for e in sorted(tmp_path.rglob("*.engine"))] == stamp
