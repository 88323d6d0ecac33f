"""`ferry package --target tflite`: onnx2tf's .tflite, run by LiteRT against ONNX Runtime.

onnx2tf and LiteRT run in child processes, as the target runs them: never in the test process.
Each conversion costs a spawned process and a TensorFlow import (about 5 s), so the CNN's two
layouts are converted once per module.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxferry.data.npz import save_npz
from onnxferry.errors import InputError, UsageError
from onnxferry.graphs import rename_values
from onnxferry.model import Model
from onnxferry.package import Check, Packaged, package, tflite
from onnxferry.package.base import write_tree
from onnxferry.report import Report

from .helpers import Run, conv_bn_mlp, mlp, onnx_text, save

# Looked up, not imported: importing onnx2tf sets sys.setrecursionlimit(2**31 - 1) for the
# whole process, after which deeply nested input overflows the C stack (a segfault) instead of
# raising RecursionError; the serve tests send such JSON later in the same run.
if not all(importlib.util.find_spec(name) for name in ("onnx2tf", "ai_edge_litert")):
    pytest.skip("the tflite target needs onnxferry[tflite]", allow_module_level=True)

RERUN = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], np.load(sys.argv[2]))
it.invoke()
out = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
np.savez(sys.argv[3], **out)
"""


def cnn(seed: int = 0) -> onnx.ModelProto:
    """x[1,3,16,16] -> Conv(6) -> Relu -> MaxPool -> Flatten -> Gemm -> logits[1,10], and the
    pooled map as a second, 4-D output features[1,6,8,8] (its layout changes in TFLite)."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["features"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["features"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1, 6, 8, 8]),
        ],
        [init("cw", (6, 3, 3, 3)), init("cb", (6,)), init("w", (10, 6 * 8 * 8)), init("b", (10,))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


Packages = dict[str, tuple[Path, Report[Packaged]]]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """The CNN packaged with each layout (nhwc also writes the fp16 file). Its static
    1x3x16x16 input is the case where onnx2tf downloads sample images: this passing offline
    shows the target keeps it from the network."""
    root = tmp_path_factory.mktemp("tflite")
    source = save(cnn(), root / "cnn.onnx")
    return {
        layout: (out, package(source, "tflite", out, options))
        for layout, options in [("nhwc", {"fp16": "true"}), ("nchw", {"layout": "nchw"})]
        for out in [root / layout]
    }


def _checks(report: Report[Packaged]) -> dict[str, Check]:
    return {c.name: c for c in report.result.checks}


def _rerun(tflite_file: Path, x: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    """The written .tflite run by LiteRT in a fresh process, as a user would run it."""
    np.save(tmp_path / "x.npy", x)
    got = tmp_path / "got.npz"
    command = [sys.executable, "-c", RERUN, str(tflite_file), str(tmp_path / "x.npy"), str(got)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with np.load(got) as data:
        return {name: data[name] for name in data.files}


def _onnx(x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(cnn().SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(["logits", "features"], {"x": x}))


def test_auto_layout_moves_channels_only_where_a_convolution_reads_them(tmp_path: Path) -> None:
    """A sequence model ([batch, frames, features] into a MatMul) beside an image into a
    Conv after its mean and scale: with the default layout the image is taken NHWC and the
    sequence as it is (nhwc gave it as [batch, features, frames]); nhwc moves both."""
    proto = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        two (float[1, 6, 8] frames, float[1, 3, 8, 8] image) => (float[1, 6, 4] y, float[1, 2] z) {
            w = Constant <value = float[8, 4] {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
                0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5,
                0.6, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2}> ()
            y = MatMul (frames, w)
            mean = Constant <value = float[1, 3, 1, 1] {0.5, 0.4, 0.3}> ()
            centred = Sub (image, mean)
            k = Constant <value = float[2, 3, 1, 1] {1.0, 0.5, -0.5, 0.25, 1.0, -1.0}> ()
            maps = Conv (centred, k)
            pooled = GlobalAveragePool (maps)
            z = Flatten (pooled)
        }
        """
    )
    source = save(proto, tmp_path / "two.onnx")
    model = Model.load(source)
    assert tflite.channels_first_inputs(model) == {"image"}
    assert tflite.input_perms(model, "auto") == {"frames": (0, 1, 2), "image": (0, 2, 3, 1)}
    assert tflite.input_perms(model, "nhwc") == {"frames": (0, 2, 1), "image": (0, 2, 3, 1)}
    report = package(source, "tflite", tmp_path / "out")
    assert report.ok, [c.detail for c in report.result.checks]
    layout = report.notes[0]
    assert "takes frames as in ONNX [1, 6, 8]; image NHWC (axis 1 moved last) [1, 8, 8, 3]" in (
        layout
    )


