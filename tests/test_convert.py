"""The convert dispatcher: detection, verification on several shapes, the choice, the failures.

Framework loaders have their own test files; here the sources are ONNX models (re-targeted
to another opset) and caller-built Sources whose exporters write real ONNX files.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxferry.cli import main
from onnxferry.convert import (
    Candidate,
    ConversionError,
    ParityFailure,
    Source,
    convert,
    detect_framework,
)
from onnxferry.errors import InputError, UsageError
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner, runtime_limits
from tests.helpers import mlp, save


def _writer(proto: onnx.ModelProto) -> Callable[[Path], None]:
    def export(path: Path) -> None:
        onnx.save(proto, str(path))

    return export


def _source(*candidates: tuple[str, onnx.ModelProto]) -> Source:
    """The mlp as the reference; each candidate exporter writes the given model."""
    return Source(
        framework="onnx",
        description="test mlp",
        reference=OrtRunner(Model.from_proto(mlp())),
        candidates=[Candidate(name, _writer(proto)) for name, proto in candidates],
    )


def test_retargets_an_onnx_model_and_verifies_it(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "src.onnx")
    out = tmp_path / "out" / "model.onnx"
    model = convert(src, out, opset=17)
    assert out.is_file() and model.path == out
    assert model.opset_imports["ai.onnx"] == 17
    report = model.provenance[-1]
    assert report.ok and report.result.chosen.startswith("onnx version converter")
    # two values of the batch dim were tested
    assert [s["x"][0] for s in report.result.shapes] == [1, 4]
    assert model.metadata_props["onnxferry.verified"] == "true"
    assert model.metadata_props["onnxferry.source_framework"] == "onnx"


def test_lowers_an_opset_the_runtime_cannot_load(tmp_path: Path) -> None:
    max_ir, max_opset = runtime_limits()
    if max_opset + 1 > onnx.defs.onnx_opset_version():
        pytest.skip(f"installed onnx has no opset {max_opset + 1}")
    proto = mlp()
    proto.opset_import[0].version = max_opset + 1
    proto.ir_version = onnx.IR_VERSION
    model = convert(save(proto, tmp_path / "new.onnx"), tmp_path / "old.onnx")
    assert model.opset_imports["ai.onnx"] == max_opset and model.ir_version <= max_ir
    report = model.provenance[-1]
    assert report.result.details["reference"].endswith("@onnx.reference")
    assert report.ok


def _opset_6_prelu() -> onnx.ModelProto:
    """x[N, 3, 4, 5] -> PRelu@6 with a slope per channel, IR 3 (every weight an input too),
    as PyTorch 0.x exported it (onnx's own pytorch-converted test models)."""
    from onnx import TensorProto, helper, numpy_helper

    slope = np.array([0.1, 0.2, 0.3], np.float32)
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "slope"], ["y"])],
        "prelu",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5]),
            helper.make_tensor_value_info("slope", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [numpy_helper.from_array(slope, "slope")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)


def test_an_opset_older_than_the_runtime_runs_is_raised_and_verified(tmp_path: Path) -> None:
    """ONNX Runtime has no CPU kernel for PRelu@6 (nor Add@6, Gemm@6, ...): kept at opset 6
    the parity check could not run it ("no runtime here implements"). Raised to the default
    opset, checked against onnx's reference implementation of the original; PRelu's slope
    still goes along the channels (onnx's version converter left it to broadcast along the
    last axis), and the weights are no longer inputs."""
    model = convert(save(_opset_6_prelu(), tmp_path / "old.onnx"), tmp_path / "new.onnx")
    assert model.opset_imports["ai.onnx"] == 17 and model.ir_version >= 8
    report = model.provenance[-1]
    assert report.ok and report.result.details["reference"].endswith("@onnx.reference")
    assert any("opset 6 is older than ONNX Runtime runs" in n for n in report.notes)
    assert [i.name for i in model.proto.graph.input] == ["x"]
    x = -np.ones((2, 3, 4, 5), np.float32)
    (y,) = OrtRunner(model).run({"x": x}).values()
    np.testing.assert_allclose(y[0, :, 0, 0], [-0.1, -0.2, -0.3], rtol=1e-6)
    kept = convert(save(_opset_6_prelu(), tmp_path / "old.onnx"), tmp_path / "7.onnx", opset=7)
    assert kept.opset_imports["ai.onnx"] == 7  # an opset asked for is the one written


def test_fastest_passing_exporter_is_chosen_and_the_reason_given(tmp_path: Path) -> None:
    renamed = mlp()  # right values under the wrong output name: fails the names check
    renamed.graph.output[0].name = "scores"
    renamed.graph.node[-1].output[0] = "scores"
    model = convert(_source(("plain", mlp()), ("wrong-names", renamed)), tmp_path / "m.onnx")
    report = model.provenance[-1].result
    statuses = {a.exporter: a.status for a in report.attempts}
    assert statuses == {"plain": "chosen", "wrong-names": "failed"}
    assert "the only exporter that passed" in report.reason

    model = convert(_source(("a", mlp()), ("b", mlp())), tmp_path / "m2.onnx")
    result = model.provenance[-1].result
    assert result.chosen in ("a", "b")
    assert "all passed parity" in result.reason
    assert (
        "equally fast" in result.reason and result.chosen == "a"
    ) or "x as fast" in result.reason
    assert all(a.latency_ms is not None for a in result.attempts)


def test_parity_failure_is_exit_1_with_a_report_and_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityFailure) as info:
        convert(_source(("off", mlp(noise=0.2))), out)
    assert info.value.exit_code == 1
    assert "'probs'" in str(info.value)
    report = info.value.report
    assert not report.ok
    (attempt,) = report.result.attempts
    assert attempt.status == "failed" and attempt.parity is not None
    assert attempt.parity.worst is not None and attempt.parity.worst.name == "probs"
    assert not out.exists()


