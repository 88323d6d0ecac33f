"""TFLite flatbuffers to ONNX with tf2onnx, verified against the TFLite interpreter at two
batch sizes; corrupt files are refused with one line (and never crash the process)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

import keras
import tensorflow as tf

from onnxferry.convert import Conversion, convert
from onnxferry.convert.against import compare_to_source
from onnxferry.convert.base import ConversionError, ConvertOptions
from onnxferry.convert.tf_common import convert_with_tf2onnx
from onnxferry.convert.tflite import TFLiteRunner, litert_interpreter, load_tflite
from onnxferry.convert.tflite_rewrite import for_tf2onnx, sparse_tensors
from onnxferry.errors import FeedError, FerryError, InputError
from onnxferry.feeds import realistic_feeds
from onnxferry.model import Model
from onnxferry.parity import compare_outputs
from onnxferry.runtime import OrtRunner, runtime_limits

pytestmark = pytest.mark.slow


def keras_model() -> Any:
    features = keras.Input((8,), name="features")
    image = keras.Input((6, 6, 3), name="image")
    h = keras.layers.Dense(5, activation="relu", name="dense")(features)
    c = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    c = keras.layers.GlobalAveragePooling2D(name="pool")(c)
    joined = keras.layers.Concatenate(name="cat")([h, c])
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(joined)
    score = keras.layers.Dense(1, name="score")(joined)
    return keras.Model([features, image], [probs, score], name="two_io")


@pytest.fixture(scope="module")
def flatbuffer() -> bytes:
    blob: bytes = tf.lite.TFLiteConverter.from_keras_model(keras_model()).convert()
    return blob


@pytest.fixture
def tflite_path(tmp_path: Path, flatbuffer: bytes) -> Path:
    path = tmp_path / "two_io.tflite"
    path.write_bytes(flatbuffer)
    return path


def test_tflite_converts_and_matches_the_interpreter(tmp_path: Path, tflite_path: Path) -> None:
    source = load_tflite(tflite_path, ConvertOptions())
    reference = source.reference
    assert source.framework == "tflite"
    assert reference.signature.input_names == ["features", "image"]
    assert reference.signature.output_names == ["output_0", "output_1"]
    assert reference.signature.inputs[1].shape == ("batch", 6, 6, 3)
    assert [c.exporter for c in source.candidates] == ["tf2onnx"]
    path = tmp_path / "two_io.onnx"
    source.candidates[0].export(path)
    model = Model.load(path)
    assert model.signature.input_names == reference.signature.input_names
    assert model.signature.output_names == reference.signature.output_names
    assert model.signature.inputs[0].shape == ("batch", 8)
    assert model.ir_version <= runtime_limits()[0]
    assert model.opset_imports["ai.onnx"] == min(17, runtime_limits()[1])
    runner = OrtRunner(model)
    for seed, batch in enumerate((1, 6)):
        feeds = realistic_feeds(reference.signature, {"batch": batch}, seed=seed)
        parity = compare_outputs(
            [reference.run(feeds)], [runner.run(feeds)], reference_name=reference.name
        )
        assert parity.ok, parity.summary()
        assert parity.outputs[0].cand_shape == (batch, 3)


def test_litert_reference_kernels_measure_noise_and_excuse_no_real_difference(
    tmp_path: Path, tflite_path: Path
) -> None:
    """The second opinion runs LiteRT's reference kernels: on this small model they agree
    with the default ones to float rounding, so an ONNX model with one weight 1% off still
    fails, with nothing excused; the true conversion passes with no note either."""
    source = load_tflite(tflite_path, ConvertOptions())
    assert source.second_reference is not None
    second = source.second_reference()
    assert second.name == "two_io@tflite (reference kernels)"
    feeds = realistic_feeds(source.reference.signature, {"batch": 3}, seed=0)
    spread = compare_outputs([source.reference.run(feeds)], [second.run(feeds)])
    assert spread.ok and spread.max_abs < 1e-5, spread.summary()
    path = tmp_path / "two_io.onnx"
    source.candidates[0].export(path)
    right = compare_to_source(path, tflite_path)
    assert right.result.ok and not right.result.notes, right.result.summary()
    proto = onnx.load(str(path))
    weight = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(proto, str(tmp_path / "off.onnx"))
    wrong = compare_to_source(tmp_path / "off.onnx", tflite_path)
    assert not wrong.result.ok and not wrong.result.notes, wrong.result.summary()
    assert all(o.source_noise is None for o in wrong.result.outputs)


def test_the_cli_prints_nothing_of_tensorflow_or_litert(tmp_path: Path, tflite_path: Path) -> None:
    """In a fresh process, TensorFlow's start-up lines (absl's "I0000 ... oneDNN custom
    operations are on", whatever TF_CPP_MIN_LOG_LEVEL says) and LiteRT's "Created TensorFlow
    Lite XNNPACK delegate" stay off the terminal; ``-v`` shows them as debug lines."""
    command = [sys.executable, "-m", "onnxferry", "convert", str(tflite_path)]
    done = subprocess.run(
        [*command, "-o", str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"wrote {tmp_path / 'm.onnx'}"], done.stderr
    verbose = subprocess.run(
        [sys.executable, "-m", "onnxferry", "-v", *command[3:], "-o", str(tmp_path / "v.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "ferry: debug: litert: INFO: Created TensorFlow Lite XNNPACK" in verbose.stderr


def test_the_interpreter_runs_any_batch_after_another(tflite_path: Path) -> None:
    runner = TFLiteRunner(tflite_path, probe=False)
    small = realistic_feeds(runner.signature, {"batch": 1}, seed=1)
    large = realistic_feeds(runner.signature, {"batch": 3}, seed=2)
    first = runner.run(small)["output_0"]
    assert runner.run(large)["output_0"].shape == (3, 3)
    np.testing.assert_array_equal(runner.run(small)["output_0"], first)


def test_a_static_dim_cannot_change(tflite_path: Path) -> None:
    runner = TFLiteRunner(tflite_path, ConvertOptions(dynamic_axes={}), probe=False)
    assert runner.signature.inputs[0].shape == (None, 8)
    feeds = realistic_feeds(runner.signature, seed=0)
    feeds["image"] = np.zeros((1, 5, 5, 3), np.float32)
    with pytest.raises(FeedError, match="image"):
        runner.run(feeds)


# --- bad input ---------------------------------------------------------------------------


def assert_one_line(error: FerryError) -> None:
    assert error.exit_code == 2
    assert "\n" not in str(error)
    assert len(str(error)) < 500


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(InputError, match="not a TFLite flatbuffer") as caught:
        load_tflite(path, ConvertOptions())
    assert_one_line(caught.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_flatbuffer(tmp_path: Path, flatbuffer: bytes, fraction: float) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer[: int(len(flatbuffer) * fraction)])
    with pytest.raises(InputError, match="corrupt or truncated") as caught:
        load_tflite(path, ConvertOptions())
    assert_one_line(caught.value)


def test_a_flatbuffer_that_crashes_the_interpreter(tmp_path: Path, flatbuffer: bytes) -> None:
    """A string length past its end: the interpreter segfaults, or (builds that verify the
    flatbuffer first, e.g. the full `tensorflow` wheel) refuses the buffer; either way one
    line, and this process lives (the check runs the interpreter aside)."""
    data = bytearray(flatbuffer)
    at = data.find(b"CONVERSION_METADATA")
    assert at > 0
    data[at - 2] = 162  # the third byte of the string's length
    path = tmp_path / "model.tflite"
    path.write_bytes(bytes(data))
    refused = "crashes on this file|not a valid Flatbuffer"
    with pytest.raises(InputError, match=refused) as caught:
        load_tflite(path, ConvertOptions())
    assert_one_line(caught.value)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_not_a_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.tflite"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(InputError, match="not a TFLite model") as caught:
        load_tflite(path, ConvertOptions())
    assert_one_line(caught.value)


def test_sparse_weights_are_made_dense_and_the_conversion_verified_against_them(
    tmp_path: Path,
) -> None:
    """The TFLite converter's sparsity optimization stores mostly-zero weights sparse and
    expands them with DENSIFY at run time; tf2onnx cannot read them (MediaPipe's sparse
    detectors were refused). They are made dense from LiteRT's own DENSIFY results, and the
    ONNX model is verified against the sparse original."""
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(32, 3, name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(image, keras.layers.Dense(64, name="dense")(x))
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("conv"), model.get_layer("dense")):
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * (rng.uniform(size=kernel.shape) < 0.2), bias])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = tmp_path / "sparse.tflite"
    path.write_bytes(converter.convert())
    assert len(sparse_tensors(path)) == 2
    kept = lambda: litert_interpreter(path, "reference", keep_all_tensors=True)  # noqa: E731
    dense = for_tf2onnx(path, tmp_path / "dense.tflite", kept)
    assert dense is not None and sparse_tensors(dense) == []
    out = convert(path, tmp_path / "sparse.onnx")
    report = out.last_report(Conversion).result
    assert report.verified and report.chosen == "tf2onnx", report.attempts
    feeds = realistic_feeds(TFLiteRunner(path, probe=False).signature, {"batch": 2}, seed=1)
    parity = compare_outputs(
        [TFLiteRunner(path, probe=False).run(feeds)], [OrtRunner(out).run(feeds)]
    )
    assert parity.ok, parity.summary()


def _spectrum_tflite(path: Path, part: str) -> Path:
    """An STFT over 4096 samples (RFFT2D in TFLite), its real part (``tf.cast``) or its
    magnitude (``tf.abs``), with an open batch."""

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, 4096], tf.float32, name="audio")]
    )
    def spectrum(audio: Any) -> Any:
        stft = tf.signal.stft(audio, frame_length=512, frame_step=256)
        return tf.math.real(stft) if part == "real" else tf.abs(stft)

    concrete = spectrum.get_concrete_function()
    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([concrete], spectrum).convert()
    )
    return path


