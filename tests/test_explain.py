"""`onnxferry.explain` on ground truth: tiny models whose output reads known features, a known
image region or one token; every method must find them. SHAP's efficiency, the batching of
model evaluations, the budget and the files written are checked too."""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxferry
from onnxferry.errors import DataError, FeedError, InputError, UsageError
from onnxferry.explain import (
    BudgetExceeded,
    Explanation,
    MethodUnavailable,
    Progress,
    explain,
    write_explanation,
)
from onnxferry.explain.evaluate import Evaluator, Target
from onnxferry.explain.kinds import plan_layout
from onnxferry.explain.masking import (
    baseline,
    from_hwc,
    image_groups,
    spatial_labels,
    to_hwc,
)
from onnxferry.explain.methods import IG_STEPS
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner, create_session
from tests.helpers import STREAM, gru_with_one_state, onnx_text, recurrent

SHAP = ("kernelshap", "permutation")
FEATURES = 8
READ = {2, 5}
"""The tabular model's output reads features 2 and 5 only."""
TOKEN = 7
"""The token model's output is driven by this token id."""


def _model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], weights: dict[str, np.ndarray]
) -> Model:
    graph = helper.make_graph(
        nodes,
        "explain",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(proto, full_check=True)
    return Model.from_proto(proto)


def tabular(batch: str | int | None = "batch") -> Model:
    """x[batch, 8] -> logits[batch, 2] = x @ W, where only rows 2 and 5 of W are not zero;
    ``batch=None``: x[8] -> logits[2], a model without a batch axis."""
    w = np.zeros((FEATURES, 2), np.float32)
    w[2], w[5] = (3.0, 1.0), (-2.0, 0.5)
    shape = [FEATURES] if batch is None else [batch, FEATURES]
    out = [2] if batch is None else [batch, 2]
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out)],
        {"w": w},
    )


REGION = (slice(4, 8), slice(8, 12))


