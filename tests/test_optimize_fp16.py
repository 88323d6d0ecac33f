"""fp16: float16 weights and arithmetic, float32 inputs and outputs, values out of float16's
range kept in float32. Every conversion ends in a parity check with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxferry.errors import UsageError
from onnxferry.feeds import plan_feeds
from onnxferry.model import Model
from onnxferry.optimize import PassContext, PassError, make_pass
from onnxferry.optimize.fp16 import Float16
from onnxferry.parity import Parity, Tolerance, compare_outputs
from onnxferry.runtime import OrtRunner

from .helpers import mlp, onnx_text, save_external, scaled

FP16 = Tolerance(atol=1e-2, rtol=1e-2)


def parity(before: Model, after: Model, feeds: list[dict[str, np.ndarray]] | None = None) -> Parity:
    """``after`` against ``before`` in ONNX Runtime, by default at batch sizes 1 and 3."""
    if feeds is None:
        feeds = [plan_feeds(before, batch=batch).feeds(seed=batch) for batch in (1, 3)]
    ref, cand = OrtRunner(before), OrtRunner(after)
    return compare_outputs([ref.run(f) for f in feeds], [cand.run(f) for f in feeds], FP16)


def initializer_types(model: Model) -> dict[str, int]:
    return {t.name: t.data_type for t in model.proto.graph.initializer}


@pytest.fixture
def ctx(tmp_path: Path) -> PassContext:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return PassContext(workdir)


def test_mlp_weights_become_float16_and_io_stays_float32(ctx: PassContext) -> None:
    model = Model.from_proto(mlp())
    result = Float16().apply(model, ctx)
    assert result.changed
    assert set(initializer_types(result.model).values()) == {onnx.TensorProto.FLOAT16}
    assert [s.dtype.numpy for s in result.model.signature.inputs] == [np.float32]
    assert [s.dtype.numpy for s in result.model.signature.outputs] == [np.float32]
    assert result.details["blocked_nodes"] == []
    assert result.details["float16_initializers"] == 4
    assert any("generated random inputs" in note for note in result.notes)
    check = parity(model, result.model)
    assert check.ok, check.summary()
    assert check.max_abs > 0  # it really computes in float16


def test_weights_out_of_range_keep_their_readers_in_float32(ctx: PassContext) -> None:
    """x * 2 * 1e5 * 1e-5 * 0.5: float16 clamps 1e5 to 65504 and 1e-5 is subnormal."""
    model = Model.from_proto(scaled(2.0, 1e5, 1e-5, 0.5))
    plain = Float16(auto_block_overflow=False).apply(model, ctx)
    assert not parity(model, plain.model).ok  # 1e5 became 65504: the output is wrong

    result = Float16().apply(model, ctx)
    assert result.details["blocked_nodes"] == ["mul1", "mul2"]
    assert set(result.details["out_of_range"]) >= {"k1", "k2", "t1"}
    types = initializer_types(result.model)
    assert types["k1"] == types["k2"] == onnx.TensorProto.FLOAT
    assert types["k0"] == types["k3"] == onnx.TensorProto.FLOAT16
    assert any("mul1" in note and "float16's range" in note for note in result.notes)
    check = parity(model, result.model)
    assert check.ok, check.summary()


def test_intermediate_overflow_is_found(ctx: PassContext) -> None:
    """t1 = x * 400 * 400 passes 65504 for |x| > 0.41; its producer and reader stay float32.

    (ONNX Runtime's cpu provider computes most float16 ops in float32, so the overflow would
    only show as inf on a GPU; the block list comes from the float32 values either way.)
    """
    model = Model.from_proto(scaled(400.0, 400.0, 0.004, 0.004))
    result = Float16().apply(model, ctx)
    assert result.details["blocked_nodes"] == ["mul1", "mul2"]
    assert list(result.details["out_of_range"]) == ["t1"]
    check = parity(model, result.model)
    assert check.ok, check.summary()
    # no Cast float32 -> float16 -> float32 round trip is left between the blocked nodes
    graph = result.model.proto.graph
    producer = {out: n for n in graph.node for out in n.output}
    reader = next(n for n in graph.node if n.name == "mul2")
    assert producer[reader.input[0]].op_type != "Cast"


def test_underflow_is_found_and_unnamed_nodes_get_names(ctx: PassContext) -> None:
    """t1 = x * 1e-3 * 1e-3 is below float16's smallest normal number (6.1e-5)."""
    model = Model.from_proto(scaled(1e-3, 1e-3, 1e3, 1e3, names=False))
    result = Float16().apply(model, ctx)
    assert result.details["blocked_nodes"] == ["Mul_1", "Mul_2"]
    check = parity(model, result.model)
    assert check.ok, check.summary()
    assert all(n.name == "" for n in model.proto.graph.node)


