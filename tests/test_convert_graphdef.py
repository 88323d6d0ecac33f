"""TensorFlow beyond Keras and SavedModels: frozen TF1 graphs (``.pb``), tf.functions and
tf.Modules, converted verified against TensorFlow running them; refusals in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxferry.convert.base import ConvertOptions
from onnxferry.errors import FerryError, InputError
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import tensorflow as tf

from onnxferry.convert.graphdef import load_graph_def


def _tf1_classifier(path: Path, *, variables: bool = False) -> np.ndarray:
    """A TF1 graph as ``freeze_graph`` leaves it: a placeholder ``input[?, 4]``, weights as
    constants (or, with ``variables``, still in variables: not frozen), softmax ``prob``
    read by an argmax ``label``, and a training leftover (``init``, a NoOp)."""
    weights = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input")
        w = tf.compat.v1.Variable(weights) if variables else tf.constant(weights)
        prob = tf.nn.softmax(tf.nn.relu(tf.matmul(x, w)), name="prob")
        tf.argmax(prob, axis=1, name="label")
        tf.no_op(name="init")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return weights


def _frozen_keras_cnn(path: Path) -> Any:
    """A Keras CNN frozen the TF2 way (``convert_variables_to_constants_v2``): its outputs end
    in ``Identity`` ops, as in OpenCV's and most converters' samples."""
    import keras
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu")(image)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(image, keras.layers.Dense(5, activation="softmax")(h))
    function = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([None, 16, 16, 3], tf.float32, name="image")
    )
    frozen = convert_variables_to_constants_v2(function)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return model


def test_a_tf1_graph_converts_on_its_placeholders_and_its_ends(ferry: Run, tmp_path: Path) -> None:
    path = tmp_path / "frozen.pb"
    weights = _tf1_classifier(path)
    source = load_graph_def(path, ConvertOptions())
    signature = source.reference.signature
    assert signature.input_names == ["input"] and signature.inputs[0].shape == ("batch", 4)
    assert signature.output_names == ["label"]  # prob is read by label; init is bookkeeping
    out = tmp_path / "frozen.onnx"
    code, stdout, err = ferry("convert", path, "-o", out, "--json")
    assert code == 0, err
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    (label,) = OrtRunner(Model.load(out)).run({"input": x}).values()
    np.testing.assert_array_equal(label, np.argmax(np.maximum(x @ weights, 0), axis=1))
    assert '"framework": "tf"' in stdout and "label:0 (the tensors no node" in stdout


def test_a_keras_model_frozen_the_tf2_way_matches_keras(ferry: Run, tmp_path: Path) -> None:
    path = tmp_path / "cnn.pb"
    model = _frozen_keras_cnn(path)
    out = tmp_path / "cnn.onnx"
    code, _, err = ferry("convert", path, "-o", out)
    assert code == 0, err
    converted = Model.load(out)
    assert converted.signature.input_names == ["image"]
    images = np.random.default_rng(2).random((3, 16, 16, 3), dtype=np.float32)
    (probs,) = OrtRunner(converted).run({"image": images}).values()
    np.testing.assert_allclose(probs, model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _tf1_classifier(p, variables=True), "not frozen"),
        (lambda p: p.write_bytes(np.random.default_rng(3).bytes(300)), "not a TensorFlow GraphDef"),
        (lambda p: p.write_bytes(b""), "holds no nodes"),
    ],
    ids=["variables", "random-bytes", "empty"],
)
def test_what_is_not_a_frozen_graph_is_one_line(
    ferry: Run, tmp_path: Path, make: Any, message: str
) -> None:
    path = tmp_path / "model.pb"
    make(path)
    with pytest.raises(InputError, match=message):
        load_graph_def(path, ConvertOptions())
    code, _, err = ferry("convert", path, "-o", tmp_path / "o.onnx")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o.onnx").exists()


def test_a_saved_models_pb_file_is_read_as_its_directory(ferry: Run, tmp_path: Path) -> None:
    class Double(tf.Module):  # type: ignore[misc]
        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, 3], tf.float32)]
        )
        def __call__(self, x: Any) -> Any:
            return {"y": 2 * x}

    module = Double()
    tf.saved_model.save(module, str(tmp_path / "export"), signatures=module.__call__)
    code, _, err = ferry(
        "convert", tmp_path / "export" / "saved_model.pb", "-o", tmp_path / "d.onnx"
    )
    assert code == 0, err
    assert Model.load(tmp_path / "d.onnx").signature.output_names == ["y"]


def test_a_placeholder_of_unknown_rank_takes_its_shape_from_the_user(
    ferry: Run, tmp_path: Path
) -> None:
    """``tf.compat.v1.placeholder(tf.float32, None)``: no rank to name a dim by. The error
    says to give one; given, dim 0 is the batch and the rest are fixed."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, None, name="x")
        tf.identity(2.0 * x, name="y")
    path = tmp_path / "any_rank.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    code, _, err = ferry("convert", path, "-o", tmp_path / "o.onnx")
    assert code == 2 and "unknown rank" in err and "--input-shape x=" in err, err
    code, _, err = ferry("convert", path, "-o", tmp_path / "o.onnx", "--input-shape", "x=2x3")
    assert code == 0, err
    assert Model.load(tmp_path / "o.onnx").signature.inputs[0].shape == ("batch", 3)


