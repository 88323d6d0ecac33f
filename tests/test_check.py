"""`check`: every finding that blocks deployment, on tiny models built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry.check import check, unsupported_cpu_ops
from onnxferry.errors import ModelLoadError
from onnxferry.model import Model
from onnxferry.runtime import runtime_limits
from tests.helpers import MISDECLARED, RELU, mlp, onnx_text, save, sparse_weights_model


def _status(report: object) -> dict[str, str]:
    return {f.check: f.status for f in report.result.findings}  # type: ignore[attr-defined]


def test_good_model_passes_every_check(tmp_path: Path) -> None:
    report = check(save(mlp(), tmp_path / "m.onnx"))
    status = _status(report)
    assert report.ok and report.exit_code == 0
    for name in (
        "safe load",
        "onnx checker",
        "onnx checker (full)",
        "shape inference (strict)",
        "runtime versions",
        "cpu operators",
        "load on cpu",
    ):
        assert status[name] == "pass", (name, report.to_text())
    assert report.result.digest is not None


def _with_versions(ir: int | None = None, opset: int | None = None) -> onnx.ModelProto:
    proto = onnx_text(RELU, check=False)
    if ir is not None:
        proto.ir_version = ir
    if opset is not None:
        proto.opset_import[0].version = opset
    return proto


def test_ir_version_newer_than_runtime_blocks(tmp_path: Path) -> None:
    max_ir, _ = runtime_limits()
    if max_ir + 1 > onnx.IR_VERSION:
        pytest.skip(f"installed onnx cannot write IR {max_ir + 1}")
    report = check(save(_with_versions(ir=max_ir + 1), tmp_path / "m.onnx"))
    finding = next(f for f in report.result.findings if f.check == "runtime versions")
    assert finding.status == "fail"
    assert f"IR version {max_ir + 1} > {max_ir}" in finding.detail
    assert not report.ok and report.exit_code == 1


def test_opset_newer_than_runtime_blocks(tmp_path: Path) -> None:
    _, max_opset = runtime_limits()
    if max_opset + 1 > onnx.defs.onnx_opset_version():
        pytest.skip(f"installed onnx has no opset {max_opset + 1}")
    report = check(
        save(_with_versions(ir=onnx.IR_VERSION, opset=max_opset + 1), tmp_path / "m.onnx")
    )
    status = _status(report)
    assert status["runtime versions"] == "fail"
    assert status["load on cpu"] == "fail"
    assert not report.ok


def _custom_op_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="example.custom")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("example.custom", 1)],
        ir_version=10,
    )


def test_operator_without_cpu_kernel_blocks(tmp_path: Path) -> None:
    report = check(save(_custom_op_model(), tmp_path / "m.onnx"))
    cpu = next(f for f in report.result.findings if f.check == "cpu operators")
    assert cpu.status == "fail"
    assert "example.custom::FancyOp@1" in cpu.detail
    assert _status(report)["load on cpu"] == "fail"
    assert not report.ok


def test_unsupported_cpu_ops_knows_kernels_functions_and_subgraphs() -> None:
    assert unsupported_cpu_ops(mlp()) == set()
    decoder = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (uint8[n] data) => (uint8[h, w, c] image) { image = ImageDecoder(data) }
        """
    )
    assert unsupported_cpu_ops(decoder) == {"ai.onnx::ImageDecoder@21"}
    # Gelu-20 has a CPU kernel; LayerNormalization is listed too; both pass.
    assert not unsupported_cpu_ops(
        onnx_text(
            """
            <ir_version: 10, opset_import: ["" : 21]>
            g (float[2, 4] x, float[4] s) => (float[2, 4] y) {
                a = Gelu(x)
                y = LayerNormalization(a, s)
            }
            """
        )
    )
    inside_if = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (bool c, uint8[n] d) => (uint8[h, w, k] y) {
            y = If(c) <then_branch = t () => (uint8[h, w, k] a) { a = ImageDecoder(d) },
                       else_branch = e () => (uint8[h, w, k] b) { b = ImageDecoder(d) }>
        }
        """,
        check=False,
    )
    assert unsupported_cpu_ops(inside_if) == {"ai.onnx::ImageDecoder@21"}


def test_model_local_function_counts_as_supported() -> None:
    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21, "local" : 1]>
        g (float[2] x) => (float[2] y) { y = local.Double(x) }
        <domain: "local", opset_import: ["" : 21]>
        Double (a) => (b) { b = Add(a, a) }
        """
    )
    assert unsupported_cpu_ops(proto) == set()


