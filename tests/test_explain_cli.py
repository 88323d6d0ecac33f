"""`ferry explain` end to end: the files it writes, its JSON, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxferry.data import save_npz
from onnxferry.model import Model
from tests.helpers import Run, save
from tests.test_explain import TOKEN, _ids, _images, _rows, image, tabular, tokens


def _saved(model: Model, path: Path) -> Path:
    return save(model.proto, path)


@pytest.fixture
def tabular_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = _saved(tabular(), tmp_path / "tabular.onnx")
    x = save_npz(tmp_path / "x.npz", {"x": _rows(3)})
    background = save_npz(tmp_path / "bg.npz", {"x": _rows(10, seed=1)})
    return model, x, background


def test_tabular_writes_charts_and_the_report_and_prints_json(
    ferry: Run, tabular_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, x, background = tabular_files
    out = tmp_path / "out"
    code, stdout, err = ferry(
        "explain", model, "--inputs", x, "--background", background, "--samples", "64",
        "--target", "0", "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)["result"]
    assert result["method"] == "kernelshap" and result["kind"] == "tabular"
    for row in result["explanations"]:
        assert {t["feature"] for t in row["top"][:2]} == {2, 5}
        assert abs(row["additivity_gap"]) < 1e-4
    names = {p.name for p in out.iterdir()}
    expected = {"explanation.json", "attributions.npz", "importance.png", "beeswarm.png"}
    assert expected | {"report.html"} == names
    assert f"report: {out / 'report.html'}" in err


def test_image_writes_a_heatmap_per_input_and_prints_tables(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _saved(image(), tmp_path / "models" / "image.onnx")
    x = save_npz(tmp_path / "x.npz", {"x": _images(2)})
    monkeypatch.chdir(tmp_path)
    code, stdout, err = ferry("explain", model, "--inputs", x, "--method", "occlusion")
    assert code == 0, err
    assert "occlusion" in stdout and "explain: ok" in stdout
    folder = tmp_path / "image-explain"  # the default: MODEL-explain, in the working directory
    assert (folder / "heatmap_0.png").is_file() and (folder / "heatmap_1.png").is_file()


def test_tokens_with_a_vocabulary_show_words(ferry: Run, tmp_path: Path) -> None:
    model = _saved(tokens(), tmp_path / "tokens.onnx")
    ids = save_npz(tmp_path / "ids.npz", {"ids": _ids(1)})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"word{i}\n" for i in range(20)))
    out = tmp_path / "out"
    code, _, err = ferry(
        "explain", model, "--inputs", ids, "--method", "lime", "--samples", "200",
        "--vocab", vocab, "-o", out,
    )  # fmt: skip
    assert code == 0, err
    page = (out / "tokens.html").read_text()
    assert f">word{TOKEN}</span>" in page
    assert f">word{TOKEN}</span>" in (out / "report.html").read_text()


def _other_input_npz(tmp_path: Path) -> Path:
    return save_npz(tmp_path / "other.npz", {"z": _rows(2)})


BAD: dict[str, tuple[list[str], str]] = {
    "unknown-method": (["--method", "gradcam"], "unknown method 'gradcam'"),
    "unknown-input": (["--input", "y"], "has no input 'y'"),
    "target-out-of-range": (["--target", "9"], "target 9 is out of range"),
    "unknown-kind": (["--kind", "audio"], "unknown input kind 'audio'"),
    "gradient-budget": (
        ["--method", "integrated-gradients", "--max-evals", "3"],
        "integrated-gradients needs at least 4",
    ),
    "max-evals": (["--max-evals", "50"], "kernelshap needs at least"),
    "missing-vocab": (["--vocab", "{tmp}/nope.txt"], "cannot read the vocabulary"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_is_one_line_and_exit_2(
    ferry: Run, tabular_files: tuple[Path, Path, Path], tmp_path: Path, case: str
) -> None:
    model, x, background = tabular_files
    args, message = BAD[case]
    args = [a.format(tmp=tmp_path) for a in args]
    out = tmp_path / "out"
    code, _, err = ferry(
        "explain", model, "--inputs", x, "--background", background, *args, "-o", out
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error: "), err
    assert message in lines[0]
    assert not out.exists(), "nothing is written for bad input"


def test_inputs_without_the_models_input_are_one_line(
    ferry: Run, tabular_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, _, _ = tabular_files
    code, _, err = ferry("explain", model, "--inputs", _other_input_npz(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and "'z'" in err and "ferry: error:" in err


def test_a_model_that_takes_two_inputs_explains_one_holding_the_other(
    ferry: Run, tmp_path: Path
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    model = save(proto, tmp_path / "two.onnx")
    scale = np.array([[0, 0, 5, 0], [0, 1, 0, 0]], np.float32)
    inputs = save_npz(tmp_path / "in.npz", {"x": np.ones((2, 4), np.float32), "scale": scale})
    zeros = save_npz(tmp_path / "bg.npz", {"x": np.zeros((1, 4), np.float32)})
    out = tmp_path / "out"
    code, stdout, err = ferry(
        "explain", model, "--inputs", inputs, "--method", "occlusion", "--target", "y:2",
        "--background", zeros, "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(stdout)["result"]["explanations"]
    assert rows[0]["top"][0]["feature"] == 2 and rows[0]["top"][0]["attribution"] == 5.0
    assert rows[1]["top"][0]["attribution"] == 0.0  # row 1 holds scale 0 at y[2]
