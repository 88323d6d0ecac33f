"""`deploy`: convert -> optimize --auto -> bench into one directory, with both reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxferry.cli import main
from onnxferry.convert import Conversion
from onnxferry.deploy import deploy
from onnxferry.model import Model
from onnxferry.optimize.candidates import SearchResult
from tests.helpers import mlp, save


def test_deploy_writes_model_recipe_and_reports(tmp_path: Path) -> None:
    src = save(mlp(), tmp_path / "src.onnx")
    out = tmp_path / "out"
    report = deploy(src, out, batches=(1, 4), duration=0.2)
    assert report.ok, report.to_text()
    assert [s.verb for s in report.result.stages] == ["convert", "optimize", "bench"]
    for name in ("model.onnx", "model.recipe.toml", "report.json", "report.html"):
        assert (out / name).is_file(), name
    Model.load(out / "model.onnx")
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(report.to_json())  # written by Report.save
    assert data["verb"] == "deploy"
    assert [s["verb"] for s in data["result"]["stages"]] == ["convert", "optimize", "bench"]
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 1 and "latency vs batch" in page
    assert all(f"<h2>{s.verb}: " in page for s in report.result.stages)  # a section per stage
    stages = report.result.stages
    assert isinstance(stages[0].result, Conversion) and isinstance(stages[1].result, SearchResult)
    assert "<script" not in page and "http" not in page.split("<svg", 1)[0]


def test_deploy_benches_the_given_inputs_and_keeps_the_signature(tmp_path: Path) -> None:
    """Silero VAD's shape: unnamed open dims, a state whose batch is its axis 1, a rate that
    picks the branch. Bench times the given rows at each batch, and no pass renames the dims
    (onnxslim names them ``input_d0``, ``state_d1``, which would cut the state from the
    input's batch)."""
    from tests.real_models import vad_feeds, vad_unnamed

    src = save(vad_unnamed(), tmp_path / "vad.onnx")
    report = deploy(src, tmp_path / "out", inputs=vad_feeds(), batches=(1, 4), duration=0.2)
    assert report.ok, report.to_text()
    timing = report.result.stages[-1].result
    assert sorted({r.batch for r in timing.results}) == [1, 4]
    shapes = [s.shape for s in Model.load(tmp_path / "out" / "model.onnx").signature.inputs]
    assert shapes == [s.shape for s in Model.load(src).signature.inputs]


def test_cli_deploy_bad_source_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    code = main(["deploy", str(bad), "-o", str(tmp_path / "out"), "--framework", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_deploy_sizes_an_open_sequence_with_dim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model with an open sequence (a Hugging Face folder's token ids): optimize's refusal
    to judge the budget at a guessed length named ``--dim`` and ``--assume-sizes``, which
    deploy did not take; now it does, and times the model at the length given (what
    ``--assume-sizes`` accepts is optimize's, tested there)."""
    from tests.helpers import onnx_text

    src = save(
        onnx_text(
            """
        <ir_version: 8, opset_import: ["" : 17]>
        tokens (int64[batch, sequence] ids) => (float[batch, 4] score) {
            table = Constant <value = float[50, 4] {"""
            + ", ".join(["0.5"] * 200)
            + """}> ()
            vectors = Gather (table, ids)
            score = ReduceMean <axes = [1], keepdims = 0> (vectors)
        }
    """
        ),
        tmp_path / "tokens.onnx",
    )
    args = ["deploy", str(src), "--batch", "1", "--json"]
    assert main([*args, "-o", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "--dim NAME=N" in err and "--assume-sizes" in err, err
    assert main([*args, "-o", str(tmp_path / "sized"), "--dim", "sequence=24"]) == 0
    stages = json.loads(capsys.readouterr().out)["result"]["stages"]
    timed = {tuple(r["input_shapes"]["ids"]) for r in stages[-1]["result"]["results"]}
    assert timed == {(1, 24)}, timed