def test_an_stft_taken_for_its_real_part_converts_as_a_matrix_product(tmp_path: Path) -> None:
    """BirdNET takes its spectrogram's real part: RFFT2D -> SQUEEZE -> CAST to float, which
    tf2onnx refused (it converts RFFT2D only into a magnitude). The RFFT over one row becomes
    a product with the DFT's cosines, verified against LiteRT's FFT on the original file."""
    path = _spectrum_tflite(tmp_path / "real.tflite", "real")
    out = convert(path, tmp_path / "real.onnx")
    report = out.last_report(Conversion).result
    assert report.verified and report.chosen == "tf2onnx", report.attempts
    ops = {node.op_type for node in out.proto.graph.node}
    assert "MatMul" in ops and not ops & {"DFT", "RFFT2D"}, ops
    feeds = {"audio": np.random.default_rng(3).uniform(-1, 1, (3, 4096)).astype(np.float32)}
    parity = compare_outputs(
        [TFLiteRunner(path, probe=False).run(feeds)], [OrtRunner(out).run(feeds)]
    )
    assert parity.ok, parity.summary()


def test_an_stft_magnitude_behind_a_squeeze_converts_with_the_magnitude_moved_first(
    tmp_path: Path,
) -> None:
    """``tf.abs(tf.signal.stft(...))``, the common spectrogram, is RFFT2D -> SQUEEZE ->
    COMPLEX_ABS in TFLite, and tf2onnx refused the SQUEEZE between them. The magnitude moves
    to right after the FFT (a shape op commutes with it) and converts, verified."""
    path = _spectrum_tflite(tmp_path / "abs.tflite", "abs")
    out = convert(path, tmp_path / "abs.onnx")
    assert out.last_report(Conversion).result.verified
    feeds = {"audio": np.random.default_rng(4).uniform(-1, 1, (2, 4096)).astype(np.float32)}
    want = TFLiteRunner(path, probe=False).run(feeds)
    parity = compare_outputs([want], [OrtRunner(out).run(feeds)])
    assert parity.ok and parity.outputs[0].ref_shape == (2, 15, 257), parity.summary()


