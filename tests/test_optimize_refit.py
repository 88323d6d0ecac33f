"""``prune_channels(method="refit")``: channels chosen on the data, the next layer refitted to
the original's outputs, and the search that bisects the share of channels to remove (issue 18).

Ground truth: models whose extra channels are echoes of others (a channel times 0.01: ReLU
keeps the factor) or constants (zero weights, a bias). Removing them loses nothing that the
next layer cannot take over, so a correct refit gives the original's outputs on data it never
saw, where dropping the same channels without a refit does not."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.model import Model
from onnxferry.optimize import Budget, PassContext, Recipe
from onnxferry.optimize.auto import PRUNE_RATIOS, _prune_search, _Search, auto_search
from onnxferry.optimize.candidates import SearchResult
from onnxferry.optimize.chain import Judge, apply_recipe
from onnxferry.optimize.channel_surgery import Absorber, Follower
from onnxferry.optimize.prune import ChannelPrune
from onnxferry.optimize.refit import refit_target, sample_rows
from onnxferry.optimize.weights import Weights
from onnxferry.runtime import OrtRunner
from tests.helpers import save

FLOAT = onnx.TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto], x: list[int | str], y: list[int | str],
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, x)],
        [helper.make_tensor_value_info("y", FLOAT, y)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def echo_conv(**conv2: Any) -> onnx.ModelProto:
    """x[N,3,8,8] -> conv1 (8) -> Relu -> conv2 (6, ``conv2``'s attributes) -> GAP -> Flatten
    -> y[N,6]. conv1's channels 6 and 7 are channels 0 and 1 times 0.01."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 3, 3, 3)), rng.standard_normal(8)
    w1[6:], b1[6:] = 0.01 * w1[:2], 0.01 * b1[:2]
    weights = {
        "w1": w1,
        "b1": b1,
        "w2": rng.standard_normal((6, 8, 3, 3)),
        "b2": rng.standard_normal(6),
    }
    attributes = conv2 or {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **attributes),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    return _model(nodes, ["N", 3, 8, 8], ["N", 6], weights)


def constant_mlp() -> onnx.ModelProto:
    """x[N,4,16] -> MatMul + b1 -> Relu -> MatMul + b2 -> y[N,4,5]: hidden features 10 and 11
    have zero weights and bias 3, so they are 3 whatever the input."""
    rng = np.random.default_rng(1)
    w1, b1 = rng.standard_normal((16, 12)), rng.standard_normal(12)
    w1[:, 10:], b1[10:] = 0.0, 3.0
    weights = {"w1": w1, "b1": b1, "w2": rng.standard_normal((12, 5)), "b2": rng.standard_normal(5)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    return _model(nodes, ["N", 4, 16], ["N", 4, 5], weights)


def flatten_head() -> onnx.ModelProto:
    """x[N,2,4,4] -> conv (4) -> Relu -> Flatten -> Gemm (transB, 3) -> y[N,3]; the conv's
    channel 3 is channel 0 times 0.01, so each becomes 16 features of the Gemm."""
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    w[3], b[3] = 0.01 * w[0], 0.01 * b[0]
    weights = {"w": w, "b": b, "g": rng.standard_normal((3, 64)), "c": rng.standard_normal(3)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "c"], ["y"], name="head", transB=1),
    ]
    return _model(nodes, ["N", 2, 4, 4], ["N", 3], weights)


def strided() -> onnx.ModelProto:
    """``echo_conv`` with a strided, dilated, unevenly padded conv2."""
    return echo_conv(strides=[2, 1], dilations=[1, 2], pads=[1, 2, 0, 1])