def test_node_names_are_given_to_onnx2tf_as_names_tensorflow_takes_for_ops() -> None:
    """The TorchScript exporter names nodes ``/model/encoder/pos_conv_embed/conv/Conv``;
    onnx2tf names HuBERT's position-convolution kernel after it and TensorFlow refused the
    leading ``/`` ("the OP name does not match"). Valid names are kept, the rest made valid
    and unique, inside subgraphs too."""
    proto = cnn()
    names = ["/features/conv/Conv", "relu.ok", "::pool", "", "features/conv/Conv"]
    for node, name in zip(proto.graph.node, names, strict=True):
        node.name = name
    tflite._tf_op_names(proto.graph)
    renamed = [node.name for node in proto.graph.node]
    assert renamed == ["features/conv/Conv_1", "relu.ok", "pool", "", "features/conv/Conv"]
    assert all(tflite.TF_OP_NAME.fullmatch(n) for n in renamed if n)


def test_a_convolution_s_input_is_taken_nhwc_by_default(packages: Packages, tmp_path: Path) -> None:
    out, report = packages["nhwc"]
    assert report.ok and report.exit_code == 0
    assert report.result.files == ["cnn.tflite", "cnn.fp16.tflite"]
    assert sorted(p.name for p in out.iterdir()) == sorted(report.result.files)
    checks = _checks(report)
    assert list(checks) == ["tflite parity", "tflite fp16 parity", "size"]
    parity = checks["tflite parity"]
    assert parity.ok and "all 2 outputs match over 3 samples" in parity.detail
    assert parity.tool.startswith("onnx2tf 1.") and "ai-edge-litert" in parity.tool
    layout = report.notes[0]
    assert "takes x NHWC (axis 1 moved last) [1, 16, 16, 3]" in layout
    assert "logits (the file's Identity) as in ONNX [1, 10]" in layout
    assert "features (the file's Identity_1) NHWC (axis 1 moved last) [1, 8, 8, 6]" in layout

    # What the note says is what the file takes and gives: NHWC in, NHWC feature map out.
    x = np.random.default_rng(7).random((1, 3, 16, 16), dtype=np.float32)
    got = _rerun(out / "cnn.tflite", x.transpose(0, 2, 3, 1), tmp_path)
    logits, features = _onnx(x)
    np.testing.assert_allclose(got["Identity"], logits, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["Identity_1"], features.transpose(0, 2, 3, 1), atol=1e-4)


def test_fp16_file_is_smaller_and_judged_apart(packages: Packages) -> None:
    out, report = packages["nhwc"]
    fp16 = _checks(report)["tflite fp16 parity"]
    assert fp16.ok and "cnn.fp16.tflite@litert" in fp16.detail
    size32 = (out / "cnn.tflite").stat().st_size
    assert (out / "cnn.fp16.tflite").stat().st_size < 0.7 * size32
    size = _checks(report)["size"].detail
    assert "cnn.onnx" in size and "cnn.tflite" in size and "cnn.fp16.tflite" in size


def test_nchw_keeps_the_onnx_input_layout(packages: Packages, tmp_path: Path) -> None:
    out, report = packages["nchw"]
    assert report.ok and report.result.files == ["cnn.tflite"]
    assert "layout=nchw: the .tflite takes x as in ONNX [1, 3, 16, 16]" in report.notes[0]
    x = np.random.default_rng(8).random((1, 3, 16, 16), dtype=np.float32)
    got = _rerun(out / "cnn.tflite", x, tmp_path)
    logits, features = _onnx(x)
    np.testing.assert_allclose(got["Identity"], logits, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got["Identity_1"], features.transpose(0, 2, 3, 1), atol=1e-4)