def test_the_loose_ends_of_tf1_control_flow_are_not_outputs(ferry: Run, tmp_path: Path) -> None:
    """A TF1 ``tf.cond`` on an ``is_training`` placeholder (every batch norm of that era)
    leaves Identities nobody reads (``cond/switch_t``, ``switch_f``, ``pred_id``): they were
    taken for outputs. The graph's one real end is; the switch is fixed to False (a note
    says so), unless ``--bind`` fixes it otherwise."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        training = tf.compat.v1.placeholder(tf.bool, [], name="is_training")
        off, on = tf.raw_ops.Switch(data=training, pred=training, name="cond/Switch")
        tf.identity(off, name="cond/switch_f")
        tf.identity(on, name="cond/switch_t")
        pred = tf.identity(training, name="cond/pred_id")
        tf.raw_ops.Switch(data=x, pred=pred, name="cond/Switch_1")
        tf.where(training, x, 2.0 * x, name="y")
    path = tmp_path / "cond.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    source = load_graph_def(path, ConvertOptions())
    assert source.reference.signature.input_names == ["x"]
    assert source.reference.signature.output_names == ["y"]
    assert any("is_training fixed to False" in note for note in source.notes)
    x_value = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(source.reference.run({"x": x_value})["y"], 2.0 * x_value)
    bound = load_graph_def(path, ConvertOptions(bindings={"is_training": True}))
    np.testing.assert_array_equal(bound.reference.run({"x": x_value})["y"], x_value)
    assert not any("is_training" in note for note in bound.notes)


def _fed_by_an_iterator(path: Path) -> np.ndarray:
    """A TF1 graph as deepbrain's (a brain extractor's wheel) was frozen: its input ``img`` is
    a ``PlaceholderWithDefault`` whose default is a tf.data iterator's next element, read
    through a string-handle ``Placeholder``; a ``training`` flag with a default of True picks
    a batch norm's branch by ``tf.cond``; ``prob`` is what inference runs, and ``pred``, the
    graph's end, still reads the iterator."""
    weights = np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        handle = tf.compat.v1.placeholder(tf.string, None, name="Placeholder")
        iterator = tf.compat.v1.data.Iterator.from_string_handle(
            handle, (tf.float32,), (tf.TensorShape([None, 4]),)
        )
        (element,) = iterator.get_next()
        img = tf.compat.v1.placeholder_with_default(element, [None, 4], name="img")
        training = tf.compat.v1.placeholder_with_default(True, [], name="training")
        h = tf.matmul(img, tf.constant(weights))
        mean = tf.compat.v1.cond(
            training, lambda: tf.reduce_mean(h, 0), lambda: tf.constant([0.5, -0.5])
        )
        prob = tf.sigmoid(h - mean, name="prob")
        tf.greater(prob * tf.ones_like(element[:, :1]), 0.5, name="pred")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return weights


