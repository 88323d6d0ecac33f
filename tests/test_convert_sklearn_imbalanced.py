"""What skl2onnx lacks a converter for but can still be converted: imbalanced-learn's
resampling pipelines and balanced ensembles, and subclasses of scikit-learn estimators.
Each is verified against the original estimator on the data set's own rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import onnxferry
from onnxferry.convert.base import ParityFailure
from onnxferry.convert.dispatch import Conversion
from onnxferry.runtime import OrtRunner

X, Y = (np.asarray(a) for a in load_breast_cancer(return_X_y=True))


def _same_predictions(estimator: Any, tmp_path: Path) -> None:
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert model.last_report(Conversion).result.verified
    x = X.astype(np.float32)
    got = OrtRunner(model).run({"input": x})
    np.testing.assert_allclose(got["probabilities"], estimator.predict_proba(x), atol=1e-5)
    assert (got["label"] == estimator.predict(x)).mean() >= 0.995  # float32 near-ties only


class MyForest(RandomForestClassifier):  # type: ignore[misc]
    """A user's subclass that adds a method and predicts as its parent."""

    def top_feature(self) -> int:
        return int(np.argmax(self.feature_importances_))


class ShiftedForest(RandomForestClassifier):  # type: ignore[misc]
    """A subclass that predicts differently from its parent."""

    def predict_proba(self, x: Any) -> Any:
        p = super().predict_proba(x)
        return (p + np.array([0.0, 0.2])) / 1.2


def test_a_subclass_converts_as_its_parent(tmp_path: Path) -> None:
    _same_predictions(MyForest(n_estimators=10, random_state=0).fit(X, Y), tmp_path)


def test_a_subclass_that_predicts_otherwise_fails_verification(tmp_path: Path) -> None:
    estimator = ShiftedForest(n_estimators=10, random_state=0).fit(X, Y)
    with pytest.raises(ParityFailure) as caught:
        onnxferry.convert(estimator, tmp_path / "m.onnx")
    assert caught.value.exit_code == 1
    assert not (tmp_path / "m.onnx").exists()


def _imblearn_cases() -> dict[str, Callable[[], Any]]:
    imblearn = pytest.importorskip("imblearn")
    from imblearn.ensemble import (
        BalancedBaggingClassifier,
        BalancedRandomForestClassifier,
        RUSBoostClassifier,
    )
    from imblearn.over_sampling import SMOTE
    from imblearn.under_sampling import RandomUnderSampler

    pipeline = imblearn.pipeline.make_pipeline
    return {
        "scaler, SMOTE, logistic regression": lambda: pipeline(
            StandardScaler(), SMOTE(random_state=0), LogisticRegression(max_iter=500)
        ),
        "undersampler first": lambda: pipeline(
            RandomUnderSampler(random_state=0), StandardScaler(), LogisticRegression()
        ),
        "balanced random forest": lambda: BalancedRandomForestClassifier(
            n_estimators=10, random_state=0
        ),
        "balanced bagging": lambda: BalancedBaggingClassifier(n_estimators=5, random_state=0),
        "RUSBoost": lambda: RUSBoostClassifier(n_estimators=10, random_state=0),
    }


@pytest.mark.parametrize(
    "case",
    [
        "scaler, SMOTE, logistic regression",
        "undersampler first",
        "balanced random forest",
        "balanced bagging",
        "RUSBoost",
    ],
)
def test_imbalanced_learn_models_convert(case: str, tmp_path: Path) -> None:
    """Resampling changes only the rows fitted on; at predict time it passes rows through."""
    estimator = _imblearn_cases()[case]().fit(X, Y)
    _same_predictions(estimator, tmp_path)