def test_a_tampered_tflite_fails_hard(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads back the file as written: one bias changed on disk fails it (exit 1).
    ``layout=nchw`` leaves a 2-D input as it is (onnx2tf refuses to be asked to keep it)."""
    proto = mlp()
    bias = next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "b2")
    source = save(proto, tmp_path / "mlp.onnx")

    def write_then_tamper(outdir: Path, files: Mapping[str, str | bytes], result: Packaged) -> None:
        write_tree(outdir, files, result)
        path = outdir / "mlp.tflite"
        data = path.read_bytes()
        at = data.find(bias.tobytes())
        tampered = (bias + np.arange(bias.size) * 5).astype(np.float32)  # softmax ignores a shift
        assert at >= 0, "the bias is not stored verbatim"
        path.write_bytes(data[:at] + tampered.tobytes() + data[at + bias.nbytes :])

    monkeypatch.setattr(tflite, "write_tree", write_then_tamper)
    code, out, err = ferry(
        "package",
        source,
        "--target",
        "tflite",
        "-o",
        tmp_path / "o",
        "--set",
        "layout=nchw",
        "--json",
    )
    assert code == 1, err
    body = json.loads(out)["result"]
    assert "layout=nchw: the .tflite takes x as in ONNX [-1, 4]" in body["notes"][0]
    (parity, size) = body["checks"]
    assert parity["name"] == "tflite parity" and not parity["ok"]
    assert "mlp.tflite@litert vs mlp.onnx@onnxruntime" in parity["detail"]
    assert size["ok"]


def test_an_op_onnx2tf_lacks_is_one_line_exit_2(ferry: Run, tmp_path: Path) -> None:
    proto = onnx_text(
        """
        <ir_version: 10, opset_import: ["" : 20]>
        g (float[1, 16, 2] x) => (float[1, 16, 2] y) { y = DFT(x) }
        """
    )
    source = save(proto, tmp_path / "dft.onnx")
    code, out, err = ferry("package", source, "--target", "tflite", "-o", tmp_path / "o")
    assert code == 2 and out == ""
    assert "onnx2tf cannot convert dft.onnx: DFT OP is not yet implemented" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["paddle", "light_squeezenet"])
def test_real_exports_convert_after_folding(name: str, tmp_path: Path) -> None:
    """Paddle2ONNX's ``dim_value: -1`` and the model zoo's IR 3 weights made by
    ConstantOfShape stop onnx2tf; given to it normalized and folded by onnxslim, each
    converts and matches ONNX Runtime."""
    pytest.importorskip("onnxslim")
    from tests.real_models import BUILT, light_dir

    if name == "paddle":
        source = save(BUILT["paddle"].build(), tmp_path / "paddle.onnx")
    else:
        source = light_dir() / f"{name}.onnx"
    report = package(source, "tflite", tmp_path / "out")
    (parity, *_) = report.result.checks
    assert report.ok and parity.name == "tflite parity" and parity.ok, parity.detail
    assert any("onnxslim" in n and "folded it for onnx2tf" in n for n in report.result.notes)


UNREAD = """
<ir_version: 10, opset_import: ["" : 18]>
tagger (float[batch, 4] x, int64[batch] lengths) => (float[batch, 4] y) { y = Relu(x) }
"""
"""A forward argument torch kept though the code never reads it (AttaCut's ``seq_lengths``)."""


def test_an_input_no_node_reads_is_left_out_and_said(tmp_path: Path) -> None:
    """onnx2tf leaves out an input that no node reads: the check fed the .tflite every ONNX
    input and failed ("the .tflite has 1 inputs, the model 2"), after a strict conversion and
    fixed shapes that could not help."""
    packaged = package(save(onnx_text(UNREAD), tmp_path / "tagger.onnx"), "tflite", tmp_path / "t")
    assert packaged.ok, packaged.result.checks
    notes = packaged.result.notes
    assert "input 'lengths' is read by no node: the .tflite is run without it" in notes
    assert not any("strict mode: without it" in n for n in notes), notes
    assert not any("lengths" in n for n in notes if n.startswith("layout=")), notes


DOUBLE_TAIL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x, float gain) => (double[N, 4] y) {
    wide = Cast<to = 11>(x)
    g64 = Cast<to = 11>(gain)
    half = Constant<value = double {0.5}>()
    scaled = Mul(wide, g64)
    y = Add(scaled, half)
}
"""


def test_float64_and_a_scalar_input_run_in_litert(tmp_path: Path) -> None:
    """SwiftF0 computes its pitch in float64 and takes its pitch range as float scalars:
    onnx2tf's Mul failed on the float64 values ("'dummy_tensor' is not associated with a
    value"), and the file it then wrote takes each scalar as one axis, which the check fed
    as a scalar ("input 'fmin' takes [-1], the feed is []"). float64 goes to onnx2tf as float32
    and a scalar is fed as [1], both said."""
    source = save(onnx_text(DOUBLE_TAIL), tmp_path / "tail.onnx")
    packaged = package(source, "tflite", tmp_path / "t")
    assert packaged.ok, packaged.result.checks
    notes = packaged.result.notes
    assert any("float64 tensors and casts were given to onnx2tf as float32" in n for n in notes)
    (layout,) = [n for n in notes if n.startswith("layout=")]
    assert re.search(r"gain as in ONNX \[-?1\] \(a scalar in ONNX: give it as \[1\]\)", layout)


def test_a_bfloat16_model_runs_in_litert_in_float32(tmp_path: Path) -> None:
    """A model kept in bfloat16 (input, weights, output): onnx2tf has no bfloat16 ("KeyError:
    16"); widened to float32, exactly, the file runs and is judged at bfloat16's tolerance."""
    from tests.real_models import bf16_model

    packaged = package(save(bf16_model(), tmp_path / "bf16.onnx"), "tflite", tmp_path / "t")
    assert packaged.ok, packaged.result.checks
    assert any("bfloat16 tensors and casts were given to onnx2tf" in n for n in packaged.notes)


def test_strict_mode_runs_only_when_the_file_without_it_fails_its_check(tmp_path: Path) -> None:
    """onnx2tf's strict mode (an accuracy correction that reruns the graph after each op)
    runs only when the file converted without it fails its check: SqueezeNet's softmax came
    out transposed without it (onnx2tf 1.28); whichever way a version goes, ``strict=auto``
    passes and says which mode wrote the file, and ``strict=true`` is onnx2tf's default."""
    pytest.importorskip("onnxslim")
    from tests.real_models import light_dir

    source = light_dir() / "light_squeezenet.onnx"
    auto = package(source, "tflite", tmp_path / "auto")
    assert auto.ok, auto.result.checks
    quick = package(source, "tflite", tmp_path / "quick", {"strict": "false"})
    (quick_parity, *_) = quick.result.checks
    notes = auto.result.notes
    redone = [n for n in notes if n.startswith("converted in onnx2tf's strict mode: without it")]
    if quick.ok:
        assert tflite.QUICK_NOTE in notes and not redone, notes
    else:
        assert tflite.QUICK_NOTE not in notes and len(redone) == 1, notes
        assert quick_parity.detail in redone[0], (quick_parity.detail, redone)
    strict = package(source, "tflite", tmp_path / "strict", {"strict": "true"})
    assert strict.ok and tflite.QUICK_NOTE not in strict.result.notes
    assert not any("strict mode: without it" in n for n in strict.result.notes)


def test_a_bert_fused_by_onnx_runtime_s_optimizer_packages(tmp_path: Path) -> None:
    """Attention, EmbedLayerNormalization, SkipLayerNormalization and BiasGelu are ONNX
    Runtime's own: onnx2tf stopped at the first. Given as the standard ONNX they stand for,
    the .tflite matches ONNX Runtime running the fused model."""
    pytest.importorskip("transformers")
    from tests.test_unfused import bert_feeds, ort_optimized_bert

    source = ort_optimized_bert(tmp_path)
    inputs = save_npz(tmp_path / "feeds.npz", bert_feeds())
    report = package(source, "tflite", tmp_path / "out", {"inputs": str(inputs)})
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    note = next(n for n in report.result.notes if "ONNX Runtime fused operators" in n)
    assert "1 Attention" in note and "1 EmbedLayerNormalization" in note


def test_a_tf2onnx_nhwc_input_named_with_a_colon_stays_nhwc(tmp_path: Path) -> None:
    """tf2onnx's ``input_1:0`` already NHWC, a Transpose inside: kept as it is. onnx2tf
    matches the inputs to keep after writing ':' as '__'; given "input_1:0", it kept none and
    took the image as NCHW ([batch, width, 3, height]: the check failed)."""
    from tests.real_models import BUILT

    source = save(BUILT["tf2onnx"].build(), tmp_path / "tf2onnx.onnx")
    report = package(source, "tflite", tmp_path / "out")
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    kept = "takes input_1:0 (the file's input_1__0) as in ONNX"
    assert any(kept in n for n in report.result.notes), report.result.notes


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_qdq_int8_model_runs_in_litert_with_its_quantization_as_float_ops(
    kind: str, tmp_path: Path
) -> None:
    """ONNX Runtime's static int8 quantizer writes QuantizeLinear / DequantizeLinear pairs;
    onnx2tf makes QuantizeLinear a Flex op, which LiteRT's interpreter cannot run (the check
    failed). Given as the float ops that compute the same values, it runs and matches ONNX
    Runtime to one step of the output's quantization (ONNX Runtime fuses the pairs into
    integer kernels that round apart from float ops: 1/255 on these probabilities); the
    rewrite itself changes nothing ONNX Runtime computes as written. A Conv's bias is int32,
    dequantized from a constant: folded too (onnx2tf's own int32 DequantizeLinear put a
    CNN's logits 0.35 off, on a range of 0.39)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from onnxferry.optimize.qdq_float import as_float_ops

    rng = np.random.default_rng(0)
    model, shape = (mlp(hidden=16), (8, 4)) if kind == "mlp" else (conv_bn_mlp(), (8, 3, 8, 8))
    save(model, tmp_path / "fp32.onnx")
    batches = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    source = tmp_path / "int8.onnx"
    quantize_static(tmp_path / "fp32.onnx", source, Calibration(), quant_format=QuantFormat.QDQ)
    proto = onnx.load(str(source))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(proto)
    count = as_float_ops(rewritten)
    assert count == ops.count("QuantizeLinear") + ops.count("DequantizeLinear")
    left = {n.op_type for n in rewritten.graph.node}
    assert not left & {"QuantizeLinear", "DequantizeLinear"}, left
    onnx.checker.check_model(rewritten, full_check=True)
    x = {"x": rng.standard_normal((16, *shape[1:])).astype(np.float32)}
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want, got = (
        ort.InferenceSession(p.SerializeToString(), plain).run(None, x)[0]
        for p in (proto, rewritten)
    )
    np.testing.assert_allclose(got, want, atol=1e-6)

    output = proto.graph.output[0].name
    step = max(
        float(numpy_helper.to_array(t).max())
        for t in proto.graph.initializer
        if t.name.startswith(output) and t.name.endswith("scale")
    )
    report = package(source, "tflite", tmp_path / "out", {"atol": str(1.01 * step)})
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    assert any(f"its {count} QuantizeLinear/DequantizeLinear" in n for n in report.result.notes)


def test_gelu_s_erf_runs_in_litert(tmp_path: Path) -> None:
    """torch's exact GELU exports as Erf, which TFLite has no builtin for: onnx2tf's
    polynomial stands in for it, so the file runs in LiteRT and matches ONNX Runtime."""
    proto = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 8] x) => (float[batch, 8] y) {
            half = Constant <value = float {0.5}> ()
            root = Constant <value = float {1.41421356}> ()
            one = Constant <value = float {1.0}> ()
            scaled = Div(x, root)
            erf = Erf(scaled)
            shifted = Add(erf, one)
            product = Mul(x, shifted)
            y = Mul(product, half)
        }
        """
    )
    report = package(save(proto, tmp_path / "gelu.onnx"), "tflite", tmp_path / "out")
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail


_L2_NORMALIZE = {
    13: "n = ReduceL2 <axes = [1], keepdims = 1> (r)",
    18: "n = ReduceL2 <keepdims = 1> (r, axes)",
}


@pytest.mark.parametrize("opset", sorted(_L2_NORMALIZE))
def test_an_l2_normalized_embedding_runs_in_litert(opset: int, tmp_path: Path) -> None:
    """``F.normalize`` / ``torch.norm(dim=1)`` (every embedding model's last step) exports as
    ReduceL2 over one axis, which onnx2tf hands tf.norm as a NumPy integer TensorFlow refuses:
    it is given to onnx2tf as Sqrt(ReduceSumSquare), axes as an attribute (opset 13) or an
    input (18)."""
    proto = onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (float[batch, 8] x) => (float[batch, 8] y) {{
            axes = Constant <value = int64[1] {{1}}> ()
            r = Relu(x)
            {_L2_NORMALIZE[opset]}
            y = Div(r, n)
        }}
        """
    )
    report = package(save(proto, tmp_path / "embed.onnx"), "tflite", tmp_path / "out")
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    assert any("its 1 ReduceL2 nodes were given to onnx2tf" in n for n in report.result.notes)


def _flex_tflite(path: str) -> None:
    """(In a spawned worker.) A .tflite with one TensorFlow op, Erf, kept as a Flex op."""
    import tensorflow as tf

    erf = tf.function(tf.math.erf, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([erf.get_concrete_function()])
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    Path(path).write_bytes(converter.convert())


def test_a_file_that_needs_flex_ops_fails_its_check_naming_them(tmp_path: Path) -> None:
    path = str(tmp_path / "flex.tflite")
    feeds = [{"x": np.zeros((1, 4), np.float32)}]
    with tflite._child() as pool:
        pool.submit(_flex_tflite, path).result()
        ran = pool.submit(tflite._run, path, feeds, {"x": (0, 1)}, ["y"]).result()
    assert ran.problem is not None
    assert "needs TensorFlow ops that LiteRT's builtins lack: Erf (1)" in ran.problem


def test_static_fixes_the_open_dims_at_the_check_s_sizes(tmp_path: Path) -> None:
    """``static=true``: x[batch, 4] is written as the check feeds it ([3, 4], from the user's
    inputs), and the file takes exactly that."""
    source = save(mlp(), tmp_path / "mlp.onnx")
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    options = {"static": "true", "inputs": str(inputs)}
    report = package(source, "tflite", tmp_path / "out", options)
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    assert "written with its inputs fixed at x[3,4] (static=true)" in report.result.notes
    assert "takes x as in ONNX [3, 4]" in report.result.notes[0], report.result.notes[0]


def test_names_keras_cannot_take_are_renamed_for_onnx2tf(tmp_path: Path) -> None:
    """openWakeWord's timer names its output with a JSON text, which no Keras layer may have:
    onnx2tf is given safe names, the input's new name is noted, and the check still pairs
    every input and output (in order)."""
    proto = mlp()
    rename_values(proto.graph, {"x": "audio features", "probs": '{"1": "timer", "2": "fan"}'})
    source = save(proto, tmp_path / "named.onnx")
    report = package(source, "tflite", tmp_path / "out")
    (parity, *_) = report.result.checks
    assert report.ok and parity.ok, parity.detail
    notes = report.result.notes
    assert any("'audio features' is 'audio_features' in the .tflite" in n for n in notes), notes


def test_when_fixing_the_inputs_does_not_help_the_open_file_stays_with_why() -> None:
    def attempt(problem: str | None) -> tflite._Attempt:
        converted = tflite.Converted({}, "1.0", [])
        ran = tflite.Ran([], {}, {}, "2.0", problem)
        return tflite._Attempt(converted, {"m.tflite": ran}, [], Path("."))

    def refused() -> tflite._Attempt:
        raise InputError("onnx2tf cannot convert m.onnx: Resize OP is not yet implemented")

    for fixed, why in [
        (lambda: attempt("still fails"), "still fails"),
        (refused, "Resize OP is not yet implemented"),
    ]:
        open_dims = attempt("XNNPack delegate failed to reshape")
        chosen = tflite._fixed_if_it_runs(open_dims, fixed, "x[1,4]")
        assert chosen is open_dims and chosen.problem == "XNNPack delegate failed to reshape"
        (note,) = chosen.notes
        assert note.startswith("fixing its inputs at x[1,4] did not help (") and why in note
    chosen = tflite._fixed_if_it_runs(attempt("XNNPack"), lambda: attempt(None), "x[1,4]")
    assert chosen.problem is None and "failed its check (XNNPack)" in chosen.notes[0]
    # a file that runs but misses ONNX Runtime is converted again just the same
    mismatched = attempt(None)
    mismatched.mismatch = "worst output 'y': max abs 0.887"
    chosen = tflite._fixed_if_it_runs(mismatched, lambda: attempt(None), "x[1,4]")
    assert chosen is not mismatched and "failed its check (worst output 'y'" in chosen.notes[0]


def test_a_traceback_in_onnx2tf_s_log_becomes_its_exception_and_node() -> None:
    """onnx2tf logs "ERROR: The trace log is below." before a traceback: the one line is the
    exception the traceback ends in, at the node onnx2tf names (from a real log's shape)."""
    log = (
        "\x1b[07mModel conversion started\x1b[0m ====\n"
        "\x1b[31mERROR:\x1b[0m The trace log is below.\n"
        "Traceback (most recent call last):\n"
        '  File "onnx2tf/ops/Conv.py", line 67, in make_node\n'
        "ValueError: axes don't match array\n\n"
        "\x1b[31mERROR:\x1b[0m input_onnx_file_path: /tmp/model.onnx\n"
        "\x1b[31mERROR:\x1b[0m onnx_op_name: n0\n"
        "\x1b[31mERROR:\x1b[0m Read this and deal with it.\n"
    )
    assert tflite._first_error(log) == "ValueError: axes don't match array (at node n0)"
    log = "\x1b[31mERROR:\x1b[0m DFT OP is not yet implemented.\n"
    assert tflite._first_error(log) == "DFT OP is not yet implemented."
    log = (  # TensorFlow's own error, spelled with its module (onnx2tf's QLinearConv, per channel)
        "\x1b[31mERROR:\x1b[0m The trace log is below.\n"
        "Traceback (most recent call last):\n"
        "tensorflow.python.framework.errors_impl.InvalidArgumentError: {{function_node "
        "__wrapped__RealDiv_device_/job:localhost/replica:0/task:0/device:CPU:0}} Incompatible "
        "shapes: [16] vs. [3] [Op:RealDiv] name: \n"
        "\x1b[31mERROR:\x1b[0m onnx_op_name: /c1/Conv_quant\n"
    )
    assert tflite._first_error(log) == (
        "InvalidArgumentError: Incompatible shapes: [16] vs. [3] (at node /c1/Conv_quant)"
    )


def test_output_layout_read_from_values_when_the_shape_cannot_tell() -> None:
    rng = np.random.default_rng(0)
    square = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)  # C == H == W
    wide = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    flat = rng.standard_normal((1, 3)).astype(np.float32)
    reference = [{"square": square, "wide": wide, "flat": flat}]
    nhwc = {"square": square.transpose(0, 2, 3, 1), "wide": wide.transpose(0, 2, 3, 1)}
    back, last = tflite.onnx_layout([{**nhwc, "flat": flat}], reference)
    assert last == {"square": True, "wide": True, "flat": False}
    for name, value in reference[0].items():
        np.testing.assert_array_equal(back[0][name], value)
    _, last = tflite.onnx_layout([{"square": square, "wide": wide}], reference)
    assert last == {"square": False, "wide": False}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "nwhc"}, "--set layout=nwhc is not one of auto, nhwc, nchw"),
        ({"int8": "true"}, "tflite: unknown option 'int8'"),
        ({"samples": "0"}, "--set samples=0 is not an integer >= 1"),
        ({"fp16": "maybe"}, "is not a boolean"),
        ({"static": "maybe"}, "--set static=maybe is not one of auto, true, false"),
        ({"strict": "yes"}, "--set strict=yes is not one of auto, true, false"),
        ({"timeout": "0"}, "--set timeout=0 is not a number >= 1"),
        ({"timeout": "ten"}, "--set timeout=ten is not a number"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, str], message: str) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    with pytest.raises(UsageError, match=message.replace(".", r"\.")) as e:
        package(source, "tflite", tmp_path / "out", options)
    assert "\n" not in str(e.value) and e.value.hint
    assert not (tmp_path / "out").exists()


