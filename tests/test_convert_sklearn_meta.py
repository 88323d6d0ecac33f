"""scikit-learn's meta-estimators and the quirks between them and skl2onnx: searches, stacks,
votes, wrappers around boosters, RFE, a target transformed for fitting, a plain SVC's
scores. Each is verified against the original on the data set's own rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import RandomForestClassifier, StackingClassifier, VotingClassifier
from sklearn.feature_selection import RFE
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, QuantileTransformer, StandardScaler
from sklearn.svm import SVC

import onnxferry
from onnxferry.convert.base import ConversionError
from onnxferry.convert.dispatch import Conversion
from onnxferry.runtime import OrtRunner


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"cancer": load_breast_cancer, "wine": load_wine, "diabetes": load_diabetes}[name]
    x, y = loader(return_X_y=True)
    return np.asarray(x), np.asarray(y)


def _check(estimator: Any, data: str, tmp_path: Path, y: np.ndarray | None = None) -> None:
    """Convert (verified), then hold ONNX Runtime to the estimator on every row."""
    x, target = _data(data)
    estimator.fit(x, target if y is None else y)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert model.last_report(Conversion).result.verified
    rows = x.astype(model.signature.inputs[0].dtype.numpy)
    got = OrtRunner(model).run({"input": rows})
    if "probabilities" in got:
        expected = np.asarray(
            estimator.predict_proba(rows)
            if hasattr(estimator, "predict_proba")
            else estimator.decision_function(rows)
        )
        if expected.ndim == 1:  # a binary decision function: its scores are [-d, d]
            expected = np.stack([-expected, expected], axis=1)
        off = np.abs(got["probabilities"] - expected).max(axis=1)
        # float32 thresholds: a value within float32's rounding of a split takes the other
        # branch, on a row in a few hundred at most
        assert (off > 1e-4).mean() <= 0.005, off.max()
        assert off.max() < 0.01
        assert (got["label"].ravel() == estimator.predict(rows)).mean() >= 0.995
    else:
        expected = np.asarray(estimator.predict(rows)).reshape(got["variable"].shape)
        np.testing.assert_allclose(got["variable"], expected, rtol=1e-4, atol=1e-3)


def _lgbm(**kwargs: Any) -> Any:
    lgb = pytest.importorskip("lightgbm")
    return getattr(lgb, kwargs.pop("cls"))(n_estimators=20, verbose=-1, **kwargs)


CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "GridSearchCV over LightGBM": (
        lambda: GridSearchCV(_lgbm(cls="LGBMClassifier"), {"num_leaves": [7, 15]}, cv=2),
        "cancer",
    ),
    "RandomizedSearchCV over a pipeline": (
        lambda: RandomizedSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression()),
            {"logisticregression__C": [0.1, 1.0]},
            n_iter=2,
            cv=2,
            random_state=0,
        ),
        "cancer",
    ),
    "stack of LightGBM and a forest": (
        lambda: StackingClassifier(
            [("lgbm", _lgbm(cls="LGBMClassifier")), ("rf", RandomForestClassifier(10))],
            final_estimator=LogisticRegression(),
        ),
        "cancer",
    ),
    "soft vote (flatten_transform on)": (
        lambda: VotingClassifier(
            [
                ("rf", RandomForestClassifier(10, random_state=0)),
                ("lr", make_pipeline(StandardScaler(), LogisticRegression())),
            ],
            voting="soft",
        ),
        "cancer",
    ),
    "sigmoid calibration of LightGBM (its decision_function)": (
        lambda: CalibratedClassifierCV(_lgbm(cls="LGBMClassifier"), cv=2),
        "cancer",
    ),
    "one-vs-rest LightGBM": (
        lambda: OneVsRestClassifier(_lgbm(cls="LGBMClassifier")),
        "wine",
    ),
    "RFE ending a pipeline": (
        lambda: make_pipeline(StandardScaler(), RFE(LogisticRegression(), n_features_to_select=5)),
        "cancer",
    ),
    "SVC without probabilities": (lambda: make_pipeline(StandardScaler(), SVC()), "cancer"),
    "target log1p": (
        lambda: TransformedTargetRegressor(Ridge(), func=np.log1p, inverse_func=np.expm1),
        "diabetes",
    ),
    "target standardized, in a pipeline": (
        lambda: make_pipeline(
            StandardScaler(),
            TransformedTargetRegressor(LinearRegression(), transformer=StandardScaler()),
        ),
        "diabetes",
    ),
    "target min-max around LightGBM": (
        lambda: TransformedTargetRegressor(_lgbm(cls="LGBMRegressor"), transformer=MinMaxScaler()),
        "diabetes",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_meta_estimators_convert(case: str, tmp_path: Path) -> None:
    make, data = CASES[case]
    _check(make(), data, tmp_path)


def test_multi_output_regressor_over_lightgbm(tmp_path: Path) -> None:
    x, y = _data("diabetes")
    _check(MultiOutputRegressor(_lgbm(cls="LGBMRegressor")), "diabetes", tmp_path, np.c_[y, -y])


@pytest.mark.parametrize("forest", ["RandomForestClassifier", "XGBClassifier"])
def test_multi_output_classifier_probabilities_are_judged_as_numbers(
    forest: str, tmp_path: Path
) -> None:
    """Its probabilities are a sequence of [batch, classes] tensors, one per output; judged
    as exact objects, float32 rounding failed every conversion (exit 1)."""
    if forest == "XGBClassifier":
        make: Any = pytest.importorskip("xgboost").XGBClassifier(n_estimators=20)
    else:
        make = RandomForestClassifier(20, random_state=0)
    x, target = _data("cancer")
    both = np.c_[target, x[:, 0] > np.median(x[:, 0])].astype(int)
    estimator = MultiOutputClassifier(make).fit(x, both)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert model.last_report(Conversion).result.verified
    got = OrtRunner(model).run({"input": x.astype(np.float32)})
    expected = np.asarray(estimator.predict_proba(x))
    assert np.abs(np.asarray(got["probabilities"], np.float64) - expected).max() < 1e-4
    assert (got["label"] == estimator.predict(x)).mean() > 0.99


def test_a_target_transform_without_an_onnx_inverse_is_one_line(tmp_path: Path) -> None:
    x, y = _data("diabetes")
    model = TransformedTargetRegressor(Ridge(), transformer=QuantileTransformer(n_quantiles=20))
    with pytest.raises(ConversionError, match="target transformer QuantileTransformer") as caught:
        onnxferry.convert(model.fit(x, y), tmp_path / "m.onnx")
    assert caught.value.exit_code == 2


def test_a_hard_vote_gives_labels_alone(tmp_path: Path) -> None:
    """Hard voting has neither predict_proba nor decision_function: nothing to hold a score
    output to, so the model gives the label alone."""
    x, y = _data("cancer")
    vote = VotingClassifier(
        [
            ("rf", RandomForestClassifier(10, random_state=0)),
            ("lr", make_pipeline(StandardScaler(), LogisticRegression())),
        ]
    ).fit(x, y)
    model = onnxferry.convert(vote, tmp_path / "m.onnx")
    assert [s.name for s in model.signature.outputs] == ["label"]
    rows = x.astype(np.float32)
    assert (OrtRunner(model).run({"input": rows})["label"] == vote.predict(rows)).mean() >= 0.995
