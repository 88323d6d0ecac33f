"""Graph passes: ort_graph (ONNX Runtime offline), slim (onnxslim), fold (constants, dead code).

Every pass ends in a parity check with ONNX Runtime against its input, on two batch sizes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnxferry.errors import UsageError
from onnxferry.feeds import plan_feeds
from onnxferry.model import Model
from onnxferry.optimize import Pass, PassContext, PassError, make_pass
from onnxferry.optimize.fp16 import Float16
from onnxferry.optimize.graph import OrtGraph
from onnxferry.optimize.slim import Fold, Slim
from onnxferry.parity import Tolerance, compare_outputs
from onnxferry.runtime import OrtRunner

from .helpers import FOLDABLE, RELU, conv_bn_mlp, mlp, onnx_text, save, save_external


def assert_parity(before: Model, after: Model, tolerance: Tolerance = Tolerance()) -> None:
    """``after`` computes what ``before`` does, in ONNX Runtime, at batch sizes 1 and 3."""
    feeds = [plan_feeds(before, batch=batch).feeds(seed=batch) for batch in (1, 3)]
    ref, cand = OrtRunner(before), OrtRunner(after)
    parity = compare_outputs([ref.run(f) for f in feeds], [cand.run(f) for f in feeds], tolerance)
    assert parity.ok, parity.summary()


def ops(model: Model) -> list[str]:
    return [n.op_type for n in model.proto.graph.node]


@pytest.fixture
def ctx(tmp_path: Path) -> PassContext:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return PassContext(workdir)


@pytest.fixture
def cnn(tmp_path: Path) -> Model:
    return Model.load(save(conv_bn_mlp(), tmp_path / "cnn" / "model.onnx"))


# --- ort_graph -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "most_nodes", "contrib"),
    [
        ("basic", 5, []),  # Conv+BN folded, MatMul+Add -> Gemm(+Relu)
        ("extended", 3, ["com.microsoft::FusedConv", "com.microsoft::FusedGemm"]),
        ("layout", 4, ["com.microsoft.nchwc::Conv", "com.microsoft::FusedGemm"]),
    ],
)
def test_ort_graph_fuses_at_each_level(
    cnn: Model, ctx: PassContext, level: str, most_nodes: int, contrib: list[str]
) -> None:
    result = OrtGraph(level=level).apply(cnn, ctx)  # type: ignore[arg-type]
    assert result.changed
    assert result.details["nodes_before"] == 7
    assert result.details["nodes_after"] <= most_nodes
    assert "BatchNormalization" not in ops(result.model)
    assert set(contrib) <= set(result.details["contrib_ops"])
    assert result.model.path is not None and result.model.path.parent.parent == ctx.workdir
    if level == "basic":
        assert all(not n.domain for n in result.model.proto.graph.node)
    else:
        assert any("tied to onnxruntime" in note for note in result.notes)
    assert_parity(cnn, result.model)


def test_ort_graph_keeps_external_data(tmp_path: Path, ctx: PassContext) -> None:
    model = Model.load(save_external(conv_bn_mlp(), tmp_path / "ext" / "model.onnx"))
    assert model.external_files
    result = OrtGraph(level="extended").apply(model, ctx)
    assert result.model.path is not None
    assert [p.name for p in result.model.external_files] == ["model.data"]
    assert result.model.external_files[0].parent == result.model.path.parent
    assert_parity(model, result.model)


def test_ort_graph_in_memory_model(ctx: PassContext) -> None:
    model = Model.from_proto(conv_bn_mlp())
    result = OrtGraph(level="basic").apply(model, ctx)
    assert result.changed
    assert_parity(model, result.model)


def test_ort_graph_nothing_to_do(ctx: PassContext) -> None:
    model = Model.from_proto(onnx_text(RELU))
    result = OrtGraph().apply(model, ctx)
    assert not result.changed
    assert ops(result.model) == ["Relu"]
    assert_parity(model, result.model)


def test_ort_graph_on_a_model_onnxruntime_cannot_load(ctx: PassContext) -> None:
    custom = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21, "custom" : 1]>
        g (float[N, 4] x) => (float[N, 4] y) { h = custom.Frobnicate (x)  y = Relu (h) }
    """)
    with pytest.raises(PassError, match=r"^ort_graph: onnxruntime cannot load") as info:
        OrtGraph().apply(Model.from_proto(custom), ctx)
    assert "Frobnicate" in str(info.value)
    assert "\n" not in str(info.value)


