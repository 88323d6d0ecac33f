"""`ferry convert` end to end, one source per framework, through the CLI a user types.

Each conversion is verified by the dispatcher on two values of every dynamic axis; the tests
read the report to check which exporter was kept, why, and the parity figures, then check the
written file once more with `ferry compare`-style parity against the source.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from onnxferry.cli import main
from onnxferry.model import Model
from onnxferry.parity import compare_outputs
from onnxferry.runtime import OrtRunner


def ferry(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    capsys.readouterr()  # drop what building the source printed (Keras/TF chatter)
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in map(str, args) else {}), err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error:"), err
    return lines[0]


def assert_verified(report: dict, dims: dict[str, set[int]]) -> None:  # type: ignore[type-arg]
    result = report["result"]
    assert report["ok"] and result["verified"] and result["chosen"]
    assert result["reason"]
    chosen = next(a for a in result["attempts"] if a["status"] == "chosen")
    assert chosen["parity"]["ok"] and chosen["parity"]["outputs"]
    for name, axis_values in dims.items():
        seen = {tuple(s[name]) for s in result["tested_shapes"]}
        assert {shape[0] for shape in seen} >= axis_values, (name, seen)


# --- PyTorch -------------------------------------------------------------------------------

FACTORY = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, image):
        return self.fc(torch.relu(self.bn(self.conv(image))).mean(dim=(2, 3)))

def make():
    torch.manual_seed(0)
    net = Net()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()

def broken():
    raise RuntimeError("checkpoint not found: weights.pt")
"""


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    path = tmp_path / "nets.py"
    path.write_text(FACTORY)
    return path


def test_torch_factory(capsys: pytest.CaptureFixture[str], tmp_path: Path, factory: Path) -> None:
    out = tmp_path / "net.onnx"
    code, report, _ = ferry(
        capsys, "convert", f"{factory}:make", "-o", out, "--input-shape", "image=2x3x8x8", "--json"
    )
    assert code == 0, report
    assert_verified(report, {"image": {1, 4}})
    exporters = {a["exporter"] for a in report["result"]["attempts"]}
    assert exporters == {"torch.onnx (dynamo)", "torch.onnx (torchscript)"}
    model = Model.load(out)
    assert model.signature.inputs[0].shape == ("batch", 3, 8, 8)
    assert model.metadata_props["onnxferry.exporter"] == report["result"]["chosen"]


def test_axes_and_shapes_for_an_input_the_model_lacks_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, factory: Path
) -> None:
    """batdetect2's input is ``ip``; ``--dynamic spec:0=batch,3=frames`` was taken silently
    and every axis stayed as the example had it. A name no input has is one line now, and
    nothing is written."""
    out = tmp_path / "net.onnx"
    shape = ("--input-shape", "image=2x3x8x8")
    code, _, err = ferry(capsys, "convert", f"{factory}:make", "-o", out, *shape, "--dynamic",
                         "img:0=batch")  # fmt: skip
    line = one_line(err)
    assert code == 2 and "--dynamic names 'img', which is not an input of this model" in line
    assert line.endswith("(its inputs: image); name 'image' in --dynamic")
    code, _, err = ferry(capsys, "convert", f"{factory}:make", "-o", out, "--input-shape",
                         "img=2x3x8x8")  # fmt: skip
    assert code == 2 and "no parameter 'img'; its parameters are: image" in one_line(err)
    assert not out.exists()


def test_torch_bert_with_keyword_inputs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import onnxferry

    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        vocab_size=100, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    example = {
        "input_ids": torch.randint(0, 100, (2, 6)),
        "attention_mask": torch.ones(2, 6, dtype=torch.int64),
        "token_type_ids": torch.zeros(2, 6, dtype=torch.int64),
    }
    axes = {name: {0: "batch", 1: "seq"} for name in example}
    model = onnxferry.convert(bert, tmp_path / "bert.onnx", example_inputs=example, dynamic=axes)
    result = model.provenance[-1].result
    assert result.chosen is not None
    batches = {s["input_ids"][0] for s in result.shapes}
    seqs = {s["input_ids"][1] for s in result.shapes}
    assert len(batches) >= 2 and len(seqs) >= 2
    # the written model, checked once more on a padded batch of a third shape
    from onnxferry.feeds import realistic_feeds

    feeds = realistic_feeds(model.signature, {"batch": 3, "seq": 9}, seed=5, value_ranges={
        "input_ids": (0, 100)})  # fmt: skip
    assert not feeds["attention_mask"].all()
    with torch.inference_mode():
        ref = bert(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    onnx_out = OrtRunner(model).run(feeds)
    parity = compare_outputs(
        [{"last_hidden_state": ref.last_hidden_state.numpy()}],
        [{"last_hidden_state": onnx_out["last_hidden_state"]}],
    )
    assert parity.ok, parity.summary()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{f}:broken", "checkpoint not found"),
        ("{f}:nope", "nope"),
        ("{f}:make", "image"),  # forward needs 'image', no shape given
    ],
    ids=["factory-raises", "no-such-function", "missing-forward-argument"],
)
def test_torch_bad_sources(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, factory: Path, spec: str, message: str
) -> None:
    out = tmp_path / "o.onnx"
    code, _, err = ferry(capsys, "convert", spec.format(f=factory), "-o", out)
    assert code == 2
    assert message in one_line(err)
    assert not out.exists()


