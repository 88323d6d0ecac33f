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
from onnxferry.qdq import as_qdq, quantized_ops, with_qdq
from tests.helpers import Run

pytest.importorskip("torch")

import torch


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

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.mix = torch.nn.Parameter(torch.randn(16, 16) / 4)
            self.fc = torch.nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.nn.functional.leaky_relu(self.c1(x), 0.1)
            b = torch.relu(self.c2(a)) + a
            both = torch.cat([torch.nn.functional.avg_pool2d(b, 2)] * 2, dim=1)
            pooled = torch.nn.functional.adaptive_avg_pool2d(both, 1).flatten(1)
            mixed = torch.matmul(pooled, self.mix)
            return torch.softmax(torch.sigmoid(self.fc(mixed)) * 3, -1)

    class Rows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.rows = iter([{"x": rng.standard_normal((1, 3, 16, 16), np.float32)}] * 8)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(Net().eval(), (torch.randn(1, 3, 16, 16),), str(fp32),
                              dynamo=False, input_names=["x"], output_names=["probs"],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=17)  # fmt: skip
        quantize_static(fp32, int8, Rows(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel)  # fmt: skip
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
    source = tmp_path / "int8.onnx"
    source.write_bytes(quantized(True))
    code, out, err = ferry("package", source, "--target", target, "-o", tmp_path / "out",
                           "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)["result"]
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    assert any("QLinearConv" in n and "(QDQ)" in n for n in report["notes"]), report["notes"]