def test_ort_graph_level_is_checked() -> None:
    assert make_pass("ort_graph", {"level": "basic"}) == OrtGraph(level="basic")
    with pytest.raises(UsageError, match=r"'level' must be 'basic' \| 'extended' \| 'layout'"):
        make_pass("ort_graph", {"level": "bogus"})


# --- slim ------------------------------------------------------------------------------------


def test_slim_folds_batchnorm_into_conv(cnn: Model, ctx: PassContext) -> None:
    result = Slim().apply(cnn, ctx)
    assert result.changed
    assert "BatchNormalization" not in ops(result.model)
    assert result.details["nodes_after"] < result.details["nodes_before"] == 7
    assert [i.name for i in result.model.signature.inputs] == ["x"]
    assert [o.name for o in result.model.signature.outputs] == ["y"]
    assert_parity(cnn, result.model)


def test_slim_skips_what_it_is_told(cnn: Model, ctx: PassContext) -> None:
    result = Slim(skip_fusion_patterns=("FusionConvBN",)).apply(cnn, ctx)
    assert "BatchNormalization" in ops(result.model)
    assert_parity(cnn, result.model)


def test_slim_parameters_are_checked() -> None:
    step = make_pass("slim", {"skip_fusion_patterns": ["FusionGemm"], "no_shape_infer": True})
    assert step == Slim(skip_fusion_patterns=("FusionGemm",), no_shape_infer=True)
    with pytest.raises(UsageError, match=r"unknown onnxslim fusion pattern.*NoSuchFusion"):
        make_pass("slim", {"skip_fusion_patterns": ["NoSuchFusion"]})
    with pytest.raises(UsageError, match="skip_optimizations"):
        make_pass("slim", {"skip_optimizations": ["everything"]})


# --- fold ------------------------------------------------------------------------------------


def test_fold_removes_constant_subgraphs_and_dead_nodes(ctx: PassContext) -> None:
    model = Model.from_proto(onnx_text(FOLDABLE))
    assert len(model.proto.graph.node) == 7
    result = Fold().apply(model, ctx)
    assert result.changed
    assert ops(result.model) == ["Add"]
    assert len(result.model.proto.graph.initializer) == 1
    assert_parity(model, result.model)


def test_fold_keeps_external_data(tmp_path: Path, ctx: PassContext) -> None:
    model = Model.load(save_external(conv_bn_mlp(), tmp_path / "ext" / "model.onnx"))
    result = Fold().apply(model, ctx)
    assert result.model.external_files
    assert_parity(model, result.model)


@pytest.mark.parametrize("proto", [onnx_text(RELU), mlp()], ids=["relu", "mlp"])
def test_fold_nothing_to_do(ctx: PassContext, proto: onnx.ModelProto) -> None:
    model = Model.from_proto(proto)
    result = Fold().apply(model, ctx)
    assert not result.changed
    assert ops(result.model) == ops(model)
    assert_parity(model, result.model)


# --- every pass ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [OrtGraph(), OrtGraph(level="layout"), Slim(), Fold(), Float16()],
    ids=lambda s: s.label(),
)
@pytest.mark.parametrize("where", ["file", "external", "memory"])
def test_the_input_model_is_left_alone(
    tmp_path: Path, ctx: PassContext, step: Pass, where: str
) -> None:
    proto = conv_bn_mlp()
    if where == "file":
        model = Model.load(save(proto, tmp_path / "in" / "model.onnx"))
    elif where == "external":
        model = Model.load(save_external(proto, tmp_path / "in" / "model.onnx"))
    else:
        model = Model.from_proto(proto)
    before = model.proto.SerializeToString()
    files = {p: p.read_bytes() for p in (tmp_path / "in").glob("*")}
    result = step.apply(model, ctx)
    assert model.proto.SerializeToString() == before
    assert {p: p.read_bytes() for p in (tmp_path / "in").glob("*")} == files
    assert result.model is not model
    assert result.model.path is not None and ctx.workdir in result.model.path.parents
