"""QOperator models (ONNX Runtime's ``quantize_static(quant_format=QOperator)``) written as QDQ
(``onnxferry.qdq``): the same outputs in ONNX Runtime. Packaged for OpenVINO and LiteRT, which
refused them before: tests/test_package_openvino.py and tests/test_package_tflite.py."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxferry.model import Model
from onnxferry.qdq import (
    as_float_products,
    as_qdq,
    integer_ops,
    output_steps,
    quantized_ops,
    quantizes_activations,
    with_float_products,
    with_qdq,
)
from tests.helpers import Run, onnx_text

pytest.importorskip("torch")

import torch


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # 6 channels, not 8: onnx2tf tries all 576 pairs of axis orders (18 s) on a Concat of
        # two [1, 8, 8, 8] tensors, whose channel axis it cannot tell from the others.
        self.c1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.mix = torch.nn.Parameter(torch.randn(12, 12) / 4)
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.nn.functional.leaky_relu(self.c1(x), 0.1)
        b = torch.relu(self.c2(a)) + a
        both = torch.cat([torch.nn.functional.avg_pool2d(b, 2)] * 2, dim=1)
        pooled = torch.nn.functional.adaptive_avg_pool2d(both, 1).flatten(1)
        mixed = torch.matmul(pooled, self.mix)
        return torch.softmax(torch.sigmoid(self.fc(mixed)) * 3, -1)


@functools.cache
def _float_cnn() -> bytes:
    """The small CNN the quantizers are given, in float (x[batch, 3, 16, 16] -> probs)."""
    import tempfile

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(_Net().eval(), (torch.randn(1, 3, 16, 16),), str(fp32),
                              dynamo=False, input_names=["x"], output_names=["probs"],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=17)  # fmt: skip
        return fp32.read_bytes()


@functools.cache
def quantized(per_channel: bool) -> bytes:
    """A small CNN quantized to QOperator form: QLinearConv, QLinearMatMul and every
    ``com.microsoft`` operator ``onnxferry.qdq`` writes (the serialized model)."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Rows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.rows = iter([{"x": rng.standard_normal((1, 3, 16, 16), np.float32)}] * 8)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(_float_cnn())
        quantize_static(fp32, int8, Rows(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel)  # fmt: skip
        return int8.read_bytes()


@functools.cache
def dynamic(per_channel: bool, signed: bool) -> bytes:
    """The same CNN through ``quantize_dynamic``: DynamicQuantizeLinear, ConvInteger and
    MatMulInteger, weights int8 (``signed``) or uint8."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(_float_cnn())
        quantize_dynamic(fp32, int8, op_types_to_quantize=["Conv", "MatMul"],
                         per_channel=per_channel,
                         weight_type=QuantType.QInt8 if signed else QuantType.QUInt8)  # fmt: skip
        return int8.read_bytes()


def _outputs(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_every_quantized_operator_becomes_qdq_with_the_same_outputs(per_channel: bool) -> None:
    proto = onnx.load_from_string(quantized(per_channel))
    before = quantized_ops(proto)
    assert {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
            "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "QLinearAveragePool",
            "QLinearGlobalAveragePool", "QLinearSoftmax"} <= set(before)  # fmt: skip
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(proto)
    assert as_qdq(rewritten) == before
    assert not quantized_ops(rewritten)
    assert all(n.domain in ("", "ai.onnx") for n in rewritten.graph.node)
    readers = {name: n.op_type for n in rewritten.graph.node for name in n.input}
    quantized_outputs = [n.output[0] for n in rewritten.graph.node if n.op_type == "QuantizeLinear"]
    assert {readers[name] for name in quantized_outputs} == {"DequantizeLinear"}  # Flatten too
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    want, got = _outputs(proto, x), _outputs(rewritten, x)
    step = next(
        float(onnx.numpy_helper.to_array(t)) for t in proto.graph.initializer
        if t.name == "probs_scale"
    )  # fmt: skip
    assert np.abs(got - want).max() <= step, np.abs(got - want).max()  # one output step at most
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_a_model_without_quantized_operators_is_itself() -> None:
    from tests.helpers import mlp

    model = Model.from_proto(mlp())
    assert with_qdq(model) == (model, {})


def test_a_qoperator_model_s_output_lies_on_its_dequantizer_s_grid() -> None:
    proto = onnx.load_from_string(quantized(per_channel=False))
    scale = next(t for t in proto.graph.initializer if t.name == "probs_scale")
    assert output_steps(proto) == {"probs": float(onnx.numpy_helper.to_array(scale))}
    as_qdq(proto)
    assert output_steps(proto) == {"probs": float(onnx.numpy_helper.to_array(scale))}
    assert output_steps(onnx.load_from_string(_float_cnn())) == {}


def test_a_model_rounding_its_activations_to_steps_quantizes_them(tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    from tests.helpers import deep_mlp, save

    save(deep_mlp(8, 16, 2), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx")
    dynamic = onnx.load(tmp_path / "dynamic.onnx")
    assert quantizes_activations(dynamic) and not quantized_ops(dynamic)
    qoperator = onnx.load_from_string(quantized(per_channel=False))
    assert quantizes_activations(qoperator)
    as_qdq(qoperator)
    assert quantizes_activations(qoperator)  # QuantizeLinear
    assert not quantizes_activations(onnx.load(tmp_path / "float.onnx"))
    weights_only = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[2, 3] x) => (float[2, 3] y) <float[3] w = {1.5, 2, 3}, float s = {0.5}> {
            q = QuantizeLinear(w, s)
            d = DequantizeLinear(q, s)
            y = Mul(x, d)
        }""")  # fmt: skip
    assert not quantizes_activations(weights_only)  # rounds a weight, the same on every run


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_integer_products_become_float_ones_with_the_same_int32_results(per_channel: bool) -> None:
    """uint8 weights: ONNX Runtime's u8u8 kernels are exact, so the float form gives the same
    outputs bit for bit (int8 weights on a CPU without VNNI saturate in its u8s8 kernels: the
    package tests judge those as noise)."""
    proto = onnx.load_from_string(dynamic(per_channel, signed=False))
    assert quantizes_activations(proto)
    before = integer_ops(proto)
    assert before == {"ConvInteger": 2, "MatMulInteger": 2}, before
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(proto)
    assert as_float_products(rewritten) == before and not integer_ops(rewritten)
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    assert np.array_equal(_outputs(proto, x), _outputs(rewritten, x))
    model = Model.from_proto(proto)
    given, counts = with_float_products(model)
    assert counts == before and given is not model and integer_ops(model.proto) == before


