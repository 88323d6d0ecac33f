"""The one feed policy: sizes the graph accepts, values in the range the graph implies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.bench import bench
from onnxferry.cli import main
from onnxferry.compare import compare
from onnxferry.errors import DataError, FeedError, RunError, UsageError
from onnxferry.feeds import (
    CANDIDATES,
    Vocabulary,
    checked_feeds,
    drawn_rows,
    dynamic_dims,
    feed_sets,
    given_sizes,
    index_ranges,
    input_vocabularies,
    plan_feeds,
    realistic_feeds,
    shape_plan,
    verification_feeds,
    vocabulary_texts,
)
from onnxferry.feeds.dims import evaluate, terms
from onnxferry.model import Model
from onnxferry.optimize import optimize
from onnxferry.serve.app import ServeSettings
from onnxferry.serve.server import running
from onnxferry.signature import Signature
from tests.helpers import RELU, Run, mlp, onnx_text, save
from tests.test_signature import ALL_TYPES


def _model(
    inputs: list[onnx.ValueInfoProto], nodes: list[onnx.NodeProto], opset: int = 13
) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def _needs_640() -> onnx.ModelProto:
    """x[-1, 3, ?, ?] reshaped to rows of 3 x 640: runs only when H*W is a multiple of 640
    (so 640 x 640, not 224 x 224), like a detector whose strides need a size it was made for."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    shape = numpy_helper.from_array(np.array([1, 3, -1, 640], np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0),
    ]
    return _model([x], nodes)


def _never_runs() -> onnx.ModelProto:
    """x[?] reshaped to [7, 11]: no candidate size has 77 elements."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?"])
    shape = numpy_helper.from_array(np.array([7, 11], np.int64), "shape")
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    return _model([x], nodes)


def _embedding(rows: int = 50) -> onnx.ModelProto:
    """ids[batch, sequence] (int64) -> Cast -> Gather on a 50-row table; mask[batch, sequence]."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    table = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32), "table"
    )
    nodes = [
        helper.make_node("Constant", [], ["table"], value=table),
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "ids32"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["y"]),
    ]
    axis = numpy_helper.from_array(np.array([-1], np.int64), "axis")
    nodes.insert(0, helper.make_node("Constant", [], ["axis"], value=axis))
    return _model([ids, mask], nodes)