def test_an_input_whose_default_reads_an_iterator_is_fed_without_it(
    ferry: Run, tmp_path: Path
) -> None:
    """deepbrain's ``img``: a ``PlaceholderWithDefault`` was taken for a computed tensor, so
    the only input found was the iterator's string handle (unknown rank: exit 2 asking for
    its shape). Such an input is fed now, its default left out, and a placeholder that only
    that default read is no input; a training flag with a default is fixed to False as a
    placeholder one is. The graph's end that still reads the iterator is refused in one line
    that names ``--graph-outputs``."""
    path = tmp_path / "deepbrain.pb"
    weights = _fed_by_an_iterator(path)
    out = tmp_path / "o.onnx"
    code, _, err = ferry("convert", path, "-o", out)
    assert code == 2 and "input 'Placeholder' has an unknown rank" in err, err
    assert "--graph-outputs" in err and len(err.strip().splitlines()) == 1
    source = load_graph_def(path, ConvertOptions(graph_outputs=("prob",)))
    assert source.reference.signature.input_names == ["img"]
    assert any(n.startswith("training fixed to False") for n in source.notes), source.notes
    assert any(n.startswith("img: a PlaceholderWithDefault") for n in source.notes)
    code, _, err = ferry("convert", path, "-o", out, "--graph-outputs", "prob")
    assert code == 0, err
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    (prob,) = OrtRunner(Model.load(out)).run({"img": x}).values()
    want = 1 / (1 + np.exp(-(x @ weights - np.array([0.5, -0.5], np.float32))))
    np.testing.assert_allclose(prob, want, rtol=1e-5, atol=1e-6)


def _dropout_graph(path: Path, kind: str) -> np.ndarray:
    """A TF1 classifier with dropout on its hidden layer, set by a float scalar placeholder:
    ``keep_prob`` (``tf.nn.dropout(keep_prob=)``: ``1 - keep_prob`` compared with the draw),
    ``old_keep`` (TF before 1.13: added to a draw scaled from [0, 2) and floored) or ``rate``.
    Returns the weights."""
    weights = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        scalar = tf.compat.v1.placeholder(tf.float32, None if kind == "old_keep" else [], kind)
        hidden = tf.nn.relu(tf.matmul(x, tf.constant(weights)))
        if kind == "keep_prob":
            hidden = tf.compat.v1.nn.dropout(hidden, keep_prob=scalar)
        elif kind == "rate":
            hidden = tf.nn.dropout(hidden, rate=scalar)
        else:
            draw = tf.random.uniform(tf.shape(hidden), minval=0.0, maxval=2.0) * 0.5
            hidden = hidden / scalar * tf.floor(scalar + draw)
        tf.nn.softmax(hidden, name="prob")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return weights


@pytest.mark.parametrize(("kind", "value"), [("keep_prob", 1.0), ("old_keep", 1.0), ("rate", 0.0)])
def test_a_dropout_s_placeholder_is_fixed_to_turn_it_off(
    ferry: Run, tmp_path: Path, kind: str, value: float
) -> None:
    """Fed, a dropout's keep probability (or rate) draws a new random mask each run: it was
    an input of the ONNX model, its RandomUniform kept, and "verified" only because the
    values generated for it (-0.7, 0.36) dropped everything or nothing. Now it is fixed to
    the value that turns the dropout off, as an ``is_training`` switch is fixed to False."""
    weights = _dropout_graph(tmp_path / "drop.pb", kind)
    out = tmp_path / "drop.onnx"
    code, stdout, err = ferry("convert", tmp_path / "drop.pb", "-o", out)
    assert code == 0, err
    assert f"{kind} fixed to {value}: a dropout's" in stdout, stdout
    converted = Model.load(out)
    assert converted.signature.input_names == ["x"]
    x_value = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    logits = np.maximum(x_value @ weights, 0)
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    runner = OrtRunner(converted)  # the draw may stay in the graph; it no longer matters
    for _ in range(3):
        np.testing.assert_allclose(runner.run({"x": x_value})["prob"], want, atol=1e-6)