def test_shape_errors_fail_full_checker_and_strict_inference(tmp_path: Path) -> None:
    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[2, 3] a, float[4, 5] b) => (float[2, 3] y) { y = Add(a, b) }
        """,
        check=False,
    )
    report = check(save(proto, tmp_path / "m.onnx"))
    status = _status(report)
    assert status["onnx checker (full)"] == "fail"
    assert status["shape inference (strict)"] == "fail"
    assert not report.ok


def test_sparse_weights_are_checked_as_the_dense_tensors_onnx_runtime_makes(
    tmp_path: Path,
) -> None:
    """onnx's checker and shape inference type a sparse initializer as a sparse tensor, so
    the MatMul it feeds failed them ("Input tensors of wrong rank (0)") though ONNX Runtime
    runs the model; a sparse model whose shapes do not fit still fails."""
    proto, _ = sparse_weights_model()
    report = check(save(proto, tmp_path / "m.onnx"))
    status = _status(report)
    assert report.ok, report.to_text()
    details = {f.check: f.detail for f in report.result.findings}
    for name in ("onnx checker (full)", "shape inference (strict)"):
        assert status[name] == "pass" and "sparse initializer" in details[name]
    broken, _ = sparse_weights_model(x_width=15)
    status = _status(check(save(broken, tmp_path / "broken.onnx")))
    assert status["onnx checker (full)"] == "fail"
    assert status["shape inference (strict)"] == "fail"


def test_checker_failure_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    proto = onnx_text(RELU, check=False)
    proto.graph.node[0].input[0] = "undefined_tensor"
    report = check(save(proto, tmp_path / "m.onnx"))
    status = _status(report)
    assert status["onnx checker"] == "fail"
    # The checker is not a gate: ONNX Runtime is still asked, and says why it cannot load it.
    assert status["load on cpu"] == "fail"
    assert report.exit_code == 1


LAYER_NORM_AT_14 = """
<ir_version: 8, opset_import: ["" : 14]>
optimized (float[N, 8] x) => (float[N, 8] y) <float[8] scale = {1, 1, 1, 1, 1, 1, 1, 1}> {
    y = LayerNormalization<axis: int = -1, epsilon: float = 1e-5>(x, scale)
}
"""


def test_an_operator_onnx_defines_only_at_another_opset_is_a_warning(tmp_path: Path) -> None:
    """ONNX Runtime's transformers optimizer writes LayerNormalization into opset-14 models
    (ONNX has it from 17); ONNX Runtime runs them. A warning naming it, the rest of the model
    still checked; an operator no opset defines stays a blocking finding."""
    path = save(onnx_text(LAYER_NORM_AT_14, check=False), tmp_path / "m.onnx")
    report = check(path)
    status = _status(report)
    assert status["onnx checker"] == status["onnx checker (full)"] == "pass"
    assert status["operators outside ONNX"] == "warn" and status["load on cpu"] == "pass"
    finding = next(f for f in report.result.findings if f.check == "operators outside ONNX")
    assert "LayerNormalization@14" in finding.detail
    assert report.ok and Model.load(path, strict=True).signature.input_names == ["x"]
    broken = onnx_text(LAYER_NORM_AT_14, check=False)
    broken.graph.node.append(helper.make_node("Relu", ["undefined"], ["z"]))
    assert _status(check(save(broken, tmp_path / "b.onnx")))["onnx checker"] == "fail"
    unknown = onnx_text(LAYER_NORM_AT_14, check=False)
    unknown.graph.node[0].op_type = "LayerNormalisation"
    assert _status(check(save(unknown, tmp_path / "u.onnx")))["onnx checker"] == "fail"


def test_external_data_escape_is_a_blocking_finding(tmp_path: Path) -> None:
    proto = mlp()
    w1 = proto.graph.initializer[0]
    outside = tmp_path / "outside.bin"
    outside.write_bytes(w1.raw_data or onnx.numpy_helper.to_array(w1).tobytes())
    w1.ClearField("raw_data")
    del w1.float_data[:]
    w1.data_location = TensorProto.EXTERNAL
    w1.external_data.add(key="location", value="../outside.bin")
    model_dir = tmp_path / "model"
    report = check(save(proto, model_dir / "m.onnx"))
    first = report.result.findings[0]
    assert (first.check, first.status) == ("safe load", "fail")
    assert "outside.bin" in first.detail
    assert report.exit_code == 1


def test_restricting_providers(tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "m.onnx")
    report = check(path, providers=["cpu", "tensorrt"])
    status = _status(report)
    assert status["load on cpu"] == "pass"
    assert status.get("load on tensorrt") in ("skip", "pass", "fail")
    assert not any(k.startswith("load on azure") for k in status)


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage \x13" * 50])
def test_not_a_model_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        check(path)
    assert info.value.exit_code == 2


def test_report_json_has_stable_keys(tmp_path: Path) -> None:
    import json

    data = json.loads(check(save(mlp(), tmp_path / "m.onnx")).to_json())
    assert set(data) == {"schema", "verb", "ok", "exit_code", "onnxferry_version", "created",
                         "notes", "result"}  # fmt: skip
    assert set(data["result"]) == {"model", "digest", "blocking_failures", "findings"}
    assert set(data["result"]["findings"][0]) == {"check", "status", "detail", "blocking"}


def test_an_output_that_is_not_its_declared_shape_is_a_warning(tmp_path: Path) -> None:
    report = check(save(onnx_text(MISDECLARED), tmp_path / "m.onnx"))
    finding = next(f for f in report.result.findings if f.check == "declared output shapes")
    assert finding.status == "warn" and not finding.blocking, finding
    assert "'y' is declared [1, k] but gives [8, 1]" in finding.detail, finding
    assert "x[1,8]" in finding.detail, finding
    assert report.ok  # ONNX Runtime runs it: a server can serve it, its metadata is wrong


def test_outputs_as_declared_pass_with_the_sizes_run(tmp_path: Path) -> None:
    report = check(save(mlp(), tmp_path / "m.onnx"))
    finding = next(f for f in report.result.findings if f.check == "declared output shapes")
    assert finding.status == "pass" and "x[1,4]" in finding.detail, finding


_UNRUNNABLE = """
<ir_version: 8, opset_import: ["" : 13]>
unrunnable (float[1, 4] x) => (float[3, k] y) {
    zero = Constant<value = float {0}>()
    wanted = Constant<value = float[2] {3, -1}>()
    z = Mul(x, zero)
    s = ReduceSum<keepdims = 0>(z)
    f = Add(wanted, s)
    t = Cast<to = 7>(f)
    y = Reshape(x, t)
}
"""


def test_a_model_that_cannot_run_on_generated_values_is_a_warning(tmp_path: Path) -> None:
    """A shape computed from the input's values, that the input cannot take: the model
    loads (no load-time inference sees it), then fails its one run. Generated values may be
    ones a sound model refuses, so it warns and does not block."""
    report = check(save(onnx_text(_UNRUNNABLE), tmp_path / "m.onnx"))
    finding = next(f for f in report.result.findings if f.check == "declared output shapes")
    assert finding.status == "warn" and not finding.blocking, finding
    assert "onnxruntime cannot run it on x[1,4] with generated values" in finding.detail
    assert report.ok and report.exit_code == 0


def test_a_model_without_sizes_that_run_skips_the_run(tmp_path: Path) -> None:
    text = _UNRUNNABLE.replace("float[1, 4] x", "float[1, k] x").replace("{3, -1}", "{7919, -1}")
    report = check(save(onnx_text(text), tmp_path / "m.onnx"))
    finding = next(f for f in report.result.findings if f.check == "declared output shapes")
    assert finding.status == "skip" and "found no sizes" in finding.detail, finding
    assert report.ok


def _cnn() -> onnx.ModelProto:
    """x[N, 8, 16, 16] -> Conv 3x3 to 16 channels: what ONNX Runtime's NCHWc layout takes."""
    from onnx import numpy_helper

    weight = np.full((16, 8, 3, 3), 0.01, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 16, 16])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_onnx_runtimes_nchwc_layout_ops_are_a_machine_specific_warning(tmp_path: Path) -> None:
    """A model saved by ONNX Runtime after its level-all optimizations holds NCHWc operators
    in this CPU's channel-block layout: it runs here, and check says where it may not."""
    import onnxruntime as ort

    saved = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(saved)
    options.log_severity_level = 4  # its own warning about exactly this
    ort.InferenceSession(_cnn().SerializeToString(), options)
    if not any(n.domain == "com.microsoft.nchwc" for n in onnx.load(str(saved)).graph.node):
        pytest.skip("onnxruntime applies no NCHWc layout on this CPU (no AVX2 / AVX-512)")
    report = check(saved)
    finding = next(f for f in report.result.findings if f.check == "machine-specific operators")
    assert finding.status == "warn" and not finding.blocking
    assert "com.microsoft.nchwc Conv" in finding.detail and "level extended" in finding.detail
    assert report.ok
    plain = check(save(_cnn(), tmp_path / "plain.onnx"))
    assert "machine-specific operators" not in {f.check for f in plain.result.findings}