def test_no_verify_writes_but_says_so_loudly(tmp_path: Path) -> None:
    model = convert(_source(("off", mlp(noise=0.2))), tmp_path / "m.onnx", verify=False)
    report = model.provenance[-1]
    assert any(n.startswith("NOT VERIFIED") for n in report.notes)
    assert model.metadata_props["onnxferry.verified"] == "false"


def test_exporter_errors_are_collected_and_named(tmp_path: Path) -> None:
    def broken(path: Path) -> None:
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset 17 is not supported")

    source = _source(("good", mlp()))
    source.candidates.insert(0, Candidate("broken", broken))
    model = convert(source, tmp_path / "m.onnx")
    first = model.provenance[-1].result.attempts[0]
    assert first.status == "error" and "aten::fancy" in (first.error or "")

    only_broken = _source()
    only_broken.candidates.append(Candidate("broken", broken))
    with pytest.raises(ConversionError, match="aten::fancy") as info:
        convert(only_broken, tmp_path / "none.onnx")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert not (tmp_path / "none.onnx").exists()


def test_a_fallback_exporter_runs_only_when_those_before_it_fail(tmp_path: Path) -> None:
    """Keras's own export is tf2onnx again: tried only when our tf2onnx candidate fails."""
    ran: list[str] = []

    def exporter(name: str, proto: onnx.ModelProto) -> Callable[[Path], None]:
        def export(path: Path) -> None:
            ran.append(name)
            onnx.save(proto, str(path))

        return export

    def source(first: onnx.ModelProto) -> Source:
        built = _source()
        built.candidates += [
            Candidate("first", exporter("first", first)),
            Candidate("fallback", exporter("fallback", mlp()), fallback=True),
        ]
        return built

    model = convert(source(mlp()), tmp_path / "m.onnx")
    result = model.provenance[-1].result
    assert ran == ["first"]
    assert [(a.exporter, a.status) for a in result.attempts] == [
        ("first", "chosen"),
        ("fallback", "not tried"),
    ]
    assert "fallback: a fallback, tried only when the exporters before it fail" in result.reason
    assert "tried only when" in model.provenance[-1].to_text()

    ran.clear()
    model = convert(source(mlp(noise=0.2)), tmp_path / "m2.onnx")
    result = model.provenance[-1].result
    assert ran == ["first", "fallback"]
    assert [(a.exporter, a.status) for a in result.attempts] == [
        ("first", "failed"),
        ("fallback", "chosen"),
    ]
    assert result.reason == "the only exporter that passed (first did not)"


def test_user_samples_are_verified_too(tmp_path: Path) -> None:
    samples = [{"x": np.full((3, 4), 0.5, np.float32)}]
    model = convert(_source(("plain", mlp())), tmp_path / "m.onnx", inputs=samples)
    result = model.provenance[-1].result
    assert result.inputs_from == "user samples + generated"
    assert result.shapes[0] == {"x": [3, 4]} and len(result.shapes) == 3


def test_in_memory_result_without_output() -> None:
    model = convert(Model.from_proto(mlp()), opset=18)
    assert model.path is None and model.opset_imports["ai.onnx"] == 18


@pytest.mark.parametrize(
    ("name", "content", "framework"),
    [
        ("m.onnx", None, "onnx"),
        ("m.keras", b"x", "keras"),
        ("m.tflite", b"x", "tflite"),
        ("m.pt", b"x", "torch"),
        ("m.pt2", b"x", "torch"),
        ("silero_vad.jit", b"x", "torch"),
        ("m.pkl", b"x", "sklearn"),
        ("m.joblib", b"x", "sklearn"),
        ("noext", b"\x1c\x00\x00\x00TFL3rest", "tflite"),
    ],
)
def test_detect_framework_from_paths(
    tmp_path: Path, name: str, content: bytes | None, framework: str
) -> None:
    path = tmp_path / name
    if content is None:
        save(mlp(), path)
    else:
        path.write_bytes(content)
    assert detect_framework(path) == framework