def _sets(shape: tuple[int, ...], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def _error(a: Model, b: Model, sets: list[dict[str, np.ndarray]]) -> float:
    """The largest |a - b| over ``sets``, relative to the largest |a|."""
    ra, rb = OrtRunner(a), OrtRunner(b)
    diff = max(float(np.abs(ra.run(s)["y"] - rb.run(s)["y"]).max()) for s in sets)
    return diff / max(float(np.abs(ra.run(s)["y"]).max()) for s in sets)


@pytest.mark.parametrize(
    ("make", "shape", "layer", "ratio", "removed"),
    [
        (echo_conv, (2, 3, 8, 8), "conv1", 0.25, [6, 7]),
        (strided, (2, 3, 8, 8), "conv1", 0.25, [6, 7]),
        (constant_mlp, (2, 4, 16), "fc1", 2 / 12, [10, 11]),
        (flatten_head, (8, 2, 4, 4), "conv", 0.25, [3]),
    ],
    ids=["conv", "conv-strided-dilated", "matmul-add", "flatten-gemm"],
)
def test_refit_removes_what_the_next_layer_can_take_over_and_keeps_the_outputs(
    tmp_path: Path,
    make: object,
    shape: tuple[int, ...],
    layer: str,
    ratio: float,
    removed: list[int],
) -> None:
    model = Model.load(save(make(), tmp_path / "m.onnx"))  # type: ignore[operator]
    tune, unseen = _sets(shape, 16, seed=3), _sets(shape, 8, seed=4)
    ctx = PassContext(tmp_path / "refit", calibration=tune)
    fitted = ChannelPrune(ratio=ratio).apply(model, ctx)
    assert fitted.changed and fitted.details["method"] == "refit"
    assert fitted.details["pruned"][layer]["removed_channels"] == removed
    dropped = ChannelPrune(ratio=ratio, method="l1").apply(model, PassContext(tmp_path / "l1"))
    assert dropped.details["pruned"][layer]["removed_channels"] == removed  # the same channels
    refit_error, l1_error = (
        _error(model, fitted.model, unseen),
        _error(model, dropped.model, unseen),
    )
    assert refit_error < 1e-4, refit_error
    assert l1_error > 100 * refit_error and l1_error > 1e-3, (l1_error, refit_error)


def test_sampled_rows_reproduce_the_layer(tmp_path: Path) -> None:
    """A Conv's sampled input patches times its weight (plus bias) are its outputs at the
    sampled positions, with strides, dilations and uneven pads; dense rows likewise."""
    cases: list[tuple[Callable[[], onnx.ModelProto], tuple[int, ...], int, int]] = [
        (strided, (3, 3, 8, 8), 2, 1),
        (constant_mlp, (3, 4, 16), 3, 0),
    ]
    for make, shape, index, axis in cases:
        model = Model.load(save(make(), tmp_path / "m.onnx"))
        weights = Weights(model, "test")
        follower = Follower(model.proto, weights)
        node = model.proto.graph.node[index]
        target = refit_target(Absorber(node, node.input[1], axis), follower)
        assert not isinstance(target, str)
        (rows,) = sample_rows(model, model.proto, [target], _sets(shape, 2, seed=5), 20)
        matrix = target.matrix(weights.array(target.weight))
        assert rows.x.shape == (20, matrix.shape[0]) and rows.y.shape == (20, matrix.shape[1])
        predicted = rows.x @ matrix + weights.array(target.bias)
        np.testing.assert_allclose(predicted, rows.y, rtol=1e-4, atol=1e-4)


def _refusal(tmp_path: Path, **conv2: Any) -> str:
    model = Model.load(save(echo_conv(**conv2), tmp_path / "m.onnx"))
    result = ChannelPrune(ratio=0.25).apply(model, PassContext(tmp_path / "w"))
    assert not result.changed
    return str(result.details["skipped"]["conv1"])


def test_a_layer_the_refit_cannot_read_is_skipped_and_says_why(tmp_path: Path) -> None:
    said = _refusal(tmp_path, auto_pad="SAME_UPPER")
    assert said == "a Conv with auto_pad SAME_UPPER reads its channels (no refit for it)"
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", alpha=2.0),
    ]
    weights = {"w1": rng.standard_normal((4, 8)), "w2": rng.standard_normal((8, 2))}
    model = Model.load(save(_model(nodes, ["N", 4], ["N", 2], weights), tmp_path / "g.onnx"))
    result = ChannelPrune(ratio=0.25).apply(model, PassContext(tmp_path / "g"))
    assert result.details["skipped"]["fc1"] == (
        "a Gemm with alpha 2.0 reads its channels (no refit for it)"
    )


# --- the search ------------------------------------------------------------------------------


