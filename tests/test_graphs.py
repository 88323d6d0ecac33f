"""graphs: walking graphs and nodes, external data read in (and checked again), exposed
outputs, and runnable models in memory or spilled past the protobuf limit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry import graphs
from onnxferry.errors import InputError, UnsafeModelError
from onnxferry.graphs import (
    copy_model,
    expose,
    exposing,
    inlined,
    iter_graphs,
    iter_initializers,
    iter_nodes,
    loop_outputs_not_inputs,
    open_negative_dims,
    rename_values,
    runnable,
    subgraphs,
    time_major_inputs,
    value_names,
    walk_graphs,
    weights_not_inputs,
)
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from onnxferry.safety import iter_tensors, uses_external_data

from .helpers import SITE_TENSORS, mlp, save_external, sparse_weights_model, tensor_sites

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -3.0, 0.0]], np.float32)
SITE_FEEDS = {
    "x": np.array([10.0, 20.0], np.float32),
    "cond": np.array(True),
    "seq": np.ones((3, 2), np.float32),
}
SUBGRAPH_EXTERNAL = [n for n in SITE_TENSORS if n not in ("s_indices", "held", "held_sparse")]


def nested() -> onnx.ModelProto:
    """y = x + 1 through a Loop (one trip) whose body holds an If: a subgraph two deep."""
    one = numpy_helper.from_array(np.ones(2, np.float32), "one")
    then_g = helper.make_graph(
        [helper.make_node("Add", ["acc", "one"], ["t"], name="then_add")],
        "then_g",
        [],
        [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["acc"], ["e"], name="else_id")],
        "else_g",
        [],
        [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [2])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"], name="keep_going"),
            helper.make_node(
                "If", ["c_in"], ["acc_out"], name="branch", then_branch=then_g, else_branch=else_g
            ),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc", onnx.TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", onnx.TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["trip"], name="trip", value_int=1),
            helper.make_node(
                "Constant",
                [],
                ["go"],
                name="go",
                value=helper.make_tensor("go_value", onnx.TensorProto.BOOL, [], [True]),
            ),
            helper.make_node("Loop", ["trip", "go", "x"], ["y"], name="loop", body=body),
        ],
        "nested",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        [one],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run_proto(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return OrtRunner(Model.from_proto(proto), validate=False).run(feeds)


# --- walking ---------------------------------------------------------------------------------


def test_iter_graphs_reaches_every_subgraph_at_any_depth() -> None:
    proto = nested()
    assert sorted(g.name for g in iter_graphs(proto)) == ["body", "else_g", "nested", "then_g"]
    names = {n.name for n in iter_nodes(proto)}
    assert {"loop", "keep_going", "branch", "then_add", "else_id"} <= names
    body = proto.graph.node[2].attribute[0].g
    body.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "deep"))
    assert [t.name for t in iter_initializers(proto)] == ["one", "deep"]


def test_iter_graphs_and_nodes_cover_if_loop_scan_and_functions() -> None:
    proto = tensor_sites()
    assert sorted(g.name for g in iter_graphs(proto)) == [
        "else_g",
        "loop_g",
        "scan_g",
        "sites",
        "then_g",
    ]
    ops = [n.op_type for n in iter_nodes(proto)]
    assert ops.count("Constant") == 7  # 3 in the main graph; If, Loop, Scan and AddK
    assert "Holder" in ops


def test_subgraphs_is_one_level_and_walk_graphs_all_levels() -> None:
    loop = next(n for n in nested().graph.node if n.op_type == "Loop")
    (body,) = subgraphs(loop)
    assert body.name == "body"
    assert next(g.name for g in walk_graphs(body)) == "body"
    assert sorted(g.name for g in walk_graphs(body)) == ["body", "else_g", "then_g"]


# --- names -----------------------------------------------------------------------------------


def test_rename_values_reaches_subgraphs_and_moves_a_clashing_name_aside() -> None:
    """``one`` (an initializer the If branch two levels down reads) becomes ``ones``; the input
    ``x`` becomes ``y``, which the loop's output holds, so that moves aside to ``y__1``. The
    model still runs, under the new names."""
    proto = nested()
    rename_values(proto.graph, {"one": "ones", "x": "y"})
    names = value_names(proto.graph)
    assert {"ones", "y", "y__1", "acc", "t"} <= names and not {"one", "x"} & names
    then_add = next(n for n in iter_nodes(proto) if n.name == "then_add")
    assert list(then_add.input) == ["acc", "ones"]
    got = run_proto(proto, {"y": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(got["y__1"], [2.0, 3.0])


# --- inlining --------------------------------------------------------------------------------


def test_inlined_reads_external_data_into_a_copy(tmp_path: Path) -> None:
    model = Model.load(save_external(mlp(), tmp_path / "model.onnx"))
    before = model.proto.SerializeToString()

    proto = inlined(model)

    assert not any(uses_external_data(s.tensor) for s in iter_tensors(proto))
    assert proto.SerializeToString() == mlp().SerializeToString()
    assert model.proto.SerializeToString() == before  # the model's own proto is not touched


def test_inlined_reads_external_data_held_in_subgraphs_and_functions(tmp_path: Path) -> None:
    source = tensor_sites(custom_node=False)
    path = save_external(source, tmp_path / "model.onnx", SUBGRAPH_EXTERNAL)
    model = Model.load(path)
    assert len([s for s in iter_tensors(model.proto) if uses_external_data(s.tensor)]) == len(
        SUBGRAPH_EXTERNAL
    )

    proto = inlined(model)

    assert not any(uses_external_data(s.tensor) for s in iter_tensors(proto))
    got, want = run_proto(proto, SITE_FEEDS), run_proto(source, SITE_FEEDS)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def test_inlined_without_external_data_is_still_a_copy() -> None:
    model = Model.from_proto(mlp())
    proto = inlined(model)
    assert proto is not model.proto
    proto.graph.name = "changed"
    assert model.proto.graph.name == "mlp"


def test_inlined_checks_the_references_again(tmp_path: Path) -> None:
    model = Model.load(save_external(mlp(), tmp_path / "model.onnx"))
    with open(tmp_path / "weights.bin", "r+b") as f:
        f.truncate(100)  # the data file changed after loading
    with pytest.raises(UnsafeModelError, match="too short for offset"):
        inlined(model)


def test_inlined_refuses_a_data_file_swapped_for_a_link(tmp_path: Path) -> None:
    model = Model.load(save_external(mlp(), tmp_path / "model.onnx"))
    outside = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    os.replace(tmp_path / "weights.bin", outside)
    (tmp_path / "weights.bin").symlink_to(outside)
    with pytest.raises(UnsafeModelError, match="symbolic link"):
        inlined(model)


def test_inlined_in_memory_model_with_external_references(tmp_path: Path) -> None:
    path = save_external(mlp(), tmp_path / "model.onnx")
    model = Model.from_proto(onnx.load(str(path), load_external_data=False))
    with pytest.raises(InputError, match=r"Model\.load"):
        inlined(model)


def test_inlined_derived_proto_keeps_what_was_derived(tmp_path: Path) -> None:
    model = Model.load(save_external(mlp(), tmp_path / "model.onnx"))
    typed = onnx.shape_inference.infer_shapes(model.proto)

    proto = inlined(model, typed)

    assert {v.name for v in proto.graph.value_info} >= {"h1", "h2"}
    assert not any(uses_external_data(s.tensor) for s in iter_tensors(proto))
    assert any(uses_external_data(s.tensor) for s in iter_tensors(typed))  # not touched


# --- exposing outputs ------------------------------------------------------------------------


@pytest.mark.parametrize("coordinates", [False, True], ids=["linear", "coordinates"])
def test_sparse_initializers_become_the_dense_weights_onnx_runtime_runs(coordinates: bool) -> None:
    proto, w = sparse_weights_model(coordinates=coordinates)
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    sparse_run = OrtRunner(Model.from_proto(proto)).run({"x": x})["y"]
    dense = graphs.copy_model(proto)
    assert graphs.densify_sparse_initializers(dense) == 1
    assert not dense.graph.sparse_initializer
    np.testing.assert_array_equal(numpy_helper.to_array(dense.graph.initializer[-1]), w)
    onnx.checker.check_model(dense, full_check=True)  # types and shapes consistent
    np.testing.assert_array_equal(OrtRunner(Model.from_proto(dense)).run({"x": x})["y"], sparse_run)


def test_expose_adds_each_name_once_in_place() -> None:
    proto = copy_model(mlp())
    expose(proto, ["h1", "", "probs", "h2", "h1"])
    assert [o.name for o in proto.graph.output] == ["probs", "h1", "h2"]
    values = run_proto(proto, {"x": X})
    w1, b1 = (numpy_helper.to_array(t) for t in proto.graph.initializer[:2])
    np.testing.assert_allclose(values["h1"], X @ w1 + b1, rtol=1e-6)
    np.testing.assert_array_equal(values["h2"], np.maximum(values["h1"], 0))


def test_exposing_a_model_with_external_data(tmp_path: Path) -> None:
    model = Model.load(save_external(mlp(), tmp_path / "model.onnx"))
    outputs = [o.name for o in model.proto.graph.output]

    with exposing(model, ["h2"]) as probe:
        values = OrtRunner(probe, validate=False).run({"x": X})

    assert set(values) == {"probs", "h2"}
    assert [o.name for o in model.proto.graph.output] == outputs
    expected = run_proto(mlp(), {"x": X})["probs"]
    np.testing.assert_array_equal(values["probs"], expected)


def test_exposing_inside_subgraph_model(tmp_path: Path) -> None:
    path = save_external(nested(), tmp_path / "model.onnx", ["one"])
    with exposing(Model.load(path), ["go"]) as probe:
        values = OrtRunner(probe, validate=False).run({"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(values["y"], np.ones(2, np.float32))
    assert bool(values["go"]) is True


# --- runnable: in memory, or spilled past the limit -------------------------------------------


def test_runnable_below_the_limit_stays_in_memory() -> None:
    proto = mlp()
    with runnable(proto) as model:
        assert model.path is None
        assert model.proto is proto


def test_runnable_past_the_limit_spills_to_a_temporary_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proto = mlp(hidden=256)  # w1 and w2 reach the 1 KiB that goes to external data
    monkeypatch.setattr(graphs, "PROTO_LIMIT", proto.ByteSize() // 2)

    with runnable(proto) as model:
        assert model.path is not None
        directory = model.path.parent
        assert directory.name.startswith("onnxferry-")
        assert model.external_files  # saved with its weights in external data
        got = OrtRunner(model).run({"x": X})["probs"]

    assert not directory.exists()  # gone with the block
    np.testing.assert_array_equal(got, run_proto(mlp(hidden=256), {"x": X})["probs"])


def test_exposing_past_the_limit_spills_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model.load(save_external(mlp(hidden=256), tmp_path / "m" / "model.onnx"))
    monkeypatch.setattr(graphs, "PROTO_LIMIT", 1024)

    with exposing(model, ["h1"]) as probe:
        assert probe.path is not None
        assert probe.path.parent != tmp_path / "m"
        directory = probe.path.parent
        values = OrtRunner(probe, validate=False).run({"x": X})

    assert not directory.exists()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.onnx", "weights.bin"]
    np.testing.assert_array_equal(values["probs"], run_proto(mlp(hidden=256), {"x": X})["probs"])


def test_the_limit_leaves_room_below_protobufs() -> None:
    assert graphs.PROTO_LIMIT == 2 * 1024**3 - 64 * 1024**2
    assert graphs.PROTOBUF_MAX == 2**31 - 1


def test_weights_not_inputs_lifts_an_ir3_model_to_ir4_without_weight_inputs() -> None:
    from tests.real_models import BUILT

    ir3 = Model.from_proto(BUILT["ir3"].build())
    weights = {t.name for t in ir3.proto.graph.initializer}
    assert ir3.proto.ir_version == 3 and weights <= {i.name for i in ir3.proto.graph.input}
    lifted = weights_not_inputs(ir3)
    assert lifted.proto.ir_version == 4
    assert [i.name for i in lifted.proto.graph.input] == ir3.signature.input_names
    onnx.checker.check_model(lifted.proto, full_check=True)
    feeds = BUILT["ir3"].feeds()
    np.testing.assert_array_equal(
        OrtRunner(lifted).run(feeds)["prob_1"], OrtRunner(ir3).run(feeds)["prob_1"]
    )
    newer = Model.from_proto(mlp())
    assert weights_not_inputs(newer) is newer
    assert ir3.proto.ir_version == 3  # the given model is left as it was


def test_open_negative_dims_makes_paddles_minus_one_unknown() -> None:
    from tests.real_models import BUILT

    proto = BUILT["paddle"].build()
    assert open_negative_dims(proto) == 2  # the input's batch and the output's
    dims = [
        [d.WhichOneof("value") for d in v.type.tensor_type.shape.dim] for v in proto.graph.input
    ]
    assert dims == [[None, "dim_value", "dim_param", "dim_param"]]
    onnx.checker.check_model(proto, full_check=True)
    assert open_negative_dims(proto) == 0


def _carrying_loop() -> onnx.ModelProto:
    """y = x + w * 3: a Loop of 3 steps carrying ``w`` through its body unchanged (the body
    hands input ``w_in`` straight back as an output), as Paddle2ONNX writes GRU weights."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "w_in"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", onnx.TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("w_in", onnx.TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", onnx.TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("w_in", onnx.TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "go", "x", "w"], ["y", "w_last"], body=body)],
        "carrying",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        [
            numpy_helper.from_array(np.array(3, np.int64), "steps"),
            numpy_helper.from_array(np.array(True), "go"),
            numpy_helper.from_array(np.array([1.0, -2.0], np.float32), "w"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_loop_body_handing_an_input_back_gets_an_identity_between() -> None:
    """The same values, each pass-through named apart (tests/test_real_models.py shows
    OpenVINO reading SLANet only so)."""
    model = Model.from_proto(_carrying_loop())
    readable = loop_outputs_not_inputs(model)
    assert readable is not model
    body = next(graphs.subgraphs(readable.proto.graph.node[0]))
    assert [o.name for o in body.output] == ["cond_out", "acc_out", "w_in/carried"]
    assert body.node[-1].op_type == "Identity" and list(body.node[-1].input) == ["w_in"]
    assert [o.name for o in next(graphs.subgraphs(model.proto.graph.node[0])).output][-1] == "w_in"
    x = {"x": np.array([0.5, 0.5], np.float32)}
    np.testing.assert_array_equal(OrtRunner(readable).run(x)["y"], [3.5, -5.5])
    assert loop_outputs_not_inputs(readable) is readable  # nothing left to do


def test_slim_keeps_the_declared_input_and_output_shapes(tmp_path: Path) -> None:
    """onnxslim names open dims (``state_d1``); the pass puts the declared shapes back."""
    from onnxferry.graphs import keep_io_shapes
    from onnxferry.optimize import Recipe, optimize
    from onnxferry.optimize.slim import Slim
    from tests.real_models import vad_unnamed

    original = Model.from_proto(vad_unnamed())
    slimmed = optimize(original, recipe=Recipe([Slim()]))
    assert slimmed.signature.inputs == original.signature.inputs
    assert slimmed.signature.outputs == original.signature.outputs
    renamed = vad_unnamed()
    renamed.graph.input[1].type.tensor_type.shape.dim[1].dim_param = "state_d1"
    assert keep_io_shapes(renamed, original.proto) == 1
    assert not renamed.graph.input[1].type.tensor_type.shape.dim[1].HasField("dim_param")


def test_outputs_sized_by_the_data_are_those_downstream_of_a_selection() -> None:
    """NonMaxSuppression, NonZero, Compress, Unique, and what follows them, inside an If's
    branch too; an output beside them and the exporters' quirk models are not."""
    from onnxferry.graphs import sized_by_data
    from tests.real_models import BUILT

    assert sized_by_data(BUILT["nms"].build()) == ["boxes", "scores"]
    assert sized_by_data(BUILT["masked"].build()) == ["scores", "where"]
    assert sized_by_data(BUILT["vad"].build()) == []  # an If and a Scan, every size fixed
    assert sized_by_data(BUILT["tf2onnx"].build()) == []
    pick = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["i"]), helper.make_node("Cast", ["i"], ["o"], to=1)],
        "pick",
        [],
        [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, None)],
    )
    keep = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o2"])],
        "keep",
        [],
        [helper.make_tensor_value_info("o2", onnx.TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node("If", ["positive"], ["chosen"], then_branch=pick, else_branch=keep),
            helper.make_node("Relu", ["x"], ["kept_shape"]),
        ],
        "branches",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N"])],
        [
            helper.make_tensor_value_info("chosen", onnx.TensorProto.FLOAT, None),
            helper.make_tensor_value_info("kept_shape", onnx.TensorProto.FLOAT, ["N"]),
        ],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    assert sized_by_data(helper.make_model(graph)) == ["chosen"]


def test_an_output_padded_to_a_fixed_count_is_not_sized_by_the_data() -> None:
    """Combined non-max suppression pads its boxes to a maximum count (tf2onnx's
    ``[batch, 100, 4]``): every row the same size, declared so. The same boxes unpadded,
    declared ``[unk__52, 4]``, are sized by the data."""
    from onnxferry.graphs import sized_by_data
    from tests.real_models import BUILT

    proto = BUILT["nms"].build()
    proto.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([20], np.int64), "max_count"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ]
    )
    proto.graph.node.extend(
        [
            helper.make_node("Shape", ["boxes"], ["found"], start=0, end=1),
            helper.make_node("Sub", ["max_count", "found"], ["missing"]),
            helper.make_node("Concat", ["zero", "zero", "missing", "zero"], ["pads"], axis=0),
            helper.make_node("Pad", ["boxes", "pads"], ["padded_rows"]),
            helper.make_node("Unsqueeze", ["padded_rows", "zero"], ["padded"]),
        ]
    )
    proto.graph.output.append(
        helper.make_tensor_value_info("padded", onnx.TensorProto.FLOAT, [1, 20, 4])
    )
    onnx.checker.check_model(proto, full_check=True)
    padded = OrtRunner(Model.from_proto(proto)).run(BUILT["nms"].feeds())["padded"]
    assert padded.shape == (1, 20, 4)
    assert sized_by_data(proto) == ["boxes", "scores"]