def test_detect_framework_for_directories_and_factories(tmp_path: Path) -> None:
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    assert detect_framework(tmp_path / "saved") == "tf"
    with pytest.raises(UsageError, match="is a factory"):  # known once it runs
        detect_framework("models.py:make")
    assert detect_framework(Model.from_proto(mlp())) == "onnx"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"neither saved_model\.pb"):
        detect_framework(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"epochs": 600}')  # not transformers'
    with pytest.raises(InputError, match=r"neither saved_model\.pb, a checkpoint's \.meta"):
        detect_framework(tmp_path / "empty")
    (tmp_path / "empty" / "model.ckpt.meta").write_bytes(b"")
    assert detect_framework(tmp_path / "empty") == "tf"  # a TF1 checkpoint
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", b"")  # as torch.save writes it
    assert detect_framework(tmp_path / "pytorch_model.bin") == "torch"
    # torch.save under a pickle's name (facial_emotion_recognition's model.pkl, PyTorch 1.5's
    # format) was taken for scikit-learn's: "holds a int, not a fitted estimator"
    (tmp_path / "pytorch_model.bin").rename(tmp_path / "model.pkl")
    assert detect_framework(tmp_path / "model.pkl") == "torch"
    legacy = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
    (tmp_path / "old.pickle").write_bytes(legacy + b"\x2e")
    assert detect_framework(tmp_path / "old.pickle") == "torch"
    (tmp_path / "old.bin").write_bytes(legacy + b"\x2e")
    assert detect_framework(tmp_path / "old.bin") == "torch"
    (tmp_path / "estimator.pkl").write_bytes(pickle.dumps({"a": 1}))
    assert detect_framework(tmp_path / "estimator.pkl") == "sklearn"
    (tmp_path / "tf2").mkdir()  # tf.train.Checkpoint's files: weights, no graph
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001", "checkpoint"):
        (tmp_path / "tf2" / name).write_bytes(b"")
    for source in ("tf2", "tf2/ckpt-1.index", "tf2/ckpt-1.data-00000-of-00001"):
        with pytest.raises(InputError, match=r"checkpoint's weights .* without its graph"):
            detect_framework(tmp_path / source)
    (tmp_path / "model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}")
    with pytest.raises(InputError, match="safetensors weights, not a model"):
        detect_framework(tmp_path / "model.safetensors")
    (tmp_path / "blob.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="--framework"):
        detect_framework(tmp_path / "blob.bin")
    with pytest.raises(UsageError, match="cannot tell which framework"):
        detect_framework(object())


def test_opset_the_runtime_cannot_load_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be loaded by the installed onnxruntime"):
        convert(
            save(mlp(), tmp_path / "m.onnx"), tmp_path / "o.onnx", opset=runtime_limits()[1] + 1
        )
    assert not (tmp_path / "o.onnx").exists()


# --- the CLI ---------------------------------------------------------------------------


def _ferry(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_convert_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save(mlp(), tmp_path / "src.onnx")
    out = tmp_path / "o.onnx"
    code, stdout, err = _ferry(capsys, "convert", src, "-o", out, "--opset", "18", "--json")
    data = json.loads(stdout)
    assert code == 0 and data["verb"] == "convert" and data["result"]["verified"] is True
    assert Model.load(out).opset_imports["ai.onnx"] == 18


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opset", "99"], "cannot be loaded by the installed onnxruntime"),
        (["--input-shape", "x=1xA"], "--input-shape takes NAME=DxDx"),
        (["--dynamic", "x0=batch"], "--dynamic takes NAME:AXIS=DIM"),
    ],
)
def test_cli_convert_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    src = save(mlp(), tmp_path / "src.onnx")
    code, _, err = _ferry(capsys, "convert", src, "-o", tmp_path / "o.onnx", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_cli_convert_wrong_framework_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "model.tflite"
    src.write_bytes(np.random.default_rng(0).bytes(64))
    code, _, err = _ferry(capsys, "convert", src, "-o", tmp_path / "o.onnx", "--framework", "onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_parity_failure_names_the_first_divergence(tmp_path: Path) -> None:
    from onnxferry.bisect import bisect

    reference = Model.from_proto(mlp())
    source = _source(("off", mlp(noise=0.2)))
    source.find_divergence = lambda model, feeds, tol: bisect(reference, model, feeds, tol)
    with pytest.raises(ParityFailure) as info:
        convert(source, tmp_path / "m.onnx")
    result = info.value.report.result
    assert result.divergence is not None
    assert (result.divergence.tensor, result.divergence.node) == ("l0", "fc2")
    assert "first divergence" in info.value.report.to_text()