def test_litert_reference_kernels_give_the_written_file_a_second_opinion(tmp_path: Path) -> None:
    """The check's second opinion on the .tflite side: the file as written, on LiteRT's
    reference kernels, in the ONNX layout; on an MLP it agrees with the default kernels."""
    report = package(save(mlp(), tmp_path / "mlp.onnx"), "tflite", tmp_path / "out")
    assert report.ok, report.result.checks
    path = tmp_path / "out" / "mlp.tflite"
    feeds = [{"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}]
    reference = [{"probs": np.zeros((2, 3), np.float32)}]
    with tflite._child() as pool:
        default = pool.submit(tflite._run, str(path), feeds, {"x": (0, 1)}, ["probs"]).result()
        opinion = tflite._reference_kernels(pool, path, feeds, {"x": (0, 1)}, ["probs"], reference)
        outputs, name = opinion()
        assert opinion()[0] is outputs  # run once
    assert name == "mlp.tflite@litert (reference kernels)"
    np.testing.assert_allclose(outputs[0]["probs"], default.outputs[0]["probs"], atol=1e-5)


def test_a_qoperator_int8_model_packages_as_qdq(ferry: Run, tmp_path: Path) -> None:
    """ONNX Runtime's QOperator int8 CNN (tests/test_qdq.py): exit 2 before, onnx2tf's
    QLinearConv failing on per-channel weights ("Incompatible shapes"). Now QDQ, verified, an
    output a step of its scale from ONNX Runtime's integer kernels passing as their noise."""
    from tests.test_qdq import packages_as_qdq

    packages_as_qdq(ferry, tmp_path, "tflite")


def test_a_model_quantized_by_its_data_packages_with_float_products(
    ferry: Run, tmp_path: Path
) -> None:
    """``quantize_dynamic``'s CNN: onnx2tf wrote MatMulInteger and ConvInteger as TensorFlow
    ops LiteRT's builtins lack ("LiteRT cannot run it", exit 1). Given as exact float
    products, the file runs; ONNX Runtime's u8s8 kernels, saturating without VNNI, are judged
    by its run of the same float form."""
    from tests.test_qdq import packages_quantized_by_data

    notes = packages_quantized_by_data(ferry, tmp_path, "tflite")
    assert any(n.startswith("its integer products (2 ConvInteger, 2 MatMulInteger)") for n in notes)


CONCAT_5D = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 4, 4, 4] x, float[1, 2, 4, 4, 4] y) => (float[1, 6, 4, 4, 4] z) {
    c = Concat <axis = 1> (x, y)
    z = Relu(c)
}
"""


def test_the_quick_conversion_skips_axis_order_searches_it_has_no_values_for(
    tmp_path: Path,
) -> None:
    """onnx2tf tries every pair of axis orders of a Concat's two inputs (one with equal dims
    after the batch), a Keras model each, and keeps the one closest to ONNX Runtime's values;
    without shape estimation (the quick conversion) there are none, and it kept the inputs'
    own order after 14,400 tries for 5-D ones (340 of a 354 s package). Given no values, each
    try ends at once: the same file, here within a ``timeout`` the search would not end in."""
    pytest.importorskip("onnxslim")
    source = save(onnx_text(CONCAT_5D), tmp_path / "concat5d.onnx")
    options = {"strict": "false", "timeout": "120"}
    report = package(source, "tflite", tmp_path / "o", options)
    assert report.ok, report.result.checks