def test_unsupported_tflite_op_is_named() -> None:
    """tf2onnx logs only a summary for TFLite ops it cannot map; the error names them."""

    def convert(opset: int) -> onnx.ModelProto:
        logging.getLogger("tf2onnx.tfonnx").error(
            "Unsupported ops: %s", Counter({"TFL_FANCY": 1, "TFL_OTHER": 2})
        )
        return onnx.ModelProto()

    with pytest.raises(ConversionError, match=r"TFLite op TFL_FANCY .*also TFL_OTHER") as caught:
        convert_with_tf2onnx(convert, 17, framework="TFLite")
    assert "--opset" in str(caught.value)
    assert_one_line(caught.value)


def test_an_open_batch_the_model_fixes_inside_says_how_to_convert_it(tmp_path: Path) -> None:
    """EfficientWord-Net's log-mel model declares ``input_2: [-1, 16000]`` and reshapes to a
    fixed ``[98, 64]``: it runs at batch 1 only, and LiteRT's failure at batch 4 was "check
    that the file is a whole .tflite model" (and --input-shape did not pin the batch). It now
    names the sizes it runs at and the options that convert it; they do."""

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[tf.TensorSpec([None, 64], tf.float32, name="audio")]
    )
    def frames(audio: Any) -> Any:
        return tf.reshape(audio * 2.0, [8, 8])

    concrete = frames.get_concrete_function()
    path = tmp_path / "fixed.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], frames).convert())
    with pytest.raises(InputError) as caught:
        convert(path, tmp_path / "open.onnx")
    message = str(caught.value)
    assert "runs on audio[1,64] but fails on audio[4,64]" in message, message
    assert message.endswith("--dynamic static --input-shape audio=1x64"), message
    assert "\n" not in message and not (tmp_path / "open.onnx").exists()
    out = convert(path, tmp_path / "fixed.onnx", dynamic={}, input_shapes={"audio": [1, 64]})
    assert out.last_report(Conversion).result.verified
