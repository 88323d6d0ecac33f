"""`test`: golden data against ONNX Runtime, per set, for the bundled example and odd dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import onnxferry
from onnxferry.data import save_test_case
from onnxferry.parity import Tolerance
from tests.helpers import onnx_text, save

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_classifier"
ONE_OP = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[n] x) => (float[n] y) {{ y = {op}(x) }}
"""


def test_bundled_example_passes_its_golden_data() -> None:
    report = onnxferry.test(EXAMPLE / "model.onnx", EXAMPLE)
    assert report.ok, report.to_text()
    assert [c.name for c in report.result.cases] == ["test_data_set_0", "test_data_set_1"]
    assert all(c.parity is not None and c.parity.samples == 1 for c in report.result.cases)


def test_every_dtype_through_golden_data(tmp_path: Path) -> None:
    import ml_dtypes

    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float16[n] h, double[n] d, int8[n] i8, uint16[n] u16, int64[n] i64, bool[n] b,
           string[n] s, bfloat16[n] bf)
          => (float16[n] h2, double[n] d2, int8[n] i82, uint16[n] u162, int64[n] i642,
              bool[n] b2, string[n] s2, float[n] bf2) {
            h2 = Neg(h)
            d2 = Neg(d)
            i82 = Neg(i8)
            u162 = Identity(u16)
            i642 = Neg(i64)
            b2 = Not(b)
            s2 = Identity(s)
            bf2 = Cast<to = 1>(bf)
        }
        """
    )
    path = save(proto, tmp_path / "m.onnx")
    inputs: dict[str, np.ndarray] = {
        "h": np.array([1, -2], np.float16),
        "d": np.array([0.5, 3], np.float64),
        "i8": np.array([1, -7], np.int8),
        "u16": np.array([9, 65535], np.uint16),
        "i64": np.array([2**40, -3], np.int64),
        "b": np.array([True, False]),
        "s": np.array(["ferry", ""], dtype=object),
        "bf": np.array([1.5, -2], dtype=ml_dtypes.bfloat16),
    }
    outputs = {
        "h2": -inputs["h"],
        "d2": -inputs["d"],
        "i82": -inputs["i8"],
        "u162": inputs["u16"],
        "i642": -inputs["i64"],
        "b2": ~inputs["b"],
        "s2": inputs["s"],
        "bf2": inputs["bf"].astype(np.float32),
    }
    save_test_case(tmp_path / "data" / "test_data_set_0", inputs, outputs)
    wrong = dict(outputs, s2=np.array(["ferry", "x"], dtype=object))
    save_test_case(tmp_path / "data" / "test_data_set_1", inputs, wrong)
    report = onnxferry.test(path, tmp_path / "data")
    first, second = report.result.cases
    assert first.passed, report.to_text()
    assert not second.passed and not report.ok
    assert second.parity is not None
    bad = [o for o in second.parity.outputs if not o.passed]
    assert [o.name for o in bad] == ["s2"] and bad[0].exact_match == 0.5


def test_tolerance_decides(tmp_path: Path) -> None:
    path = save(onnx_text(ONE_OP.format(op="Identity")), tmp_path / "m.onnx")
    x = np.array([1.0, 2.0], np.float32)
    save_test_case(tmp_path / "d" / "test_data_set_0", {"x": x}, {"y": x + 0.01})
    assert not onnxferry.test(path, tmp_path / "d").ok
    assert onnxferry.test(path, tmp_path / "d", tolerance=Tolerance(atol=0.02)).ok


def test_sets_without_outputs_only_run(tmp_path: Path) -> None:
    path = save(onnx_text(ONE_OP.format(op="Identity")), tmp_path / "m.onnx")
    save_test_case(tmp_path / "d" / "test_data_set_0", {"x": np.ones(2, np.float32)}, {})
    report = onnxferry.test(path, tmp_path / "d")
    assert report.ok and report.result.cases[0].parity is None
    assert "no expected outputs" in report.to_text()


def test_npz_golden_file(tmp_path: Path) -> None:
    path = save(onnx_text(ONE_OP.format(op="Relu")), tmp_path / "m.onnx")
    x = np.array([-1.0, 2.0], np.float32)
    np.savez(tmp_path / "golden.npz", x=x, y=np.maximum(x, 0))
    report = onnxferry.test(path, tmp_path / "golden.npz")
    assert report.ok and len(report.result.cases) == 1


def test_inspect_example() -> None:
    report = onnxferry.inspect(EXAMPLE / "model.onnx")
    summary = report.result.summary
    assert summary["ops"] == {
        "Conv": 1, "Relu": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1,
    }  # fmt: skip
    assert summary["metadata_props"] == {"task": "image-classification", "classes": "10"}
    assert summary["producer"] == "onnxferry-examples 1"
    text = report.to_text()
    assert "image" in text and "[batch, 3, 16, 16]" in text


def test_golden_data_defaults_to_the_models_directory(tmp_path: Path) -> None:
    report = onnxferry.test(EXAMPLE)
    assert report.ok and report.result.data == str(EXAMPLE)
    assert onnxferry.test(EXAMPLE / "model.onnx").result.data == str(EXAMPLE)