def _stateful(batch: str | None = "batch") -> onnx.ModelProto:
    """A VAD-like model: x[batch, 512], state[2, batch, 128], sr (int64 scalar); an If on
    sr == 16000 picks the gain; outputs y and the new state. ``batch=None`` leaves the batch
    dims unnamed, as spox writes Silero VAD."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 512])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 128])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    new_state = helper.make_tensor_value_info("new_state", TensorProto.FLOAT, None)

    def branch(name: str, gain: float) -> onnx.GraphProto:
        g = helper.make_tensor_value_info(f"{name}_g", TensorProto.FLOAT, [])
        value = numpy_helper.from_array(np.array(gain, np.float32), f"{name}_v")
        node = helper.make_node("Constant", [], [f"{name}_g"], value=value)
        return helper.make_graph([node], name, [], [g])

    k16000 = numpy_helper.from_array(np.array(16000, np.int64), "k")
    nodes = [
        helper.make_node("Constant", [], ["k"], value=k16000),
        helper.make_node("Equal", ["sr", "k"], ["is16k"]),
        helper.make_node(
            "If", ["is16k"], ["gain"], then_branch=branch("then", 2.0), else_branch=branch("e", 3.0)
        ),
        helper.make_node("ReduceMean", ["x"], ["xm"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["xm", "gain"], ["y"]),
        helper.make_node("Mul", ["state", "gain"], ["new_state"]),
    ]
    graph = helper.make_graph(
        nodes, "vad", [x, state, sr], [helper.make_tensor_value_info("y", 1, None), new_state]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


def test_sizes_that_run_are_found_and_explained(tmp_path: Path) -> None:
    model = Model.load(save(_needs_640(), tmp_path / "m.onnx"))
    plan = plan_feeds(model)
    assert plan.shapes == {"x": (1, 3, 640, 640)}
    assert plan.guessed
    assert "x:2 = 640 (spatial; tried 224, 640: the first that ran)" in plan.choices
    feeds = plan.feeds(seed=0)
    assert feeds["x"].min() >= 0.0 and feeds["x"].max() < 1.0  # an image in [0, 1)
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    session.run(None, feeds)


def _stft_front_end() -> onnx.ModelProto:
    """audio[batch, samples] -> a Conv1d 512 wide, stride 160, as openWakeWord's
    melspectrogram computes its STFT: runs only on 512 samples or more."""
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])
    weights = np.random.default_rng(0).standard_normal((4, 1, 512)).astype(np.float32)
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    nodes = [
        helper.make_node("Constant", [], ["axis"], value=axis),
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weights, "w")),
        helper.make_node("Unsqueeze", ["audio", "axis"], ["a"]),
        helper.make_node("Conv", ["a", "w"], ["y"], kernel_shape=[512], strides=[160]),
    ]
    return _model([audio], nodes)


def test_a_signal_gets_sizes_up_to_a_second_of_audio(tmp_path: Path) -> None:
    model = Model.load(save(_stft_front_end(), tmp_path / "m.onnx"))
    plan = plan_feeds(model)
    assert plan.shapes == {"audio": (1, 512)}
    assert "samples = 512 (other; tried 8, 16, 1, 32, 128, 224, 512: the first that ran)" in (
        plan.choices
    )


def test_given_sizes_win_by_name_axis_or_whole_shape(tmp_path: Path) -> None:
    model = Model.load(save(_needs_640(), tmp_path / "m.onnx"))
    by_axis = plan_feeds(model, dims={"x:2": 40, "x:3": 64}, probe=False)
    assert by_axis.shapes == {"x": (1, 3, 40, 64)} and not by_axis.guessed
    whole = plan_feeds(model, input_shapes={"x": (2, 3, 32, 80)}, probe=False)
    assert whole.shapes == {"x": (2, 3, 32, 80)} and whole.choices == []
    with pytest.raises(UsageError, match="no open dim 'x:9'"):
        plan_feeds(model, dims={"x:9": 4})
    with pytest.raises(UsageError, match="fixes it at 3"):
        plan_feeds(model, input_shapes={"x": (1, 4, 32, 32)})


def test_no_size_that_runs_is_one_line_naming_the_input(tmp_path: Path) -> None:
    model = Model.load(save(_never_runs(), tmp_path / "m.onnx"))
    with pytest.raises(FeedError, match="found no sizes for the open dims of x") as info:
        plan_feeds(model)
    assert "--input-shape x=" in str(info.value)
    assert plan_feeds(model, input_shapes={"x": (77,)}).shapes == {"x": (77,)}


def test_ids_that_index_a_table_stay_inside_it(tmp_path: Path) -> None:
    model = Model.load(save(_embedding(rows=50), tmp_path / "m.onnx"))
    plan = plan_feeds(model, dims={"batch": 4, "sequence": 128})
    assert plan.value_ranges == {"input_ids": (0, 50)}
    feeds = plan.feeds(seed=1)
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (4, 128)
    assert feeds["input_ids"].max() < 50 and feeds["input_ids"].max() >= 8  # the whole table
    assert set(np.unique(feeds["attention_mask"])) == {0, 1}


def _one_hot(style: str) -> onnx.ModelProto:
    """bytes int32[batch, 16] -> one-hot over 0..256 -> MatMul: JAX's and TensorFlow's way
    (``Equal`` against a constant arange after a broadcast, as Magika's file-type model) or
    ONNX's ``OneHot`` with a constant depth (torch's ``F.one_hot``)."""
    weight = numpy_helper.from_array(np.ones((257, 2), np.float32), "w")
    if style == "equal":
        arange = numpy_helper.from_array(np.arange(257, dtype=np.int32).reshape(1, 1, 257), "a")
        shape = numpy_helper.from_array(np.array([-1, 16, 1], np.int64), "s")
        nodes = [
            helper.make_node("Reshape", ["bytes", "s"], ["r"]),
            helper.make_node("Equal", ["r", "a"], ["hot"]),
            helper.make_node("Cast", ["hot"], ["f"], to=TensorProto.FLOAT),
        ]
        constants = [arange, shape]
    else:
        depth = numpy_helper.from_array(np.array(257, np.int64), "depth")
        on_off = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "on_off")
        nodes = [helper.make_node("OneHot", ["bytes", "depth", "on_off"], ["f"], axis=-1)]
        constants = [depth, on_off]
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["f", "w"], ["y"])],
        "one_hot",
        [helper.make_tensor_value_info("bytes", TensorProto.INT32, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16, 2])],
        [weight, *constants],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("style", ["equal", "onehot"])
def test_one_hot_inputs_span_the_one_hots_classes(style: str) -> None:
    """Byte values were generated in [0, 8): 8 of Magika's 257 classes. The one-hot's own
    classes bound them now, the last (padding) among them."""
    model = Model.from_proto(_one_hot(style))
    assert index_ranges(model.proto, model.signature) == {"bytes": (0, 257)}
    feeds = plan_feeds(model).with_batch(64).feeds(seed=0)
    assert feeds["bytes"].min() == 0 and feeds["bytes"].max() == 256


_INDEXED = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, 6] ids) => (float[batch, 6, 4] y) {{
        table = Constant <value = float[300, 4] {{{zeros}}}> ()
        zero = Constant <value = int64 {{0}}> ()
        size = Constant <value = int64 {{300}}> ()
        i = Cast <to = 7> (ids)
        {index}
        y = Gather (table, index)
    }}
"""


@pytest.mark.parametrize(
    ("index", "bounded"),
    [
        # Keras 3's take: where(x < 0, x + n, x), as a Where ...
        (
            "negative = Less(i, zero)\n wrapped = Add(i, size)\n"
            " index = Where(negative, wrapped, i)",
            True,
        ),
        # ... and as tf2onnx writes SelectV2 on integers
        (
            "negative = Less(i, zero)\n kept = Not(negative)\n a = Cast <to = 7> (negative)\n"
            " b = Cast <to = 7> (kept)\n wrapped = Add(i, size)\n x = Mul(a, wrapped)\n"
            " y2 = Mul(i, b)\n index = Add(x, y2)",
            True,
        ),
        # an offset nothing compares with 0: not a wrap, and the values it bounds are unknown
        ("index = Add(i, size)", False),
    ],
)
def test_float_ids_through_a_negative_index_wrap_span_the_table(index: str, bounded: bool) -> None:
    """Keras's Embedding (float ids by default, cast) exports its Gather behind a wrap of
    negative indices: the ids take the table's 300 rows, as whole numbers; arithmetic with no
    comparison against 0 is not followed."""
    zeros = ", ".join(["0"] * 1200)
    model = Model.from_proto(onnx_text(_INDEXED.format(zeros=zeros, index=index)))
    found = index_ranges(model.proto, model.signature)
    assert found == ({"ids": (0, 300)} if bounded else {})
    if bounded:
        ids = plan_feeds(model).with_batch(16).feeds(seed=0)["ids"]
        assert ids.dtype == np.float32 and np.array_equal(ids, np.round(ids))
        assert ids.min() >= 0 and 8 <= ids.max() < 300