def image(channels_last: bool = False, channels: int = 1) -> Model:
    """A 16x16 image -> score[N]: the mean of the 4x4 patch at rows 4-7, columns 8-11."""
    spatial = np.zeros((16, 16), np.float32)
    spatial[REGION] = 1 / (16 * channels)
    shape: list[str | int]
    if channels_last:
        mask, shape = np.repeat(spatial[..., None], channels, -1)[None], ["N", 16, 16, channels]
    else:
        mask, shape = np.repeat(spatial[None], channels, 0)[None], ["N", channels, 16, 16]
    return _model(
        [
            helper.make_node("Mul", ["x", "mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["score"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        {"mask": mask, "axes": np.array([1, 2, 3], np.int64)},
    )


def tokens(float_ids: bool = False) -> Model:
    """ids[batch, 12] -> score[batch]: the sum of a one-value embedding where id 7 weighs 5.
    ``float_ids``: the ids come as floats the graph casts, as Keras's Embedding takes them."""
    table = np.random.default_rng(1).uniform(0.0, 0.05, (20, 1)).astype(np.float32)
    table[0], table[TOKEN] = 0.0, 5.0
    cast = [helper.make_node("Cast", ["ids"], ["index"], to=TensorProto.INT64)]
    return _model(
        [
            *(cast if float_ids else []),
            helper.make_node("Gather", ["table", "index" if float_ids else "ids"], ["embedded"]),
            helper.make_node("ReduceSum", ["embedded", "axes"], ["score"], keepdims=0),
        ],
        [
            helper.make_tensor_value_info(
                "ids", TensorProto.FLOAT if float_ids else TensorProto.INT64, ["batch", 12]
            )
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        {"table": table, "axes": np.array([1, 2], np.int64)},
    )


BURST = slice(600, 700)
"""The audio model's score is the energy-like sum of these samples."""
PATCH = (slice(2, 5), slice(100, 140))
"""The spectrogram model's score reads these mel bins x frames."""


def audio() -> Model:
    """x[batch, 1000, 1] (mono audio, TF's layout) -> score[batch]: the sum over ``BURST``."""
    mask = np.zeros((1, 1000, 1), np.float32)
    mask[0, BURST] = 1 / 100
    return _reader(mask, ["batch", 1000, 1])


def spectrogram() -> Model:
    """x[batch, 8, 200] (mel bins x frames, Whisper's layout) -> score: the mean of ``PATCH``."""
    mask = np.zeros((1, 8, 200), np.float32)
    mask[0][PATCH] = 1 / mask[0][PATCH].size
    return _reader(mask, ["batch", 8, 200])


def _reader(mask: np.ndarray, shape: list[str | int]) -> Model:
    return _model(
        [
            helper.make_node("Mul", ["x", "mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["score"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        {"mask": mask, "axes": np.arange(1, len(shape), dtype=np.int64)},
    )


def _sounds(count: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.05, (count, 1000, 1)).astype(np.float32)
    x[:, BURST] += 1.0
    return x


def _mels(count: int) -> np.ndarray:
    x = np.random.default_rng(4).uniform(0, 0.1, (count, 8, 200)).astype(np.float32)
    x[:, PATCH[0], PATCH[1]] += 1.0
    return x


def _rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, FEATURES)).astype(np.float32)


def _images(count: int, channels_last: bool = False, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.2, (count, 16, 16, channels)).astype(np.float32)
    x[:, 4:8, 8:12, :] += 1.0  # the region stands out, so superpixels find it
    return x if channels_last else np.moveaxis(x, -1, 1).copy()


def _ids(count: int) -> np.ndarray:
    ids = np.random.default_rng(2).integers(1, 20, (count, 12))
    ids[ids == TOKEN] = 3
    ids[:, 4] = TOKEN
    return ids


def _region_share(explanation: Explanation, index: int) -> float:
    heat = np.abs(explanation.heatmap(index))
    return float(heat[REGION].sum() / heat.sum())


# --- ground truth -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kernelshap", "permutation", "lime", "occlusion"])
def test_every_method_ranks_the_features_the_model_reads_first(method: str) -> None:
    explanation = explain(tabular(), _rows(3), method, background=_rows(20, seed=1), target=0)
    assert explanation.attributions.shape == (3, FEATURES)
    for i in range(3):
        assert set(explanation.ranking(i)[:2]) == READ, explanation.attributions[i]
    assert explanation.kind == "tabular" and explanation.targets == ["logits[0]"] * 3


@pytest.mark.parametrize("method", SHAP)
def test_shap_attributions_add_up_to_f_minus_the_expected_f(method: str) -> None:
    model, background = tabular(), _rows(20, seed=1)
    explanation = explain(model, _rows(3), method, background=background, target=1)
    expected = OrtRunner(model).run({"x": background})["logits"][:, 1].mean()
    scores = OrtRunner(model).run({"x": _rows(3)})["logits"][:, 1]
    np.testing.assert_allclose(explanation.base_values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explanation.scores, scores, rtol=1e-6)
    sums = explanation.attributions.sum(axis=1)
    np.testing.assert_allclose(sums, scores - expected, rtol=1e-4, atol=1e-4)
    # A linear model's SHAP values are exact: w_j * (x_j - E[x_j]).
    weights = np.array([0, 0, 1.0, 0, 0, 0.5, 0, 0])
    exact = weights * (_rows(3) - background.mean(axis=0))
    np.testing.assert_allclose(explanation.attributions, exact, atol=1e-4)


def flags_model() -> Model:
    """flags[batch, 8] (bool) -> logits[batch, 2] = Cast(flags) @ W: tabular()'s W, so only
    flags 2 and 5 count."""
    w = np.zeros((FEATURES, 2), np.float32)
    w[2], w[5] = (3.0, 1.0), (-2.0, 0.5)
    return _model(
        [
            helper.make_node("Cast", ["flags"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["f", "w"], ["logits"]),
        ],
        [helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        {"w": w},
    )


def _flags(count: int, seed: int = 0) -> np.ndarray:
    flags = np.random.default_rng(seed).random((count, FEATURES)) < 0.5
    flags[:, 2], flags[:, 5] = True, True  # the background holds both values of each
    return flags


@pytest.mark.parametrize("method", ["kernelshap", "permutation", "lime", "occlusion"])
def test_boolean_flags_are_explained_as_features(method: str) -> None:
    """A row of flags was refused ("holds no numbers"); each flag is a feature now, a hidden
    flag the background's most common value, and the flags the model reads rank first."""
    background = _flags(20, seed=1)
    background[:15, 2], background[5:, 5] = False, False  # mostly off: hiding turns them off
    explanation = explain(flags_model(), _flags(3), method, background=background, target=0)
    assert explanation.kind == "tabular" and explanation.attributions.shape == (3, FEATURES)
    for i in range(3):
        assert set(explanation.ranking(i)[:2]) == READ, explanation.attributions[i]
    assert any("flags explained as features" in n for n in explanation.notes)
    if method in SHAP:  # efficiency: the attributions add up to f(x) - E[f]
        scores = OrtRunner(flags_model()).run({"flags": _flags(3)})["logits"][:, 0]
        sums = explanation.attributions.sum(axis=1) + explanation.base_values
        np.testing.assert_allclose(sums, scores, rtol=1e-4, atol=1e-4)


def test_integrated_gradients_say_a_boolean_input_has_no_gradient() -> None:
    with pytest.raises(MethodUnavailable, match="boolean input has none"):
        explain(flags_model(), _flags(2), "integrated-gradients")


@pytest.mark.parametrize(
    ("method", "share"),
    [("occlusion", 0.7), ("lime", 0.9), ("kernelshap", 0.95), ("permutation", 0.95)],
)
def test_image_methods_put_the_mass_in_the_region_the_model_reads(
    method: str, share: float
) -> None:
    samples = {"lime": 300, "kernelshap": 300}.get(method)
    explanation = explain(image(), _images(2), method, segments=16, samples=samples)
    assert explanation.kind == "image" and explanation.attributions.shape == (2, 1, 16, 16)
    for i in range(2):
        assert _region_share(explanation, i) >= share
    if method == "kernelshap":  # efficiency holds per pixel: superpixel values are spread
        gaps = [explanation.additivity_gap(i) for i in range(2)]
        np.testing.assert_allclose(gaps, 0.0, atol=1e-5)


VOXELS = (slice(0, 4), slice(4, 8), slice(8, 12))
"""The volume model's score reads this 4x4x4 block of voxels only."""


def volume(layout: str) -> Model:
    """An 8x16x16 scan, "cdhw" (one channel first), "dhwc" or "dhw" -> score[N]: the mean
    of the voxels at VOXELS."""
    spatial = np.zeros((8, 16, 16), np.float32)
    spatial[VOXELS] = 1 / 64
    mask = {"cdhw": spatial[None], "dhwc": spatial[..., None], "dhw": spatial}[layout][None]
    shape = ["N", *mask.shape[1:]]
    return _model(
        [
            helper.make_node("Mul", ["x", "mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["score"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        {"mask": mask, "axes": np.arange(1, mask.ndim, dtype=np.int64)},
    )


def _scans(count: int, layout: str) -> np.ndarray:
    x = np.random.default_rng(0).uniform(0.0, 0.2, (count, 8, 16, 16)).astype(np.float32)
    x[(slice(None), VOXELS[0], VOXELS[1], VOXELS[2])] += 1.0  # the block the model reads is bright
    return {"cdhw": x[:, None], "dhwc": x[..., None], "dhw": x}[layout]


@pytest.mark.parametrize(
    ("method", "share"),
    [("occlusion", 0.6), ("lime", 0.9), ("kernelshap", 0.95), ("permutation", 0.95)],
)
@pytest.mark.parametrize("layout", ["cdhw", "dhwc", "dhw"])
def test_volume_methods_put_the_mass_in_the_voxels_the_model_reads(
    method: str, share: float, layout: str
) -> None:
    """A CT/MRI-shaped input was explainable only as tabular features, a voxel at a time; it
    is a volume now, explained in 3-D blocks (3-D windows for occlusion)."""
    samples = {"lime": 300, "kernelshap": 300}.get(method)
    kind = "volume" if layout == "dhw" else None  # DHW is not told from the shape alone
    explanation = explain(volume(layout), _scans(1, layout), method, kind=kind, samples=samples)
    assert explanation.kind == "volume"
    heat = np.abs(explanation.heatmap(0))
    assert heat.shape == (8, 16, 16)
    assert heat[VOXELS].sum() / heat.sum() >= share, method
    assert explanation.to_dict()["explanations"][0]["top"][0]["feature"].count(",") == 2


def test_volume_files_are_three_planes_per_input(tmp_path: Path) -> None:
    explanation = explain(volume("cdhw"), _scans(2, "cdhw"), "kernelshap", samples=100)
    files = write_explanation(explanation, tmp_path)
    assert files["volume_0"].read_bytes().startswith(b"\x89PNG") and "volume_1" in files
    assert files["report"].read_text().count("data:image/png;base64,") == 2


def test_an_nhwc_colour_image_is_told_apart_and_explained() -> None:
    explanation = explain(image(True, 3), _images(1, True, 3), "kernelshap", samples=200)
    assert explanation.layout.channels_last and explanation.layout.channels == 3
    assert explanation.attributions.shape == (1, 16, 16, 3)
    assert _region_share(explanation, 0) >= 0.9
    assert explanation.segments is not None and explanation.segments.shape == (1, 16, 16)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_lookup_masks_whole_superpixels_in_every_channel(channels_last: bool) -> None:
    x = _images(1, channels_last, 3)
    layout, samples = plan_layout(image(channels_last, 3).signature.input("x"), x)
    groups = image_groups(samples[0], layout, 16)
    hidden = baseline(layout, samples[0], None)
    masks = np.random.default_rng(0).integers(0, 2, (5, groups.count)).astype(np.float64)
    composed = groups.compose(samples[0], hidden, masks)
    expected = np.stack([np.where(m[groups.labels] == 1, samples[0], hidden) for m in masks])
    assert composed.dtype == np.float32 and composed.flags.c_contiguous
    np.testing.assert_array_equal(composed, expected)


@pytest.mark.parametrize("method", ["kernelshap", "lime"])
def test_batched_images_equal_the_same_explainer_run_one_image_at_a_time(method: str) -> None:
    model = image(False, 3)
    session = create_session(model)
    x = _images(1, False, 3)
    batched = explain(model, x, method, segments=16, samples=120, session=session)
    layout, samples = plan_layout(model.signature.input("x"), x)
    groups = image_groups(samples[0], layout, 16)
    hidden = baseline(layout, samples[0], None)
    runs = [0]

    def one_at_a_time(images: np.ndarray) -> np.ndarray:
        runs[0] += len(images)
        rows = np.asarray(images, np.float32)
        return np.array([session.run(["score"], {"x": row[None]})[0][0] for row in rows])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the libraries' own deprecations
        if method == "kernelshap":
            import shap

            np.random.seed(0)
            phi = shap.KernelExplainer(
                lambda z: one_at_a_time(groups.compose(samples[0], hidden, z)),
                np.zeros((1, groups.count)),
            ).shap_values(np.ones((1, groups.count)), nsamples=120, l1_reg=False, silent=True)
            weights = np.asarray(phi).reshape(-1)
        else:
            from lime.lime_image import LimeImageExplainer

            segments = spatial_labels(groups, layout)
            found = LimeImageExplainer(random_state=0).explain_instance(
                to_hwc(samples[0], layout).astype(np.float64),
                lambda images: one_at_a_time(from_hwc(np.asarray(images), layout))[:, None],
                labels=(0,),
                top_labels=None,
                hide_color=to_hwc(hidden, layout).astype(np.float64),
                num_features=groups.count,
                num_samples=120,
                segmentation_fn=lambda _: segments,
                random_seed=0,
            )
            weights = np.zeros(groups.count)
            for segment, weight in found.local_exp[0]:
                weights[segment] = weight
    np.testing.assert_allclose(batched.attributions[0], groups.spread(weights), atol=1e-9)
    assert batched.evaluations == runs[0] + 1  # + ferry's one run to find the target
    assert batched.session_runs <= 6  # 2 of them probing that rows are independent


def test_an_output_that_is_not_a_number_is_one_line_naming_the_inputs() -> None:
    """A log-power spectrum whose mel weights go negative gives NaN; explaining it was an
    internal error (matplotlib refused NaN axis limits while drawing the report)."""
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["mixed"]),
            helper.make_node("Log", ["mixed"], ["logits"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        {"w": np.full((FEATURES, 2), -1.0, np.float32)},
    )
    rows = np.abs(_rows(3))  # every row sums positive: the log of a negative number
    with pytest.raises(InputError, match=r"is nan on input 0, 1, 2: a value that is not a"):
        explain(model, rows, "occlusion")


def _log_of_sum() -> Model:
    """logits = log(x @ w) with w all ones: finite where a row sums positive, NaN elsewhere."""
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["mixed"]),
            helper.make_node("Log", ["mixed"], ["logits"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        {"w": np.ones((FEATURES, 2), np.float32)},
    )


@pytest.mark.parametrize("method", [*SHAP, "lime", "occlusion", "integrated-gradients"])
def test_a_value_that_is_not_a_number_on_the_explainers_rows_is_one_line(method: str) -> None:
    """The explained rows are finite, the rows an explainer makes from them and a background
    below zero are not: lime was an internal error (scikit-learn's Ridge refused NaN), shap
    and occlusion returned NaN attributions as a successful explanation."""
    rows = np.abs(_rows(2)) + 0.1
    with pytest.raises(InputError, match=r"is (nan|-inf) on \d+ of \d+ .*not finite") as caught:
        explain(_log_of_sum(), rows, method, background=-np.abs(_rows(20, seed=1)) - 1)
    assert "--background" in str(caught.value) and "\n" not in str(caught.value)


def _scores_and_kept(*, logits: bool = True) -> Model:
    """``kept[K]``: every logit above 0 (a mask's selection), beside ``logits[batch, 2]`` of
    fixed size (``logits=False``: alone)."""
    outputs = [helper.make_tensor_value_info("kept", TensorProto.FLOAT, ["K"])]
    if logits:
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]))
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Greater", ["logits", "zero"], ["mask"]),
            helper.make_node("Reshape", ["mask", "flat"], ["flat_mask"]),
            helper.make_node("Compress", ["logits", "flat_mask"], ["kept"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        outputs,
        {
            "w": np.random.default_rng(3).standard_normal((FEATURES, 2)).astype(np.float32),
            "zero": np.zeros((), np.float32),
            "flat": np.array([-1], np.int64),
        },
    )


def test_outputs_sized_by_the_data_are_never_a_target() -> None:
    """A detector's boxes after non-max suppression, a mask's selections, a sequence of
    tensors: the default target is the first output of fixed size; naming one of those is one
    line, and so is a model with no other (before, the evaluator's rows of 3 and 1 values
    crashed numpy, and a sequence was the default target of a model with a plain output)."""
    model = _scores_and_kept()
    found = explain(model, _rows(2), "occlusion")
    assert {t.partition("[")[0] for t in found.targets} == {"logits"}
    with pytest.raises(UsageError, match=r"output 'kept' is sized by the data"):
        explain(model, _rows(2), "occlusion", target="kept")
    with pytest.raises(UsageError, match=r"no output of the model can be explained: 'kept' is"):
        explain(_scores_and_kept(logits=False), _rows(2), "occlusion")
    split = _model(
        [
            helper.make_node("SplitToSequence", ["x"], ["parts"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
        ],
        {"w": np.ones((FEATURES, 2), np.float32)},
    )
    assert explain(split, _rows(2), "occlusion").targets[0].startswith("logits")
    with pytest.raises(UsageError, match=r"output 'parts' is a sequence of tensors"):
        explain(split, _rows(2), "occlusion", target="parts")


@pytest.mark.parametrize("method", ["kernelshap", "occlusion"])
def test_float_ids_the_graph_casts_are_explained_as_tokens(method: str) -> None:
    """Keras's float token ids: a row of them was a table of 12 numeric features (hidden
    behind their column means, 9.4 for an id); they are tokens now, hidden as padding."""
    explanation = explain(tokens(float_ids=True), _ids(2).astype(np.float32), method, samples=300)
    assert explanation.kind == "tokens"
    assert all(int(np.argmax(np.abs(row))) == 4 for row in explanation.attributions)


@pytest.mark.parametrize("method", ["kernelshap", "permutation", "lime", "occlusion"])
def test_tokens_html_colours_the_driving_token_strongest(method: str, tmp_path: Path) -> None:
    explanation = explain(
        tokens(), _ids(2), method, samples=300 if method != "permutation" else None
    )
    assert explanation.kind == "tokens"
    vocabulary = [f"w{i}" for i in range(20)]
    files = write_explanation(explanation, tmp_path, vocabulary)
    page = files["tokens"].read_text()
    spans = re.findall(r"data-position='(\d+)' data-id='(\d+)' data-attribution='([^']+)'", page)
    assert len(spans) == 24
    for row in range(2):
        mine = spans[row * 12 : (row + 1) * 12]
        strongest = max(mine, key=lambda s: abs(float(s[2])))
        assert (int(strongest[0]), int(strongest[1])) == (4, TOKEN)
    assert f">w{TOKEN}</span>" in page
    assert "rgba(214,39,40,1.000)" in page  # the strongest token is the fully coloured one


@pytest.mark.parametrize(
    ("method", "share"),
    [("occlusion", 0.7), ("lime", 0.9), ("kernelshap", 0.95), ("permutation", 0.95)],
)
def test_signal_methods_find_the_stretch_of_audio_the_model_reads(
    method: str, share: float
) -> None:
    """[batch, samples, 1] is told to be a signal: windows and blocks of neighbouring samples,
    not 1000 features one at a time."""
    explanation = explain(audio(), _sounds(2), method, samples=300)
    assert explanation.kind == "signal" and explanation.attributions.shape == (2, 1000, 1)
    for i in range(2):
        values = np.abs(explanation.attributions[i, :, 0])
        assert values[BURST].sum() / values.sum() >= share
        assert (
            600
            <= int(explanation.report.to_dict()["result"]["explanations"][i]["top"][0]["feature"])
            < 700
        )
    if method == "occlusion":
        assert explanation.evaluations < 100  # 31 windows of 62 and 2 reference runs a row
        assert any("a 62x1 window, stride 31, 32 positions" in n for n in explanation.notes)
    else:
        assert any(n.startswith("signals explained over blocks: 50") for n in explanation.notes)
    if method in SHAP:
        gaps = [explanation.additivity_gap(i) for i in range(2)]
        np.testing.assert_allclose(gaps, 0.0, atol=1e-4)


@pytest.mark.parametrize("method", ["occlusion", "kernelshap"])
def test_a_spectrogram_is_explained_as_a_signal_in_time_frequency_blocks(method: str) -> None:
    """[batch, mels, frames]: its kind is asked for, then windows and blocks span both axes
    (50 blocks of 8x8 here: whole columns of 8 mel bins)."""
    with pytest.raises(UsageError, match=re.escape("give the kind: --kind tabular|signal")):
        explain(spectrogram(), _mels(1), method)
    explanation = explain(spectrogram(), _mels(1), method, kind="signal", window=4, samples=400)
    values = np.abs(explanation.attributions[0])
    frames = values.sum(axis=0)
    assert frames[96:144].sum() / frames.sum() >= 0.95  # the patch's frames, to a block or window
    if method == "occlusion":
        assert values[PATCH].sum() / values.sum() >= 0.4  # mel bins to a 4x4 window's reach
    top = explanation.report.to_dict()["result"]["explanations"][0]["top"][0]["feature"]
    assert 100 <= int(top.split(",")[1]) < 140


def test_a_wide_float_row_named_like_neither_is_asked_for_its_kind() -> None:
    """BirdNET's ``INPUT[batch, 144000]`` (3 s of 48 kHz audio) was explained as a table's row:
    occlusion one sample at a time, 144002 model runs of 22 ms each. A row longer than
    ``WIDE_ROW`` asks for its kind; given as a signal it is windows of neighbouring samples;
    a row at the bound, or one named like audio, is told as before."""
    from onnxferry.explain.kinds import WIDE_ROW, detect_kind
    from onnxferry.signature import Signature

    wide = WIDE_ROW + 904
    mask = np.zeros((1, wide), np.float32)
    mask[0, 3000:3200] = 1.0
    model = _reader(mask, ["batch", wide])
    sound = np.random.default_rng(5).normal(0, 0.05, (1, wide)).astype(np.float32)
    sound[0, 3000:3200] += 1.0
    with pytest.raises(UsageError, match=r"give the kind: --kind signal .* or --kind tabular"):
        explain(model, sound, "occlusion")
    explanation = explain(model, sound, "occlusion", kind="signal", window=100)
    assert explanation.kind == "signal" and explanation.evaluations < 200
    values = np.abs(explanation.attributions[0])
    assert values[3000:3200].sum() / values.sum() >= 0.8  # windows reach 50 samples past it
    spec = Signature.from_onnx(model.proto).inputs[0]
    assert detect_kind(spec, (WIDE_ROW,)) == "tabular"
    assert detect_kind(dataclasses.replace(spec, name="waveform"), (wide,)) == "signal"


def test_the_kinds_offered_for_an_unknown_input_are_those_that_fit_it() -> None:
    """A 4-D sample with no end that can be channels (``[8, 6, 7, 9]``): the hint offered
    every kind, and signal then refused it (1 to 3 axes); tabular is the one that takes it.
    With 3 channels first (``[3, 3, 4, 5]``, a Conv3d's input) it is a volume."""
    from onnxferry.explain.kinds import detect_kind
    from onnxferry.signature import Signature

    volume = Model.from_proto(
        onnx_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        volume (float[N, 3, 3, 4, 5] x) => (float[N] y) {
            axes = Constant <value = int64[4] {1, 2, 3, 4}> ()
            y = ReduceSum <keepdims: int = 0> (x, axes)
        }
    """)
    )
    spec = Signature.from_onnx(volume.proto).inputs[0]
    with pytest.raises(UsageError, match=r"give the kind: --kind tabular$"):
        detect_kind(spec, (8, 6, 7, 9))
    assert detect_kind(spec, (3, 3, 4, 5)) == "volume"
    explanation = explain(volume, np.ones((1, 3, 3, 4, 5), np.float32), "occlusion", kind="tabular")
    assert explanation.attributions.shape == (1, 3, 3, 4, 5)


def test_grid_blocks_tile_any_shape_in_at_most_the_segments_asked() -> None:
    from onnxferry.explain.masking import grid_segments

    for shape, segments in [((43844, 1), 50), ((80, 800), 50), ((16, 96), 20), ((48, 192), 50)]:
        labels = grid_segments(shape, segments)
        count = int(labels.max()) + 1
        assert labels.shape == shape and segments // 2 <= count <= segments
        assert np.array_equal(np.unique(labels), np.arange(count))  # none empty
    assert grid_segments((4, 3), 100).max() + 1 == 12  # an element each, no more


def test_a_window_given_for_tokens_hides_spans_of_neighbouring_tokens() -> None:
    """Magika's 2048 bytes took 2050 evaluations a row one token at a time, the window asked
    for dropped with a note; with ``window`` it slides spans (n-grams) by half their length."""
    explanation = explain(tokens(), _ids(2), "occlusion", window=4)
    # each row: its target's run, itself and the baseline, spans at 0, 2, 4, 6, 8 of 12
    assert explanation.evaluations == 2 * (1 + 2 + 5)
    assert any("a 4 window, stride 2, 5 positions" in n for n in explanation.notes)
    for row in explanation.attributions:
        assert set(np.flatnonzero(row == row.max())) == {4, 5}  # the two spans over id 7
    one_at_a_time = explain(tokens(), _ids(1), "occlusion")
    assert one_at_a_time.evaluations == 1 + 2 + 12


def test_a_window_given_for_tabular_rows_is_noted_not_silently_dropped() -> None:
    explanation = explain(tabular(), _rows(1), "occlusion", window=4)
    assert any("one feature at a time" in n and "--kind signal" in n for n in explanation.notes)


def test_signal_files_are_one_picture_per_input(tmp_path: Path) -> None:
    for model, rows, kind in [(audio(), _sounds(2), None), (spectrogram(), _mels(2), "signal")]:
        explanation = explain(model, rows, "occlusion", kind=kind)
        files = write_explanation(explanation, tmp_path / str(kind))
        assert files["signal_0"].read_bytes().startswith(b"\x89PNG") and "signal_1" in files
        assert files["report"].read_text().count("data:image/png;base64,") == 2
        with np.load(files["arrays"]) as arrays:
            assert arrays["attributions"].shape == rows.shape


# --- batches, layouts, sessions ---------------------------------------------------------------

TABLE = """
<ir_version: 9, opset_import: ["" : 18]>
table (float[batch, 4] x, float[4, 2] w) => (float[batch, 2] y) { y = MatMul(x, w) }
"""
"""A weight table given whole for the call beside independent rows."""


def test_rows_that_carry_a_stream_are_each_explained_alone() -> None:
    """Batched, the perturbations of one row would be steps of one stream, each seeing the
    ones before it; probed, the rows are found dependent and every evaluation runs alone,
    so a row's attributions are what explaining it by itself gives."""
    model = Model.from_proto(onnx_text(STREAM))
    rng = np.random.default_rng(5)
    x, state = rng.standard_normal((3, 4)).astype(np.float32), np.ones((1, 4), np.float32)
    zeros = {"x": np.zeros((1, 4), np.float32)}  # hidden features become 0, alone or not
    together = explain(model, {"x": x, "state": state}, "occlusion", background=zeros)
    assert any(n.startswith("rows are not independent: input 0 gives y") for n in together.notes)
    assert together.session_runs == together.evaluations + 2  # one row a run, and the probe
    for i in range(3):
        alone = explain(model, {"x": x[i : i + 1], "state": state}, "occlusion", background=zeros)
        np.testing.assert_allclose(together.attributions[i], alone.attributions[0], atol=1e-6)
        assert together.scores[i] == pytest.approx(alone.scores[0])
        # each occluded feature's drop is the feature itself: the stream starts afresh
        np.testing.assert_allclose(together.attributions[i], x[i], atol=1e-5)


def test_a_model_whose_state_holds_one_row_is_explained_a_row_at_a_time() -> None:
    """Two rows at once were ONNX Runtime's error (GRU: "Input initial_h must have shape
    {1,2,2}"), exit 2 for inputs the model takes; the probe now finds the rows refused
    together and every evaluation runs alone."""
    model = Model.from_proto(gru_with_one_state())
    x = np.random.default_rng(9).standard_normal((2, 5, 3)).astype(np.float32)
    state = np.zeros((1, 1, 2), np.float32)
    together = explain(model, {"x": x, "h0": state}, "occlusion", kind="signal")
    assert any(
        n.startswith("rows do not run together (onnxruntime cannot run") and "initial_h" in n
        for n in together.notes
    ), together.notes
    assert together.session_runs == together.evaluations + 1  # the probe's run alone
    for i in range(2):
        alone = explain(model, {"x": x[i : i + 1], "h0": state}, "occlusion", kind="signal")
        np.testing.assert_allclose(together.attributions[i], alone.attributions[0], atol=1e-6)
        assert together.scores[i] == pytest.approx(alone.scores[0])


def test_a_table_given_whole_beside_independent_rows_stays_batched() -> None:
    model = Model.from_proto(onnx_text(TABLE))
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32)}
    feeds["w"] = rng.standard_normal((4, 2)).astype(np.float32)
    zeros = {"x": np.zeros((1, 4), np.float32)}
    explanation = explain(model, feeds, "occlusion", target=0, background=zeros)
    assert not any("independent" in n for n in explanation.notes)
    assert explanation.session_runs < explanation.evaluations
    np.testing.assert_allclose(explanation.attributions, feeds["x"] * feeds["w"][:, 0], atol=1e-5)


TWO_TABLES = """
<ir_version: 10, opset_import: ["" : 21]>
two_tables (int64[batch, 2, 4] x) => (float[batch] y) {
    zero = Constant<value = int64 {0}>()
    one = Constant<value = int64 {1}>()
    small_ids = Gather<axis = 1>(x, zero)
    large_ids = Gather<axis = 1>(x, one)
    small = Constant<value = float[3] {1.0, 10.0, 100.0}>()
    large = Constant<value = float[50] {
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0,
        30.0, 31.0, 32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0, 39.0, 40.0, 41.0, 42.0, 43.0,
        44.0, 45.0, 46.0, 47.0, 48.0, 49.0}>()
    a = Gather(small, small_ids)
    b = Gather(large, large_ids)
    both = Add(a, b)
    axes = Constant<value = int64[1] {1}>()
    y = ReduceSum<keepdims = 0>(both, axes)
}
"""
"""AttaCut's layout: a channel of character ids and one of syllable ids, each its own table."""


def test_ids_that_a_roll_moves_into_the_other_table_leave_the_rows_batched() -> None:
    """The probe runs a row after its values rolled by one, which moved a syllable id into the
    character channel: ONNX Runtime refused it (index out of bounds) and every evaluation ran
    alone, with a note blaming the rows. Probed again with the row twice, they run together."""
    model = Model.from_proto(onnx_text(TWO_TABLES))
    x = np.array([[[0, 1, 2, 0], [40, 41, 42, 43]], [[2, 2, 1, 0], [5, 6, 7, 8]]], np.int64)
    explanation = explain(model, {"x": x}, "occlusion", kind="signal")
    assert not any("run together" in n or "independent" in n for n in explanation.notes)
    assert explanation.session_runs < explanation.evaluations
    session = ort.InferenceSession(model.proto.SerializeToString())
    scores = [session.run(None, {"x": x[i : i + 1]})[0][0] for i in range(2)]
    np.testing.assert_allclose(explanation.scores, scores, rtol=1e-6)


def test_an_output_that_folds_its_rows_into_another_axis_is_explained_a_row_at_a_time() -> None:
    """torch's ``view(-1)`` of ``[batch, 4]`` scores (``[batch*4]``): two rows gave 8 values,
    "does not keep the batch axis" and exit 2; the probe finds the rows cannot be told apart
    and every evaluation runs alone."""
    proto = onnx_text(FOLDED)
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch*4"
    model = Model.from_proto(proto)
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    zeros = {"x": np.zeros((1, 4), np.float32)}
    explanation = explain(model, {"x": x}, "occlusion", background=zeros)
    assert any(
        n.startswith("rows do not run together (output 'y' has shape [8] for 2 rows")
        for n in explanation.notes
    ), explanation.notes
    for i in range(3):  # each row's top score, and the occluded features' drops
        assert explanation.scores[i] == pytest.approx(float(np.tanh(x[i]).max()))
    assert np.isfinite(explanation.attributions).all()


FOLDED = """
<ir_version: 10, opset_import: ["" : 21]>
folded (float[batch, 4] x) => (float[M] y) {
    t = Tanh(x)
    minus_one = Constant<value = int64[1] {-1}>()
    y = Reshape(t, minus_one)
}
"""


def test_the_evaluator_runs_thousands_of_rows_in_a_few_session_runs() -> None:
    model = tabular()
    layout, _ = plan_layout(model.signature.input("x"), _rows(1))
    evaluator = Evaluator(
        create_session(model), model.signature, "x", layout, {}, 1, batch_size=1024
    )
    scores = evaluator.function(0, Target("logits", 0, "logits[0]"))(_rows(5000))
    np.testing.assert_allclose(
        scores, _rows(5000) @ np.array([0, 0, 3, 0, 0, -2, 0, 0.0]), rtol=1e-5, atol=1e-5
    )
    assert (evaluator.evaluations, evaluator.runs) == (5000, 5)
    explanation = explain(model, _rows(2), "kernelshap", background=_rows(20, 1))
    assert explanation.evaluations > 5000
    assert explanation.session_runs <= explanation.evaluations / 500


@pytest.mark.parametrize("method", ["occlusion", "kernelshap"])
def test_fixed_batches_and_no_batch_axis_give_what_the_open_batch_gives(method: str) -> None:
    x, background = _rows(2), _rows(10, seed=1)
    open_batch = explain(tabular(), x, method, background=background, samples=100)
    batch_1 = explain(tabular(1), x, method, background=background, samples=100)
    unbatched = explain(tabular(None), x, method, background=background, samples=100)
    assert not unbatched.layout.batch_axis and batch_1.layout.fixed_batch == 1
    for other in (batch_1, unbatched):
        np.testing.assert_allclose(other.attributions, open_batch.attributions, atol=1e-5)
        assert other.evaluations == open_batch.evaluations
        assert other.session_runs == other.evaluations  # one row a run
    if method == "kernelshap":
        assert open_batch.session_runs < open_batch.evaluations / 10
    # exported at batch 2 (onnx's pytorch-converted models): a row run alone is padded to
    # two, and its output's first row is its own (it was read as one row of both)
    batch_2 = explain(tabular(2), x, method, background=background, samples=100)
    assert batch_2.layout.fixed_batch == 2
    np.testing.assert_allclose(batch_2.attributions, open_batch.attributions, atol=1e-5)


def test_a_time_major_input_is_explained_row_by_row_along_its_batch_dim() -> None:
    """PyTorch's LSTM without ``batch_first``, ``x[seq_len, batch_size, 4]``: 5 steps of 3
    rows were explained as 5 "inputs" of 3 rows each (each perturbed step run as a sequence of
    one); now 3 inputs of 5 steps, each scored as ONNX Runtime scores that row. Without a dim
    named as the batch it is one line, as in ferry batch."""
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    explanation = explain(Model.from_proto(recurrent()), {"x": x}, "occlusion", kind="signal")
    assert explanation.inputs.shape == (3, 5, 4) and explanation.layout.row_axis == 1
    y = OrtRunner(Model.from_proto(recurrent())).run({"x": x})["y"]  # [seq, rows, 3]
    report = explanation.report.to_dict()["result"]["explanations"]
    for row, entry in enumerate(report):
        assert entry["score"] == pytest.approx(y[:, row].max(), rel=1e-5)
    with pytest.raises(UsageError, match="runs along its first axis as a sequence"):
        explain(Model.from_proto(recurrent(("s0", "s1"))), {"x": x}, "occlusion", kind="signal")


def test_a_single_unbatched_row_is_one_input() -> None:
    explanation = explain(tabular(None), _rows(1)[0], "occlusion")
    assert explanation.inputs.shape == (1, FEATURES)
    assert set(explanation.ranking(0)[:2]) == READ


def test_a_session_or_runner_the_caller_holds_is_used() -> None:
    model = tabular()
    runner = OrtRunner(model)
    by_runner = explain(runner, {"x": _rows(2)}, "occlusion")
    by_session = explain(model, {"x": _rows(2)}, "occlusion", session=runner.session)
    np.testing.assert_array_equal(by_runner.attributions, by_session.attributions)


def test_the_top_level_api_and_its_report() -> None:
    explanation = onnxferry.explain(tabular(), _rows(2), "occlusion")
    report = explanation.report
    result = report.to_dict()["result"]
    assert report.verb == "explain" and result["method"] == "occlusion"
    assert result["explanations"][0]["top"][0]["feature"] in READ
    assert "explain" in report.to_text()


# --- the budget -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kernelshap", "permutation", "lime"])
def test_max_evals_sizes_the_method_to_the_budget(method: str) -> None:
    explanation = explain(tabular(), _rows(2), method, background=_rows(5, 1), max_evals=800)
    assert explanation.evaluations <= 800 and explanation.complete
    for i in range(2):
        assert set(explanation.ranking(i)[:2]) == READ


def test_a_budget_too_small_for_one_input_is_a_clear_error() -> None:
    with pytest.raises(BudgetExceeded, match=r"kernelshap needs at least \d+ model evaluations"):
        explain(tabular(), _rows(2), "kernelshap", background=_rows(20, 1), max_evals=100)
    with pytest.raises(BudgetExceeded, match="max_evals=1 "):
        explain(tabular(), _rows(2), "occlusion", max_evals=1)


def test_a_deadline_keeps_the_inputs_explained_before_it() -> None:
    def slow_after_the_first(p: Progress) -> None:
        if p.input_index >= 1:
            time.sleep(1.1)

    explanation = explain(
        image(), _images(3), "occlusion", deadline=1.0, progress=slow_after_the_first
    )
    assert len(explanation.inputs) == 1 and explanation.requested == 3
    assert not explanation.complete
    assert any("stopped after 1 of 3 inputs" in n for n in explanation.notes)
    with pytest.raises(BudgetExceeded, match="deadline of 1e-09 s"):
        explain(image(), _images(1), "occlusion", deadline=1e-9)


def test_progress_hears_of_every_batch() -> None:
    seen: list[Progress] = []
    explanation = explain(
        tabular(), _rows(2), "kernelshap", background=_rows(5, 1), progress=seen.append
    )
    assert len(seen) == explanation.session_runs
    assert seen[-1].evaluations == explanation.evaluations
    assert [p.input_index for p in seen] == sorted(p.input_index for p in seen)
    assert seen[-1].planned >= explanation.evaluations * 0.5


# --- what the libraries say, and what is refused ----------------------------------------------


def test_library_output_goes_to_the_notes_not_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    explain(image(), _images(1), "lime", segments=16, samples=50)  # lime draws a tqdm bar
    big = explain(tabular(), _rows(1), "kernelshap", background=_rows(150, 1), samples=50)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert any("100 of 150 rows" in n for n in big.notes)


def test_integrated_gradients_are_exact_on_a_linear_model() -> None:
    """For f(x) = x @ w, integrated gradients are w_j * (x_j - baseline_j): the baseline is the
    background's mean, f(baseline) the base value, and they add up to f(x) - f(baseline)."""
    model, rows, background = tabular(), _rows(3), _rows(20, seed=1)
    explanation = explain(model, rows, "integrated-gradients", background=background, target=0)
    weights = np.array([0, 0, 3.0, 0, 0, -2.0, 0, 0])
    start = background.mean(axis=0)
    np.testing.assert_allclose(explanation.attributions, weights * (rows - start), atol=1e-5)
    np.testing.assert_allclose(explanation.base_values, start @ weights, atol=1e-5)
    gaps = [explanation.additivity_gap(i) for i in range(3)]
    np.testing.assert_allclose(gaps, 0.0, atol=1e-5)
    assert any("torch module, checked against ONNX Runtime" in n for n in explanation.notes)
    assert explanation.evaluations == 3 + 3 * (IG_STEPS + 2)


def test_integrated_gradients_find_the_region_and_the_burst() -> None:
    pictures = explain(image(), _images(2), "integrated-gradients", samples=8)
    assert pictures.attributions.shape == (2, 1, 16, 16) and pictures.segments is None
    assert all(_region_share(pictures, i) > 0.99 for i in range(2))
    sounds = explain(audio(), _sounds(1), "integrated-gradients", samples=8)
    inside = np.abs(sounds.attributions[0, BURST]).sum()
    assert inside / np.abs(sounds.attributions[0]).sum() > 0.99


@pytest.mark.parametrize("batch", [None, 1], ids=["no-batch-axis", "batch-1-export"])
def test_integrated_gradients_run_rows_as_the_model_takes_them(batch: int | None) -> None:
    rows = _rows(2)
    inputs = rows[0] if batch is None else rows
    explanation = explain(tabular(batch), inputs, "integrated-gradients", samples=4)
    assert explanation.attributions.shape == (1 if batch is None else 2, FEATURES)
    assert set(explanation.ranking(0)[:2]) == READ


def _top_model() -> Model:
    """score = the largest feature (TopK), an operator the torch translation lacks."""
    return _model(
        [helper.make_node("TopK", ["x", "k"], ["score", "where"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("where", TensorProto.INT64, ["batch", 1]),
        ],
        {"k": np.array([1], np.int64)},
    )


def test_integrated_gradients_on_token_ids_go_along_their_embeddings() -> None:
    """Ids have no gradient: the path runs from the baseline ids' embeddings to the row's,
    and a token's attribution is its embedding's, summed. The driving token takes it all."""
    explanation = explain(tokens(), _ids(2), "integrated-gradients", samples=8)
    assert explanation.attributions.shape == (2, 12)
    for i in range(2):
        assert explanation.ranking(i)[0] == 4 and abs(explanation.additivity_gap(i)) < 1e-5
    assert any("along the embedding lookup 'embedded'" in n for n in explanation.notes)


def _cast_ids() -> Model:
    """ids[batch, 4] -> Cast to float -> MatMul: integer, and no embedding lookup reads it."""
    return _model(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["f", "w"], ["score"]),
        ],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        {"w": np.ones((4, 1), np.float32)},
    )


@pytest.mark.parametrize(
    ("model", "inputs", "match"),
    [
        (_cast_ids, np.array([[1, 2, 3, 4]]), "no embedding lookup"),
        (_top_model, _rows(1), "operator TopK .* has no torch translation"),
    ],
    ids=["ids-without-an-embedding", "an-operator-it-lacks"],
)
def test_integrated_gradients_say_why_they_cannot_run(
    model: Callable[[], Model], inputs: np.ndarray, match: str
) -> None:
    with pytest.raises(MethodUnavailable, match=match) as caught:
        explain(model(), inputs, "integrated-gradients")
    assert caught.value.exit_code == 2 and "use occlusion" in str(caught.value)


def test_integrated_gradients_keep_to_the_budget() -> None:
    with pytest.raises(BudgetExceeded, match="integrated-gradients needs at least 4"):
        explain(tabular(), _rows(1), "integrated-gradients", max_evals=3)
    fitted = explain(tabular(), _rows(1), "integrated-gradients", max_evals=21)
    assert fitted.evaluations <= 21
    assert any("18 steps" in n for n in fitted.notes)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "gradcam"}, UsageError, "unknown method 'gradcam'"),
        ({"input_name": "y"}, UsageError, "no input 'y'"),
        ({"target": 2}, UsageError, "target 2 is out of range"),
        ({"target": "nope"}, UsageError, "neither a class index nor an output"),
        ({"kind": "image"}, UsageError, "is not an image"),
        ({"kind": "pictures"}, UsageError, "unknown input kind"),
        ({"inputs": {"z": np.zeros((1, 8), np.float32)}}, DataError, "not inputs of the model"),
        ({"inputs": np.zeros((1, 5), np.float32)}, Exception, "5"),
        ({"inputs": np.zeros((1, 8), np.int64) + 1}, None, None),
        ({"inputs": np.array(["a"] * 8)}, FeedError, "takes FLOAT"),
        ({"background": {"z": np.zeros((1, 8))}}, DataError, "no array 'x'"),
        ({"background": np.zeros((3, 4), np.float32)}, DataError, "background rows have shape"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_bad_input_is_one_clear_error(
    kwargs: dict[str, Any], error: Any, match: str | None
) -> None:
    arguments: dict[str, Any] = {"inputs": _rows(2), "method": "occlusion", **kwargs}
    if error is None:  # integers for a float input: cast, explained
        assert explain(tabular(), **arguments).attributions.dtype == np.float64
        return
    with pytest.raises(error, match=match) as caught:
        explain(tabular(), **arguments)
    assert "\n" not in str(caught.value)


# --- the files --------------------------------------------------------------------------------


def test_tabular_files_are_charts_json_arrays_and_one_self_contained_report(tmp_path: Path) -> None:
    import json

    explanation = explain(tabular(), _rows(4), "kernelshap", background=_rows(10, 1), samples=64)
    files = write_explanation(explanation, tmp_path / "out")
    assert {"json", "arrays", "importance", "beeswarm", "report"} <= set(files)
    for name in ("importance", "beeswarm"):
        assert files[name].read_bytes().startswith(b"\x89PNG")
    document = json.loads(files["json"].read_text())
    assert document["verb"] == "explain" and document["result"]["kind"] == "tabular"
    assert len(document["result"]["explanations"][0]["attributions"]) == FEATURES
    with np.load(files["arrays"]) as arrays:
        np.testing.assert_allclose(arrays["attributions"], explanation.attributions, rtol=1e-6)
    page = files["report"].read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "href='explanation.json'" in page and "SHAP efficiency" in page
    assert not re.search(r"src=(?!['\"]?data:)", page), "the report loads nothing from outside"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in files.values()
    )


def test_image_files_are_one_heatmap_per_input(tmp_path: Path) -> None:
    explanation = explain(image(), _images(2), "occlusion")
    files = write_explanation(explanation, tmp_path)
    assert files["heatmap_0"].read_bytes().startswith(b"\x89PNG") and "heatmap_1" in files
    assert files["report"].read_text().count("data:image/png;base64,") == 2


def test_a_converted_classifier_is_explained_by_its_probabilities_not_its_label() -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    x = _rows(400)
    classifier = LogisticRegression().fit(x, (2 * x[:, 2] - 3 * x[:, 5] > 0).astype(int))
    model = onnxferry.convert(classifier, example_inputs=x[:4])
    assert model.signature.output_names[0] == "label"  # int64: not a score to explain
    explanation = explain(model, x[:3], "kernelshap", background=x[:30], samples=200)
    top = classifier.predict_proba(x[:3]).argmax(axis=1)
    assert explanation.targets == [f"probabilities[{c}]" for c in top]
    for i in range(3):
        assert set(explanation.ranking(i)[:2]) == READ


def test_a_zipmap_classifier_is_explained_by_its_maps_of_class_probabilities() -> None:
    """skl2onnx's default ZipMap output, ``seq(map(string, float))``: each map is a row of
    class probabilities, named by the class labels, explained as the same classifier's
    probability tensor is."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x = _rows(400)
    classifier = LogisticRegression().fit(x, np.where(2 * x[:, 2] - 3 * x[:, 5] > 0, "yes", "no"))
    explained = {}
    for zipmap in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = convert_sklearn(
                classifier,
                initial_types=[("x", FloatTensorType([None, FEATURES]))],
                options={id(classifier): {"zipmap": zipmap}},
            )
        model = Model.from_proto(proto)
        explained[zipmap] = explain(model, x[:3], "kernelshap", background=x[:30], samples=200)
    maps, tensor = explained[True], explained[False]
    probabilities = classifier.predict_proba(x[:3])
    top = probabilities.argmax(axis=1)
    assert maps.targets == [f"output_probability[{classifier.classes_[c]}]" for c in top]
    assert tensor.targets == [f"probabilities[{c}]" for c in top]
    np.testing.assert_allclose(maps.scores, probabilities.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(maps.attributions, tensor.attributions, rtol=1e-6, atol=1e-9)
    assert all(maps.ranking(i)[0] in READ for i in range(3))


@pytest.mark.parametrize(
    ("batch", "gain_shape"),
    [
        ("batch", ()),  # Silero VAD's layout, as the torch exporter names it
        (None, (1,)),  # spox's: no dim names; a gain fixed at [1], given whole to every run
    ],
)
def test_other_inputs_keep_their_own_batch_axis_and_a_scalar_is_held(
    batch: str | None, gain_shape: tuple[int, ...]
) -> None:
    """A recurrent model's ``state: [2, batch, 3]`` beside ``x: [batch, 8]`` and a scalar
    ``gain: []`` (Silero VAD's layout): each row is explained with its own state, as when it is
    explained alone. Without dim names, the state's lone open dim is its batch."""
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["read"]),
            helper.make_node("Gather", ["state", "last"], ["carried"], axis=0),
            helper.make_node("ReduceSum", ["carried", "one"], ["memory"], keepdims=1),
            helper.make_node("Add", ["read", "memory"], ["sum"]),
            helper.make_node("Mul", ["sum", "gain"], ["score"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, FEATURES]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 3]),
            helper.make_tensor_value_info("gain", TensorProto.FLOAT, gain_shape),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])],
        {
            "w": np.eye(FEATURES, 1, -2, dtype=np.float32),
            "last": np.array(1, np.int64),
            "one": np.array([1], np.int64),
        },
    )
    rows = _rows(2)
    state = np.random.default_rng(3).normal(size=(2, 2, 3)).astype(np.float32)
    gain = np.full(gain_shape, 2.0, np.float32)
    both = explain(model, {"x": rows, "state": state, "gain": gain}, "occlusion", background=rows)
    expected = OrtRunner(model).run({"x": rows, "state": state, "gain": gain})["score"][:, 0]
    np.testing.assert_allclose(both.scores, expected, rtol=1e-6)
    alone = explain(
        model, {"x": rows[1:], "state": state[:, 1:], "gain": gain}, "occlusion", background=rows
    )
    np.testing.assert_allclose(both.attributions[1], alone.attributions[0], rtol=1e-6)
    np.testing.assert_allclose(both.base_values[1], alone.base_values[0], rtol=1e-6)
    assert both.ranking(0)[0] == 2


def test_a_row_named_like_audio_is_a_signal_not_features() -> None:
    """onnx-asr's ``waveforms[batch, N]``: 16000 samples were explained as 16000 tabular
    features (16002 evaluations for occlusion); a TF-IDF row as wide stays tabular."""
    from onnxferry.signature import TensorSpec, dtype_from_numpy

    rows = np.zeros((2, 400), np.float32)
    for name, kind in (("waveforms", "signal"), ("input_pcm", "signal"), ("tfidf", "tabular")):
        spec = TensorSpec(name, dtype_from_numpy(np.float32), ("batch", "N"))
        assert plan_layout(spec, rows)[0].kind == kind, name


def test_integrated_gradients_say_so_when_the_graph_quantizes_the_input() -> None:
    from tests.helpers import qdq_model

    with pytest.raises(MethodUnavailable, match="no gradient reaches 'x'"):
        explain(Model.from_proto(qdq_model()), _rows(1)[:, :4], "integrated-gradients")