def test_time_major_inputs_are_those_whose_first_axis_a_recurrent_operator_steps_along() -> None:
    """PyTorch's LSTM without ``batch_first``: the input's first axis is the LSTM's time axis,
    whatever the dims are named; with ``batch_first`` a Transpose moves it to the batch axis
    first; an LSTM of layout 1 reads the batch first."""
    from tests.helpers import recurrent

    assert time_major_inputs(recurrent()) == ["x"]
    assert time_major_inputs(recurrent(("s0", "s1"))) == ["x"]
    assert time_major_inputs(recurrent(("batch", "seq"), batch_first=True)) == []
    batch_major = recurrent(("batch", "seq"))
    batch_major.graph.node[0].attribute.append(helper.make_attribute("layout", 1))
    assert time_major_inputs(batch_major) == []


def test_unread_inputs_are_those_no_node_reads_at_any_depth_nor_an_output_passes_on() -> None:
    """``lengths`` is read by no node (torch kept an unused forward argument); ``scale`` only
    inside an If branch, ``echo`` only as an output."""
    f = onnx.TensorProto.FLOAT
    branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"])],
        "then",
        [],
        [helper.make_tensor_value_info("scaled", f, [None, 4])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"])],
        "else",
        [],
        [helper.make_tensor_value_info("same", f, [None, 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)],
        "unread",
        [
            helper.make_tensor_value_info("x", f, [None, 4]),
            helper.make_tensor_value_info("scale", f, [1]),
            helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, [None]),
            helper.make_tensor_value_info("echo", f, [2]),
        ],
        [
            helper.make_tensor_value_info("y", f, [None, 4]),
            helper.make_tensor_value_info("echo", f, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    assert graphs.unread_inputs(model) == ["lengths"]
