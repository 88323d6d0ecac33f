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
    # a's second opinion (no graph optimization) ran and agrees with a: nothing is excused
    assert not parity.notes and all(o.source_noise is None for o in parity.outputs)
    assert parity.divergence is not None
    assert parity.divergence.tensor == "l0"
    assert any("l0" in n for n in report.notes)
    assert "first divergence" in report.to_text()
    for table in report.tables():
        assert render_table(table)

    quiet = compare(a, b, bisect_on_failure=False)
    assert quiet.result.divergence is None
    assert quiet.notes == ["generated inputs x[1,4]", "chose batch = 1 (batch axis)"]


def test_one_float16_model_on_two_providers_is_judged_at_float16_s_tolerance(
    tmp_path: Path,
) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = save(convert_float_to_float16(mlp(), keep_io_types=True), tmp_path / "half.onnx")
    report = compare(half, provider_b="cpu")
    assert report.ok and report.result.tolerance == Tolerance(atol=1e-2, rtol=1e-2)
    assert "half's weights are float16: verified at float16's tolerance" in report.notes[0]
    # two models: the user compares a conversion, and sees its drift at float32's tolerance
    pair = compare(save(mlp(), tmp_path / "full.onnx"), half)
    assert pair.result.tolerance == Tolerance()
    assert not any("float16" in note for note in pair.notes)
    given = compare(half, provider_b="cpu", tolerance=Tolerance(atol=1e-5))
    assert given.result.tolerance == Tolerance(atol=1e-5)


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


def test_compare_dispatches_to_a_framework_source(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LinearRegression

    from onnxferry.convert import convert

    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    estimator = LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5], np.float32))
    model = convert(estimator, tmp_path / "lr.onnx", inputs={"input": x[:2]})
    report = compare(model, estimator, inputs={"input": x[:4]})
    assert report.ok and report.verb == "compare"
    assert any(note.startswith("reference: ") for note in report.notes)  # the source ran
    assert report.result.samples >= 1


def test_a_framework_source_given_first_says_the_order(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """``ferry compare SOURCE MODEL.onnx`` was "the directory holds no .onnx model" (a Hugging
    Face folder) or ONNX's own load error: the source goes second, and the message says so;
    a missing ONNX file is still its own error."""
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    onnx_model, _ = pair
    sources: list[tuple[str | Path, str]] = [
        (folder, "a torch model"),
        ("net.py:build", "a factory"),
    ]
    for source, kind in sources:
        with pytest.raises(UsageError, match=f"is {kind}, and compare takes the ONNX model fi"):
            compare(source, onnx_model)
    with pytest.raises(InputError, match="no such file"):
        compare(tmp_path / "missing.onnx", onnx_model)


EMBEDDING = """
<ir_version: 10, opset_import: ["" : 21]>
g (int64[batch, seq] input_ids, int64[batch, seq] attention_mask) => (float[batch, seq, 2] y)
<float[5, 2] table = {0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5}, int64[1] last = {-1}>
{
    e = Gather(table, input_ids)
    m = Cast <to = 1> (attention_mask)
    m3 = Unsqueeze(m, last)
    y = Mul(e, m3)
}
"""
"""A 5-token vocabulary: an id of 5 or more makes ONNX Runtime's Gather fail."""


def test_compare_feeds_what_convert_feeds(tmp_path: Path) -> None:
    from onnxferry.convert import convert
    from onnxferry.feeds import feed_sets, verification_feeds

    model = Model.load(save(onnx_text(EMBEDDING), tmp_path / "embedding.onnx"))
    report = compare(model, model, samples=3)
    assert report.ok  # random ids in [0, 8) would index past the table
    assert "generated inputs input_ids[1,16], attention_mask[1,16]" in report.notes
    ran, plan = feed_sets(model, count=3)  # the sets compare ran
    assert plan is not None and plan.value_ranges == {"input_ids": (0, 5)}
    for feeds in ran:
        assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 5
    assert len({int(i) for feeds in ran for i in feeds["input_ids"].flat}) > 2  # not all pads

    converted = convert(model, tmp_path / "out.onnx")
    shapes = converted.provenance[-1].result.shapes
    assert shapes[0] == {"input_ids": [1, 16], "attention_mask": [1, 16]}
    verified = verification_feeds(model)  # the sets convert verified on
    for name in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(verified[0][name], ran[0][name])
    assert verified[1]["input_ids"].max() < 5 and not verified[1]["attention_mask"].all()
