"""LightGBM and XGBoost to ONNX: their scikit-learn estimators (alone and inside pipelines),
their own model files and Booster objects, each verified against the library's predictions.

Models are trained in the test on scikit-learn's bundled data sets (breast cancer, wine,
diabetes), whose values are not float32-exact, as real tables are not.
"""

# ruff: noqa: E402  (imports after the importorskip guards)

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxmltools")
lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")
joblib = pytest.importorskip("joblib")

from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import onnxferry
from onnxferry.convert.base import ConversionError
from onnxferry.convert.dispatch import Conversion, detect_framework
from onnxferry.errors import InputError
from onnxferry.runtime import OrtRunner

QUIET = {"verbose": -1}


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"cancer": load_breast_cancer, "wine": load_wine, "diabetes": load_diabetes}[name]
    x, y = loader(return_X_y=True)
    return np.asarray(x), np.asarray(y)


def _agrees(model: onnxferry.Model, estimator: Any, rows: np.ndarray) -> None:
    """ONNX Runtime on the data set's own rows gives the estimator's predictions."""
    x = rows.astype(model.signature.inputs[0].dtype.numpy)
    got = OrtRunner(model).run({"input": x})
    if "probabilities" in got:
        np.testing.assert_allclose(got["probabilities"], estimator.predict_proba(x), atol=1e-5)
        assert (got["label"] == estimator.predict(x)).all()
    else:
        expected = np.asarray(estimator.predict(x)).reshape(-1, 1)
        np.testing.assert_allclose(got["variable"], expected, rtol=1e-5, atol=1e-3)


ESTIMATORS: dict[str, tuple[Callable[[], Any], str]] = {
    "lgbm binary in a pipeline": (
        lambda: make_pipeline(StandardScaler(), lgb.LGBMClassifier(n_estimators=30, **QUIET)),
        "cancer",
    ),
    "lgbm multiclass": (lambda: lgb.LGBMClassifier(n_estimators=20, **QUIET), "wine"),
    "lgbm poisson regressor": (
        lambda: lgb.LGBMRegressor(objective="poisson", n_estimators=40, **QUIET),
        "diabetes",
    ),
    "xgb binary": (lambda: xgb.XGBClassifier(n_estimators=30), "cancer"),
    "xgb multiclass softprob": (lambda: xgb.XGBClassifier(n_estimators=20), "wine"),
    "xgb regressor": (lambda: xgb.XGBRegressor(n_estimators=40), "diabetes"),
    "xgb random forest": (lambda: xgb.XGBRFClassifier(n_estimators=10), "cancer"),
}


@pytest.mark.parametrize("case", list(ESTIMATORS))
def test_booster_estimators_convert_verified(case: str, tmp_path: Path) -> None:
    make, data = ESTIMATORS[case]
    x, y = _data(data)
    estimator = make().fit(x, y)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    report = model.last_report(Conversion).result
    assert report.verified
    assert report.chosen == "skl2onnx + onnxmltools"
    assert "onnxmltools" in report.details["versions"]
    _agrees(model, estimator, x)