def test_the_search_bisects_the_share_of_channels_and_replays_from_the_saved_recipe(
    tmp_path: Path,
) -> None:
    """On the echo model a quarter of conv1's channels go for free and more do not: the
    bisection finds 0.25 within a strict budget, and the saved recipe rebuilds that model."""
    model = Model.load(save(echo_conv(), tmp_path / "m.onnx"))
    budget = Budget.parse("cosine>=0.99999")
    judge = Judge(model, _sets((1, 3, 8, 8), 16, seed=6), budget)
    held = Judge(model, _sets((1, 3, 8, 8), 16, seed=7), budget)
    _, search = auto_search(
        model, judge, tmp_path / "w", recipes=[], holdout=held, mixed=False, prune=True
    )
    tried = [c for c in search.candidates if c.origin.startswith("prune")]
    pruned = {float(c.origin.split()[1]): c for c in tried}
    assert set(pruned) <= set(PRUNE_RATIOS) and len(pruned) == len(tried)
    assert pruned[0.25].within and not pruned[0.5].within  # half of conv1 is not echoes
    best = max(r for r, c in pruned.items() if c.within)
    assert all(c.within == (r <= best) for r, c in pruned.items())  # what a bisection finds
    saved = pruned[0.25].recipe.save(tmp_path / "pruned.recipe.toml")
    assert "ratio = 0.25" in saved.read_text()
    replayed, _ = apply_recipe(
        model, Recipe.load(saved), judge, workdir=tmp_path / "replay", speed_check=False
    )
    built = pruned[0.25].load()
    assert built is not None and replayed.digest == built.digest
    search.chosen = search.candidates.index(pruned[0.25])  # as where it ran faster
    (table,) = [t for t in search.tables() if t.title.startswith("channels pruned by")]
    assert table.rows == [("conv1", "Conv", "8 -> 6", 2)]


def test_pruning_waits_for_the_time_it_needs(tmp_path: Path) -> None:
    model = Model.load(save(echo_conv(), tmp_path / "m.onnx"))
    judge = Judge(model, _sets((1, 3, 8, 8), 4, seed=8), Budget.parse("cosine>=0.99"))
    result = SearchResult("m", judge.budget.text(), 1.0)
    state = _Search(model, judge, None, tmp_path, None, time.monotonic() + 0.01, result)
    _prune_search(state)
    assert not result.candidates
    assert result.untried and result.untried[0].startswith("channel pruning (its refits take")


def test_channel_energies_are_the_same_batched_or_one_channel_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxferry.optimize import refit

    model = Model.load(save(echo_conv(), tmp_path / "m.onnx"))
    weights = Weights(model, "test")
    follower = Follower(model.proto, weights)
    conv2 = model.proto.graph.node[2]
    target = refit_target(Absorber(conv2, "w2", 1), follower)
    assert not isinstance(target, str)
    rows = sample_rows(model, model.proto, [target], _sets((2, 3, 8, 8), 4, seed=9), 256)
    batched = [refit.weakest_channels(rows, [target], weights, 8, k).tolist() for k in range(8)]
    assert batched[2] == [6, 7]  # the echoes add the least
    monkeypatch.setattr(refit, "_GRAM_WIDTH", 0)
    one_by_one = [refit.weakest_channels(rows, [target], weights, 8, k).tolist() for k in range(8)]
    assert one_by_one == batched


@pytest.mark.slow  # trains and exports the small CNN on digits when its cache is cold
def test_on_a_trained_cnn_refit_keeps_the_held_out_digits_where_l1_pruning_does_not(
    tmp_path: Path,
) -> None:
    from tests.trained_models import SMALL_CNN, digits_split, trained_cnn

    model = Model.load(trained_cnn(SMALL_CNN).path)
    x_train, _, x_test, _ = digits_split(SMALL_CNN.size)
    tune = [{"image": x_train[i : i + 1]} for i in range(32)]
    fitted = ChannelPrune(ratio=0.25).apply(model, PassContext(tmp_path / "r", calibration=tune))
    dropped = ChannelPrune(ratio=0.25, method="l1").apply(model, PassContext(tmp_path / "l"))
    assert len(fitted.details["pruned"]) == len(dropped.details["pruned"]) >= 2

    def labels(m: Model) -> np.ndarray:  # the exported CNN takes one image at a time
        runner = OrtRunner(m)
        return np.concatenate([next(iter(runner.run({"image": x[None]}).values())) for x in x_test])

    reference = labels(model).argmax(axis=1)
    refit_top1 = float((labels(fitted.model).argmax(axis=1) == reference).mean())
    l1_top1 = float((labels(dropped.model).argmax(axis=1) == reference).mean())
    assert refit_top1 >= 0.97 and l1_top1 < refit_top1 - 0.1, (refit_top1, l1_top1)
