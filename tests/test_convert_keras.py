"""Keras models (.keras files and objects) and TensorFlow SavedModels to ONNX, each exporter
verified against TensorFlow at two batch sizes."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import onnxferry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

import keras
import tensorflow as tf

from onnxferry.convert import compare_to_source
from onnxferry.convert.base import ConversionError, ConvertOptions, Source
from onnxferry.convert.dispatch import Conversion, load_source
from onnxferry.convert.keras import (
    KerasRunner,
    SavedModelRunner,
    load_keras,
    load_saved_model,
)
from onnxferry.customops import extensions_installed
from onnxferry.errors import FerryError, InputError, UsageError
from onnxferry.feeds import index_ranges, realistic_feeds
from onnxferry.model import Model
from onnxferry.parity import compare_outputs
from onnxferry.runtime import OrtRunner, runtime_limits
from tests.helpers import Run

pytestmark = [
    pytest.mark.slow,
    # Keras saving a TF variable on numpy 2 (keras/src/backend/tensorflow/core.py)
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


def verify(
    source: Source, tmp_path: Path, dims: tuple[dict[str, int], dict[str, int]] | None = None
) -> list[str]:
    """Export every candidate, load it, and check it against the reference at two shapes.

    Returns the exporters that ran; fails on any candidate whose names or values differ.
    """
    dims = dims or ({"batch": 1}, {"batch": 5})
    reference = source.reference
    max_ir, max_opset = runtime_limits()
    exporters = []
    for index, candidate in enumerate(source.candidates):
        path = tmp_path / f"candidate{index}.onnx"
        candidate.export(path)
        model = Model.load(path)
        assert model.ir_version <= max_ir
        assert model.opset_imports["ai.onnx"] <= max_opset
        assert set(model.opset_imports) == {"ai.onnx"}  # tf2onnx's unused ai.onnx.ml dropped
        assert model.signature.input_names == reference.signature.input_names
        assert model.signature.output_names == reference.signature.output_names
        for spec, want in zip(model.signature.inputs, reference.signature.inputs, strict=True):
            assert spec.shape == want.shape, candidate.exporter
        runner = OrtRunner(model)
        for seed, shape in enumerate(dims):
            feeds = realistic_feeds(reference.signature, shape, seed=seed)
            parity = compare_outputs(
                [reference.run(feeds)],
                [runner.run(feeds)],
                reference_name=reference.name,
                candidate_name=candidate.exporter,
            )
            assert parity.ok, parity.summary()
            batch = next(iter(feeds.values())).shape[0]
            assert all(o.cand_shape[0] == batch for o in parity.outputs)
        exporters.append(candidate.exporter)
    return exporters


def two_io_model() -> Any:
    """Two inputs (a vector and a small image), Dense + Conv + concat, two outputs."""
    features = keras.Input((8,), name="features")
    image = keras.Input((6, 6, 3), name="image")
    h = keras.layers.Dense(5, activation="relu", name="dense")(features)
    c = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    c = keras.layers.GlobalAveragePooling2D(name="pool")(c)
    joined = keras.layers.Concatenate(name="cat")([h, c])
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(joined)
    score = keras.layers.Dense(1, name="score")(joined)
    return keras.Model([features, image], [probs, score], name="two_io")


def dict_model() -> Any:
    """Dict inputs and dict outputs whose keys differ from the layer names."""
    x = keras.Input((4,), name="x")
    y = keras.Input((4,), name="y")
    s = keras.layers.Add(name="add")([x, y])
    return keras.Model(
        {"x": x, "y": y},
        {"total": keras.layers.Dense(2, name="head")(s), "aux": keras.layers.ReLU(name="r")(s)},
    )


def sequential_model() -> Any:
    return keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(6, activation="tanh", name="hidden"),
            keras.layers.LayerNormalization(name="norm"),
            keras.layers.Dense(2, name="logits"),
        ]
    )


def built_sequential() -> Any:
    """A Sequential model built without keras.Input: its input gets Keras' automatic name."""
    model = keras.Sequential([keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    model.build((None, 4))
    return model


def test_keras_object_converts_with_both_exporters(tmp_path: Path) -> None:
    source = load_keras(two_io_model(), ConvertOptions())
    sig = source.reference.signature
    assert sig.input_names == ["features", "image"]
    assert sig.output_names == ["probs", "score"]
    assert sig.inputs[1].shape == ("batch", 6, 6, 3)
    assert sig.outputs[0].shape == ("batch", 3)
    assert source.framework == "keras"
    assert verify(source, tmp_path) == ["tf2onnx", "keras export"]


def test_keras_file_converts(tmp_path: Path) -> None:
    path = tmp_path / "two_io.keras"
    two_io_model().save(path)
    source = load_keras(path, ConvertOptions())
    assert str(path) in source.description
    assert verify(source, tmp_path) == ["tf2onnx", "keras export"]


def gelu_block(policy: str = "float32") -> Any:
    """Dense with Keras 3's exact GELU (TensorFlow computes it with Erfc), a LayerNorm and a
    float32 softmax head, built under dtype ``policy``."""
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        features = keras.Input((16,), name="features")
        hidden = keras.layers.Dense(64, activation="gelu")(features)
        hidden = keras.layers.LayerNormalization()(hidden)
        probs = keras.layers.Dense(5, activation="softmax", dtype="float32", name="probs")(hidden)
        return keras.Model(features, probs)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_an_exact_gelu_converts_through_erfc(tmp_path: Path) -> None:
    """tf2onnx has no Erfc: every Keras model with activation="gelu" stopped there."""
    source = load_keras(gelu_block(), ConvertOptions())
    assert verify(source, tmp_path) == ["tf2onnx", "keras export"]
    assert source.tolerance is None


def test_a_mixed_float16_model_is_verified_at_float16_s_tolerance(tmp_path: Path) -> None:
    source = load_keras(gelu_block("mixed_float16"), ConvertOptions())
    assert source.tolerance is not None and (source.tolerance.atol, source.tolerance.rtol) == (
        1e-2,
        1e-2,
    )
    assert any("layers compute in float16 (mixed_float16)" in note for note in source.notes)
    model = onnxferry.convert(gelu_block("mixed_float16"), tmp_path / "mixed.onnx")
    assert model.signature.output_names == ["probs"]


@pytest.mark.parametrize(
    ("build", "inputs", "outputs"),
    [
        (dict_model, ["x", "y"], ["total", "aux"]),
        (sequential_model, ["x"], ["logits"]),
        (built_sequential, ["input"], None),
    ],
    ids=["dict", "sequential", "built-sequential"],
)
def test_output_names_follow_keras(
    tmp_path: Path, build: Callable[[], Any], inputs: list[str], outputs: list[str] | None
) -> None:
    model = build()
    source = load_keras(model, ConvertOptions())
    assert source.reference.signature.input_names == inputs
    assert source.reference.signature.output_names == (outputs or [model.layers[-1].name])
    verify(source, tmp_path)


def test_open_sequence_dim_is_named_and_verified(tmp_path: Path) -> None:
    tokens = keras.Input((None, 3), name="tokens")
    h = keras.layers.Conv1D(4, 2, padding="same", name="conv")(tokens)
    model = keras.Model(tokens, keras.layers.GlobalMaxPooling1D(name="pool")(h))
    source = load_keras(model, ConvertOptions())
    assert source.reference.signature.inputs[0].shape == ("batch", "tokens_dim1", 3)
    verify(source, tmp_path, ({"batch": 1, "tokens_dim1": 5}, {"batch": 3, "tokens_dim1": 9}))


def test_an_output_s_sequence_dim_takes_the_input_s_name(tmp_path: Path) -> None:
    """Keras says the output is ``(None, None, 4)`` and tf2onnx writes ``[batch, unk__N,
    4]``; in every verification run the dim was the input's sequence length, so the model
    kept says so (and the report how it knows)."""
    tokens = keras.Input((None, 3), name="tokens")
    model = keras.Model(tokens, keras.layers.Conv1D(4, 2, padding="same", name="conv")(tokens))
    converted = onnxferry.convert(model, tmp_path / "conv.onnx")
    assert converted.signature.outputs[0].shape == ("batch", "tokens_dim1", 4)
    report = converted.last_report(Conversion)
    named = [n for n in report.notes if " left unnamed took the names of the input " in n]
    assert named and named[0].endswith("conv[1] 'tokens_dim1'"), report.notes


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_token_ids_feeding_an_embedding_get_a_value_range(dtype: str, tmp_path: Path) -> None:
    """Integer ids, or float ones (``keras.Input``'s default dtype, which the Embedding
    casts), are drawn in [0, input_dim), whole numbers; and the exported ONNX still bounds
    them for every later verb, through Keras 3's negative-index wrap (``where(x < 0, x + n,
    x)``) in front of its Gather."""
    tokens = keras.Input((None,), dtype=dtype, name="tokens")
    h = keras.layers.Embedding(50, 4, name="embed")(tokens)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    model = keras.Model(tokens, keras.layers.Dense(2, name="head")(h))
    source = load_keras(model, ConvertOptions())
    assert source.value_ranges == {"tokens": (0, 50)}
    assert source.reference.signature.inputs[0].dtype.numpy == np.dtype(dtype)
    ids = np.concatenate([f["tokens"].ravel() for f in source.verification_feeds([])])
    assert ids.dtype == np.dtype(dtype) and np.array_equal(ids, np.round(ids))
    assert ids.min() >= 0 and 8 <= ids.max() < 50  # not the [0, 8) of an unbounded integer
    verify(source, tmp_path, ({"batch": 1, "tokens_dim1": 5}, {"batch": 3, "tokens_dim1": 9}))
    for index in range(len(source.candidates)):
        exported = Model.load(tmp_path / f"candidate{index}.onnx")
        assert index_ranges(exported.proto, exported.signature) == {"tokens": (0, 50)}


def test_user_axes_name_the_dims(tmp_path: Path) -> None:
    options = ConvertOptions(dynamic_axes={"features": {0: "n"}, "image": {0: "n"}})
    source = load_keras(two_io_model(), options)
    assert source.reference.signature.inputs[0].shape == ("n", 8)
    assert source.reference.signature.outputs[1].shape == ("n", 1)
    verify(source, tmp_path, ({"n": 2}, {"n": 7}))


def test_opset_past_tf2onnx_is_reached_with_the_version_converter(tmp_path: Path) -> None:
    opset = min(21, runtime_limits()[1])
    source = load_keras(sequential_model(), ConvertOptions(opset=opset))
    verify(source, tmp_path)
    for index in range(len(source.candidates)):
        assert Model.load(tmp_path / f"candidate{index}.onnx").opset_imports["ai.onnx"] == opset


SCALE_LAYER = """
import keras

@keras.saving.register_keras_serializable(package="ferry_tests")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
"""


def test_a_custom_layer_keras_cannot_find_points_to_a_factory(ferry: Run, tmp_path: Path) -> None:
    """A .keras file naming a class of its author's code, not imported: one line naming the
    class and the factory that imports it (was Keras' whole config dump)."""
    namespace: dict[str, Any] = {}
    exec(SCALE_LAYER, namespace)
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="head")(namespace["Scale"]()(x)))
    path = tmp_path / "scaled.keras"
    model.save(path)
    keras.saving.get_custom_objects().pop("ferry_tests>Scale")  # as in a fresh process
    with pytest.raises(InputError) as caught:
        load_keras(path, ConvertOptions())
    assert_one_line(caught.value)
    assert "uses 'Scale', a class of its own code" in str(caught.value)
    assert "FILE.py:FUNCTION" in str(caught.value)
    factory = tmp_path / "scaled.py"
    factory.write_text(
        f"{SCALE_LAYER}\ndef make():\n    return keras.saving.load_model({str(path)!r})\n"
    )
    code, _, err = ferry("convert", f"{factory}:make", "-o", tmp_path / "scaled.onnx")
    assert code == 0, err