NOISY = """
<ir_version: 10, opset_import: ["" : 21]>
noisy (float[N, 4] x) => (float[N, 4] y) {
    noise = RandomNormalLike(x)
    y = Add(x, noise)
}
"""
QUIET = """
<ir_version: 10, opset_import: ["" : 21]>
quiet (float[N, 4] x) => (float[N, 4] y) {
    draw = RandomUniformLike(x)
    zero = Constant<value = float {0.0}>()
    kept = GreaterOrEqual(draw, zero)
    y = Where(kept, x, zero)
}
"""
"""A dropout kept at a rate of 0 (a TF1 keep_prob fixed to 1): it draws, and every unit stays."""


def test_a_model_whose_answers_vary_from_run_to_run_is_told(tmp_path: Path) -> None:
    """Random draws that reach an output: every answer differs on the same inputs (a dropout
    exported with its mask); draws that do not reach one: said, and not a warning."""
    noisy = check(save(onnx_text(NOISY), tmp_path / "noisy.onnx")).result.findings
    (finding,) = (f for f in noisy if f.check == "same answer each run")
    assert finding.status == "warn" and not finding.blocking, finding
    assert "outputs y differ from run to run" in finding.detail
    assert "(RandomNormalLike)" in finding.detail
    quiet = check(save(onnx_text(QUIET), tmp_path / "quiet.onnx")).result.findings
    (finding,) = (f for f in quiet if f.check == "same answer each run")
    assert finding.status == "pass" and "did not vary over 4 runs" in finding.detail, finding
    plain = check(save(onnx_text(RELU), tmp_path / "relu.onnx")).result.findings
    assert not any(f.check == "same answer each run" for f in plain)
