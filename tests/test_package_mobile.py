"""`ferry package --target mobile`: ORT format, the minimal-build operator config, int8, parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.data.npz import save_npz
from onnxferry.errors import FeedError, UsageError
from onnxferry.package import Check, Packaged, package
from onnxferry.report import Report

from .helpers import Run, conv_bn_mlp, mlp, onnx_text, save


def _checks(report: Report[Packaged]) -> dict[str, Check]:
    return {c.name: c for c in report.result.checks}


def test_ort_file_loads_and_matches_the_onnx(tmp_path: Path) -> None:
    source = save(conv_bn_mlp(), tmp_path / "net.onnx")
    report = package(source, "mobile", tmp_path / "out")
    assert report.ok and report.exit_code == 0
    out = tmp_path / "out"
    assert report.result.files == ["net.ort", "net.required_operators_and_types.config"]
    assert sorted(p.name for p in out.iterdir()) == sorted(report.result.files)

    session = ort.InferenceSession(str(out / "net.ort"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want[0], rtol=1e-4, atol=1e-4)

    checks = _checks(report)
    parity = checks["ort parity"]
    assert parity.ok and "net.ort vs net.onnx" in parity.detail
    size = checks["size"].detail
    assert "net.onnx" in size and "net.ort" in size and ".config" in size

    config = (out / "net.required_operators_and_types.config").read_text()
    assert "# - net.ort\n" in config and str(tmp_path) not in config
    assert "FusedConv" in config  # Conv+BN+Relu fused at the Fixed style's level 'all'
    assert "ai.onnx;13;Flatten" in config


def test_int8_first_checks_the_conversion_and_reports_the_drop(tmp_path: Path) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    report = package(source, "mobile", tmp_path / "out", {"int8": "true", "platform": "amd64"})
    assert report.ok
    assert report.result.files[0] == "mlp.int8.onnx"
    checks = _checks(report)
    assert "vs mlp.int8.onnx" in checks["ort parity"].detail
    drop = checks["int8 vs fp32"]
    assert drop.ok and "probs cosine" in drop.detail
    assert "mlp.int8.onnx" in checks["size"].detail
    config = (tmp_path / "out" / "mlp.required_operators_and_types.config").read_text()
    assert "DynamicQuantizeMatMul" in config


def test_a_bfloat16_model_is_checked(tmp_path: Path) -> None:
    """numpy cannot name bfloat16 to ONNX Runtime: the .ort's check fed it as OrtValues
    (it was an internal error)."""
    from tests.real_models import bf16_model

    report = package(save(bf16_model(), tmp_path / "bf16.onnx"), "mobile", tmp_path / "out")
    assert report.ok and all(check.ok for check in report.result.checks)


def test_operators_only_config(tmp_path: Path) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    report = package(source, "mobile", tmp_path / "out", {"type_reduction": "false"})
    assert report.ok
    config = (tmp_path / "out" / "mlp.required_operators.config").read_text()
    assert "Softmax" in config and "{" not in config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"int9": "true"}, "unknown option 'int9'"),
        ({"platform": "riscv"}, "platform 'riscv'"),
        ({"int8": "maybe"}, "is not a boolean"),
        ({"atol": "tiny"}, "is not a number"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, str], message: str) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    with pytest.raises(UsageError, match=message):
        package(source, "mobile", tmp_path / "out", options)
    assert not (tmp_path / "out").exists()


def test_an_input_of_unknown_rank_asks_for_inputs_the_package_way(
    ferry: Run, tmp_path: Path
) -> None:
    """No input can be made for it: the one line names ``--set inputs=FILE`` (the verbs'
    ``--inputs`` is not an option of package), and with them the check runs."""
    proto = mlp()
    proto.graph.input[0].type.tensor_type.ClearField("shape")
    source = save(proto, tmp_path / "mlp.onnx")
    code, _, err = ferry("package", source, "--target", "mobile", "-o", tmp_path / "o")
    assert code == 2 and "unknown rank" in err and "--set inputs=FILE" in err, err
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    inputs = {"inputs": str(tmp_path / "x.npy")}
    assert package(source, "mobile", tmp_path / "given", inputs).ok


def test_cli(ferry: Run, tmp_path: Path) -> None:
    source = save(mlp(), tmp_path / "mlp.onnx")
    code, out, err = ferry(
        "package",
        source,
        "--target",
        "mobile",
        "-o",
        tmp_path / "o",
        "--set",
        "int8=true",
        "--json",
    )
    assert code == 0, err
    body = json.loads(out)["result"]
    assert body["target"] == "mobile"
    assert [c["name"] for c in body["checks"]] == ["ort parity", "int8 vs fp32", "size"]
    assert all(c["ok"] for c in body["checks"])
    assert (tmp_path / "o" / "mlp.ort").is_file()


def test_a_model_zoo_ir3_model_runs_as_ort_without_asking_for_its_weights(
    tmp_path: Path,
) -> None:
    """SqueezeNet from the onnx wheel: IR 3, every initializer also a graph input, weights
    made by ConstantOfShape. The .ort takes only the image, and matches."""
    from tests.real_models import light_dir

    source = light_dir() / "light_squeezenet.onnx"
    report = package(source, "mobile", tmp_path / "out")
    assert report.ok, _checks(report)["ort parity"].detail
    session = ort.InferenceSession(
        str(tmp_path / "out" / "light_squeezenet.ort"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["data_0"]


def test_the_check_runs_on_the_users_inputs_or_says_which_sizes_it_chose(tmp_path: Path) -> None:
    """``--set inputs=FILE``: the parity check runs on the user's feeds (at the sizes the model
    is used at); without it, generated feeds at sizes chosen for the open dims, said in a note.
    Feeds that do not fit the model are one line naming the option."""
    source = save(
        onnx_text("""
            <ir_version: 8, opset_import: ["" : 13]>
            g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }
        """),
        tmp_path / "relu.onnx",
    )
    chosen = package(source, "mobile", tmp_path / "chosen")
    assert chosen.ok
    assert any("sizes chosen here" in n and "x[1,3,224,224]" in n for n in chosen.result.notes)
    rows = np.random.default_rng(0).standard_normal((2, 3, 48, 320)).astype(np.float32)
    inputs = save_npz(tmp_path / "x.npz", {"x": rows})
    given = package(source, "mobile", tmp_path / "given", {"inputs": str(inputs)})
    assert given.ok and "over 1 samples" in _checks(given)["ort parity"].detail
    assert not any("sizes chosen here" in n for n in given.result.notes)
    wrong = save_npz(tmp_path / "wrong.npz", {"x": rows[:, :2]})
    with pytest.raises(FeedError, match=r"^--set inputs=\S+wrong.npz.*: input 'x'") as info:
        package(source, "mobile", tmp_path / "wrong", {"inputs": str(wrong)})
    assert "\n" not in str(info.value)
