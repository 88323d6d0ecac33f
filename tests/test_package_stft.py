"""STFT and DFT as products (``onnxferry.stft``): what ``torch.stft`` and ``torch.fft.rfft``
export, for OpenVINO and onnx2tf, which have neither op."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.model import Model
from onnxferry.package import package
from onnxferry.stft import stft_as_conv, with_stft_as_conv

from .helpers import save


def spectrogram(onesided: int = 1, window: bool = True, channel: bool = True) -> onnx.ModelProto:
    """audio[batch, 512] -> STFT (hop 64, frame 128, a Hann window) -> |.| ->
    magnitude[batch, 7, bins], as the dynamo exporter writes ``torch.stft(...).abs()``; with
    ``channel=False`` the signal is ``[batch, 512]`` itself, as onnx-asr's feature extractors
    (onnxscript) give it to STFT and ONNX Runtime takes it."""
    inputs = ["signal" if channel else "audio", "hop", "window" if window else "", "frame"]
    nodes = [
        *([helper.make_node("Unsqueeze", ["audio", "last"], ["signal"])] if channel else []),
        helper.make_node("STFT", inputs, ["spectrum"], onesided=onesided),
        helper.make_node("ReduceL2", ["spectrum", "last"], ["magnitude"], keepdims=0),
    ]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(128) / 128)
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array(64, np.int64), "hop"),
        numpy_helper.from_array(np.array(128, np.int64), "frame"),
        numpy_helper.from_array(hann.astype(np.float32), "window"),
    ]
    bins = 65 if onesided else 128
    graph = helper.make_graph(
        nodes,
        "spectrogram",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("magnitude", TensorProto.FLOAT, ["batch", 7, bins])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def spectrum(opset: int = 20, onesided: int = 1) -> onnx.ModelProto:
    """audio[batch, 512] -> DFT along the samples -> |.| -> magnitude[batch, bins], as the
    dynamo exporter writes ``torch.fft.rfft(x).abs()`` (the axis an input from opset 20)."""
    axis = ["axis"] if opset >= 20 else []
    attrs: dict[str, Any] = {} if opset >= 20 else {"axis": 1}
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "last"], ["signal"]),
        helper.make_node(
            "DFT", ["signal", "length", *axis], ["spectrum"], onesided=onesided, **attrs
        ),
        helper.make_node("ReduceL2", ["spectrum", "last"], ["magnitude"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array(512, np.int64), "length"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
    ][: 3 if axis else 2]
    bins = 257 if onesided else 512
    graph = helper.make_graph(
        nodes,
        "spectrum",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("magnitude", TensorProto.FLOAT, ["batch", bins])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 18))])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _run(proto: onnx.ModelProto, audio: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"audio": audio})[0])


@pytest.mark.parametrize(
    ("build", "op", "atol"),
    [
        (lambda: spectrogram(1, True), "STFT", 1e-4),
        (lambda: spectrogram(0, True), "STFT", 1e-4),
        (lambda: spectrogram(1, False), "STFT", 1e-4),
        (lambda: spectrogram(1, True, channel=False), "STFT", 1e-4),
        (lambda: spectrum(20, 1), "DFT", 1e-3),  # the axis an input (opset 20), onesided
        (lambda: spectrum(18, 0), "DFT", 1e-3),  # the axis an attribute, every bin
    ],
    ids=[
        "stft-onesided",
        "stft-full",
        "stft-no-window",
        "stft-signal-without-channel",
        "dft-axis-input",
        "dft-full",
    ],
)
def test_the_rewrite_computes_what_the_op_computes(
    build: Callable[[], onnx.ModelProto], op: str, atol: float
) -> None:
    """A strided convolution for STFT, a product with the cos/sin matrix for DFT."""
    proto = build()
    audio = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    want = _run(proto, audio)
    assert stft_as_conv(proto) == 1
    assert op not in {node.op_type for node in proto.graph.node}
    np.testing.assert_allclose(_run(proto, audio), want, rtol=1e-4, atol=atol)


def test_an_stft_it_cannot_write_as_a_convolution_is_left_alone() -> None:
    proto = spectrogram()
    proto.graph.initializer.remove(next(t for t in proto.graph.initializer if t.name == "hop"))
    proto.graph.input.append(helper.make_tensor_value_info("hop", TensorProto.INT64, []))
    assert stft_as_conv(proto) == 0  # a hop that is an input is no constant stride
    model = Model.from_proto(spectrogram())
    assert with_stft_as_conv(Model.from_proto(onnx.ModelProto()))[1] == 0
    rewritten, count = with_stft_as_conv(model)
    assert count == 1 and rewritten is not model
    assert "STFT" in {node.op_type for node in model.proto.graph.node}  # the original is kept


def test_a_model_with_external_data_is_rewritten_with_its_weights_read_in(
    tmp_path: Path,
) -> None:
    """The window saved apart from the graph: the rewrite read it as a reference to a file the
    copy had no folder for (its Model made from the proto alone)."""
    path = tmp_path / "spectrogram.onnx"
    onnx.save(spectrogram(), str(path), save_as_external_data=True, size_threshold=0)
    rewritten, count = with_stft_as_conv(Model.load(path))
    assert count == 1
    audio = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    np.testing.assert_allclose(
        _run(rewritten.proto, audio), _run(spectrogram(), audio), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("target", ["openvino", "tflite"])
@pytest.mark.parametrize("build", [spectrogram, spectrum], ids=["stft", "dft"])
def test_spectra_package_for_converters_without_stft_or_dft(
    target: str, build: Callable[[], onnx.ModelProto], tmp_path: Path
) -> None:
    """Both stopped at the op (OpenVINO's frontend: "Conversion failed for STFT"; onnx2tf:
    "DFT OP is not yet implemented"); verified against ONNX Runtime on the original."""
    needs = {"openvino": ["openvino"], "tflite": ["onnx2tf", "ai_edge_litert"]}[target]
    if not all(importlib.util.find_spec(name) for name in needs):
        pytest.skip(f"the {target} target is not installed")
    source = save(build(), tmp_path / "spectrum.onnx")
    report = package(source, target, tmp_path / target)
    assert report.ok, [c.detail for c in report.result.checks]
    assert any("1 STFT / DFT node(s) were given to" in note for note in report.notes)


def test_a_spectrogram_runs_on_the_openvino_provider(tmp_path: Path) -> None:
    """``--provider openvino`` reads the same rewrite (it refused the model before)."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    from onnxferry.runtime import OrtRunner, SessionConfig

    model = Model.load(save(spectrogram(), tmp_path / "spectrogram.onnx"))
    audio = np.random.default_rng(1).standard_normal((2, 512)).astype(np.float32)
    config = SessionConfig(provider="openvino", fallback=False)
    got = OrtRunner(model, config=config).run({"audio": audio})["magnitude"]
    np.testing.assert_allclose(got, _run(model.proto, audio), rtol=1e-4, atol=1e-3)
