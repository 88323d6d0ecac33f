"""TensorFlow 1 training checkpoints (``.meta`` beside ``.index`` and ``.data-*``, as musicnn
ships its taggers) convert frozen, on the model's own inputs and outputs: the labels, the
loss and the optimizer set aside, ``is_training`` fixed to False; refusals in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxferry.convert import convert
from onnxferry.convert.base import ConvertOptions
from onnxferry.errors import InputError
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import tensorflow as tf

from onnxferry.convert.checkpoint import load_checkpoint

X = np.random.default_rng(7).standard_normal((5, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A classifier trained a few steps the TF1 way and saved twice by a Saver, in a folder of
    its own: ``(folder, its inference-mode probabilities on X)``."""
    folder = tmp_path_factory.mktemp("ckpt")
    return folder, _train(folder, loss_on="logits")


def _train(folder: Path, *, loss_on: str) -> np.ndarray:
    """Dense -> batch norm (moving averages kept by UPDATE_OPS) -> dropout -> dense, each
    switching on an ``is_training`` placeholder through a TF1 ``tf.cond`` (Switch and
    Merge, as every graph of that era has); softmax ``prob``; cross entropy against a
    ``labels`` placeholder on ``loss_on`` (the logits, or ``prob`` itself); Adam. Saved at
    steps 1 and 3, the ``checkpoint`` file naming the last by a path of another machine."""
    rng = np.random.default_rng(0)
    tf.compat.v1.disable_control_flow_v2()
    try:
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
            labels = tf.compat.v1.placeholder(tf.float32, [None, 3], name="labels")
            training = tf.compat.v1.placeholder(tf.bool, None, name="is_training")
            w1 = tf.compat.v1.Variable(rng.standard_normal((6, 8)).astype(np.float32))
            h = tf.matmul(x, w1)
            mean_avg = tf.compat.v1.Variable(tf.zeros([8]), trainable=False)
            var_avg = tf.compat.v1.Variable(tf.ones([8]), trainable=False)
            batch_mean, batch_var = tf.nn.moments(h, [0])
            for average, value in ((mean_avg, batch_mean), (var_avg, batch_var)):
                update = tf.compat.v1.assign(average, 0.5 * average + 0.5 * value)
                tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
            mean, var = tf.compat.v1.cond(
                training, lambda: (batch_mean, batch_var), lambda: (mean_avg, var_avg)
            )
            h = tf.nn.relu(tf.nn.batch_normalization(h, mean, var, None, None, 1e-3))
            h = tf.compat.v1.cond(training, lambda: tf.nn.dropout(h, rate=0.5), lambda: h)
            w2 = tf.compat.v1.Variable(rng.standard_normal((8, 3)).astype(np.float32))
            logits = tf.matmul(h, w2)
            prob = tf.nn.softmax(logits, name="prob")
            scored = logits if loss_on == "logits" else tf.math.log(prob + 1e-6)
            loss = tf.compat.v1.losses.softmax_cross_entropy(labels, scored)
            with tf.control_dependencies(tf.compat.v1.get_collection("update_ops")):
                step = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss)
            saver = tf.compat.v1.train.Saver(max_to_keep=2)
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                for i in range(1, 4):
                    batch = rng.standard_normal((16, 6)).astype(np.float32)
                    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
                    session.run(step, {x: batch, labels: onehot, training: True})
                    if i in (1, 3):
                        saver.save(session, str(folder / "model.ckpt"), global_step=i)
                expected = session.run(prob, {x: X, training: False})
    finally:
        tf.compat.v1.enable_control_flow_v2()
    state = folder / "checkpoint"
    state.write_text(state.read_text().replace(str(folder), "/home/someone/run7"))
    return np.asarray(expected)