def test_lambda_layer_needs_trust(tmp_path: Path) -> None:
    x = keras.Input((4,), name="x")
    model = keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(InputError, match="trust_pickle") as caught:
        load_keras(path, ConvertOptions())
    assert_one_line(caught.value)
    verify(load_keras(path, ConvertOptions(trust_pickle=True)), tmp_path)


def test_saved_model_of_a_module(tmp_path: Path) -> None:
    class Affine(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(0)
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[
                tf.TensorSpec((None, 4), tf.float32, name="x"),
                tf.TensorSpec((None, 3), tf.float32, name="bias"),
            ]
        )
        def __call__(self, x: Any, bias: Any) -> dict[str, Any]:
            y = tf.matmul(x, self.w) + bias
            return {"y": y, "relu": tf.nn.relu(y)}

    module = Affine()
    tf.saved_model.save(module, str(tmp_path / "affine"))
    source = load_saved_model(tmp_path / "affine", ConvertOptions())
    assert source.framework == "tf"
    assert source.reference.signature.input_names == ["bias", "x"]
    assert source.reference.signature.output_names == ["relu", "y"]
    assert verify(source, tmp_path) == ["tf2onnx"]


def test_a_saved_model_that_looks_up_a_hash_table_converts(tmp_path: Path) -> None:
    """A StaticHashTable (string -> int64): frozen with its contents, as a CategoryMapper."""

    class Codes(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            values = tf.constant([5, 6, 7], tf.int64)
            init = tf.lookup.KeyValueTensorInitializer(["a", "b", "c"], values, tf.string)
            self.table = tf.lookup.StaticHashTable(init, default_value=tf.constant(-1, tf.int64))

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="letter")])  # type: ignore[untyped-decorator]
        def __call__(self, letter: Any) -> dict[str, Any]:
            return {"code": self.table.lookup(letter)}

    tf.saved_model.save(Codes(), str(tmp_path / "codes"))
    model = onnxferry.convert(tmp_path / "codes", tmp_path / "codes.onnx")
    letters = np.array(["c", "a", "z"], dtype=object)
    (codes,) = OrtRunner(model).run({"letter": letters}).values()
    np.testing.assert_array_equal(codes, [7, 5, -1])