def _decoder_with_past() -> onnx.ModelProto:
    """One attention layer with a key/value cache, as Hugging Face Optimum exports decoders:
    attention_mask[batch_size, past_sequence_length + sequence_length], the cache
    past_key_values.0.key / .value[batch_size, 4, past_sequence_length, 8] (4 heads: shaped
    like an NCHW image), present.0.key / .value out."""
    rng = np.random.default_rng(0)
    weights = {
        "emb": rng.standard_normal((50, 32)),
        "wq": rng.standard_normal((32, 32)),
        "wk": rng.standard_normal((32, 32)),
        "wv": rng.standard_normal((32, 32)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array([0, 0, 4, 8], np.int64), "heads"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
        numpy_helper.from_array(np.array(-1e4, np.float32), "neg"),
    ]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"])]
    for part in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"w{part}"], [f"{part}0"]),
            helper.make_node("Reshape", [f"{part}0", "heads"], [f"{part}1"]),
            helper.make_node("Transpose", [f"{part}1"], [part], perm=[0, 2, 1, 3]),
        ]
    nodes += [
        helper.make_node("Concat", ["past_key_values.0.key", "k"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "v"], ["present.0.value"], axis=2),
        helper.make_node("Transpose", ["present.0.key"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axes"], ["mask4"]),
        helper.make_node("Mul", ["mask4", "neg"], ["bias"]),
        helper.make_node("Sub", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "present.0.value"], ["attended"]),
    ]
    past, total = "past_sequence_length", "past_sequence_length + sequence_length"
    shapes: dict[str, tuple[int, list[str | int]]] = {
        "input_ids": (TensorProto.INT64, ["batch_size", "sequence_length"]),
        "attention_mask": (TensorProto.INT64, ["batch_size", total]),
        "past_key_values.0.key": (TensorProto.FLOAT, ["batch_size", 4, past, 8]),
        "past_key_values.0.value": (TensorProto.FLOAT, ["batch_size", 4, past, 8]),
        "attended": (TensorProto.FLOAT, ["batch_size", 4, "sequence_length", 8]),
        "present.0.key": (TensorProto.FLOAT, ["batch_size", 4, total, 8]),
        "present.0.value": (TensorProto.FLOAT, ["batch_size", 4, total, 8]),
    }
    values = [helper.make_tensor_value_info(k, kind, dims) for k, (kind, dims) in shapes.items()]
    graph = helper.make_graph(nodes, "decoder_with_past", values[:4], values[4:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_dim_named_by_an_expression_is_computed_from_its_terms() -> None:
    assert terms("past_sequence_length + sequence_length") == (
        "past_sequence_length",
        "sequence_length",
    )
    assert terms("s0 + 1") == ("s0",) and terms("2*batch - 1") == ("batch",)
    assert terms("sequence_length") is None and terms("N/A") is None and terms(None) is None
    assert evaluate("past + seq", {"past": 16, "seq": 1}) == 17
    assert evaluate("past + seq", {"past": 16}) is None


def test_a_decoders_mask_spans_its_past_and_its_new_tokens() -> None:
    """Chosen apart, the mask got 1 column against 64 cached positions plus one (it broadcast,
    so the model ran): every verb measured a decoder on inputs none ever sees."""
    model = Model.from_proto(_decoder_with_past())
    plan = plan_feeds(model)
    shapes = plan.shapes
    past, new = shapes["past_key_values.0.key"][2], shapes["input_ids"][1]
    assert past in CANDIDATES["sequence"]  # a cache position, not an image's 224 rows
    assert shapes["attention_mask"] == (1, past + new)
    assert any("past_sequence_length + sequence_length = " in c for c in plan.choices)
    given = plan_feeds(model, dims={"past_sequence_length": 5, "sequence_length": 1})
    assert given.with_batch(3).shapes["attention_mask"] == (3, 6)
    session = ort.InferenceSession(model.proto.SerializeToString())
    outputs = session.run(None, given.with_batch(3).feeds(seed=0))
    assert outputs[1].shape == (3, 4, 6, 8)


def test_a_shared_name_is_one_size_and_placeholders_are_many(tmp_path: Path) -> None:
    model = Model.load(save(_embedding(), tmp_path / "m.onnx"))
    plan = plan_feeds(model)
    assert plan.shapes["input_ids"] == plan.shapes["attention_mask"]


def test_cli_verbs_run_real_world_dims_and_never_crash(tmp_path: Path) -> None:
    path = save(_needs_640(), tmp_path / "m.onnx")
    assert main(["compare", str(path), str(path)]) == 0
    assert main(["bench", str(path), "--iterations", "2", "--batch", "1,2"]) == 0
    assert main(["compare", str(path), str(path), "--dim", "x:2=48", "--dim", "x:3=192"]) == 2
    never = save(_never_runs(), tmp_path / "never.onnx")
    assert main(["bench", str(never), "--iterations", "2"]) == 2
    assert main(["compare", str(never), str(never), "--input-shape", "x=77"]) == 0


def test_a_shape_the_model_cannot_take_is_a_run_error_naming_it(tmp_path: Path) -> None:
    model = Model.load(save(_needs_640(), tmp_path / "m.onnx"))
    with pytest.raises(RunError, match=r"x\[1,3,48,192\]") as info:
        compare(model, model, input_shapes={"x": (1, 3, 48, 192)})
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["batch", None])
def test_bench_follows_the_batch_into_state_and_runs_static_models(
    tmp_path: Path, name: str | None
) -> None:
    vad = save(_stateful(name), tmp_path / "vad.onnx")
    suite = bench([vad], batches=(1, 4), warmup=0, iterations=3).result
    assert [r.input_shapes["state"] for r in suite.results] == [(2, 1, 128), (2, 4, 128)]
    assert [r.input_shapes["x"] for r in suite.results] == [(1, 512), (4, 512)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])
    static = save(_model([x], [helper.make_node("Relu", ["x"], ["y"])]), tmp_path / "s.onnx")
    suite = bench([static], batches=(1, 2), warmup=0, iterations=3).result
    assert [r.batch for r in suite.results] == [1]
    assert "fixed batch dim of 3, so batch 2 cannot run" in suite.skipped[0]


def test_bench_times_the_users_inputs(tmp_path: Path) -> None:
    vad = save(_stateful(), tmp_path / "vad.onnx")
    feeds: dict[str, np.ndarray] = {
        "x": np.ones((2, 512), np.float32),
        "state": np.zeros((2, 2, 128), np.float32),
        "sr": np.array(8000, np.int64),
    }
    np.savez(tmp_path / "feeds.npz", x=feeds["x"], state=feeds["state"], sr=feeds["sr"])
    (r,) = bench([vad], inputs=feeds, warmup=0, iterations=3).result.results
    assert r.batch == 2 and r.input_shapes["sr"] == ()
    args = ["bench", str(vad), "--inputs", str(tmp_path / "feeds.npz"), "--iterations", "2"]
    assert main(args) == 0
    (r4,) = bench([vad], inputs=feeds, batches=(4,), warmup=0, iterations=2).result.results
    assert r4.batch == 4 and r4.input_shapes["state"] == (2, 4, 128)  # the rows, repeated
    assert main([*args, "--batch", "4"]) == 0


def test_optimize_refuses_to_judge_on_guessed_sizes_unless_told(tmp_path: Path) -> None:
    path = save(_needs_640(), tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    with pytest.raises(UsageError, match="--assume-sizes"):
        optimize(path, out, recipe=_fold_recipe(tmp_path))
    assert not out.exists()
    done = optimize(path, out, recipe=_fold_recipe(tmp_path), assume_sizes=True)
    assert any("guessed sizes x[1,3,640,640]" in n for n in done.provenance[-1].notes)
    given = optimize(path, out, recipe=_fold_recipe(tmp_path), dims={"x:2": 64, "x:3": 80})
    assert not any("guessed" in n for n in given.provenance[-1].notes)


def _fold_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "fold.recipe.toml"
    recipe.write_text('[[pass]]\nname = "fold"\n')
    return recipe


def test_server_serves_placeholder_dims_and_warms_up_at_sizes_that_run(tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    path = save(_needs_640(), tmp_path / "repo" / "m" / "1" / "model.onnx")
    (tmp_path / "repo" / "m" / "ferry.toml").write_text('[warmup_dims]\n"x:2" = 64\n"x:3" = 80\n')
    # Both placeholder dims differ, as ONNX Runtime allows (48 x 160 = 12 x 640).
    x = np.random.default_rng(0).random((2, 3, 48, 160), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    with running(tmp_path / "repo") as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_model_ready("m")
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("m", [tensor])
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5)


def test_server_warmup_without_sizes_finds_ones_that_run(tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    save(_needs_640(), tmp_path / "repo" / "m" / "1" / "model.onnx")
    save(_never_runs(), tmp_path / "repo" / "never" / "1" / "model.onnx")
    with running(tmp_path / "repo", settings=ServeSettings(repository_api=True)) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_model_ready("m")  # warmed up at 640 x 640, found by trying
        assert not client.is_model_ready("never")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert "found no sizes for the open dims of x" in index["never"]["reason"]
        assert "warmup_dims" in index["never"]["reason"]


def _unranked_relu() -> onnx.ModelProto:
    """Relu whose input and output have no shape at all (the rank unknown)."""
    proto = onnx_text(RELU)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.ClearField("shape")
    return proto


def test_an_input_of_unknown_rank_takes_its_shape_from_input_shape(
    tmp_path: Path, ferry: Run
) -> None:
    """No feed can be made for an input of unknown rank (Paddle and hand-edited exports):
    --input-shape gives the whole shape, and every verb runs; without it, one line that
    says so."""
    path = save(_unranked_relu(), tmp_path / "relu.onnx")
    plan = plan_feeds(Model.load(path), input_shapes={"x": (2, 5)})
    assert plan.shapes == {"x": (2, 5)} and plan.feeds()["x"].shape == (2, 5)
    code, _, err = ferry("bench", path, "--duration", "0.05")
    assert code == 2 and "unknown rank" in err and "--input-shape x=" in err
    for verb in (
        ["bench", path, "--duration", "0.05"],
        ["compare", path, path],
        ["convert", path, "-o", tmp_path / "out.onnx"],
    ):
        code, _, err = ferry(*verb, "--input-shape", "x=2x5")
        assert code == 0, err


def test_server_serves_an_input_of_unknown_rank_without_a_warmup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    save(_unranked_relu(), tmp_path / "repo" / "m" / "1" / "model.onnx")
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    with running(tmp_path / "repo") as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_model_ready("m")
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("m", [tensor]).as_numpy("y"), np.maximum(x, 0))
    assert "served without a warm-up" in caplog.text


def test_convert_checks_an_onnx_source_at_sizes_that_run(tmp_path: Path) -> None:
    from onnxferry.convert import convert

    path = save(_needs_640(), tmp_path / "m.onnx")
    converted = convert(path, tmp_path / "out.onnx", opset=17)
    conversion = converted.provenance[-1].result
    assert conversion.shapes == [{"x": [1, 3, 640, 640]}, {"x": [4, 3, 640, 640]}]
    assert converted.opset_imports["ai.onnx"] == 17


@pytest.mark.parametrize("verb", ["compare", "bench", "optimize"])
def test_a_run_error_is_one_line_on_stderr_in_every_verb(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], verb: str
) -> None:
    path = save(_needs_640(), tmp_path / "m.onnx")
    args = {
        "compare": ["compare", path, path],
        "bench": ["bench", path, "--iterations", "2"],
        "optimize": ["optimize", path, "-o", tmp_path / "o.onnx", "--auto"],
    }[verb]
    capfd.readouterr()
    assert main([str(a) for a in args] + ["--input-shape", "x=1x3x48x192"]) == 2
    err = capfd.readouterr().err  # ONNX Runtime's own log lines would show here too
    assert err.count("\n") == 1 and "x[1,3,48,192]" in err, err
    assert not (tmp_path / "o.onnx").exists()


# --- values: the same for every verb -------------------------------------------------------

ENCODER = """
<ir_version: 10, opset_import: ["" : 21]>
g (int64[batch, seq] input_ids, int64[batch, seq] attention_mask, int64[batch, seq] token_type_ids,
   int64[batch, seq] position_ids, float[batch, 4] extra) => (int64[batch, seq] y) {
    y = Add(input_ids, attention_mask)
}
"""


STATIC = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[2] x) => (float[2] y) { y = Relu(x) }
"""


def _encoder() -> Signature:
    return Signature.from_onnx(onnx_text(ENCODER))


def test_language_model_inputs_are_realistic() -> None:
    sig = _encoder()
    feeds = realistic_feeds(
        sig, {"batch": 6, "seq": 10}, seed=1, value_ranges={"input_ids": (5, 50)}
    )
    sig.validate(feeds)
    mask, ids = feeds["attention_mask"], feeds["input_ids"]
    assert mask[0].all(), "row 0 is never padded"
    assert set(np.unique(mask)) <= {0, 1}
    padded_rows = [r for r in range(6) if not mask[r].all()]
    assert padded_rows and set(padded_rows) <= {1, 3, 5}
    for r in padded_rows:  # padding is a tail: once 0, stays 0
        first_pad = int(np.argmin(mask[r]))
        assert mask[r, :first_pad].all() and not mask[r, first_pad:].any()
    assert (ids[mask == 1] >= 5).all() and (ids[mask == 1] < 50).all()
    assert (ids[mask == 0] == 0).all(), "padded positions hold the pad id"
    assert set(np.unique(feeds["token_type_ids"])) <= {0, 1}
    np.testing.assert_array_equal(feeds["position_ids"][2], np.arange(10))
    assert feeds["extra"].dtype == np.float32


def test_same_seed_same_feeds_for_every_dtype() -> None:
    sig = Signature.from_onnx(onnx_text(ALL_TYPES))
    feeds = realistic_feeds(sig, {"batch": 4, "seq": 7}, seed=3)
    sig.validate(feeds)
    assert feeds["f"].shape == (4, 3) and feeds["ids"].shape == (4, 7)
    assert feeds["text"].dtype == object and isinstance(feeds["text"][0], str)
    assert feeds["flag"].dtype == np.bool_
    assert feeds["b"].dtype.name == "bfloat16"
    assert feeds["q"].shape == (1, 1)
    again = realistic_feeds(sig, {"batch": 4, "seq": 7}, seed=3)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    other = realistic_feeds(sig, {"batch": 4, "seq": 7}, seed=4)
    assert not np.array_equal(feeds["f"], other["f"])


def test_generated_feeds_run_in_onnxruntime() -> None:
    proto = onnx_text(RELU)
    feeds = plan_feeds(Signature.from_onnx(proto), batch=5).feeds(seed=0)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, feeds)
    np.testing.assert_array_equal(y, np.maximum(feeds["x"], 0))


def test_every_dynamic_dim_takes_two_values_when_verifying_a_conversion() -> None:
    sig = _encoder()
    assert dynamic_dims(sig) == ["batch", "seq"]
    plans = shape_plan(sig)
    assert len(plans) == 2
    assert {p["batch"] for p in plans} == {1, 4}
    assert len({p["seq"] for p in plans}) == 2
    assert shape_plan(sig, fixed={"batch": 2, "seq": 5}) == [{"batch": 2, "seq": 5}]
    static = Signature.from_onnx(onnx_text(STATIC))
    assert shape_plan(static) == [{}]


def test_a_size_given_for_an_open_dim_is_verified_and_moved_by_its_kind_s_step() -> None:
    """The sizes a user gives are ones the model takes: an open dim given one by
    ``--input-shape`` is verified at it and at it moved by the distance between its kind's
    two sizes (an image side +32, another dim +5); one a sample gives, verified with the
    sample, at it moved once and twice. A batch takes 1 and 4 as always. The first shape
    given for an input wins."""
    sig = _encoder()
    sizes = given_sizes(sig, [{"input_ids": (1, 10100)}, {"input_ids": np.zeros((2, 7))}])
    assert sizes == {"batch": 1, "seq": 10100}
    assert given_sizes(sig, [{"input_ids": (1, 3, 3)}, {"other": (3, 3)}]) == {}  # rank, name
    plans = shape_plan(sig, sizes=sizes)
    assert [(p["batch"], p["seq"]) for p in plans] == [(1, 10100), (4, 10105)]
    swapped = shape_plan(sig, sizes={"batch": 2, "seq": 13})  # a batch as always
    assert [(p["batch"], p["seq"]) for p in swapped] == [(1, 13), (4, 8)]
    past_samples = shape_plan(sig, beyond={"batch": 2, "seq": 10100})  # verified already
    assert [(p["batch"], p["seq"]) for p in past_samples] == [(1, 10105), (4, 10110)]


def test_an_images_open_height_and_width_take_sizes_a_cnn_runs_on() -> None:
    """8 and 13 pixels leave nothing after a CNN's first few layers, and 13 does not halve:
    an image's open spatial dims take 32 and 64, its other open dims 8 and 13."""
    proto = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, h, w, 3] image, float[batch, steps, 2] track) => (float a, float b) {
            a = ReduceMean <keepdims = 0> (image)
            b = ReduceMean <keepdims = 0> (track)
        }
        """
    )
    plans = shape_plan(Signature.from_onnx(proto))
    assert [(p["batch"], p["h"], p["w"], p["steps"]) for p in plans] == [
        (1, 32, 32, 8),
        (4, 64, 64, 13),
    ]


def test_verification_feeds_are_the_samples_then_varied_sizes(tmp_path: Path) -> None:
    sig = _encoder()
    sample = realistic_feeds(sig, {"batch": 2, "seq": 3}, seed=9)
    feeds = verification_feeds(sig, [sample], {"input_ids": (0, 30)})
    assert all(np.array_equal(feeds[0][k], sample[k]) for k in sample)
    assert [f["input_ids"].shape for f in feeds[1:]] == [(1, 8), (4, 13)]
    assert all(f["input_ids"].max() < 30 for f in feeds)
    with pytest.raises(FeedError, match="sample 0: input 'extra' expects dtype float32"):
        verification_feeds(sig, [{**sample, "extra": sample["extra"].astype(np.float64)}])
    model = Model.load(save(_embedding(rows=50), tmp_path / "m.onnx"))
    on_graph = verification_feeds(model)  # an ONNX source: the plan, then at batch 4
    assert [f["input_ids"].shape for f in on_graph] == [(1, 16), (4, 16)]


# --- given feeds: one check for every verb -------------------------------------------------


BATCH_ONE = """
<ir_version: 10, opset_import: ["" : 21]>
one (float[1, 4] x, float[1, 2] h) => (float[1, 4] y) { y = Relu(x) }
"""


def test_samples_stacked_for_a_batch_1_export_become_one_set_each() -> None:
    """A model exported at batch 1 (a detector at [1, 32, 32, 3]) and 8 samples stacked on
    the first axis: 8 sets of one row, as a user who saved a batch of images means. Only
    when every input is stacked alike; anything else is the one-line shape error."""
    sig = Signature.from_onnx(onnx_text(BATCH_ONE))
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((8, 4)).astype(np.float32), np.zeros((8, 2), np.float32)
    sets = checked_feeds({"x": x, "h": h}, sig)
    assert len(sets) == 8 and all(s["x"].shape == (1, 4) for s in sets)
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in sets]), x)
    assert len(checked_feeds([{"x": x, "h": h}] * 2, sig, limit=20)) == 16
    assert len(checked_feeds({"x": x, "h": h}, sig, limit=3)) == 3
    for bad in ({"x": x, "h": h[:5]}, {"x": x[:, :3], "h": h}):
        with pytest.raises(FeedError, match="expects shape"):
            checked_feeds(bad, sig)


def test_checked_feeds_names_where_and_which_sample() -> None:
    sig = _encoder()
    good = realistic_feeds(sig, {"batch": 2, "seq": 3})
    bad = {**good, "extra": good["extra"][:, :3]}
    assert checked_feeds(good, sig)[0].keys() == good.keys()
    assert len(checked_feeds([good, good, good], sig, limit=2)) == 2
    with pytest.raises(FeedError, match=r"^m\.onnx: input 'extra' expects shape"):
        checked_feeds(bad, sig, where="m.onnx")
    with pytest.raises(DataError, match=r"^calib\.npz sample 1: input 'extra'") as info:
        checked_feeds([good, bad], sig, where="calib.npz", error=DataError)
    assert info.value.exit_code == 2
    with pytest.raises(FeedError, match=r"^sample 0: missing input 'extra'"):
        checked_feeds([{k: v for k, v in good.items() if k != "extra"}], sig)
    with pytest.raises(UsageError, match="calibration set is empty"):
        checked_feeds([], sig, kind="calibration")
    with pytest.raises(UsageError, match="limit must be at least 1"):
        checked_feeds([good], sig, limit=0)
    assert checked_feeds([{"anything": [1, 2]}], None)[0]["anything"].dtype == np.int64


def test_feed_sets_are_the_users_checked_or_generated(tmp_path: Path) -> None:
    model = Model.load(save(_embedding(rows=50), tmp_path / "m.onnx"))
    generated, plan = feed_sets(model, count=2, seed=3)
    assert plan is not None and len(generated) == 2
    np.testing.assert_array_equal(generated[1]["input_ids"], plan.feeds(seed=4)["input_ids"])
    np.savez(tmp_path / "f.npz", **dict(generated[0]))  # type: ignore[arg-type]
    given, none = feed_sets(model, tmp_path / "f.npz", where="m.onnx")
    assert none is None and given[0].keys() == generated[0].keys()
    bad = {**generated[0], "input_ids": np.zeros((1, 4), np.int32)}
    np.savez(tmp_path / "bad.npz", **bad)  # type: ignore[arg-type]
    with pytest.raises(FeedError, match=r"^m\.onnx sample 0: input 'input_ids' expects dtype"):
        feed_sets(model, tmp_path / "bad.npz", where="m.onnx")
    with pytest.raises(UsageError, match="samples must be at least 1"):
        feed_sets(model, count=0)
    with pytest.raises(UsageError, match="seed must be from 0 to 4294967295, got -1"):
        feed_sets(model, seed=-1)  # numpy's ValueError before
    with pytest.raises(UsageError, match=r"need .* more than the .* of memory available"):
        feed_sets(model, count=10**20)


def _category_model() -> onnx.ModelProto:
    """string colour[batch] -> LabelEncoder -> int64 code[batch]."""
    encoder = helper.make_node(
        "LabelEncoder",
        ["colour"],
        ["code"],
        domain="ai.onnx.ml",
        keys_strings=["red", "green", "blue"],
        values_int64s=[0, 1, 2],
        default_int64=-1,
    )
    graph = helper.make_graph(
        [encoder],
        "categories",
        [helper.make_tensor_value_info("colour", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("code", TensorProto.INT64, ["batch"])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_a_string_category_takes_the_categories_the_graph_knows() -> None:
    """Generated colours are ones the LabelEncoder maps (never its default -1), where random
    words would all be unknown."""
    model = Model.from_proto(_category_model())
    (vocabulary,) = input_vocabularies(model.proto, model.signature).values()
    assert vocabulary == Vocabulary(("red", "green", "blue"), text=False)
    feeds = plan_feeds(model).with_batch(16).feeds(seed=0)
    assert set(feeds["colour"]) <= {"red", "green", "blue"}
    session = ort.InferenceSession(model.proto.SerializeToString())
    assert (session.run(None, feeds)[0] >= 0).all()


def _encoded_columns(encoder: str, columns: list[tuple[object, ...]]) -> Model:
    """skl2onnx's pipeline of a scikit-learn ``encoder`` (handle_unknown="error") over one
    ``[batch, k]`` input, column j taking ``columns[j]``, then a logistic regression."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType
    from sklearn import preprocessing
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    x = np.stack([rng.choice(np.array(c, dtype=object), 64) for c in columns], axis=1)
    strings = isinstance(columns[0][0], str)
    x = x if strings else x.astype(np.int64)
    pipeline = make_pipeline(getattr(preprocessing, encoder)(), LogisticRegression())
    pipeline.fit(x, np.arange(64) % 2)
    kind = StringTensorType if strings else Int64TensorType
    proto = convert_sklearn(pipeline, initial_types=[("x", kind([None, len(columns)]))])
    return Model.from_proto(proto)


