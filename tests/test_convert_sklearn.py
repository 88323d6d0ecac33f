"""scikit-learn to ONNX: every conversion ends in a parity check against the estimator itself.

Models are trained in the test on generated data, or on the bundled tests/data/regression.csv
(written by tests/data/make_regression_csv.py).
"""

# ruff: noqa: E402  (imports after the importorskip guards)

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
joblib = pytest.importorskip("joblib")

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVR, LinearSVC

from onnxferry.convert.base import ConversionError, ConvertOptions, Source
from onnxferry.convert.dispatch import detect_framework
from onnxferry.convert.sklearn import FLOAT64_TOLERANCE, SklearnRunner, load_sklearn
from onnxferry.errors import FerryError, InputError, UsageError
from onnxferry.model import Model
from onnxferry.parity import Parity, Tolerance, compare_outputs
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

DATA = Path(__file__).parent / "data" / "regression.csv"
BATCHES = (1, 7)


def verify(source: Source, tmp_path: Path, rows: np.ndarray) -> Parity:
    """Export the candidate, load it, and compare ONNX Runtime with the estimator at batch
    sizes 1 and 7 (rows cast to the model's input dtype); outputs must agree in names, shapes
    and dtypes before their values are judged."""
    path = tmp_path / "model.onnx"
    source.candidates[0].export(path)
    model = Model.load(path)
    assert model.signature == source.reference.signature
    runner = OrtRunner(model)
    dtype = model.signature.inputs[0].dtype.numpy
    feeds, start = [], 0
    for batch in BATCHES:
        feeds.append({"input": np.ascontiguousarray(rows[start : start + batch], dtype=dtype)})
        start += batch
    refs = [source.reference.run(f) for f in feeds]
    cands = [runner.run(f) for f in feeds]
    for ref, cand in zip(refs, cands, strict=True):
        assert list(ref) == list(cand)
        for name in ref:
            assert (ref[name].dtype, ref[name].shape) == (cand[name].dtype, cand[name].shape)
    return compare_outputs(
        refs,
        cands,
        source.tolerance or Tolerance(),
        reference_name=source.reference.name,
        candidate_name=runner.name,
    )


def assert_one_line(error: FerryError, *words: str) -> None:
    text = str(error)
    assert error.exit_code == 2
    assert "\n" not in text
    for word in words:
        assert word in text


def outputs(parity: Parity) -> dict[str, Any]:
    return {o.name: o for o in parity.outputs}


def classification_data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 10.0, -2.0, 0.0]
    y = (x[:, 0] + 0.3 * (x[:, 1] - 10) > 0).astype(np.int64) + (x[:, 3] > 1.5)
    return x, y


def regression_data() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(DATA, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1]


def logistic_pipeline() -> Pipeline:
    x, y = classification_data()
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(x, y)


# --- classifiers ------------------------------------------------------------------------------


def test_pipeline_classifier_matches_sklearn(tmp_path: Path) -> None:
    pipeline = logistic_pipeline()
    source = load_sklearn(pipeline, ConvertOptions())
    assert source.framework == "sklearn"
    assert source.details["estimator"] == "Pipeline(StandardScaler, LogisticRegression)"
    assert source.details["task"] == "classification"
    assert source.details["dtype"] == "float32"
    assert source.details["classes"] == [0, 1, 2]
    assert source.tolerance == Tolerance(atol=1e-4, rtol=1e-3)
    sig = source.reference.signature
    assert [(s.name, s.dtype.onnx_name, s.shape) for s in (*sig.inputs, *sig.outputs)] == [
        ("input", "FLOAT", ("batch", 4)),
        ("label", "INT64", ("batch",)),
        ("probabilities", "FLOAT", ("batch", 3)),
    ]
    parity = verify(source, tmp_path, classification_data(seed=1)[0])
    assert parity.ok, parity.summary()
    by_name = outputs(parity)
    assert by_name["label"].exact_match == 1.0
    assert by_name["probabilities"].max_abs is not None
    assert by_name["probabilities"].max_abs < 1e-5


def test_tree_classifier_with_string_labels(tmp_path: Path) -> None:
    x, y = classification_data()
    labels = np.array(["low", "mid", "high"])[y]
    forest = RandomForestClassifier(n_estimators=12, max_depth=5, random_state=0).fit(x, labels)
    source = load_sklearn(forest, ConvertOptions())
    assert source.reference.signature.outputs[0].dtype.onnx_name == "STRING"
    parity = verify(source, tmp_path, classification_data(seed=2)[0])
    assert parity.ok, parity.summary()
    assert outputs(parity)["label"].exact_match == 1.0
    assert outputs(parity)["probabilities"].max_abs is not None


