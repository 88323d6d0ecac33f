"""The pruning passes: magnitude (zeros, size only) and channels (shape-propagating).

Channel-pruning models are built with small integer weights and inputs, and BatchNormalization
with var 0.25 and epsilon 0, so every sum is exact in float32 whatever order ONNX Runtime adds
in: pruning channels whose weights and biases are zero must then leave the outputs bit-equal.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.errors import UsageError
from onnxferry.model import Model
from onnxferry.optimize import BUILTIN, PassContext, PassResult
from onnxferry.optimize.prune import ChannelPrune, MagnitudePrune
from onnxferry.parity import Tolerance, compare_outputs
from onnxferry.runtime import OrtRunner

from .helpers import RELU, onnx_text, save, save_external

BATCHES = (1, 3)
FLOAT = onnx.TensorProto.FLOAT


# --- builders ----------------------------------------------------------------------------------


def _model(
    nodes: list[onnx.NodeProto],
    x_shape: list[int | str],
    y_shape: list[int | str],
    weights: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", FLOAT, y_shape)],
        [numpy_helper.from_array(_f32(v), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _f32(v: np.ndarray) -> np.ndarray:
    """float64 becomes float32; other dtypes (int64 shapes) stay."""
    return v.astype(np.float32) if v.dtype == np.float64 else v


def _ints(rng: np.random.Generator, shape: tuple[int, ...], dead: Sequence[int] = ()) -> np.ndarray:
    """Integers in [-1, 1] with at least one nonzero per output channel; channels ``dead``
    (along axis 0) all zero."""
    w = rng.integers(-1, 2, size=shape).astype(np.float32)
    w.reshape(shape[0], -1)[:, 0] = 1.0
    w[list(dead)] = 0.0
    return w


def conv_chain(dead1: list[int], dead2: list[int]) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(8) -> BN -> Relu -> Conv(8) -> GlobalAveragePool -> Flatten -> Gemm(4)
    -> y[N,4]; the output channels ``dead1`` of the first Conv and ``dead2`` of the second
    have zero weights and biases (and BN maps 0 to 0 there)."""
    rng = np.random.default_rng(1)
    bn_bias = rng.integers(-2, 3, 8).astype(np.float32)
    bn_mean = rng.integers(-2, 3, 8).astype(np.float32)
    bn_bias[dead1] = 0.0
    bn_mean[dead1] = 0.0
    b1 = rng.integers(-2, 3, 8).astype(np.float32)
    b2 = rng.integers(-2, 3, 8).astype(np.float32)
    b1[dead1] = 0.0
    b2[dead2] = 0.0
    weights = {
        "w1": _ints(rng, (8, 3, 3, 3), dead1),
        "b1": b1,
        "scale": rng.integers(1, 3, 8).astype(np.float32),
        "bn_bias": bn_bias,
        "mean": bn_mean,
        "var": np.full(8, 0.25, np.float32),
        "w2": _ints(rng, (8, 8, 3, 3), dead2),
        "b2": b2,
        "w3": rng.integers(-2, 3, (8, 4)).astype(np.float32),
        "b3": rng.integers(-2, 3, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "scale", "bn_bias", "mean", "var"], ["n1"], epsilon=0.0
        ),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="head"),
    ]
    return _model(nodes, ["N", 3, 8, 8], ["N", 4], weights)