def test_a_tf1_saved_model_s_dropout_input_is_fixed_too(ferry: Run, tmp_path: Path) -> None:
    """``simple_save`` of a TF1 graph taking ``keep_prob`` beside ``x``: the SavedModel route
    fixes it as the frozen-graph route does."""
    weights = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        keep = tf.compat.v1.placeholder(tf.float32, [], name="keep_prob")
        hidden = tf.compat.v1.nn.dropout(tf.nn.relu(tf.matmul(x, weights)), keep_prob=keep)
        prob = tf.nn.softmax(hidden, name="prob")
        inputs = {"x": x, "keep_prob": keep}
        tf.compat.v1.saved_model.simple_save(session, str(tmp_path / "sm"), inputs, {"prob": prob})
    code, stdout, err = ferry("convert", tmp_path / "sm", "-o", tmp_path / "sm.onnx")
    assert code == 0, err
    assert "keep_prob fixed to 1.0: a dropout's keep probability" in stdout, stdout
    assert Model.load(tmp_path / "sm.onnx").signature.input_names == ["x"]


def test_a_placeholder_bound_by_the_user_is_a_constant(ferry: Run, tmp_path: Path) -> None:
    """TF1's ``keep_prob``: a float of unknown rank that dropout divides by. Bound to 1.0 it
    is no input; the other outputs can be chosen with ``--graph-outputs``."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        keep = tf.compat.v1.placeholder(tf.float32, None, name="keep_prob")
        hidden = tf.identity(x / keep, name="hidden")
        tf.nn.softmax(hidden, name="prob")
        tf.argmax(hidden, axis=1, name="label")
    path = tmp_path / "keep.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    out = tmp_path / "keep.onnx"
    code, _, err = ferry("convert", path, "-o", out)
    assert code == 2 and "unknown rank" in err and "--bind keep_prob=VALUE" in err, err
    code, stdout, err = ferry(
        "convert", path, "-o", out, "--bind", "keep_prob=1.0", "--graph-outputs", "prob,hidden:0"
    )
    assert code == 0, err
    converted = Model.load(out)
    assert converted.signature.input_names == ["x"]
    assert converted.signature.output_names == ["prob", "hidden"]
    x_value = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    prob, hidden = OrtRunner(converted).run({"x": x_value}).values()
    np.testing.assert_allclose(hidden, x_value, atol=1e-6)
    assert "given with --graph-outputs" in stdout
    code, _, err = ferry("convert", tmp_path / "keep.onnx", "-o", out, "--bind", "keep_prob=1")
    assert code == 2 and "--bind: for a TensorFlow graph" in err, err


TF_MODULE = """
import numpy as np
import tensorflow as tf

class Affine(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def __call__(self, x):
        scores = tf.matmul(x, self.w)
        return {"scores": scores, "label": tf.argmax(scores, axis=1)}

def module():
    return Affine()

def method():
    return Affine().__call__  # holds its Affine weakly: gone once make returns

def unsigned():
    return tf.function(lambda x: 2.0 * x)
"""


def test_a_tf_module_from_a_factory_converts(ferry: Run, tmp_path: Path) -> None:
    """TensorFlow code that is neither Keras nor a SavedModel: a ``tf.Module`` whose
    ``__call__`` is a tf.function with an input signature (was "cannot tell which framework
    a Affine comes from")."""
    factory = tmp_path / "affine.py"
    factory.write_text(TF_MODULE)
    out = tmp_path / "affine.onnx"
    code, _, err = ferry("convert", f"{factory}:module", "-o", out)
    assert code == 0, err
    model = Model.load(out)
    assert model.signature.input_names == ["features"]
    assert model.signature.output_names == ["label", "scores"]
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    got = OrtRunner(model).run({"features": x})
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    np.testing.assert_allclose(got["scores"], x @ weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["label"], np.argmax(x @ weights, axis=1))


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("method", "return the module itself"),
        ("unsigned", "has no input signature"),
    ],
)
def test_tf_functions_that_cannot_be_traced_are_one_line(
    ferry: Run, tmp_path: Path, function: str, message: str
) -> None:
    factory = tmp_path / "affine.py"
    factory.write_text(TF_MODULE)
    code, _, err = ferry("convert", f"{factory}:{function}", "-o", tmp_path / "o.onnx")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_the_api_takes_a_tf_function(tmp_path: Path) -> None:
    import onnxferry

    double = tf.function(
        lambda x: {"y": 2.0 * x}, input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")]
    )
    model = onnxferry.convert(double, tmp_path / "double.onnx")
    (y,) = OrtRunner(model).run({"x": np.ones((2, 3), np.float32)}).values()
    np.testing.assert_array_equal(y, np.full((2, 3), 2.0, np.float32))