@pytest.mark.parametrize(
    ("encoder", "columns"),
    [
        ("OneHotEncoder", [("red", "green"), ("S", "M", "L", "XL")]),
        ("OneHotEncoder", [(1, 5, 9), (100, 200)]),
        ("OrdinalEncoder", [("red", "green"), ("S", "M", "L", "XL")]),
    ],
)
def test_each_column_takes_the_categories_of_its_own_encoder(
    encoder: str, columns: list[tuple[object, ...]]
) -> None:
    """skl2onnx gives each column of a ``[batch, k]`` input its own encoder behind a Gather
    (or ArrayFeatureExtractor): each column draws from its own categories, where one pool of
    every category made a OneHotEncoder (unknown = error) refuse every generated row, and the
    integer categories 1, 5, 9 are not the span 1..9."""
    model = _encoded_columns(encoder, columns)
    vocabulary = input_vocabularies(model.proto, model.signature)["x"]
    assert [set(c) for c in vocabulary.columns] == [set(c) for c in columns]
    feeds = plan_feeds(model).with_batch(64).feeds(seed=1)
    for j, known in enumerate(columns):
        assert set(feeds["x"][:, j].tolist()) == set(known)  # all of them, nothing else
    session = ort.InferenceSession(model.proto.SerializeToString())
    session.run(None, feeds)
    assert bench([model], batches=[1], duration=0.05).ok