def residual_block(dead: list[int]) -> onnx.ModelProto:
    """x[N,4,6,6] -> conv0 -> relu0 -> conv1 -> relu1 -> conv2 -> Add(., relu0) -> Relu -> GAP
    -> Flatten -> y[N,8]: conv0 and conv2 feed the residual Add; conv1's channels ``dead`` are
    zero."""
    rng = np.random.default_rng(2)
    b1 = rng.integers(-2, 3, 8).astype(np.float32)
    b1[dead] = 0.0
    weights = {
        "w0": _ints(rng, (8, 4, 3, 3)),
        "w1": _ints(rng, (8, 8, 3, 3), dead),
        "b1": b1,
        "w2": _ints(rng, (8, 8, 3, 3)),
    }
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=pads),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=pads),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=pads),
        helper.make_node("Add", ["c2", "r0"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    return _model(nodes, ["N", 4, 6, 6], ["N", 8], weights)


def gemm_mlp(dead0: list[int], dead1: list[int]) -> onnx.ModelProto:
    """x[N,16] -> MatMul(32) + bias -> Relu -> Gemm(24, transB) -> Relu -> Gemm(5) -> y[N,5];
    features ``dead0`` of the first layer and ``dead1`` of the second are zero."""
    rng = np.random.default_rng(3)
    b0 = rng.integers(-2, 3, 32).astype(np.float32)
    b0[dead0] = 0.0
    c1 = rng.integers(-2, 3, 24).astype(np.float32)
    c1[dead1] = 0.0
    weights = {
        "w0": _ints(rng, (32, 16), dead0).T.copy(),  # [in, out] for MatMul
        "b0": b0,
        "w1": _ints(rng, (24, 32), dead1),  # [out, in]: transB=1
        "c1": c1,
        "w2": rng.integers(-2, 3, (24, 5)).astype(np.float32),
        "c2": rng.integers(-2, 3, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["m0"], name="fc0"),
        helper.make_node("Add", ["m0", "b0"], ["a0"]),
        helper.make_node("Relu", ["a0"], ["r0"]),
        helper.make_node("Gemm", ["r0", "w1", "c1"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2", "c2"], ["y"], name="fc2"),
    ]
    return _model(nodes, ["N", 16], ["N", 5], weights)


def dense_model(seed: int = 0) -> onnx.ModelProto:
    """x[N,8,6,6] -> Conv(16, 3x3, padded) -> Flatten -> MatMul(576x4) -> Gemm(4x3) -> y[N,3]:
    two weights of at least 1024 elements and one (the Gemm's) below."""
    rng = np.random.default_rng(seed)
    weights = {
        "wc": rng.standard_normal((16, 8, 3, 3)),
        "wm": rng.standard_normal((576, 4)),
        "wg": rng.standard_normal((4, 3)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
        helper.make_node("Gemm", ["m", "wg"], ["y"], name="head"),
    ]
    return _model(nodes, ["N", 8, 6, 6], ["N", 3], weights)


# --- checks ------------------------------------------------------------------------------------


def _ctx(tmp_path: Path) -> PassContext:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    return PassContext(workdir=work)


def _load(proto: onnx.ModelProto, path: Path) -> Model:
    return Model.load(save(proto, path))


def _outputs(model: Model, shape: tuple[int, ...], *, ints: bool) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime's outputs for one input per batch size in BATCHES."""
    runner = OrtRunner(model)
    rng = np.random.default_rng(7)
    outputs = []
    for batch in BATCHES:
        size = (batch, *shape)
        x = rng.integers(-2, 3, size) if ints else rng.standard_normal(size)
        outputs.append(runner.run({"x": x.astype(np.float32)}))
    return outputs


def _assert_same(a: Model, b: Model, shape: tuple[int, ...], *, ints: bool = True) -> None:
    """Bit-equal outputs on every batch size, and a parity report that agrees."""
    ref, got = _outputs(a, shape, ints=ints), _outputs(b, shape, ints=ints)
    for r, g in zip(ref, got, strict=True):
        assert r.keys() == g.keys()
        for name in r:
            np.testing.assert_array_equal(g[name], r[name])
    assert compare_outputs(ref, got, Tolerance(atol=1e-5, rtol=0.0)).ok


def _untouched(model: Model, data: bytes, path: Path) -> None:
    assert model.proto.SerializeToString() == data
    assert model.path == path
    assert path.read_bytes() == data


def _init(model: Model, name: str) -> np.ndarray:
    tensor = next(t for t in model.proto.graph.initializer if t.name == name)
    return numpy_helper.to_array(tensor, str(model.path.parent) if model.path else "")


# --- catalog and parameters --------------------------------------------------------------------


def test_passes_are_in_the_catalog_with_declared_parameters() -> None:
    assert BUILTIN.get("prune_magnitude") is MagnitudePrune
    assert BUILTIN.get("prune_channels") is ChannelPrune
    assert MagnitudePrune.size_only and not ChannelPrune.size_only
    assert MagnitudePrune.family == ChannelPrune.family == "prune"
    assert [d[0] for d in MagnitudePrune.describe()] == ["sparsity", "op_types", "min_elements"]
    assert [(d[0], d[2]) for d in ChannelPrune.describe()] == [
        ("ratio", 0.25),
        ("method", "refit"),
        ("max_samples", 32),
        ("max_rows", 16384),
    ]
    assert MagnitudePrune().params() == {
        "sparsity": 0.5,
        "op_types": ("MatMul", "Gemm", "Conv"),
        "min_elements": 1024,
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MagnitudePrune(sparsity=1.0), "sparsity must be in [0, 1)"),
        (lambda: MagnitudePrune(sparsity=-0.1), "sparsity must be in [0, 1)"),
        (lambda: MagnitudePrune(op_types=("Add",)), "cannot prune the weights of Add"),
        (lambda: MagnitudePrune(min_elements=0), "min_elements must be >= 1"),
        (lambda: ChannelPrune(ratio=1.0), "ratio must be in [0, 1)"),
        (lambda: ChannelPrune(method="lasso"), "unknown method 'lasso'"),
        (lambda: ChannelPrune(max_rows=0), "max_samples and max_rows must be >= 1"),
    ],
)
def test_bad_parameters_fail_before_anything_runs(make: object, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        make()  # type: ignore[operator]


# --- prune_magnitude ---------------------------------------------------------------------------


def _zero_smallest(w: np.ndarray, sparsity: float) -> np.ndarray:
    """The test's own magnitude pruning: zero every |w| up to the k-th smallest."""
    k = round(sparsity * w.size)
    out: np.ndarray = w.copy()
    if k:
        threshold = np.sort(np.abs(w).reshape(-1))[k - 1]
        out[np.abs(w) <= threshold] = 0.0
    return out


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_magnitude_reaches_the_sparsity_and_matches_numpy_pruning(
    tmp_path: Path, sparsity: float
) -> None:
    proto = dense_model()
    model = _load(proto, tmp_path / "in" / "model.onnx")
    data = model.path.read_bytes() if model.path else b""
    result = MagnitudePrune(sparsity=sparsity).apply(model, _ctx(tmp_path))

    assert result.changed
    assert "zeros do not make ONNX Runtime CPU faster; the file compresses better" in result.notes
    tensors = result.details["tensors"]
    assert set(tensors) == {"wc", "wm"}  # wg has 12 elements, under min_elements
    for name, stats in tensors.items():
        zeros = int(np.count_nonzero(_init(result.model, name) == 0))
        assert abs(zeros - sparsity * stats["elements"]) <= 1
        assert stats["zeros"] == zeros
        assert stats["sparsity"] == pytest.approx(zeros / stats["elements"])
    total = sum(t["elements"] for t in tensors.values())
    assert result.details["overall_sparsity"] == pytest.approx(
        sum(t["zeros"] for t in tensors.values()) / total
    )
    np.testing.assert_array_equal(_init(result.model, "wg"), _init(model, "wg"))
    _untouched(model, data, tmp_path / "in" / "model.onnx")
    assert result.model.path is not None and result.model.path != model.path

    expected = onnx.ModelProto()
    expected.CopyFrom(proto)
    for tensor in expected.graph.initializer:
        if tensor.name in ("wc", "wm"):
            w = _zero_smallest(numpy_helper.to_array(tensor), sparsity)
            tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))
    reference = _load(expected, tmp_path / "expected.onnx")
    _assert_same(reference, result.model, (8, 6, 6), ints=False)
    for name in ("wc", "wm", "wg"):
        np.testing.assert_array_equal(_init(result.model, name), _init(reference, name))
    files = [m.path.read_bytes() for m in (model, result.model) if m.path is not None]
    assert len(zlib.compress(files[1])) < len(zlib.compress(files[0]))


def test_magnitude_respects_op_types_and_min_elements(tmp_path: Path) -> None:
    model = _load(dense_model(), tmp_path / "model.onnx")
    only_conv = MagnitudePrune(op_types=("Conv",)).apply(model, _ctx(tmp_path))
    assert set(only_conv.details["tensors"]) == {"wc"}
    everything = MagnitudePrune(min_elements=1).apply(model, _ctx(tmp_path / "b"))
    assert set(everything.details["tensors"]) == {"wc", "wm", "wg"}
    np.testing.assert_array_equal(_init(only_conv.model, "wm"), _init(model, "wm"))
    for result in (only_conv, everything):
        ref, got = (
            _outputs(model, (8, 6, 6), ints=False),
            _outputs(result.model, (8, 6, 6), ints=False),
        )
        assert [o["y"].shape for o in got] == [o["y"].shape for o in ref]


def test_magnitude_reads_and_keeps_external_data(tmp_path: Path) -> None:
    path = save_external(dense_model(), tmp_path / "in" / "model.onnx")
    model = Model.load(path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    result = MagnitudePrune(sparsity=0.5).apply(model, _ctx(tmp_path))
    assert result.changed
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before
    zeros = np.count_nonzero(_init(result.model, "wm") == 0)
    assert zeros == 576 * 4 // 2
    expected = _load(dense_model(), tmp_path / "plain.onnx")
    pruned_plain = MagnitudePrune(sparsity=0.5).apply(expected, _ctx(tmp_path / "p"))
    _assert_same(pruned_plain.model, result.model, (8, 6, 6), ints=False)


def test_nothing_to_prune_is_unchanged_with_a_note(tmp_path: Path) -> None:
    model = _load(onnx_text(RELU), tmp_path / "relu.onnx")
    results: list[PassResult] = [
        MagnitudePrune().apply(model, _ctx(tmp_path / "m")),
        ChannelPrune().apply(model, _ctx(tmp_path / "c")),
    ]
    for result in results:
        assert not result.changed
        assert result.model is model
        assert "nothing pruned" in result.notes[0]
    zero = MagnitudePrune(sparsity=0.0).apply(
        _load(dense_model(), tmp_path / "d.onnx"), _ctx(tmp_path / "z")
    )
    assert not zero.changed and "already" in zero.notes[0]
    for result in results:
        ref = [OrtRunner(model).run({"x": np.ones((b, 4), np.float32)}) for b in BATCHES]
        got = [OrtRunner(result.model).run({"x": np.ones((b, 4), np.float32)}) for b in BATCHES]
        assert compare_outputs(ref, got, Tolerance(atol=0.0, rtol=0.0)).ok


# --- prune_channels ----------------------------------------------------------------------------


def test_channels_conv_bn_chain_drops_dead_channels_exactly(tmp_path: Path) -> None:
    model = _load(conv_chain(dead1=[1, 5], dead2=[2, 7]), tmp_path / "in" / "model.onnx")
    data = model.path.read_bytes() if model.path else b""
    result = ChannelPrune(ratio=0.25, method="l1").apply(model, _ctx(tmp_path))

    assert result.changed
    pruned, skipped = result.details["pruned"], result.details["skipped"]
    assert pruned["conv1"]["removed_channels"] == [1, 5]
    assert pruned["conv2"]["removed_channels"] == [2, 7]
    assert (pruned["conv1"]["channels_before"], pruned["conv1"]["channels_after"]) == (8, 6)
    assert "graph output" in skipped["head"]
    shapes = {t.name: tuple(t.dims) for t in result.model.proto.graph.initializer}
    assert shapes["w1"] == (6, 3, 3, 3) and shapes["b1"] == (6,)
    assert shapes["scale"] == shapes["bn_bias"] == shapes["mean"] == shapes["var"] == (6,)
    assert shapes["w2"] == (6, 6, 3, 3) and shapes["b2"] == (6,)
    assert shapes["w3"] == (6, 4)
    assert (
        result.details["params_after"] < result.details["params_before"] == (model.parameter_count)
    )
    assert result.details["params_after"] == result.model.parameter_count
    assert result.details["nodes_after"] == result.details["nodes_before"] == 7
    assert any("parameters" in n and "->" in n for n in result.notes)
    assert result.model.signature == model.signature
    _untouched(model, data, tmp_path / "in" / "model.onnx")
    _assert_same(model, result.model, (3, 8, 8))


def test_channels_skip_the_layers_feeding_a_residual_add(tmp_path: Path) -> None:
    model = _load(residual_block(dead=[0, 3]), tmp_path / "model.onnx")
    result = ChannelPrune(ratio=0.25, method="l1").apply(model, _ctx(tmp_path))

    assert set(result.details["pruned"]) == {"conv1"}
    assert result.details["pruned"]["conv1"]["removed_channels"] == [0, 3]
    skipped = result.details["skipped"]
    assert set(skipped) == {"conv0", "conv2"}
    for reason in skipped.values():
        assert "Add 'residual'" in reason and "residual" in reason.split(":", 1)[1]
    shapes = {t.name: tuple(t.dims) for t in result.model.proto.graph.initializer}
    assert shapes == {"w0": (8, 4, 3, 3), "w1": (6, 8, 3, 3), "b1": (6,), "w2": (8, 6, 3, 3)}
    _assert_same(model, result.model, (4, 6, 6))


def test_channels_gemm_and_matmul_mlp(tmp_path: Path) -> None:
    dead0, dead1 = [0, 3, 4, 9, 17, 20, 28, 31], [2, 5, 11, 12, 19, 23]
    model = _load(gemm_mlp(dead0, dead1), tmp_path / "model.onnx")
    result = ChannelPrune(ratio=0.25, method="l1").apply(model, _ctx(tmp_path))

    pruned = result.details["pruned"]
    assert pruned["fc0"]["removed_channels"] == dead0
    assert pruned["fc1"]["removed_channels"] == dead1
    assert "graph output" in result.details["skipped"]["fc2"]
    shapes = {t.name: tuple(t.dims) for t in result.model.proto.graph.initializer}
    assert shapes == {
        "w0": (16, 24),
        "b0": (24,),
        "w1": (18, 24),
        "c1": (18,),
        "w2": (18, 5),
        "c2": (5,),
    }
    assert result.details["params_after"] < result.details["params_before"]
    _assert_same(model, result.model, (16,))


def test_channels_never_go_to_zero_and_prune_live_channels_by_l1(tmp_path: Path) -> None:
    model = _load(gemm_mlp([], []), tmp_path / "model.onnx")
    result = ChannelPrune(ratio=0.99, method="l1").apply(model, _ctx(tmp_path))
    assert result.details["pruned"]["fc0"]["channels_after"] == 1
    assert result.details["pruned"]["fc1"]["channels_after"] == 1
    w1 = _init(model, "w1")
    assert result.details["pruned"]["fc1"]["channels_before"] == 24
    kept = np.abs(_init(result.model, "w1")).sum()
    assert 0 < kept <= np.abs(w1).sum()
    ref, got = _outputs(model, (16,), ints=True), _outputs(result.model, (16,), ints=True)
    assert [o["y"].shape for o in got] == [o["y"].shape for o in ref] == [(1, 5), (3, 5)]


@pytest.mark.parametrize(
    ("shape", "followed"),
    [([0, -1], True), ([-1, 8 * 36], False)],
)
def test_channels_follow_reshape_to_0_minus_1_only(
    tmp_path: Path, shape: list[int], followed: bool
) -> None:
    rng = np.random.default_rng(4)
    weights = {
        "w": _ints(rng, (8, 4, 3, 3), [6, 7]),
        "shape": np.array(shape, np.int64),
        "fc": rng.integers(-2, 3, (8 * 36, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    model = _load(_model(nodes, ["N", 4, 6, 6], ["N", 3], weights), tmp_path / "model.onnx")
    result = ChannelPrune(ratio=0.25, method="l1").apply(model, _ctx(tmp_path))
    if followed:
        assert result.details["pruned"]["conv"]["removed_channels"] == [6, 7]
        assert _init(result.model, "fc").shape == (6 * 36, 3)
    else:
        assert not result.changed
        assert "shape holds the channel count" in result.details["skipped"]["conv"]
    _assert_same(model, result.model, (4, 6, 6))


def test_channels_skip_a_concat_and_report_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    weights = {"w": _ints(rng, (8, 4, 3, 3), [0, 1]), "w2": _ints(rng, (4, 12, 1, 1))}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c", "x"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    model = _load(_model(nodes, ["N", 4, 6, 6], ["N", 4], weights), tmp_path / "model.onnx")
    result = ChannelPrune().apply(model, _ctx(tmp_path))
    assert not result.changed and result.model is model
    assert "no layer could be pruned" in result.notes[0]
    assert result.details["skipped"]["conv"].startswith("its channels reach Concat 'cat'")
    assert "graph output 'y'" in result.details["skipped"]["conv2"]
    _assert_same(model, result.model, (4, 6, 6))


def test_magnitude_leaves_a_weight_that_another_op_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    weights = {"w": rng.standard_normal((32, 32)), "w2": rng.standard_normal((32, 32))}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
        helper.make_node("Transpose", ["w"], ["wt"]),  # reads the weight as a plain tensor
        helper.make_node("MatMul", ["m", "wt"], ["m2"], name="tied"),
        helper.make_node("MatMul", ["m2", "w2"], ["y"], name="fc2"),
    ]
    proto = _model(nodes, ["N", 32], ["N", 32], weights)
    model = _load(proto, tmp_path / "model.onnx")
    result = MagnitudePrune().apply(model, _ctx(tmp_path))
    assert set(result.details["tensors"]) == {"w2"}
    assert "not use it as a weight" in result.details["skipped"]["w"]
    np.testing.assert_array_equal(_init(result.model, "w"), _init(model, "w"))
    w2 = next(t for t in proto.graph.initializer if t.name == "w2")
    w2.CopyFrom(numpy_helper.from_array(_zero_smallest(numpy_helper.to_array(w2), 0.5), "w2"))
    _assert_same(_load(proto, tmp_path / "expected.onnx"), result.model, (32,), ints=False)


# --- weights held in Constant nodes (Paddle2ONNX's way) ---------------------------------------


def _weights_in_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every initializer moved into a Constant node ahead of the graph."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    constants = [
        helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}")
        for t in out.graph.initializer
    ]
    del out.graph.initializer[:]
    nodes = [*constants, *out.graph.node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_channels_prune_weights_held_in_constant_nodes(tmp_path: Path) -> None:
    proto = conv_chain(dead1=[1, 5], dead2=[2, 7])
    model = _load(_weights_in_constants(proto), tmp_path / "in" / "model.onnx")
    assert not model.proto.graph.initializer
    data = model.path.read_bytes() if model.path else b""
    for method in ("l1", "refit"):
        result = ChannelPrune(ratio=0.25, method=method).apply(model, _ctx(tmp_path / method))

        assert result.changed
        pruned = result.details["pruned"]
        assert {layer: p["channels_after"] for layer, p in pruned.items()} == {
            "conv1": 6,
            "conv2": 6,
        }
        shapes = {t.name: tuple(t.dims) for t in result.model.proto.graph.initializer}
        assert shapes["w1"] == (6, 3, 3, 3) and shapes["w2"] == (6, 6, 3, 3)
        assert not [n for n in result.model.proto.graph.node if n.op_type == "Constant"]
        assert any("Constant nodes" in n for n in result.notes)
        _untouched(model, data, tmp_path / "in" / "model.onnx")
        if method == "l1":  # the dead channels, as from initializers: the same outputs
            assert pruned["conv1"]["removed_channels"] == [1, 5]
            assert pruned["conv2"]["removed_channels"] == [2, 7]
            _assert_same(model, result.model, (3, 8, 8))


def test_nothing_pruned_from_constant_nodes_returns_the_input_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    head = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="head")],
        ["N", 8],
        ["N", 4],
        {"w": rng.standard_normal((8, 4))},
    )
    model = _load(_weights_in_constants(head), tmp_path / "model.onnx")
    result = ChannelPrune(ratio=0.5).apply(model, _ctx(tmp_path))
    assert not result.changed and result.model is model
    assert "graph output" in result.details["skipped"]["head"]


def test_magnitude_prunes_weights_held_in_constant_nodes(tmp_path: Path) -> None:
    proto = dense_model()
    model = _load(_weights_in_constants(proto), tmp_path / "model.onnx")
    result = MagnitudePrune(sparsity=0.5).apply(model, _ctx(tmp_path))

    assert result.changed
    assert set(result.details["tensors"]) == {"wc", "wm"}
    for name in ("wc", "wm"):
        original = next(t for t in proto.graph.initializer if t.name == name)
        expected = _zero_smallest(numpy_helper.to_array(original), 0.5)
        np.testing.assert_array_equal(_init(result.model, name), expected)
    assert any("Constant nodes" in n for n in result.notes)