def test_keras_preprocessing_lookups_convert_and_are_verified_on_their_vocabularies(
    tmp_path: Path,
) -> None:
    """A structured-data model: a string column through StringLookup, an integer column
    through IntegerLookup (tf2onnx had no int64 -> int64 table), a number through
    Normalization. Keras' string input was an internal error; the generated rows now take
    the lookups' words (and one they do not know) and the normalization's scale."""
    keras.utils.set_random_seed(0)
    city = keras.Input((1,), dtype="string", name="city")
    code = keras.Input((1,), dtype="int64", name="code")
    age = keras.Input((1,), name="age")
    layers = keras.layers
    cities = layers.StringLookup(vocabulary=["paris", "rome", "oslo"], output_mode="one_hot")
    codes = layers.IntegerLookup(vocabulary=[3, 7, 11], output_mode="one_hot")
    joined = layers.concatenate(
        [cities(city), codes(code), layers.Normalization(mean=40.0, variance=100.0)(age)]
    )
    prob = layers.Dense(1, activation="sigmoid", name="prob")(layers.Dense(8, "relu")(joined))
    model = keras.Model({"city": city, "code": code, "age": age}, prob)

    source = load_keras(model, ConvertOptions())
    assert source.vocabularies["city"].words == ("paris", "rome", "oslo", "ferry-unknown-value")
    assert source.vocabularies["code"].words == (3, 7, 11, 12)
    assert source.column_scales["age"].center.tolist() == [40.0]
    assert source.column_scales["age"].spread.tolist() == [10.0]
    onnx_model = onnxferry.convert(model, tmp_path / "table.onnx")
    rows = {
        "city": np.array([["rome"], ["nowhere"]], dtype=object),
        "code": np.array([[11], [4]], np.int64),
        "age": np.array([[52.0], [18.0]], np.float32),
    }
    (got,) = OrtRunner(onnx_model).run(rows).values()
    want = model({k: tf.constant(v.astype(str) if k == "city" else v) for k, v in rows.items()})
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_a_text_vectorization_model_converts_and_tokenizes_like_keras(tmp_path: Path) -> None:
    """Keras' TextVectorization: lower-case, strip punctuation (StaticRegexReplace), split
    on whitespace (StringSplitV2), look the words up, pad. tf2onnx named the text ops; then,
    through onnxruntime-extensions, split into characters and failed on a text with no
    words."""
    # not importorskip: importing the package loads its library unbound (customops)
    if not extensions_installed():
        pytest.skip("onnxruntime-extensions not installed")
    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6)
    vectorize.adapt(["the cat sat on the mat", "a dog ate my homework", "hello world, the end"])
    text = keras.Input((1,), dtype="string", name="text")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(vectorize(text)))
    model = keras.Model(text, keras.layers.Dense(2, activation="softmax", name="probs")(pooled))

    source = load_keras(model, ConvertOptions())
    assert set(source.vocabularies["text"].words) == {
        "the", "cat", "sat", "on", "mat", "a", "dog", "ate", "my", "homework", "hello",
        "world", "end",
    }  # fmt: skip
    onnx_model = onnxferry.convert(model, tmp_path / "text.onnx")
    texts = ["Hello, World!", "the  cat\tSAT", "", "!!", "a b c d e f g h", "unknown words"]
    rows = {"text": np.array([[t] for t in texts], dtype=object)}
    (got,) = OrtRunner(onnx_model).run(rows).values()
    want = model(tf.constant(np.array([[t] for t in texts])))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_saved_model_exported_by_keras(tmp_path: Path) -> None:
    two_io_model().export(str(tmp_path / "export"), verbose=False)
    source = load_saved_model(tmp_path / "export", ConvertOptions())
    assert isinstance(source.reference, SavedModelRunner)
    assert source.reference.signature.input_names == ["features", "image"]
    assert source.reference.signature.output_names == ["output_0", "output_1"]
    verify(source, tmp_path)