def test_a_training_checkpoint_converts_to_its_inference_model(
    ferry: Run, trained: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, expected = trained
    out = tmp_path / "model.onnx"
    code, stdout, err = ferry("convert", folder, "-o", out, "--json")
    assert code == 0, err
    converted = Model.load(out)
    assert converted.signature.input_names == ["x"]  # no labels, is_training fixed
    assert converted.signature.output_names == ["prob"]  # not the loss nor Adam's slots
    (prob,) = OrtRunner(converted).run({"x": X}).values()
    np.testing.assert_allclose(prob, expected, atol=1e-5)  # the moving averages of step 3
    assert "model.ckpt-3.meta: TensorFlow checkpoint" in stdout
    assert "is_training fixed to False" in stdout
    code, _, err = ferry("compare", out, folder)  # the ONNX model against its checkpoint
    assert code == 0, err
    code, _, err = ferry("compare", out, out, "--bind", "is_training=false")
    assert code == 2 and "B is no TensorFlow source" in err, err


def test_a_meta_file_names_its_own_checkpoint(
    ferry: Run, trained: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """The step-1 weights, not the folder's latest; ``--bind is_training=true`` converts the
    training branch (batch statistics; dropout makes it random, so it is not verified)."""
    folder, expected = trained
    source = load_checkpoint(folder / "model.ckpt-1.meta", ConvertOptions())
    step1 = source.reference.run({"x": X})["prob"]
    assert not np.allclose(step1, expected, atol=1e-3)
    training = convert(folder / "model.ckpt-1.meta", bindings={"is_training": True}, verify=False)
    assert training.signature.input_names == ["x"]
    assert {"RandomUniform", "RandomUniformLike"} & set(training.ops_histogram)  # dropout


def test_outputs_that_feed_the_loss_are_named_by_the_user(ferry: Run, tmp_path: Path) -> None:
    """A loss computed on ``prob`` itself leaves no end that feeds no training op: the error
    names a candidate, and ``--graph-outputs`` converts it."""
    expected = _train(tmp_path, loss_on="prob")
    meta = tmp_path / "model.ckpt-3.meta"
    code, _, err = ferry("convert", meta, "-o", tmp_path / "o.onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--graph-outputs" in err and "prob" in err, err
    code, _, err = ferry("convert", meta, "-o", tmp_path / "o.onnx", "--graph-outputs", "prob")
    assert code == 0, err
    (prob,) = OrtRunner(Model.load(tmp_path / "o.onnx")).run({"x": X}).values()
    np.testing.assert_allclose(prob, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.ckpt-3.index").unlink(), "are not beside it"),
        (lambda f: (f / "model.ckpt-3.meta").write_bytes(b"\x07" * 50), "not a TensorFlow"),
        (lambda f: (f / "model.ckpt-1.meta").rename(f / "other.meta"), "holds 2 checkpoints"),
    ],
    ids=["no-weights", "not-a-graph", "two-unnamed"],
)
def test_broken_checkpoints_are_one_line(
    ferry: Run, trained: tuple[Path, np.ndarray], tmp_path: Path, damage: Any, message: str
) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for file in trained[0].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    if message == "holds 2 checkpoints":
        (folder / "checkpoint").unlink()
    damage(folder)
    with pytest.raises(InputError, match=message):
        load_checkpoint(folder, ConvertOptions())
    code, _, err = ferry("convert", folder, "-o", tmp_path / "o.onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_graph_options_name_what_the_graph_has(
    ferry: Run, trained: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, _ = trained
    for option, value, message in [
        ("--graph-outputs", "nope", "no node 'nope'; name one of its ends: prob"),
        ("--bind", "nope=1", "no placeholder 'nope'"),
        ("--bind", "is_training=maybe", "--bind takes NAME=VALUE (true, false or a number)"),
    ]:
        code, _, err = ferry("convert", folder, "-o", tmp_path / "o.onnx", option, value)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_tf1_while_loop_converts_to_a_loop(ferry: Run, tmp_path: Path) -> None:
    """An RNN written the TF1 way, ``tf.compat.v1.while_loop`` over the time steps (Enter,
    Exit, NextIteration: what ``dynamic_rnn`` builds): tf2onnx converts it from the frozen
    graph, not from a function calling it (where it failed on Enter). Any sequence length;
    the counter's Exit is no output."""
    rng = np.random.default_rng(3)
    tf.compat.v1.disable_control_flow_v2()
    try:
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, None, 5], name="x")
            w = tf.compat.v1.Variable(rng.standard_normal((5, 4)).astype(np.float32))
            u = tf.compat.v1.Variable(rng.standard_normal((4, 4)).astype(np.float32) / 2)

            def step(i: Any, h: Any) -> tuple[Any, Any]:
                return i + 1, tf.tanh(tf.matmul(x[:, i, :], w) + tf.matmul(h, u))

            start = (tf.constant(0), tf.zeros([tf.shape(x)[0], 4]))
            _, last = tf.compat.v1.while_loop(lambda i, h: i < tf.shape(x)[1], step, start)
            tf.identity(last, name="state")
            saver = tf.compat.v1.train.Saver()
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                saver.save(session, str(tmp_path / "rnn.ckpt"))
                sequences = [rng.standard_normal((2, t, 5)).astype(np.float32) for t in (3, 9)]
                expected = [session.run("state:0", {x: s}) for s in sequences]
    finally:
        tf.compat.v1.enable_control_flow_v2()
    out = tmp_path / "rnn.onnx"
    code, _, err = ferry("convert", tmp_path / "rnn.ckpt.meta", "-o", out)
    assert code == 0, err
    converted = Model.load(out)
    assert converted.signature.output_names == ["state"]
    assert "Loop" in converted.ops_histogram
    runner = OrtRunner(converted)
    for sequence, want in zip(sequences, expected, strict=True):
        np.testing.assert_allclose(runner.run({"x": sequence})["state"], want, atol=1e-5)


def test_a_tf1_saved_models_training_switch_is_fixed_too(ferry: Run, tmp_path: Path) -> None:
    """A TF1 SavedModel whose signature takes ``is_training`` beside its data: it was an
    input of the ONNX model (fed random bools by the check); it is fixed to False as in a
    frozen graph, and ``--bind`` takes the signature's other arguments too."""
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((6, 3)).astype(np.float32)
    tf.compat.v1.disable_control_flow_v2()
    try:
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
            training = tf.compat.v1.placeholder(tf.bool, [], name="is_training")
            h = tf.matmul(x, tf.compat.v1.Variable(weights))
            h = tf.compat.v1.cond(training, lambda: tf.nn.dropout(h, rate=0.5), lambda: h)
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                builder = tf.compat.v1.saved_model.builder.SavedModelBuilder(str(tmp_path / "sm"))
                signature = tf.compat.v1.saved_model.predict_signature_def(
                    {"x": x, "is_training": training}, {"y": h}
                )
                builder.add_meta_graph_and_variables(
                    session, ["serve"], signature_def_map={"serving_default": signature}
                )
                builder.save()
    finally:
        tf.compat.v1.enable_control_flow_v2()
    out = tmp_path / "sm.onnx"
    code, stdout, err = ferry("convert", tmp_path / "sm", "-o", out, "--json")
    assert code == 0, err
    assert "is_training fixed to False" in stdout
    converted = Model.load(out)
    assert converted.signature.input_names == ["x"]
    (y,) = OrtRunner(converted).run({"x": X}).values()
    np.testing.assert_allclose(y, X @ weights, atol=1e-5)
    code, _, err = ferry("convert", tmp_path / "sm", "-o", out, "--bind", "x=1")
    assert code == 2 and "input 'x' is a tensor of rank 2, and --bind fixes a scalar" in err
