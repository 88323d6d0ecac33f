"""Pass results stay valid ONNX for the input's IR version and opset, and the report says
plainly when nothing could be produced.

Models from the wild: IR-3 files (every initializer also a graph input), opset-11 exports
that ONNX Runtime's fusions and per-channel int8 would push past their opset, and Paddle
exports whose weights sit in Constant nodes. Every pass test ends with the onnx checker
(full check) and a numeric check in ONNX Runtime against the input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.cli import main
from onnxferry.feeds import realistic_feeds
from onnxferry.graphs import constants_to_initializers
from onnxferry.model import Model
from onnxferry.optimize import BUILTIN, Budget, Recipe, make_pass
from onnxferry.optimize.auto import auto_search
from onnxferry.optimize.base import Pass, PassContext, PassResult
from onnxferry.optimize.chain import ChainResult, Judge, Step, apply_recipe
from onnxferry.optimize.output import ops_past_opset
from onnxferry.runtime import OrtRunner
from tests.helpers import RELU, onnx_text, save

Feeds = dict[str, np.ndarray]


# --- helpers --------------------------------------------------------------------------------


def valid(model: Model) -> Model:
    """``model`` after the onnx checker's full check (shape inference included)."""
    onnx.checker.check_model(model.proto, full_check=True)
    return model


def worst_cosine(before: Model, after: Model, feeds: list[Feeds]) -> float:
    """The smallest cosine similarity of any output over ``feeds`` (ONNX Runtime, both)."""
    ref, cand = OrtRunner(before), OrtRunner(after)
    worst = 1.0
    for feed in feeds:
        for name, expected in ref.run(feed).items():
            got = cand.run(feed)[name]
            assert got.shape == expected.shape
            a, b = expected.ravel().astype(np.float64), got.ravel().astype(np.float64)
            worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return worst


def assert_same(before: Model, after: Model, feeds: list[Feeds], atol: float = 1e-4) -> None:
    ref, cand = OrtRunner(before), OrtRunner(after)
    for feed in feeds:
        expected, got = ref.run(feed), cand.run(feed)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=atol, rtol=1e-3)


def feeds(name: str, shapes: Sequence[tuple[int, ...]], seed: int = 1) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(s).astype(np.float32)} for s in shapes]


def context(tmp_path: Path, sets: list[Feeds]) -> PassContext:
    return PassContext(tmp_path / "work", sets)