def grouped_conv_block() -> Any:
    """ConvNeXt's blocks: depthwise ``Conv2D(groups=C)``s, which Keras 3 runs on TensorFlow as
    a function compiled by XLA (``_conv_xla``, traced anew at every call), each with a layer
    norm, then a pointwise Conv2D."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 8), name="image")
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv2D(8, 7, padding="same", groups=8)(x)
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))


def _grouped_convs(path: Path) -> list[int]:
    import onnx

    return [
        attribute.i
        for node in onnx.load(str(path)).graph.node
        if node.op_type == "Conv"
        for attribute in node.attribute
        if attribute.name == "group"
    ]


def test_a_grouped_convolution_converts_to_one_conv_quietly(tmp_path: Path) -> None:
    """Keras's ConvNeXt failed: tf2onnx met the XLA function as a StatefulPartitionedCall it
    cannot convert. Inlined, it is one ONNX Conv with ``group``. In a fresh process (TensorFlow
    first imported by ferry), its warnings of the function retraced at every call ("5 out of
    the last 5 calls to <function conv.<locals>._conv_xla>") stay off the terminal."""
    import subprocess
    import sys

    path, out = tmp_path / "block.keras", tmp_path / "block.onnx"
    grouped_conv_block().save(path)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "onnxferry", "convert", str(path), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"wrote {out}"], done.stderr
    assert _grouped_convs(out) == [8, 8, 8, 1]