def test_xgboost_softmax_probabilities_are_predict_proba(tmp_path: Path) -> None:
    """onnxmltools leaves multi:softmax's margins as the probabilities; predict_proba gives
    their softmax, and so does the converted model."""
    x, y = _data("wine")
    estimator = xgb.XGBClassifier(objective="multi:softmax", n_estimators=20).fit(x, y)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    _agrees(model, estimator, x)
    probabilities = OrtRunner(model).run({"input": x.astype(np.float32)})["probabilities"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_xgboost_fit_on_a_dataframe_converts(tmp_path: Path) -> None:
    """A booster fit on a DataFrame names its features after the columns; onnxmltools reads
    only f0, f1, ... and stopped on the first name."""
    pd = pytest.importorskip("pandas")
    x, y = _data("diabetes")
    frame = pd.DataFrame(x, columns=[f"col_{i}" for i in range(x.shape[1])])
    estimator = xgb.XGBRegressor(n_estimators=30).fit(frame, y)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    _agrees(model, estimator, x)
    assert estimator.get_booster().feature_names[0] == "col_0"  # the user's model untouched


def test_lightgbm_string_classes(tmp_path: Path) -> None:
    x, y = _data("wine")
    estimator = lgb.LGBMClassifier(n_estimators=10, **QUIET).fit(x, np.array(["a", "b", "c"])[y])
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    got = OrtRunner(model).run({"input": x.astype(np.float32)})
    assert list(got["label"][:3]) == list(estimator.predict(x.astype(np.float32))[:3])
    _agrees(model, estimator, x)


REFUSED: dict[str, tuple[Callable[[], Any], str, str]] = {
    "lightgbm random forest": (
        lambda: lgb.LGBMClassifier(
            boosting_type="rf", bagging_freq=1, bagging_fraction=0.7, n_estimators=10, **QUIET
        ),
        "cancer",
        "random-forest mode",
    ),
    "lightgbm linear trees": (
        lambda: lgb.LGBMRegressor(linear_tree=True, n_estimators=10, **QUIET),
        "diabetes",
        "linear trees",
    ),
    "xgboost gblinear": (
        lambda: xgb.XGBRegressor(booster="gblinear", n_estimators=10),
        "diabetes",
        "'gblinear' booster",
    ),
    "xgboost dart": (
        lambda: xgb.XGBClassifier(booster="dart", n_estimators=10),
        "cancer",
        "'dart' booster",
    ),
    "xgboost logitraw": (
        lambda: xgb.XGBClassifier(objective="binary:logitraw", n_estimators=10),
        "cancer",
        "binary:logitraw",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_onnxmltools_gets_wrong_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    """Each of these converted silently wrong (random forest: probabilities divided by 100;
    linear trees: the leaves' slopes dropped) or failed with a bare KeyError."""
    make, data, reason = REFUSED[case]
    x, y = _data(data)
    estimator = make().fit(x, y)
    with pytest.raises(ConversionError) as caught:
        onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert reason in caught.value.message
    assert f"onnxmltools cannot convert the {type(estimator).__name__}" in caught.value.message
    assert caught.value.exit_code == 2
    assert not (tmp_path / "m.onnx").exists()


def test_lightgbm_categorical_splits_are_refused(tmp_path: Path) -> None:
    """A pandas category column makes LightGBM split on categories; onnxmltools' trees gave
    other labels on 60 % of rows (1 % on the category codes themselves)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.standard_normal(300), "c": pd.Categorical(rng.choice(["x", "y", "z"], 300))}
    )
    labels = ((frame.c == "y") | (frame.a > 1)).astype(int)
    estimator = lgb.LGBMClassifier(n_estimators=10, **QUIET).fit(frame, labels)
    with pytest.raises(ConversionError, match="LightGBM categorical splits") as caught:
        onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert caught.value.exit_code == 2 and "one-hot encoded" in str(caught.value)
    assert not (tmp_path / "m.onnx").exists()


def _native_files(directory: Path) -> dict[str, Path]:
    xc, yc = _data("cancer")
    xw, yw = _data("wine")
    xd, yd = _data("diabetes")
    files = {
        "lightgbm binary": directory / "binary.txt",
        "lightgbm multiclass": directory / "multi.txt",
        "lightgbm regression": directory / "regression.txt",
        "xgboost binary": directory / "binary.json",
        "xgboost multiclass": directory / "multi.ubj",
        "xgboost regression": directory / "regression.json",
    }
    lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(xc, yc), 20).save_model(
        files["lightgbm binary"]
    )
    multi = {"objective": "multiclass", "num_class": 3, **QUIET}
    lgb.train(multi, lgb.Dataset(xw, yw), 10).save_model(files["lightgbm multiclass"])
    lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(xd, yd), 30).save_model(
        files["lightgbm regression"]
    )
    xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(xc, yc), 20).save_model(
        files["xgboost binary"]
    )
    softprob = {"objective": "multi:softprob", "num_class": 3}
    xgb.train(softprob, xgb.DMatrix(xw, yw), 10).save_model(files["xgboost multiclass"])
    xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(xd, yd), 30).save_model(
        files["xgboost regression"]
    )
    return files


@pytest.fixture(scope="module")
def native_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _native_files(tmp_path_factory.mktemp("boosters"))


def _booster_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """What the library itself predicts from the file: probabilities of every class, or the
    regression value, as [rows, columns]."""
    if path.suffix == ".txt":
        p = np.asarray(lgb.Booster(model_file=str(path)).predict(x))
    else:
        p = np.asarray(xgb.Booster(model_file=str(path)).predict(xgb.DMatrix(x)))
    return p.reshape(len(x), -1)


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("lightgbm binary", "cancer"),
        ("lightgbm multiclass", "wine"),
        ("lightgbm regression", "diabetes"),
        ("xgboost binary", "cancer"),
        ("xgboost multiclass", "wine"),
        ("xgboost regression", "diabetes"),
    ],
)
def test_booster_model_files_convert_without_trusting_a_pickle(
    case: str, data: str, native_files: dict[str, Path], tmp_path: Path
) -> None:
    path = native_files[case]
    assert detect_framework(str(path)) == "sklearn"
    model = onnxferry.convert(str(path), tmp_path / "m.onnx")  # no trust_pickle: it is data
    assert model.last_report(Conversion).result.verified
    x = _data(data)[0]
    got = OrtRunner(model).run({"input": x.astype(model.signature.inputs[0].dtype.numpy)})
    expected = _booster_predictions(path, x.astype(np.float32).astype(np.float64))
    if "probabilities" in got:
        probabilities = got["probabilities"]
        if expected.shape[1] == 1:  # a binary booster predicts the positive class alone
            expected = np.hstack([1 - expected, expected])
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    else:
        np.testing.assert_allclose(got["variable"], expected, rtol=1e-5, atol=1e-3)


def test_booster_objects_convert(native_files: dict[str, Path], tmp_path: Path) -> None:
    booster = lgb.Booster(model_file=str(native_files["lightgbm multiclass"]))
    model = onnxferry.convert(booster, tmp_path / "lgb.onnx")
    x = _data("wine")[0]
    got = OrtRunner(model).run({"input": x.astype(np.float32)})["probabilities"]
    np.testing.assert_allclose(got, booster.predict(x.astype(np.float32)), atol=1e-5)
    xgb_booster = xgb.Booster(model_file=str(native_files["xgboost regression"]))
    assert onnxferry.convert(xgb_booster, tmp_path / "xgb.onnx").signature.outputs[0].name == (
        "variable"
    )


def test_ranking_objectives_are_refused(tmp_path: Path) -> None:
    x, y = _data("diabetes")
    path = tmp_path / "rank.txt"
    ranking = {"objective": "lambdarank", **QUIET}
    lgb.train(ranking, lgb.Dataset(x, (y > 150).astype(int), group=[len(y)]), 5).save_model(path)
    with pytest.raises(InputError, match="ranking objective 'lambdarank'"):
        onnxferry.convert(str(path), tmp_path / "m.onnx")


def test_a_truncated_lightgbm_file_is_one_line_not_an_abort(
    native_files: dict[str, Path], tmp_path: Path
) -> None:
    """LightGBM's loader aborts the process (std::terminate) on this file; it is read in a
    spawned worker first."""
    path = tmp_path / "truncated.txt"
    path.write_text(native_files["lightgbm binary"].read_text()[:3000])
    done = subprocess.run(
        [sys.executable, "-m", "onnxferry", "convert", str(path), "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "lightgbm crashed reading the file; it is truncated or corrupt" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_the_cli_converts_a_model_file(native_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxferry",
            "convert",
            str(native_files["xgboost binary"]),
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    body = report.get("result", report)
    assert body["verified"]
    assert body["chosen"] == "skl2onnx + onnxmltools"
    assert out.is_file()


def test_json_that_is_not_a_booster_is_not_taken_for_one(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"name": "not a model"}')
    with pytest.raises(InputError, match="cannot tell which framework"):
        detect_framework(str(path))


# --- CatBoost: its own ONNX export, its tree node spliced into skl2onnx's graph --------------


@pytest.fixture(scope="module")
def catboost() -> Any:
    return pytest.importorskip("catboost")


CATBOOST: dict[str, tuple[str, str, dict[str, Any]]] = {
    "binary in a pipeline": ("CatBoostClassifier", "cancer", {"iterations": 30}),
    "multiclass": ("CatBoostClassifier", "wine", {"iterations": 20}),
    "regression": ("CatBoostRegressor", "diabetes", {"iterations": 30}),
}


@pytest.mark.parametrize("case", list(CATBOOST))
def test_catboost_estimators_convert_verified(case: str, catboost: Any, tmp_path: Path) -> None:
    cls, data, params = CATBOOST[case]
    x, y = _data(data)
    estimator = getattr(catboost, cls)(
        verbose=0, random_seed=0, allow_writing_files=False, **params
    )
    if "pipeline" in case:
        estimator = make_pipeline(StandardScaler(), estimator)
    estimator.fit(x, y)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    report = model.last_report(Conversion).result
    assert report.chosen == "skl2onnx + CatBoost"
    assert "catboost" in report.details["versions"]
    got = OrtRunner(model).run({"input": x.astype(np.float32)})
    if "probabilities" in got:
        np.testing.assert_allclose(
            got["probabilities"], estimator.predict_proba(x.astype(np.float32)), atol=1e-5
        )
    else:
        np.testing.assert_allclose(
            got["variable"].ravel(), estimator.predict(x.astype(np.float32)), rtol=1e-5, atol=1e-3
        )


def test_catboost_string_classes_and_model_file(catboost: Any, tmp_path: Path) -> None:
    """A .cbm file is read without --trust-pickle; its multiclass predict gives labels as
    [n, 1], held to the ONNX model's [n]."""
    x, y = _data("wine")
    labels = np.array(["red", "white", "rose"])[y]
    path = tmp_path / "model.cbm"
    catboost.CatBoostClassifier(
        iterations=20, verbose=0, random_seed=0, allow_writing_files=False
    ).fit(x, labels).save_model(str(path))
    assert detect_framework(str(path)) == "sklearn"
    model = onnxferry.convert(str(path), tmp_path / "m.onnx")
    got = OrtRunner(model).run({"input": x.astype(np.float32)})
    assert list(np.unique(got["label"])) == ["red", "rose", "white"]
    loaded = catboost.CatBoostClassifier()
    loaded.load_model(str(path))
    np.testing.assert_allclose(
        got["probabilities"], loaded.predict_proba(x.astype(np.float32)), atol=1e-5
    )


def test_catboost_categorical_features_are_refused_before_verifying(
    catboost: Any, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    x, y = _data("wine")
    frame = pd.DataFrame(x[:, :3], columns=["a", "b", "c"])
    frame["colour"] = np.array(["red", "white"])[y % 2]
    estimator = catboost.CatBoostClassifier(
        iterations=5, verbose=0, allow_writing_files=False, cat_features=["colour"]
    )
    with pytest.raises(ConversionError, match="CatBoost categorical features") as caught:
        onnxferry.convert(estimator.fit(frame, y), tmp_path / "m.onnx")
    assert caught.value.exit_code == 2


def test_catboost_ranking_and_truncated_files(catboost: Any, tmp_path: Path) -> None:
    x, y = _data("diabetes")
    ranker = tmp_path / "rank.cbm"
    pool = catboost.Pool(x, y, group_id=np.zeros(len(y), dtype=int))
    catboost.CatBoostRanker(iterations=3, verbose=0, allow_writing_files=False).fit(
        pool
    ).save_model(str(ranker))
    with pytest.raises(InputError, match="ranking objective 'YetiRank'"):
        onnxferry.convert(str(ranker))
    whole = tmp_path / "whole.cbm"
    catboost.CatBoostRegressor(iterations=5, verbose=0, allow_writing_files=False).fit(
        x, y
    ).save_model(str(whole))
    cut = tmp_path / "cut.cbm"
    cut.write_bytes(whole.read_bytes()[:500])
    with pytest.raises(InputError, match="catboost cannot read the model"):
        onnxferry.convert(str(cut))


def test_xgboost_after_a_text_vectorizer_reads_absent_words_as_missing(tmp_path: Path) -> None:
    """XGBoost takes the entries a sparse matrix leaves out as missing, not 0: fed dense
    zeros, the converted model took other branches (labels 60 % equal, exit 1)."""
    from sklearn.feature_extraction.text import CountVectorizer

    texts = ["good movie great fun", "bad awful boring film", "great acting good plot"]
    texts += ["terrible bad script", "fun and great", "boring awful mess", "good", "bad bad"]
    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    pipeline = make_pipeline(CountVectorizer(), xgb.XGBClassifier(n_estimators=10))
    pipeline.fit(texts * 10, labels * 10)
    model = onnxferry.convert(pipeline, tmp_path / "m.onnx")
    rows = np.array([*texts, "great awful", "no word it knows"], dtype=object)
    got = OrtRunner(model).run({"input": rows})["probabilities"]
    np.testing.assert_allclose(got, pipeline.predict_proba(list(rows)), atol=1e-5)


def test_xgboost_after_a_sparse_column_transformer(tmp_path: Path) -> None:
    """A ColumnTransformer with a one-hot encoder chooses sparse output: XGBoost then reads
    every 0 it leaves out, numeric ones included, as missing (labels were 40 % equal)."""
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.standard_normal(400), "b": rng.standard_normal(400)})
    for k in range(4):
        frame[f"c{k}"] = rng.choice([f"v{i}" for i in range(15)], 400)
    y = ((frame.a > 0) ^ frame.c0.isin(["v1", "v2", "v3"])).astype(int)
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["a", "b"]), ("cat", OneHotEncoder(), ["c0", "c1", "c2", "c3"])]
    )
    pipeline = make_pipeline(columns, xgb.XGBClassifier(n_estimators=20)).fit(frame, y)
    assert pipeline.steps[0][1].sparse_output_
    model = onnxferry.convert(pipeline, tmp_path / "m.onnx")
    feeds = {c: frame[[c]].to_numpy().astype(np.float32) for c in ("a", "b")}
    feeds.update({c: frame[[c]].to_numpy().astype(object) for c in ("c0", "c1", "c2", "c3")})
    got = OrtRunner(model).run(feeds)
    rounded = frame.assign(a=feeds["a"][:, 0].astype(np.float64), b=feeds["b"][:, 0].astype(float))
    close = np.abs(got["probabilities"] - pipeline.predict_proba(rounded)).max(axis=1) < 1e-4
    assert close.mean() >= 0.99  # float32 scaling flips a split on a row or two
