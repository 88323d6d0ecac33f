"""The compare verb: two models or one model on two providers, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxferry.compare import compare
from onnxferry.errors import FeedError, InputError, UsageError
from onnxferry.model import Model
from onnxferry.parity import Tolerance
from onnxferry.report import render_table

from .helpers import mlp, mlp_feeds, onnx_text, save
from .test_parity import OUTPUT_KEYS, PARITY_KEYS


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return save(mlp(), tmp_path / "a.onnx"), save(mlp(noise=0.1), tmp_path / "b.onnx")


def test_compare_with_generated_inputs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    same = compare(a, save(mlp(), tmp_path / "a2.onnx"), samples=2, dims={"batch": 5})
    assert same.ok
    assert same.verb == "compare"
    assert same.result.samples == 2
    assert same.result.outputs[0].ref_shape == (5, 3)

    report = compare(a, b)
    assert not report.ok
    assert report.exit_code == 1
    parity = report.result
    assert parity.samples == 3
    assert parity.outputs[0].ref_shape == (1, 3)  # the one feed policy: batch axes take 1
    assert parity.divergence is not None
    assert parity.divergence.tensor == "l0"
    assert any("l0" in n for n in report.notes)
    assert "first divergence" in report.to_text()
    for table in report.tables():
        assert render_table(table)

    quiet = compare(a, b, bisect_on_failure=False)
    assert quiet.result.divergence is None
    assert quiet.notes == ["generated inputs x[1,4]", "chose batch = 1 (batch axis)"]


def test_compare_with_given_inputs(pair: tuple[Path, Path]) -> None:
    a, b = pair
    sets = mlp_feeds(2, batch=7)
    report = compare(Model.load(a), a, inputs=sets)
    assert report.ok
    assert report.result.samples == 2
    assert report.result.outputs[0].ref_shape == (7, 3)

    one = compare(a, b, inputs=sets[0], tolerance=Tolerance(atol=10.0))
    assert one.ok
    assert one.result.samples == 1


def test_compare_rejects_a_wrong_feed(pair: tuple[Path, Path]) -> None:
    a, b = pair
    with pytest.raises(FeedError, match="'x'"):
        compare(a, b, inputs={"x": np.zeros((2, 4), dtype=np.int64)})
    with pytest.raises(FeedError, match="'y'"):
        compare(a, b, inputs={"y": np.zeros((2, 4), dtype=np.float32)})


def test_compare_needs_b_or_provider_b(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    with pytest.raises(UsageError):
        compare(a)
    report = compare(a, provider="cpu", provider_b="cpu", samples=1)
    assert report.ok
    assert report.result.reference == report.result.candidate == "a@cpu"


def test_compare_rejects_models_with_different_inputs(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = pair
    other = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        m (int64[batch, 4] x) => (float[batch, 4] probs) { probs = Cast <to = 1> (x) }
    """)
    with pytest.raises(InputError, match="different inputs"):
        compare(a, save(other, tmp_path / "other.onnx"))


def test_report_json_has_stable_keys(pair: tuple[Path, Path]) -> None:
    a, b = pair
    for report in (compare(a, b), compare(a, a, samples=1)):
        data = json.loads(report.to_json())
        assert data["verb"] == "compare"
        assert data["ok"] is report.ok
        result = data["result"]
        assert list(result) == PARITY_KEYS
        assert list(result["outputs"][0]) == OUTPUT_KEYS
        assert list(result["tolerance"]) == ["atol", "rtol", "per_output"]
    failing = json.loads(compare(a, b).to_json())["result"]
    assert failing["worst"] == "probs"
    assert list(failing["divergence"]) == [
        "tensor",
        "node",
        "op_type",
        "position",
        "max_abs",
        "max_rel",
        "required_atol",
        "problem",
    ]