def test_classifier_without_predict_proba_compares_scores(tmp_path: Path) -> None:
    x, y = classification_data()
    svm = LinearSVC().fit(x, y > 0)  # binary, decision_function only: one score column
    source = load_sklearn(svm, ConvertOptions())
    assert source.reference.signature.outputs[1].shape == ("batch", 1)
    parity = verify(source, tmp_path, classification_data(seed=3)[0])
    assert parity.ok, parity.summary()
    assert outputs(parity)["label"].exact_match == 1.0


# --- regressors and the float64 rule --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "dtype"),
    [
        (lambda: Pipeline([("scale", StandardScaler()), ("reg", Ridge(alpha=0.5))]), "float64"),
        (
            lambda: GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0),
            "float32",
        ),
    ],
    ids=["ridge-pipeline", "gradient-boosting"],
)
def test_regressor_on_bundled_dataset(make: Callable[[], Any], dtype: str, tmp_path: Path) -> None:
    """Linear models compute in float64 and are exported in float64; trees round their inputs
    to float32 themselves, so their float32 export is what scikit-learn computes."""
    x, y = regression_data()
    regressor = make().fit(x[:200], y[:200])
    source = load_sklearn(regressor, ConvertOptions())
    assert source.details["task"] == "regression"
    assert source.details["dtype"] == dtype
    output = source.reference.signature.outputs[0]
    assert (output.name, output.shape, str(output.dtype.numpy)) == ("variable", ("batch", 1), dtype)
    parity = verify(source, tmp_path, x[200:])
    assert parity.ok, parity.summary()
    assert parity.max_abs < (1e-9 if dtype == "float64" else 1e-3)


def cancelling_regression() -> tuple[LinearRegression, np.ndarray]:
    """y = 3 x0 - 3 x1 + x2 - 1e5 on features near 1e5: terms of 3e5 cancel to outputs of a
    few units, which float32 (a step of 0.03 at 3e5) cannot resolve."""
    rng = np.random.default_rng(4)
    x = 1e5 + rng.standard_normal((120, 3))
    y = 3 * x[:, 0] - 3 * x[:, 1] + x[:, 2] - 1e5
    return LinearRegression().fit(x[:100], y[:100]), x[100:]


def test_float64_rule_keeps_a_cancelling_regressor_exact(tmp_path: Path) -> None:
    regressor, rows = cancelling_regression()
    source = load_sklearn(regressor, ConvertOptions())
    assert source.details["dtype"] == "float64"
    assert "computes in float64" in source.details["dtype_reason"]
    assert source.tolerance == FLOAT64_TOLERANCE
    parity = verify(source, tmp_path, rows)
    assert parity.ok, parity.summary()
    assert parity.max_abs < 1e-8


def test_float32_samples_export_float32_and_parity_shows_the_loss(tmp_path: Path) -> None:
    """The same regressor forced to float32 by the user's samples: parity measures the error
    and fails it, which is why the rule picks float64 by itself."""
    regressor, rows = cancelling_regression()
    samples = [{"input": rows[:4].astype(np.float32)}]
    source = load_sklearn(regressor, ConvertOptions(sample_inputs=samples))
    assert source.details["dtype"] == "float32"
    assert source.details["dtype_reason"] == "the sample inputs are float32"
    parity = verify(source, tmp_path, rows)
    assert not parity.ok
    assert parity.max_abs > 1e-3


def test_float64_samples_run_a_classifier_in_float64_end_to_end(tmp_path: Path) -> None:
    samples = [{"input": classification_data(seed=5)[0][:3]}]
    source = load_sklearn(logistic_pipeline(), ConvertOptions(sample_inputs=samples))
    sig = source.reference.signature
    assert [s.dtype.onnx_name for s in (*sig.inputs, *sig.outputs)] == ["DOUBLE", "INT64", "DOUBLE"]
    parity = verify(source, tmp_path, classification_data(seed=5)[0])
    assert parity.ok, parity.summary()
    assert outputs(parity)["label"].exact_match == 1.0
    assert outputs(parity)["probabilities"].max_abs is not None
    assert outputs(parity)["probabilities"].max_abs < 1e-12