def test_keras_file_named_pt(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(200))
    code, _, err = ferry(capsys, "convert", path, "-o", tmp_path / "o.onnx")
    assert code == 2
    one_line(err)
    assert not (tmp_path / "o.onnx").exists()


# --- scikit-learn --------------------------------------------------------------------------


@pytest.fixture
def pipeline_pickle(tmp_path: Path) -> Path:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    path = tmp_path / "pipe.pkl"
    path.write_bytes(pickle.dumps(pipe))
    return path


def test_sklearn_pickle_needs_trust(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pipeline_pickle: Path
) -> None:
    out = tmp_path / "pipe.onnx"
    code, _, err = ferry(capsys, "convert", pipeline_pickle, "-o", out)
    assert code == 2 and "--trust-pickle" in one_line(err)
    assert not out.exists()
    code, report, _ = ferry(
        capsys, "convert", pipeline_pickle, "-o", out, "--trust-pickle", "--json"
    )
    assert code == 0
    assert_verified(report, {"input": {1, 4}})
    outputs = next(a for a in report["result"]["attempts"] if a["status"] == "chosen")["parity"]
    by_name = {o["name"]: o for o in outputs["outputs"]}
    assert by_name["label"]["exact_match"] == 1.0  # no label flips
    assert by_name["probabilities"]["max_abs"] is not None


def test_corrupt_pickle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x04\x95" + np.random.default_rng(1).bytes(40))
    code, _, err = ferry(capsys, "convert", path, "-o", tmp_path / "o.onnx", "--trust-pickle")
    assert code == 2
    one_line(err)


# --- Keras and TFLite ----------------------------------------------------------------------


@pytest.fixture
def keras_file(tmp_path: Path) -> Path:
    pytest.importorskip("tf2onnx")
    import keras

    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="scores")(hidden))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.mark.filterwarnings("ignore:.*__array__ implementation doesn't accept a copy keyword")
def test_keras_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, keras_file: Path) -> None:
    out = tmp_path / "k.onnx"
    code, report, _ = ferry(capsys, "convert", keras_file, "-o", out, "--json")
    assert code == 0
    assert_verified(report, {"features": {1, 4}})
    assert Model.load(out).signature.output_names == ["scores"]


@pytest.mark.filterwarnings("ignore:.*__array__ implementation doesn't accept a copy keyword")
def test_tflite_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, keras_file: Path) -> None:
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(keras_file)
    path = tmp_path / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    code, report, _ = ferry(capsys, "convert", path, "-o", tmp_path / "t.onnx", "--json")
    assert code == 0
    assert_verified(report, {next(iter(report["result"]["tested_shapes"][0])): {1, 4}})


def test_tflite_random_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("tf2onnx")
    path = tmp_path / "model.tflite"
    path.write_bytes(np.random.default_rng(2).bytes(512))
    code, _, err = ferry(capsys, "convert", path, "-o", tmp_path / "o.onnx")
    assert code == 2
    one_line(err)
    assert not (tmp_path / "o.onnx").exists()


KERAS_FACTORY = """
import warnings

import keras
import numpy as np

def architecture():
    tokens = keras.Input((7,), name="tokens")  # float ids, Keras's default dtype
    h = keras.layers.Embedding(40, 4, name="embed")(tokens)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(2, name="scores")(h))

def make():
    model = architecture()
    model.load_weights("{weights}")  # a weights-only file, as libraries ship them
    warnings.warn("input_length is deprecated", UserWarning)  # as deepcut's Keras 2 code
    return model

def with_example():
    return make(), {{"tokens": np.arange(14, dtype=np.float32).reshape(2, 7)}}

def nothing():
    return "not a model"
"""