def test_a_saved_model_calling_a_grouped_convolution_converts(tmp_path: Path) -> None:
    """Exported as a SavedModel, the XLA function is called from inside the restored
    function: inlined a level at a time."""
    grouped_conv_block().export(str(tmp_path / "export"), verbose=False)
    source = load_saved_model(tmp_path / "export", ConvertOptions())
    verify(source, tmp_path)
    (path,) = tmp_path.glob("*.onnx")
    assert _grouped_convs(path) == [8, 8, 8, 1]


# --- bad input ---------------------------------------------------------------------------


def assert_one_line(error: FerryError) -> None:
    assert error.exit_code == 2
    assert "\n" not in str(error)
    assert len(str(error)) < 500


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (os.urandom(256), "not a zip archive"),
        (None, "no config.json"),
        (b"", "not a zip archive"),
    ],
    ids=["random-bytes", "zip-without-config", "empty"],
)
def test_bad_keras_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.keras"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        load_keras(path, ConvertOptions())
    assert_one_line(caught.value)


def test_keras_archive_with_broken_config(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")
    with pytest.raises(InputError, match="Keras cannot load") as caught:
        load_keras(path, ConvertOptions())
    assert_one_line(caught.value)


def test_a_weights_only_hdf5_file_says_so(tmp_path: Path) -> None:
    """``model.save_weights()`` writes HDF5 with no architecture (deepcut ships its model so):
    one line that says the file holds weights only and how to convert them."""
    path = tmp_path / "model.weights.h5"
    two_io_model().save_weights(str(path))
    with pytest.raises(InputError, match="holds weights only") as caught:
        load_keras(path, ConvertOptions())
    assert "load_weights()" in str(caught.value)
    assert_one_line(caught.value)


def test_missing_keras_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as caught:
        load_keras(tmp_path / "absent.keras", ConvertOptions())
    assert_one_line(caught.value)


def test_not_a_model_object() -> None:
    with pytest.raises(UsageError, match=r"keras\.Model") as caught:
        load_keras(42, ConvertOptions())
    assert_one_line(caught.value)


class ProposalNet(keras.Model):  # type: ignore[misc]
    """MTCNN's proposal net as ``mtcnn`` 1.0 writes it: a subclassed model, layers made in
    ``__init__`` and run in ``call``, no ``keras.Input``; fully convolutional."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = keras.layers.Conv2D(4, 3, name="conv1")
        self.pool = keras.layers.MaxPooling2D(2, padding="same")
        self.conv2 = keras.layers.Conv2D(6, 3, name="conv2")
        self.conv3 = keras.layers.Conv2D(8, 3, name="conv3")
        self.box = keras.layers.Conv2D(4, 1, name="box")
        self.face = keras.layers.Conv2D(2, 1, activation="softmax", name="face")

    def build(self, input_shape: Any) -> None:
        shape = input_shape
        for layer in (self.conv1, self.pool, self.conv2, self.conv3):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.box.build(shape)
        self.face.build(shape)
        super().build(input_shape)

    def call(self, images: Any) -> Any:
        x = self.conv3(self.conv2(self.pool(self.conv1(images))))
        return [self.box(x), self.face(x)]


def test_subclassed_model_built_on_open_dims_converts_on_them(tmp_path: Path) -> None:
    """Built as mtcnn builds it, ``build((None, None, None, 3))``: one input named as
    ``call``'s parameter, its open dims kept (verified at heights and widths of 32 and 64:
    the 8 of other dims leaves no pixel after three 3x3 convolutions and a pooling)."""
    model = ProposalNet()
    model.build((None, None, None, 3))
    source = load_keras(model, ConvertOptions())
    (spec,) = source.reference.signature.inputs
    assert spec.name == "images" and spec.shape is not None
    assert spec.shape[1:] == ("images_dim1", "images_dim2", 3)
    assert source.notes == [
        "the subclassed Keras model declares no inputs: converted on one input 'images' "
        "[?, ?, ?, 3], the shape from its build()"
    ]
    verify(source, tmp_path, ({"batch": 1, "images_dim1": 12, "images_dim2": 20},) * 2)
    shapes = [f["images"].shape for f in source.verification_feeds([])]
    assert {s[1:3] for s in shapes} == {(32, 32), (64, 64)}


def test_subclassed_model_never_built_takes_the_input_shape(tmp_path: Path) -> None:
    options = ConvertOptions(input_shapes={"face": (1, 24, 24, 3)})
    source = load_keras(ProposalNet(), options)
    (spec,) = source.reference.signature.inputs
    assert spec.name == "face" and spec.shape == ("batch", 24, 24, 3)
    assert "the shape from --input-shape" in source.notes[0]
    verify(source, tmp_path)


PROPOSAL_FACTORY = """
import numpy as np
import keras