def test_float64_falls_back_to_float32_where_onnxruntime_lacks_it(tmp_path: Path) -> None:
    """SVR computes in float64, but onnxruntime has no float64 SVMRegressor (1.31)."""
    x, y = regression_data()
    regressor = Pipeline([("scale", StandardScaler()), ("svr", SVR())]).fit(x[:200], y[:200])
    source = load_sklearn(regressor, ConvertOptions())
    assert source.details["dtype"] == "float32"
    assert "cannot run in float64" in source.details["dtype_reason"]
    parity = verify(source, tmp_path, x[200:])
    assert parity.ok, parity.summary()


def test_float64_samples_for_a_tree_regressor_ask_for_float32(tmp_path: Path) -> None:
    """skl2onnx 1.20 writes float64 tree ensembles that onnxruntime rejects: with float64
    samples that is a ConversionError telling the user to pass float32 ones."""
    x, y = regression_data()
    regressor = GradientBoostingRegressor(n_estimators=5, random_state=0).fit(x, y)
    source = load_sklearn(regressor, ConvertOptions(sample_inputs=[{"input": x[:2]}]))
    with pytest.raises(ConversionError) as caught:
        source.candidates[0].export(tmp_path / "unused.onnx")
    assert_one_line(caught.value, "GradientBoostingRegressor", "float64", "float32 sample inputs")


def test_dynamic_batch_name_and_option_errors(tmp_path: Path) -> None:
    options = ConvertOptions(dynamic_axes={"input": {0: "rows"}})
    source = load_sklearn(logistic_pipeline(), options)
    assert source.reference.signature.inputs[0].shape == ("rows", 4)
    assert source.reference.signature.outputs[1].shape == ("rows", 3)
    parity = verify(source, tmp_path, classification_data(seed=6)[0])
    assert parity.ok, parity.summary()
    for bad in (
        ConvertOptions(dynamic_axes={"x": {0: "batch"}}),
        ConvertOptions(input_shapes={"input": (1, 5)}),
        ConvertOptions(dynamic_axes={"input": {1: "features"}}),
    ):
        with pytest.raises(UsageError) as caught:
            load_sklearn(logistic_pipeline(), bad)
        assert_one_line(caught.value, "input")
    with pytest.raises(InputError) as int_samples:
        load_sklearn(
            logistic_pipeline(),
            ConvertOptions(sample_inputs=[{"input": np.ones((2, 4), np.int64)}]),
        )
    assert_one_line(int_samples.value, "int64", "float32")


# --- files ------------------------------------------------------------------------------------


def dump(estimator: Any, path: Path) -> Path:
    if path.suffix == ".joblib":
        joblib.dump(estimator, path)
    else:
        with path.open("wb") as f:
            pickle.dump(estimator, f)
    return path


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "classifier"])
def test_pickle_and_joblib_files_round_trip(name: str, tmp_path: Path) -> None:
    """A pickle under no pickle's name (talon ships its classifier as ``classifier``) is
    told by its first bytes."""
    path = dump(logistic_pipeline(), tmp_path / name)
    assert detect_framework(path) == "sklearn"
    source = load_sklearn(path, ConvertOptions(trust_pickle=True))
    assert source.details["origin"] == str(path)
    assert source.details["estimator"] == "Pipeline(StandardScaler, LogisticRegression)"
    parity = verify(source, tmp_path, classification_data(seed=7)[0])
    assert parity.ok, parity.summary()
    assert outputs(parity)["label"].exact_match == 1.0