# --- ops tf2onnx lacks (convert.tf2onnx_ops) ----------------------------------------------------


def _two_inputs(body: Any) -> Any:
    spec = [tf.TensorSpec([None, 6], tf.float32, name=n) for n in ("x", "y")]
    return tf.function(lambda x, y: {"out": body(x, y)}, input_signature=spec)


TF2ONNX_GAPS = {
    "Erfc": lambda x, y: tf.math.erfc(x),
    "Expm1": lambda x, y: tf.math.expm1(x),
    "Log1p": lambda x, y: tf.math.log1p(tf.abs(y)),
    "Bucketize": lambda x, y: tf.raw_ops.Bucketize(input=x, boundaries=[-1.0, 0.0, 0.5, 1.0]),
    "Xlogy": lambda x, y: tf.math.xlogy(tf.nn.relu(x), tf.abs(y) + 0.5),
    "Xdivy": lambda x, y: tf.math.xdivy(tf.nn.relu(x), y),
    "MulNoNan": lambda x, y: tf.math.multiply_no_nan(x, tf.nn.relu(y)),
    # a spectrum's parts, as Keras' MelSpectrogram reads them
    "RFFT": lambda x, y: (lambda f: tf.math.real(f) - 2 * tf.math.imag(f))(tf.signal.rfft(x)),
}


@pytest.mark.parametrize("op", list(TF2ONNX_GAPS))
def test_ops_tf2onnx_lacks_convert_verified(op: str, tmp_path: Path) -> None:
    """Each was "TensorFlow op ... has no ONNX conversion" (Keras' exact GELU, celu,
    Discretization; MelSpectrogram's Real and Imag): written in ONNX ops, verified against
    TensorFlow on generated inputs and on the edges each op defines (zeros where the op gives
    0, values at the boundaries)."""
    import onnxferry

    function = _two_inputs(TF2ONNX_GAPS[op])
    edges = {
        "x": np.array([[-1.0, 0.0, 0.5, 1.0, 3.0, -3.0]] * 2, np.float32),
        "y": np.array([[0.0, 2.0, -0.5, 0.0, 1.0, 4.0]] * 2, np.float32),
    }
    model = onnxferry.convert(function, tmp_path / f"{op}.onnx", inputs=[edges])
    assert op not in model.ops_histogram  # no TensorFlow op left over
    (got,) = OrtRunner(model).run(edges).values()
    want = function(**{k: tf.constant(v) for k, v in edges.items()})["out"].numpy()
    assert got.dtype == want.dtype
    atol = 1e-5 if op == "RFFT" else 1e-6  # tf2onnx's DFT is a product with its cos/sin table
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)


@pytest.mark.parametrize(("separator", "ok"), [(None, True), (", ", False)])
def test_a_string_split_converts_where_onnx_splits_the_same(
    separator: str | None, ok: bool, tmp_path: Path
) -> None:
    """tf.strings.split through onnxruntime-extensions' StringSplit: no separator means runs of
    whitespace (tf2onnx gave it "", which splits into characters); a separator of several
    characters is refused, as the extensions split at each of them."""
    import onnxferry
    from onnxferry.customops import extensions_installed

    if not extensions_installed():
        pytest.skip("onnxruntime-extensions not installed")
    spec = [tf.TensorSpec([None], tf.string, name="text")]
    function = tf.function(
        lambda text: {"words": tf.strings.split(text, sep=separator).row_lengths()},
        input_signature=spec,
    )
    texts = np.array(["a,b,,c", "  two  words ", "", "x, y, z"], dtype=object)
    if not ok:
        with pytest.raises(FerryError, match="splits at each of its characters"):
            onnxferry.convert(function, tmp_path / "split.onnx", inputs=[{"text": texts}])
        return
    model = onnxferry.convert(function, tmp_path / "split.onnx", inputs=[{"text": texts}])
    (got,) = OrtRunner(model).run({"text": texts}).values()
    want = function(tf.constant(texts.astype(str)))["words"].numpy()
    np.testing.assert_array_equal(got, want)