def ir3_mlp(hidden: int = 16, dead: int = 0) -> onnx.ModelProto:
    """An IR-3, opset-8 model as old exporters wrote it: every initializer is also a graph
    input. MatMul+Add, a constant subgraph (k = s + one) to fold, Relu, MatMul; the first
    ``dead`` hidden channels are always zero."""
    rng = np.random.default_rng(0)
    arrays = {
        "w1": rng.standard_normal((hidden, hidden)).astype(np.float32),
        "b1": rng.standard_normal(hidden).astype(np.float32),
        "s": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
        "one": np.ones(hidden, np.float32),
        "w2": rng.standard_normal((hidden, 4)).astype(np.float32),
    }
    arrays["w1"][:, :dead] = 0
    arrays["b1"][:dead] = 0
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Add", ["s", "one"], ["k"], name="k"),
        helper.make_node("Mul", ["h1", "k"], ["h2"], name="scale"),
        helper.make_node("Relu", ["h2"], ["h3"], name="act"),
        helper.make_node("MatMul", ["h3", "w2"], ["y"], name="fc2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(nodes, "ir3", inputs, [output], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _floats(values: np.ndarray) -> str:
    return ", ".join(f"{v:.4f}" for v in values.ravel())


def layer_norm_block(width: int = 16) -> onnx.ModelProto:
    """Opset 11: MatMul, then layer norm spelled out (ReduceMean/Sub/Pow/Sqrt/Div), as
    exporters wrote it before LayerNormalization (opset 17)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((width, width)).astype(np.float32) / 4
    gamma = rng.uniform(0.5, 1.5, width).astype(np.float32)
    beta = rng.standard_normal(width).astype(np.float32)
    return onnx_text(f"""
        <ir_version: 6, opset_import: ["" : 11]>
        block (float[batch, seq, {width}] x) => (float[batch, seq, {width}] y)
        <float[{width}, {width}] w = {{{_floats(w)}}}, float[{width}] gamma = {{{_floats(gamma)}}},
         float[{width}] beta = {{{_floats(beta)}}}, float two = {{2.0}}, float eps = {{1e-5}}>
        {{
            h = MatMul (x, w)
            mean = ReduceMean <axes = [-1]> (h)
            d = Sub (h, mean)
            sq = Pow (d, two)
            var = ReduceMean <axes = [-1]> (sq)
            ve = Add (var, eps)
            sd = Sqrt (ve)
            n = Div (d, sd)
            g = Mul (n, gamma)
            y = Add (g, beta)
        }}
    """)


def rms_norm_block(width: int = 16) -> onnx.ModelProto:
    """Opset 11: RMS norm spelled out, which onnxruntime fuses into SimplifiedLayerNormalization
    (an onnxruntime op in the default domain that no ONNX opset has)."""
    return onnx_text(f"""
        <ir_version: 6, opset_import: ["" : 11]>
        rms (float[batch, seq, {width}] x) => (float[batch, seq, {width}] y)
        <float[{width}] gamma = {{{", ".join(["1.5"] * width)}}}, float two = {{2.0}},
         float eps = {{1e-5}}>
        {{
            sq = Pow (x, two)
            var = ReduceMean <axes = [-1]> (sq)
            ve = Add (var, eps)
            sd = Sqrt (ve)
            n = Div (x, sd)
            y = Mul (n, gamma)
        }}
    """)


def conv_matmul(
    *, constants: bool, batch: int | str = "batch", side: int | str = 8
) -> onnx.ModelProto:
    """Opset 11: Conv+bias, Relu, global pooling, MatMul. With ``constants`` the weights sit
    in Constant nodes, as Paddle2ONNX writes them."""
    rng = np.random.default_rng(0)
    arrays = {
        "conv_w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.standard_normal(8).astype(np.float32),
        "fc_w": rng.standard_normal((8, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc_w"], ["y"], name="fc"),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    if constants:
        held = [
            helper.make_node("Constant", [], [t.name], name=f"{t.name}_const", value=t)
            for t in inits
        ]
        nodes, inits = [*held, *nodes], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    graph = helper.make_graph(nodes, "cnn", [x], [y], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def paddle_like() -> onnx.ModelProto:
    """``conv_matmul`` with Constant weights and the input written as Paddle2ONNX does:
    dim_value -1 for the batch, dim_param "?" for height and width."""
    proto = conv_matmul(constants=True, batch="batch", side="?")
    proto.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    proto.graph.output[0].type.tensor_type.shape.dim[0].Clear()
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.checker.check_model(proto, full_check=True)
    return proto


# --- IR 3: every initializer also a graph input -----------------------------------------------

IR3_PASSES: list[tuple[str, dict[str, Any], float]] = [
    ("slim", {}, 1e-4),
    ("fold", {}, 1e-4),
    ("ort_graph", {"level": "basic"}, 1e-4),
    ("fp16", {}, 0.999),
    ("int8_dynamic", {}, 0.99),
    ("int8_dynamic", {"per_channel": True, "reduce_range": True}, 0.99),
    ("int8_static", {}, 0.99),
    ("int8_static", {"per_channel": True, "reduce_range": True}, 0.99),
    ("smooth", {"min_channels": 4}, 1e-4),
    ("prune_magnitude", {"sparsity": 0.1, "min_elements": 16}, 0.9),
]


@pytest.mark.parametrize(("name", "params", "bound"), IR3_PASSES)
def test_ir3_pass_results_list_every_initializer_as_an_input(
    tmp_path: Path, name: str, params: dict[str, Any], bound: float
) -> None:
    model = Model.load(save(ir3_mlp(), tmp_path / "ir3.onnx"))
    sets = feeds("x", [(1, 16), (3, 16), (1, 16), (3, 16)])
    result = make_pass(name, params).apply(model, context(tmp_path, sets))
    assert result.changed, result.notes
    out = valid(result.model)
    assert out.ir_version == 3
    graph = out.proto.graph
    listed = {i.name for i in graph.input}
    assert {t.name for t in graph.initializer} <= listed
    assert [s.name for s in out.signature.inputs] == ["x"]
    if bound < 1e-2:
        assert_same(model, out, sets, atol=bound)
    else:
        assert worst_cosine(model, out, sets) >= bound


def test_ir3_channel_pruning_lists_the_new_shapes(tmp_path: Path) -> None:
    """Below IR 4 initializers listed as inputs are constants (ONNX Runtime holds them so), so
    channels are pruned, and the inputs that list the weights get their new shapes."""
    model = Model.load(save(ir3_mlp(dead=4), tmp_path / "ir3.onnx"))
    sets = feeds("x", [(1, 16), (3, 16)])
    folded = make_pass("fold").apply(model, context(tmp_path, sets)).model
    result = make_pass("prune_channels", {"ratio": 0.25, "method": "l1"}).apply(
        folded, context(tmp_path, sets)
    )
    assert result.changed, result.details
    out = valid(result.model)
    assert out.ir_version == 3
    shapes = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in out.proto.graph.input
    }
    assert shapes["w1"] == [16, 12] and shapes["w2"] == [12, 4]
    assert_same(model, out, sets)  # the pruned channels were dead


def test_int8_raises_an_opset_below_10_and_says_so(tmp_path: Path) -> None:
    model = Model.load(save(ir3_mlp(), tmp_path / "ir3.onnx"))
    sets = feeds("x", [(1, 16), (3, 16)])
    result = make_pass("int8_dynamic").apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert out.opset_imports["ai.onnx"] == 11 and out.ir_version == 3
    assert any("raised the opset from 8 to 11" in n for n in result.notes), result.notes
    assert worst_cosine(model, out, sets) >= 0.99


def test_ir3_chain_keeps_valid_passes(tmp_path: Path) -> None:
    model = Model.load(save(ir3_mlp(), tmp_path / "ir3.onnx"))
    sets = feeds("x", [(1, 16), (4, 16)])
    judge = Judge(model, sets, Budget.parse("cosine>=0.99"))
    recipe = Recipe.of(["slim", "int8_dynamic"])
    final, result = apply_recipe(model, recipe, judge, workdir=tmp_path / "w", speed_check=False)
    assert [s.status for s in result.steps] == ["kept", "kept"], result.steps
    assert result.outcome == "kept slim -> int8_dynamic"
    out = valid(final)
    assert out.ir_version == 3
    assert worst_cosine(model, out, sets) >= 0.99


@dataclass(frozen=True)
class _Unlisted(Pass):
    """Adds a new initializer without a graph input: valid from IR 4, not in IR 3 (what every
    library pass did to IR-3 models). It does not conform on purpose: the chain must catch it."""

    name: ClassVar[str] = "test_unlisted"
    family: ClassVar[str] = "graph"

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        proto = onnx.ModelProto()
        proto.CopyFrom(model.proto)
        graph = proto.graph
        out = graph.output[0].name
        for node in graph.node:
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), "unit"))
        graph.node.append(helper.make_node("Mul", [f"{out}_raw", "unit"], [out]))
        return PassResult(Model.from_proto(proto))


def test_chain_fails_a_pass_whose_result_the_checker_rejects(tmp_path: Path) -> None:
    model = Model.load(save(ir3_mlp(), tmp_path / "ir3.onnx"))
    sets = feeds("x", [(1, 16), (4, 16)])
    judge = Judge(model, sets, Budget.parse("cosine>=0.99"))
    recipe = Recipe.of(["test_unlisted", "fold"], BUILTIN.with_passes(_Unlisted))
    final, result = apply_recipe(model, recipe, judge, workdir=tmp_path / "w", speed_check=False)
    unlisted, fold = result.steps
    assert unlisted.status == "failed"
    assert "not a valid ONNX model" in unlisted.reason and "unit" in unlisted.reason
    assert fold.status == "kept"
    assert_same(model, valid(final), sets)


# --- opset 11: onnxruntime's fusions ------------------------------------------------------------


@pytest.mark.parametrize("level", ["extended", "layout"])
def test_ort_graph_raises_the_opset_for_layer_normalization(tmp_path: Path, level: str) -> None:
    model = Model.load(save(layer_norm_block(), tmp_path / "ln.onnx"))
    sets = feeds("x", [(1, 5, 16), (2, 7, 16)])
    result = make_pass("ort_graph", {"level": level}).apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert "LayerNormalization" in [n.op_type for n in out.proto.graph.node]
    assert out.opset_imports["ai.onnx"] == 17 and result.details["opset"] == 17
    assert any("raised the opset from 11 to 17" in n for n in result.notes), result.notes
    assert ops_past_opset(out.proto) == {}
    assert_same(model, out, sets)


def test_ort_graph_basic_keeps_the_opset(tmp_path: Path) -> None:
    model = Model.load(save(layer_norm_block(), tmp_path / "ln.onnx"))
    sets = feeds("x", [(1, 5, 16), (2, 7, 16)])
    result = make_pass("ort_graph", {"level": "basic"}).apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert out.opset_imports["ai.onnx"] == 11
    assert not any("raised the opset" in n for n in result.notes)
    assert_same(model, out, sets)


def test_ort_graph_turns_off_fusions_into_ops_no_opset_has(tmp_path: Path) -> None:
    model = Model.load(save(rms_norm_block(), tmp_path / "rms.onnx"))
    sets = feeds("x", [(1, 5, 16), (2, 7, 16)])
    result = make_pass("ort_graph", {"level": "extended"}).apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert "SimplifiedLayerNormalization" not in [n.op_type for n in out.proto.graph.node]
    assert out.opset_imports["ai.onnx"] == 11
    assert any("turned off onnxruntime's SimplifiedLayerNormFusion" in n for n in result.notes)
    assert_same(model, out, sets)


def test_ops_past_opset_names_the_first_opset_that_has_them() -> None:
    proto = layer_norm_block()
    assert ops_past_opset(proto) == {}
    proto.graph.node.append(helper.make_node("LayerNormalization", ["h", "gamma"], ["ln"]))
    proto.graph.node.append(helper.make_node("SimplifiedLayerNormalization", ["h"], ["s"]))
    assert ops_past_opset(proto) == {"LayerNormalization": 17, "SimplifiedLayerNormalization": None}


# --- opset 11: per-channel int8 ------------------------------------------------------------------

CNN_SHAPES = [(1, 3, 8, 8), (4, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8)]


def test_static_per_channel_int8_raises_an_opset_below_13(tmp_path: Path) -> None:
    model = Model.load(save(conv_matmul(constants=False), tmp_path / "cnn.onnx"))
    sets = feeds("x", CNN_SHAPES)
    step = make_pass("int8_static", {"per_channel": True, "reduce_range": True})
    result = step.apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert out.opset_imports["ai.onnx"] == 13
    assert any("raised the opset from 11 to 13" in n for n in result.notes), result.notes
    axes = [
        a.i
        for n in out.proto.graph.node
        if n.op_type == "DequantizeLinear"
        for a in n.attribute
        if a.name == "axis"
    ]
    assert axes, "per-channel weights have a DequantizeLinear with an axis"
    assert worst_cosine(model, out, sets) >= 0.99


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("int8_static", {}),
        ("int8_dynamic", {}),
        ("int8_dynamic", {"per_channel": True, "reduce_range": True}),
    ],
)
def test_int8_keeps_opset_11_when_it_is_valid_there(
    tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    model = Model.load(save(conv_matmul(constants=False), tmp_path / "cnn.onnx"))
    sets = feeds("x", CNN_SHAPES)
    result = make_pass(name, params).apply(model, context(tmp_path, sets))
    out = valid(result.model)
    assert out.opset_imports["ai.onnx"] == 11
    assert worst_cosine(model, out, sets) >= 0.99


# --- Paddle: weights in Constant nodes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("int8_dynamic", {}),
        ("int8_dynamic", {"per_channel": True, "reduce_range": True}),
        ("int8_dynamic", {"preprocess": False}),
        ("int8_static", {}),
        ("int8_static", {"per_channel": True, "reduce_range": True}),
        ("int8_static", {"preprocess": False}),
    ],
)
def test_int8_quantizes_weights_held_in_constant_nodes(
    tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    model = Model.load(save(paddle_like(), tmp_path / "paddle.onnx"))
    assert model.proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    sets = feeds("x", [(1, 3, 8, 8), (2, 3, 13, 13), (1, 3, 13, 13), (2, 3, 8, 8)])
    result = make_pass(name, params).apply(model, context(tmp_path, sets))
    assert result.changed and result.details["int8_weights"] == 2, result.notes
    assert any("moved 3 tensor(s) held in Constant nodes" in n for n in result.notes)
    out = valid(result.model)
    assert worst_cosine(model, out, sets) >= 0.99


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("weight_only", {"block_size": 16}),
        ("smooth", {"min_channels": 1}),
        ("fp16", {}),
        ("prune_channels", {"ratio": 0.25, "method": "l1"}),
        ("prune_magnitude", {"min_elements": 1}),
    ],
)
def test_weight_passes_treat_constant_node_weights_as_initializers(
    tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    """The same pass gives the same model whether the weights sit in initializers or, as
    Paddle2ONNX writes them, in Constant nodes; the notes say they were moved."""
    sets = feeds("x", CNN_SHAPES)
    results = {}
    for constants in (False, True):
        model = Model.load(save(conv_matmul(constants=constants), tmp_path / f"{constants}.onnx"))
        step = make_pass(name, params)
        results[constants] = step.apply(model, context(tmp_path / str(constants), sets))
    plain, held = results[False], results[True]
    assert plain.changed and held.changed, held.notes
    assert not [n for n in held.model.proto.graph.node if n.op_type == "Constant"]
    assert any("moved 3 tensor(s) held in Constant nodes" in n for n in held.notes)
    assert not any("Constant nodes" in n for n in plain.notes)
    valid(held.model)
    for feed in sets:
        expected = OrtRunner(plain.model).run(feed)
        for output, value in OrtRunner(held.model).run(feed).items():
            np.testing.assert_array_equal(value, expected[output])


def test_constants_to_initializers_keeps_constants_that_are_graph_outputs() -> None:
    proto = conv_matmul(constants=True)
    extra = helper.make_node(
        "Constant", [], ["shown"], value=numpy_helper.from_array(np.ones(2, np.float32))
    )
    scalar = helper.make_node("Constant", [], ["three"], value_float=3.0)  # opset 12+
    proto.opset_import[0].version = 12
    proto.graph.node.extend([extra, scalar])
    proto.graph.output.append(helper.make_tensor_value_info("shown", TensorProto.FLOAT, [2]))
    before = OrtRunner(Model.from_proto(proto)).run({"x": np.ones((1, 3, 8, 8), np.float32)})
    assert constants_to_initializers(proto.graph) == 3
    assert [t.name for t in proto.graph.initializer] == ["conv_w", "conv_b", "fc_w"]
    assert [n.output[0] for n in proto.graph.node if n.op_type == "Constant"] == [
        "shown",
        "three",
    ]
    onnx.checker.check_model(proto, full_check=True)
    after = OrtRunner(Model.from_proto(proto)).run({"x": np.ones((1, 3, 8, 8), np.float32)})
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


# --- the report when nothing could be produced ----------------------------------------------------


def test_chain_outcome_says_what_happened() -> None:
    result = ChainResult("m", "cosine>=0.99", 1.0, 100)
    assert result.outcome.startswith("nothing could be produced: no pass")
    result.steps = [Step("slim", "failed", "slim: onnxslim cannot simplify the model: boom")]
    result.steps.append(Step("int8_dynamic", "no change", "no node was quantized"))
    assert result.outcome == (
        "nothing could be produced: slim failed: slim: onnxslim cannot simplify the model: "
        "boom; int8_dynamic no change: no node was quantized; the result is the input model "
        "unchanged"
    )
    result.steps.append(Step("fp16", "rolled back", "breaks the budget"))
    assert result.outcome.startswith("no pass was kept: ")
    result.kept = ["fp16"]
    assert result.outcome == "kept fp16"
    assert result.to_dict()["outcome"] == "kept fp16"


def test_optimize_says_plainly_that_nothing_could_be_produced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = save(onnx_text(RELU), tmp_path / "relu.onnx")
    recipe = Recipe.of(["int8_dynamic", "smooth"]).save(tmp_path / "r.toml")
    args = ["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--recipe", str(recipe)]
    code = main(args)
    out, _ = capsys.readouterr()
    assert code == 0
    assert "nothing could be produced: int8_dynamic no change" in " ".join(out.split())
    assert "optimize: ok" in out
    code = main([*args, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["exit_code"] == 0
    outcome = data["result"]["outcome"]
    assert outcome.startswith("nothing could be produced: ") and "smooth no change" in outcome
    assert outcome in data["notes"]
    original, written = Model.load(src), Model.load(tmp_path / "o.onnx")
    sets = [realistic_feeds(original.signature, {"batch": b}, seed=b) for b in (1, 3)]
    assert_same(original, written, sets, atol=0.0)


def test_auto_says_plainly_that_nothing_could_be_produced(tmp_path: Path) -> None:
    model = Model.load(save(onnx_text(RELU), tmp_path / "relu.onnx"))
    sets = [realistic_feeds(model.signature, {"batch": b}, seed=b) for b in (1, 3)]
    judge = Judge(model, sets, Budget.parse("cosine>=0.99"))
    recipes = [Recipe.of(["int8_dynamic"]), Recipe.of(["smooth"])]
    best, search = auto_search(model, judge, tmp_path / "w", recipes=recipes)
    assert best is model and search.chosen is None and search.ok
    assert search.reason.startswith("nothing could be produced: int8_dynamic no change: ")
    assert "smooth no change: " in search.reason
    assert search.reason.endswith("; the original is kept")
    assert_same(model, best, sets, atol=0.0)