class RunsCode:
    """Unpickling this creates ``marker``: what a hostile pickle could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib", "classifier"])
def test_pickle_path_is_refused_without_trust(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = dump(RunsCode(marker), tmp_path / name)
    with pytest.raises(InputError) as caught:
        load_sklearn(path, ConvertOptions())
    assert_one_line(caught.value, "runs code", "--trust-pickle", "trusted source")
    assert not marker.exists()
    with pytest.raises(InputError) as again:
        load_sklearn(str(path), ConvertOptions(trust_pickle=False))
    assert_one_line(again.value, "--trust-pickle")


@pytest.mark.parametrize(
    "content",
    [b"this is not a pickle", pickle.dumps(LinearRegression())[:30], b""],
    ids=["garbage", "truncated", "empty"],
)
@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_corrupt_pickle(content: bytes, suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        load_sklearn(path, ConvertOptions(trust_pickle=True))
    assert_one_line(caught.value, str(path), "joblib.dump")
    assert ("is empty" if not content else "cannot unpickle") in str(caught.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        load_sklearn(tmp_path / "nope.pkl", ConvertOptions(trust_pickle=True))
    assert_one_line(missing.value, "does not exist")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(InputError) as suffix:
        load_sklearn(tmp_path / "model.bin", ConvertOptions(trust_pickle=True))
    assert_one_line(suffix.value, ".pkl", ".joblib")


def test_pickle_of_something_else(tmp_path: Path) -> None:
    path = dump({"weights": [1.0, 2.0]}, tmp_path / "weights.pkl")
    with pytest.raises(InputError) as caught:
        load_sklearn(path, ConvertOptions(trust_pickle=True))
    assert_one_line(caught.value, str(path), "holds a dict", "not a fitted scikit-learn estimator")


def test_another_framework_s_model_in_a_pickle_is_named(tmp_path: Path) -> None:
    """A torch module pickled with pickle (not torch.save) under a .pkl name: the hint said
    to pass a fitted estimator; it now says what the model is and how to give it."""
    torch = pytest.importorskip("torch")
    path = dump(torch.nn.Linear(3, 2), tmp_path / "net.pkl")
    with pytest.raises(InputError) as caught:
        load_sklearn(path, ConvertOptions(trust_pickle=True))
    assert_one_line(caught.value, "holds a Linear")
    assert "it is a PyTorch model: save it with torch.save" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(), Pipeline([("scale", StandardScaler()), ("reg", Ridge())])],
    ids=["estimator", "pipeline"],
)
def test_unfitted_estimator(estimator: Any) -> None:
    with pytest.raises(InputError) as caught:
        load_sklearn(estimator, ConvertOptions())
    assert_one_line(caught.value, "not fitted", "fit(X, y)")


class FitOnly(BaseEstimator):  # type: ignore[misc]
    """Fitted, but with nothing to apply to a new row."""

    def fit(self, x: np.ndarray, y: Any = None) -> FitOnly:
        self.mean_ = np.mean(x)
        return self


def test_an_estimator_that_does_nothing_to_new_rows() -> None:
    with pytest.raises(InputError) as caught:
        load_sklearn(FitOnly().fit(np.ones((3, 2))), ConvertOptions())
    assert_one_line(caught.value, "FitOnly", "not a classifier, regressor, outlier detector")


# --- what skl2onnx cannot convert ---------------------------------------------------------------


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A custom step with no skl2onnx converter."""

    def fit(self, x: np.ndarray, y: Any = None) -> Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x * 2.0


@pytest.mark.parametrize(
    ("step", "cls"),
    [
        (FunctionTransformer(lambda x: x * 2.0), "FunctionTransformer"),
        (Doubler(), "Doubler"),
    ],
    ids=["lambda", "custom-class"],
)
def test_unconvertible_step_is_named(step: Any, cls: str, tmp_path: Path) -> None:
    x, y = classification_data()
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("twice", step), ("clf", LogisticRegression())]
    ).fit(x, y)
    source = load_sklearn(pipeline, ConvertOptions())
    assert isinstance(source.reference, SklearnRunner)
    assert source.reference.run({"input": x[:2].astype(np.float32)})["label"].shape == (2,)
    with pytest.raises(ConversionError) as caught:
        source.candidates[0].export(tmp_path / "unused.onnx")
    assert_one_line(caught.value, "'twice'", cls, "update_registered_converter")


def test_import_stays_light() -> None:
    code = "import sys, onnxferry.convert.sklearn; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_model_that_refuses_generated_values_converts_on_rows_like_the_users(
    ferry: Run, tmp_path: Path
) -> None:
    """Box-Cox takes strictly positive values only. Given the user's rows, the other sizes
    checked were standard normal values, and the refusal was called a dim that is not free
    (exit 2, "--dynamic static"); they are the user's rows now. Without rows, one line says
    the values, not the sizes, are refused."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PowerTransformer

    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 1, (60, 4))
    model = make_pipeline(PowerTransformer(method="box-cox"), LogisticRegression())
    model.fit(x, (x[:, 0] > 1).astype(int))
    path = tmp_path / "boxcox.pkl"
    path.write_bytes(pickle.dumps(model))
    np.savez(tmp_path / "rows.npz", input=x[:5].astype(np.float32))
    out = tmp_path / "boxcox.onnx"
    code, _, err = ferry("convert", path, "-o", out, "--trust-pickle")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "fails on the values generated" in err and "--inputs" in err, err
    code, _, err = ferry(
        "convert", path, "-o", out, "--trust-pickle", "--inputs", tmp_path / "rows.npz"
    )
    assert code == 0, err
    rows = x[10:20].astype(np.float32)
    got = OrtRunner(Model.load(out)).run({"input": rows})
    np.testing.assert_array_equal(got["label"], model.predict(rows))