class ProposalNet(keras.Model):  # mtcnn 1.0's PNet: build() has a default, call() the layers
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.face = keras.layers.Conv2D(2, 1, activation="softmax", name="face")

    def build(self, input_shape=(None, None, None, 3)):
        self.conv.build(input_shape)
        self.face.build(self.conv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, images):
        return self.face(self.conv(images))


def make():
    model = ProposalNet()
    model.build()  # as mtcnn does: Keras records no shape for a default argument
    return model, (np.random.default_rng(0).random((1, 12, 16, 3), np.float32),)
"""


def test_a_factorys_one_example_array_shapes_a_subclassed_model(tmp_path: Path) -> None:
    """mtcnn 1.0's nets, built by ``model.build()`` on build's default argument, and a factory
    returning ``(model, (array,))`` as a Keras model is called: was exit 2 "returned its
    example inputs as a tuple", then "declares no inputs". The example names and shapes the
    one input (rows open; ``--dynamic`` opens more) and is the first verification sample."""
    factory = tmp_path / "pnet.py"
    factory.write_text(PROPOSAL_FACTORY)
    model = onnxferry.convert(f"{factory}:make", tmp_path / "pnet.onnx")
    (spec,) = model.signature.inputs
    assert spec.name == "images" and spec.shape == ("batch", 12, 16, 3)
    report = model.last_report(Conversion)
    assert report.notes[0] == (
        "the subclassed Keras model declares no inputs: converted on one input 'images' "
        "[?, 12, 16, 3], the shape from the factory's example"
    )
    assert report.result.inputs_from == "user samples + generated"
    dynamic = {"images": {0: "batch", 1: "height", 2: "width"}}
    model = onnxferry.convert(f"{factory}:make", tmp_path / "open.onnx", dynamic=dynamic)
    assert model.signature.inputs[0].shape == ("batch", "height", "width", 3)
    assert "example and --dynamic" in model.last_report(Conversion).notes[0]
    image = np.random.default_rng(1).random((2, 20, 9, 3), np.float32)
    (faces,) = OrtRunner(model).run({"images": image}).values()
    assert faces.shape == (2, 18, 7, 2)


def test_example_arrays_name_a_models_inputs_in_order(tmp_path: Path) -> None:
    """A model of two inputs given its example as a tuple: the arrays feed the inputs in
    order; a count that does not match is one line naming the inputs."""
    left, right = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    model = keras.Model([left, right], keras.layers.Concatenate()([left, right * 2]))
    a, b = np.ones((2, 3), np.float32), np.full((2, 2), 5, np.float32)
    source = load_source(model, ConvertOptions(), example_inputs=(a, b))
    (sample,) = source.samples
    assert sample.keys() == {"left", "right"}
    np.testing.assert_array_equal(sample["right"], b)
    misnamed = ConvertOptions(input_shapes={"lft": (2, 3)})  # the example fixes the shapes
    with pytest.raises(UsageError, match="--input-shape names 'lft', which is not an input"):
        load_source(model, misnamed, example_inputs=(a, b))
    with pytest.raises(ConversionError) as caught:
        load_source(model, ConvertOptions(), example_inputs=[a])
    assert_one_line(caught.value)
    assert "1 example input(s) given (ndarray) for a model of 2 input(s): left, right" in str(
        caught.value
    )


def test_a_source_that_fails_on_the_generated_inputs_is_one_line(tmp_path: Path) -> None:
    """Three 9x9 convolutions and a 10x10 need 34 pixels; verification's 32 leave -1. The
    Keras model itself raising is exit 2 naming the shapes and what to give, not an
    internal error."""
    image = keras.Input((None, None, 3), name="image")
    x = image
    for i, kernel in enumerate((9, 9, 9, 10)):
        x = keras.layers.Conv2D(2, kernel, name=f"conv{i}")(x)
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="deep")
    with pytest.raises(InputError) as caught:
        onnxferry.convert(model, tmp_path / "o.onnx")
    assert_one_line(caught.value)
    message = str(caught.value)
    assert "the source model (deep@keras) fails on image[1,32,32,3]" in message
    assert "--input-shape" in message
    assert not (tmp_path / "o.onnx").exists()


def test_sizes_given_for_open_dims_are_the_ones_verified(tmp_path: Path) -> None:
    """SpliceAI crops 5,000 steps from each end of its open-length sequence; verification
    tried 8 and 13 steps, the error asked for ``--input-shape``, and with it and the length
    kept open (``--dynamic``) verification went on trying 8: a loop. A size given for an
    open dim (by ``--input-shape`` or a sample) is now verified, and that size moved by its
    kind's step (here 20 and 25 steps); the model kept leaves the dim open."""
    steps = keras.Input((None, 4), name="seq")
    cropped = keras.layers.Cropping1D((6, 6), name="crop")(steps)
    model = keras.Model(steps, keras.layers.Conv1D(3, 1, name="conv")(cropped), name="splice")
    converted = onnxferry.convert(
        model,
        tmp_path / "splice.onnx",
        input_shapes={"seq": (1, 20, 4)},
        dynamic={"seq": {0: "batch", 1: "length"}},
    )
    assert converted.signature.inputs[0].shape == ("batch", "length", 4)
    report = converted.last_report(Conversion)
    assert [s["seq"][1] for s in report.result.shapes] == [20, 25], report.result.shapes