def test_a_per_axis_scale_before_opset_13_stays_as_it_is() -> None:
    """DequantizeLinear has no axis before opset 13: such a node cannot be written."""
    proto = onnx.load_from_string(quantized(True))
    proto.opset_import[0].version = 12
    kept = quantized_ops(proto)
    counts = as_qdq(proto)
    assert counts["QLinearConv"] == 0 and quantized_ops(proto)["QLinearConv"] == kept["QLinearConv"]


def packages_as_qdq(ferry: Run, tmp_path: Path, target: str) -> None:
    """``ferry package --target target`` on the per-channel QOperator CNN: exit 0, every check
    passed, and the note that its quantized operators went as QDQ (the package tests)."""
    notes = _packages(ferry, tmp_path, target, quantized(True))
    assert any("QLinearConv" in n and "(QDQ)" in n for n in notes), notes


def packages_quantized_by_data(ferry: Run, tmp_path: Path, target: str) -> list[str]:
    """The same for the per-channel ``quantize_dynamic`` CNN, int8 weights; its notes."""
    return _packages(ferry, tmp_path, target, dynamic(per_channel=True, signed=True))


def _packages(ferry: Run, tmp_path: Path, target: str, model: bytes) -> list[str]:
    source = tmp_path / "int8.onnx"
    source.write_bytes(model)
    code, out, err = ferry("package", source, "--target", target, "-o", tmp_path / "out",
                           "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)["result"]
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    notes: list[str] = report["notes"]
    return notes