def test_texts_of_a_vocabulary_are_varied_and_reproducible() -> None:
    vocabulary = Vocabulary(("fine", "very bad", "café", "top_10"), stop_words=("the",))
    texts = vocabulary_texts(vocabulary, (2, 3), np.random.default_rng(0))
    again = vocabulary_texts(vocabulary, (2, 3), np.random.default_rng(0))
    assert texts.shape == (2, 3) and texts.dtype == object
    assert texts.tolist() == again.tolist()
    assert texts.flat[-1] == "" and all(isinstance(t, str) and t for t in texts.flat[:-1])
    words = " ".join(texts.flat).lower()
    assert "café" in words and "top_10" in words and "very bad" in words and "the" in words
    assert any(t != t.lower() for t in texts.flat)  # some words Capitalised or UPPER-CASE


def _waveform_model() -> onnx.ModelProto:
    """waveforms[batch_size, N], waveforms_lens[batch_size] -> the lengths' sum, as floats: an
    ASR front end's signature (onnx-asr's), N named like a batch."""
    nodes = [
        helper.make_node("ReduceSum", ["waveforms"], ["energy"], keepdims=0),
        helper.make_node("Cast", ["waveforms_lens"], ["lens_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["energy", "lens_f"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "front",
        [
            helper.make_tensor_value_info("waveforms", TensorProto.FLOAT, ["batch_size", "N"]),
            helper.make_tensor_value_info("waveforms_lens", TensorProto.INT64, ["batch_size"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch_size"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_second_batch_name_is_not_the_batch_and_lengths_fit_the_samples() -> None:
    """waveforms[batch_size, N]: N was taken for a batch axis (1 sample of audio); lengths
    were ints in [0, 8) whatever the audio's length."""
    model = Model.from_proto(_waveform_model())
    plan = plan_feeds(model)
    assert plan.sizes["N"] > 1, plan.choices
    feeds = plan.with_batch(4).feeds(seed=0)
    samples = feeds["waveforms"].shape[1]
    lengths = feeds["waveforms_lens"]
    assert lengths[0] == samples and (lengths <= samples).all() and (lengths >= samples // 2).all()


def test_rebatched_repeats_rows_along_each_inputs_row_axis() -> None:
    """The state's rows lie along axis 1 (an unnamed dim, linked by position); the rate has
    none and stays; fewer rows than asked repeat in turn, more are cut."""
    from onnxferry.feeds import rebatched
    from onnxferry.model import Model
    from tests.real_models import vad_feeds, vad_unnamed

    signature = Model.from_proto(vad_unnamed()).signature
    feeds = vad_feeds(batch=2)
    five = rebatched(feeds, signature, 5)
    assert five["input"].shape == (5, 512) and five["state"].shape == (2, 5, 128)
    np.testing.assert_array_equal(five["input"][[0, 2, 4]], feeds["input"][[0, 0, 0]])
    np.testing.assert_array_equal(five["state"][:, 3], feeds["state"][:, 1])
    assert five["sr"].shape == () and int(five["sr"]) == 16000
    one = rebatched(feeds, signature, 1)
    assert one["input"].shape == (1, 512) and one["state"].shape == (2, 1, 128)


def test_generated_sizes_take_their_rows_from_the_users() -> None:
    """Each input's rows are drawn from the user's where the two agree beyond axis 0 (the
    same rows for ids and their mask); a scalar takes the user's value; an input whose other
    dims differ keeps its generated values."""
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    given = [{"ids": ids, "mask": ids * 10, "rate": np.array(16000), "seq": np.ones((3, 5))}]
    like = {
        "ids": np.zeros((7, 4), np.int64),
        "mask": np.zeros((7, 4), np.int64),
        "rate": np.array(8000),
        "seq": np.zeros((7, 9)),
    }
    drawn = drawn_rows(given, like, seed=1)
    assert drawn["ids"].shape == (7, 4) and set(drawn["ids"][:, 0]) <= {0, 4, 8}
    np.testing.assert_array_equal(drawn["mask"], drawn["ids"] * 10)  # rows kept together
    assert drawn["rate"] == 16000 and drawn["rate"].dtype == like["rate"].dtype
    np.testing.assert_array_equal(drawn["seq"], like["seq"])  # 9 columns, not the user's 5
    assert drawn_rows([], like) == like


def test_verification_sets_beyond_the_users_hold_the_users_rows() -> None:
    signature = Model.from_proto(mlp()).signature
    (spec,) = signature.inputs
    assert spec.shape is not None
    rows = np.full((2, *(d for d in spec.shape[1:] if isinstance(d, int))), 7.0, np.float32)
    sets = verification_feeds(signature, [{spec.name: rows}])
    assert len(sets) > 1 and all((s[spec.name] == 7.0).all() for s in sets)
    assert {len(s[spec.name]) for s in sets} == {1, 2, 4}  # the sizes still vary