@pytest.mark.parametrize("time_major", [False, True])
def test_a_keras2_file_s_recurrent_layers_load_without_time_major(
    time_major: bool, tmp_path: Path
) -> None:
    """tf.keras 2 wrote ``time_major`` into every LSTM, GRU and SimpleRNN config (dgaintel's
    domain classifier: an Embedding, a Conv1D and an LSTM in a 2019 ``.h5``); Keras 3 has no
    such argument and refused the file. False, what it always was from the layers' API, is
    dropped and the model converts verified; True (the batch on axis 1) is still refused."""
    import json

    import h5py

    tokens = keras.Input((12,), dtype="int32", name="domain")
    h = keras.layers.Embedding(40, 8, name="embed")(tokens)
    h = keras.layers.LSTM(6, name="lstm")(h)
    h = keras.layers.GRU(4, name="gru")(keras.layers.RepeatVector(3)(h))
    model = keras.Model(tokens, keras.layers.Dense(1, activation="sigmoid", name="p")(h))
    path = tmp_path / "keras2.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:  # as tf.keras 2.2 wrote it
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] in ("LSTM", "GRU"):
                layer["config"]["time_major"] = time_major
        f.attrs["model_config"] = json.dumps(config)
    if time_major:
        with pytest.raises(InputError, match="time_major"):
            onnxferry.convert(path, tmp_path / "o.onnx")
        return
    converted = onnxferry.convert(path, tmp_path / "o.onnx")
    assert converted.signature.input_names == ["domain"]
    assert converted.last_report(Conversion).result.verified


