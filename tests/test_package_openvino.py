"""`ferry package --target openvino`: OpenVINO IR, verified against ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.errors import InputError, UsageError
from onnxferry.package import package

from .helpers import Run, conv_bn_mlp, mlp, onnx_text, save

RERUN = """
import sys, numpy as np, openvino as ov
core = ov.Core()
hint = {"INFERENCE_PRECISION_HINT": "f32"}
compiled = core.compile_model(core.read_model(sys.argv[1]), "CPU", hint)
np.save(sys.argv[3], compiled({"x": np.load(sys.argv[2])})[compiled.output(0)])
"""


def test_ir_written_and_verified(tmp_path: Path) -> None:
    source = save(conv_bn_mlp(), tmp_path / "net.onnx")
    report = package(source, "openvino", tmp_path / "out")
    assert report.ok
    assert report.result.files == ["net.xml", "net.bin"]
    (check,) = report.result.checks
    assert check.name == "openvino parity" and check.ok
    assert "all 1 outputs match over 3 samples" in check.detail
    assert check.tool.startswith("openvino 20")

    # OpenVINO runs in a child process, as the target runs it: never in the test process.
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    xml, got = tmp_path / "out" / "net.xml", tmp_path / "got.npy"
    run = [sys.executable, "-c", RERUN, str(xml), str(tmp_path / "x.npy"), str(got)]
    subprocess.run(run, check=True, capture_output=True, timeout=120)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(np.load(got), want[0], rtol=1e-3, atol=1e-4)  # batch axis dynamic


def test_outputs_onnx_runtime_gives_as_nan_are_named_in_a_note(tmp_path: Path) -> None:
    """SwiftF0's pitch is NaN for a random pitch range: the check then compares NaNs, which a
    note says, with how to check on inputs the model computes numbers on (and none then)."""
    from onnxferry.data import save_npz

    log = onnx_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Log(x) }
    """)  # fmt: skip
    source = save(log, tmp_path / "log.onnx")
    generated = package(source, "openvino", tmp_path / "out")
    (note,) = [n for n in generated.notes if "NaN or infinite" in n]
    assert "output 'y'" in note and "the generated inputs" in note and "--set inputs" in note
    positive = save_npz(tmp_path / "x.npz", {"x": np.full((2, 4), 3.0, np.float32)})
    given = package(source, "openvino", tmp_path / "given", {"inputs": str(positive)})
    assert given.ok and not [n for n in given.notes if "NaN" in n], given.notes


def test_fp16_weights_halve_the_bin(tmp_path: Path) -> None:
    source = save(conv_bn_mlp(), tmp_path / "net.onnx")
    fp32 = package(source, "openvino", tmp_path / "fp32")
    fp16 = package(source, "openvino", tmp_path / "fp16", {"fp16": "true"})
    assert fp32.ok and fp16.ok
    size32 = (tmp_path / "fp32" / "net.bin").stat().st_size
    size16 = (tmp_path / "fp16" / "net.bin").stat().st_size
    assert size16 < 0.6 * size32
    assert "atol 0.01, rtol 0.01" in fp16.notes[0]


def test_a_model_with_float16_weights_is_judged_at_float16_s_tolerance(tmp_path: Path) -> None:
    """A transformer converted to float16 whole: OpenVINO rounds its float16 values after
    other ops than ONNX Runtime does, so the two agree to float16's step (1e-3 of a value)."""
    pytest.importorskip("torch")
    from tests.real_models import fp16_encoder

    source = save(fp16_encoder(), tmp_path / "encoder.onnx")
    report = package(source, "openvino", tmp_path / "default")
    assert report.ok, report.result.checks[0].detail
    assert "encoder's weights are float16: verified at float16's tolerance" in report.notes[0]
    assert "(tolerance atol 0.01, rtol 0.01)" in report.notes[-1]
    given = package(source, "openvino", tmp_path / "given", {"atol": "0.05", "rtol": "0.05"})
    assert given.ok and not any("weights are float16" in note for note in given.notes)
    assert "(tolerance atol 0.05, rtol 0.05)" in given.notes[-1]


def test_a_bfloat16_model_is_fed_and_read_by_its_bits(tmp_path: Path) -> None:
    """OpenVINO's Python API shows bfloat16 tensors as float16: numpy's bfloat16 handed over
    as they were came out as values 1e34 apart from ONNX Runtime's. By their bits they agree,
    to bfloat16's step (the report says which tolerance)."""
    from tests.real_models import bf16_model

    source = save(bf16_model(), tmp_path / "bf16.onnx")
    report = package(source, "openvino", tmp_path / "out")
    assert report.ok, report.result.checks[0].detail
    assert "bf16's weights are bfloat16: verified at bfloat16's tolerance" in report.notes[0]


def test_unconvertible_op_is_one_line(tmp_path: Path) -> None:
    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21, "com.example" : 1]>
        g (float[N, 4] x) => (float[N, 4] y) { y = com.example.Mystery(x) }
        """,
        check=False,
    )
    with pytest.raises(InputError, match=r"openvino cannot convert m\.onnx: .*Mystery") as e:
        package(save(proto, tmp_path / "m.onnx"), "openvino", tmp_path / "out")
    assert "\n" not in str(e.value) and e.value.hint
    assert not (tmp_path / "out").exists()


def test_bad_option(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown option 'fp8'"):
        package(save(mlp(), tmp_path / "m.onnx"), "openvino", tmp_path / "out", {"fp8": "1"})


def test_cli(ferry: Run, tmp_path: Path) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    code, out, err = ferry(
        "package", source, "--target", "openvino", "-o", tmp_path / "o", "--json"
    )
    assert code == 0, err
    body = json.loads(out)["result"]
    assert body["files"] == ["mlp.xml", "mlp.bin"]
    assert body["checks"][0]["ok"]


def test_a_qoperator_int8_model_packages_as_qdq(ferry: Run, tmp_path: Path) -> None:
    """ONNX Runtime's QOperator int8 CNN (tests/test_qdq.py): exit 2 before, OpenVINO's frontend
    failing on ``com.microsoft.QLinearMul``. Now QDQ, verified, an
    output a step of its scale from ONNX Runtime's integer kernels passing as their noise."""
    from tests.test_qdq import packages_as_qdq

    packages_as_qdq(ferry, tmp_path, "openvino")


def test_a_model_quantized_by_its_data_is_judged_against_exact_integer_products(
    ferry: Run, tmp_path: Path
) -> None:
    """``quantize_dynamic``'s CNN (int8 weights): OpenVINO's exact integer products were
    0.001 from ONNX Runtime's, whose u8s8 kernels saturate on a CPU without VNNI, and the check
    failed. The reference's second opinion now runs them as exact float products."""
    from tests.test_qdq import packages_quantized_by_data

    packages_quantized_by_data(ferry, tmp_path, "openvino")