def test_the_validation_feeds_decide(ctx: PassContext) -> None:
    """With small inputs (|x| < 0.1) x * 400 * 400 stays within float16's range."""
    model = Model.from_proto(scaled(400.0, 400.0, 0.004, 0.004))
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.uniform(-0.1, 0.1, (batch, 4)).astype(np.float32)} for batch in (1, 5)]
    ctx.feeds = feeds
    result = Float16().apply(model, ctx)
    assert result.details["blocked_nodes"] == []
    assert not any("generated" in note for note in result.notes)
    check = parity(model, result.model, feeds)
    assert check.ok, check.summary()


def test_block_lists(ctx: PassContext) -> None:
    model = Model.from_proto(mlp())
    result = Float16(op_block_list=("Softmax",), node_block_list=("fc1",)).apply(model, ctx)
    assert "Softmax" in result.details["op_block_list"]
    assert "TopK" in result.details["op_block_list"]  # the converter's defaults stay
    assert result.details["blocked_nodes"] == ["fc1"]
    types = initializer_types(result.model)
    assert types["w1"] == onnx.TensorProto.FLOAT  # read only by the blocked fc1
    assert types["w2"] == onnx.TensorProto.FLOAT16
    softmax = next(n for n in result.model.proto.graph.node if n.op_type == "Softmax")
    assert softmax.input[0].endswith("_cast_to_fp32")
    check = parity(model, result.model)
    assert check.ok, check.summary()


def test_external_data_stays_external(tmp_path: Path, ctx: PassContext) -> None:
    model = Model.load(save_external(mlp(hidden=300), tmp_path / "ext" / "model.onnx"))
    assert model.external_files
    result = Float16().apply(model, ctx)
    assert result.model.external_files
    assert initializer_types(result.model)["w1"] == onnx.TensorProto.FLOAT16
    check = parity(model, result.model)
    assert check.ok, check.summary()


def test_input_model_is_not_modified(tmp_path: Path, ctx: PassContext) -> None:
    model = Model.from_proto(scaled(1e-3, 1e-3, 1e3, 1e3, names=False))
    before = model.proto.SerializeToString()
    Float16(node_block_list=()).apply(model, ctx)
    assert model.proto.SerializeToString() == before


def test_a_model_without_float32_tensors(ctx: PassContext) -> None:
    ints = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (int64[N, 4] x) => (int64[N, 4] y) { y = Add (x, x) }
    """)
    with pytest.raises(PassError, match=r"^fp16: the model has no float32 tensors") as info:
        Float16().apply(Model.from_proto(ints), ctx)
    assert "\n" not in str(info.value)


def test_a_model_already_in_float16(ctx: PassContext) -> None:
    halves = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (float16[N, 4] x) => (float16[N, 4] y) { y = Relu (x) }
    """)
    with pytest.raises(PassError, match="no float32 tensors"):
        Float16().apply(Model.from_proto(halves), ctx)


def test_unknown_node_names_are_an_error(ctx: PassContext) -> None:
    with pytest.raises(PassError, match=r"^fp16: node_block_list names nodes .*'fc9'"):
        Float16(node_block_list=("fc1", "fc9")).apply(Model.from_proto(mlp()), ctx)


def test_parameters_from_a_recipe() -> None:
    step = make_pass("fp16", {"op_block_list": ["Softmax"], "auto_block_overflow": False})
    assert step == Float16(op_block_list=("Softmax",), auto_block_overflow=False)
    assert step.label() == "fp16(op_block_list=('Softmax',), auto_block_overflow=False)"
    with pytest.raises(UsageError, match="auto_block_overflow"):
        make_pass("fp16", {"auto_block_overflow": "yes"})