def test_compare_pairs_outputs_by_position_when_keras_named_them_anew(tmp_path: Path) -> None:
    """Keras names a layer by a per-process counter: the same model built again answers
    ``dense_7`` where its export says ``dense_6``. With no name shared and as many outputs,
    ``compare`` pairs them by position and says so."""

    def build() -> Any:
        x = keras.Input((4,), name="x")
        return keras.Model(x, keras.layers.Dense(2)(x))

    first = build()
    out = tmp_path / "dense.onnx"
    onnxferry.convert(first, out)
    second = build()
    second.set_weights(first.get_weights())
    report = compare_to_source(out, second)
    (note,) = [n for n in report.notes if "paired by position" in n]
    assert report.ok, report.result.summary()
    assert note.endswith(f"{first.output_names[0]} = {second.output_names[0]}")
    second.set_weights([w + 1 for w in first.get_weights()])
    assert not compare_to_source(out, second).ok  # paired, and still judged


def test_subclassed_model_without_inputs() -> None:
    class Doubler(keras.Model):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            return x * 2

    with pytest.raises(UsageError, match="declares no inputs") as caught:
        KerasRunner(Doubler())
    assert_one_line(caught.value)
    with pytest.raises(UsageError, match="--input-shape") as caught:
        load_keras(Doubler(), ConvertOptions())


def test_saved_model_dir_without_pb(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    with pytest.raises(InputError, match=r"no saved_model\.pb") as caught:
        load_saved_model(tmp_path, ConvertOptions())
    assert_one_line(caught.value)


def test_saved_model_with_corrupt_pb(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(os.urandom(64))
    with pytest.raises(InputError, match="cannot load the SavedModel") as caught:
        load_saved_model(tmp_path, ConvertOptions())
    assert_one_line(caught.value)


def test_saved_model_without_the_signature(tmp_path: Path) -> None:
    two_io_model().export(str(tmp_path / "export"), verbose=False)
    with pytest.raises(InputError, match="no signature 'predict'") as caught:
        load_saved_model(tmp_path / "export", ConvertOptions(), signature_key="predict")
    assert_one_line(caught.value)


def test_opset_newer_than_the_runtime() -> None:
    opset = runtime_limits()[1] + 1
    with pytest.raises(UsageError, match=f"opset {opset} is newer") as caught:
        load_keras(sequential_model(), ConvertOptions(opset=opset))
    assert_one_line(caught.value)


class Bessel(keras.layers.Layer):  # type: ignore[misc]
    """A layer whose TF op (BesselI0e) tf2onnx cannot convert."""

    def call(self, x: Any) -> Any:
        return tf.math.special.bessel_i0e(x)


def test_unsupported_op_names_the_op_and_the_layer(tmp_path: Path) -> None:
    x = keras.Input((4,), name="x")
    y = Bessel(name="special")(keras.layers.Dense(4, name="dense")(x))
    source = load_keras(keras.Model(x, y), ConvertOptions())
    assert np.isfinite(source.reference.run({"x": np.ones((2, 4), np.float32)})["special"]).all()
    for candidate in source.candidates:
        path = tmp_path / "unsupported.onnx"
        with pytest.raises(ConversionError, match="BesselI0e") as caught:
            candidate.export(path)
        assert "'special'" in str(caught.value), candidate.exporter
        assert "--opset" in str(caught.value)
        assert_one_line(caught.value)
        assert not path.exists()