@pytest.mark.filterwarnings("ignore:.*__array__ implementation doesn't accept a copy keyword")
def test_keras_factory_builds_a_model_for_a_weights_only_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """deepcut ships Keras weights (``load_weights``) and the code that builds the model: a
    factory converts it from the command line, as a torch factory does."""
    pytest.importorskip("tf2onnx")
    import keras

    keras.utils.set_random_seed(0)
    code_file = tmp_path / "segmenter.py"
    weights = tmp_path / "segmenter.weights.h5"
    code_file.write_text(KERAS_FACTORY.format(weights=weights))
    namespace: dict[str, object] = {}
    exec(KERAS_FACTORY.format(weights=weights), namespace)  # the same code builds and saves
    trained = namespace["architecture"]()  # type: ignore[operator]
    trained.save_weights(weights)
    code, _, err = ferry(capsys, "convert", weights, "-o", tmp_path / "w.onnx")
    assert code == 2 and "weights only" in one_line(err)  # says to use a factory
    out = tmp_path / "segmenter.onnx"
    code, report, _ = ferry(capsys, "convert", f"{code_file}:make", "-o", out, "--json")
    assert code == 0, report
    assert report["result"]["framework"] == "keras"
    assert report["result"]["details"]["source"] == f"Functional from {code_file}:make"
    assert "the factory warned: UserWarning: input_length is deprecated" in report["notes"]
    assert_verified(report, {"tokens": {1, 4}})
    expected = trained.predict(np.arange(14, dtype=np.float32).reshape(2, 7), verbose=0)
    got = OrtRunner(Model.load(out)).run({"tokens": np.arange(14, dtype=np.float32).reshape(2, 7)})
    np.testing.assert_allclose(got["scores"], expected, rtol=1e-5, atol=1e-6)
    code, report, _ = ferry(
        capsys, "convert", f"{code_file}:with_example", "-o", tmp_path / "e.onnx", "--json"
    )
    assert code == 0 and report["result"]["inputs_from"] == "user samples + generated"
    code, _, err = ferry(capsys, "convert", f"{code_file}:nothing", "-o", tmp_path / "n.onnx")
    assert code == 2 and "the factory returned a str, not a model of" in one_line(err)


def test_sklearn_factory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    code_file = tmp_path / "fit.py"
    code_file.write_text(
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "def make():\n"
        "    x, y = load_iris(return_X_y=True)\n"
        "    print('fitting on', len(x), 'rows')  # stdout: --json keeps it for the JSON\n"
        "    return LogisticRegression(max_iter=500).fit(x, y)\n"
        "def with_rows():\n"
        "    x, _ = load_iris(return_X_y=True)\n"
        "    return make(), x[:3]\n"
    )
    out = tmp_path / "iris.onnx"
    code, report, err = ferry(capsys, "convert", f"{code_file}:make", "-o", out, "--json")
    assert code == 0, report  # the JSON parsed: the factory's print went to stderr
    assert "fitting on 150 rows" in err
    assert report["result"]["framework"] == "sklearn"
    assert report["result"]["details"]["source"] == f"LogisticRegression from {code_file}:make"
    assert Model.load(out).signature.output_names == ["label", "probabilities"]
    # its training rows as the example: float64, given for the float32 input
    code, report, _ = ferry(capsys, "convert", f"{code_file}:with_rows", "-o", out, "--json")
    assert code == 0 and report["result"]["inputs_from"] == "user samples + generated"


# --- compare an ONNX model with its source -------------------------------------------------


def test_compare_model_with_its_torch_source(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, factory: Path
) -> None:
    out = tmp_path / "net.onnx"
    shape = ("--input-shape", "image=2x3x8x8")
    assert ferry(capsys, "convert", f"{factory}:make", "-o", out, *shape)[0] == 0
    code, report, _ = ferry(capsys, "compare", out, f"{factory}:make", *shape, "--json")
    assert code == 0 and report["ok"]
    assert report["result"]["reference"].startswith("torch:")
    assert report["result"]["samples"] == 2  # batch 1 and 4


def test_compare_altered_model_names_the_first_diverging_module(
    tmp_path: Path, factory: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    from onnxferry.convert import compare_to_source, convert

    spec = f"{factory}:make"
    model = convert(spec, tmp_path / "net.onnx", input_shapes={"image": (2, 3, 8, 8)})
    proto = onnx.load(str(model.path))
    fc = next(t for t in proto.graph.initializer if list(t.dims) == [5, 4])  # fc.weight
    fc.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc) * 1.5, fc.name))
    onnx.save(proto, str(tmp_path / "altered.onnx"))
    report = compare_to_source(
        tmp_path / "altered.onnx", spec, input_shapes={"image": (2, 3, 8, 8)}
    )
    assert not report.ok
    worst = report.result.worst
    assert worst is not None and worst.max_abs is not None and worst.max_abs > 1e-3
