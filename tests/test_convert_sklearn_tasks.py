"""scikit-learn beyond classifiers and regressors: outlier detectors, clusterers and
transformers convert, each verified against the method that gives each output.

Trained on scikit-learn's bundled breast-cancer table (30 features in units that differ by
four orders of magnitude, as real tables do).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from sklearn.cluster import DBSCAN, KMeans
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

import onnxferry
from onnxferry.convert.dispatch import Conversion
from onnxferry.errors import InputError
from onnxferry.runtime import OrtRunner

ROWS = np.asarray(load_breast_cancer(return_X_y=True)[0])

CASES: dict[str, tuple[Callable[[], Any], str, dict[str, str]]] = {
    "isolation forest in a pipeline": (
        lambda: make_pipeline(StandardScaler(), IsolationForest(random_state=0)),
        "outlier detection",
        {"label": "predict", "scores": "decision_function"},
    ),
    "one-class SVM": (
        lambda: make_pipeline(StandardScaler(), OneClassSVM(nu=0.05)),
        "outlier detection",
        {"label": "predict", "scores": "decision_function"},
    ),
    "local outlier factor, novelty": (
        lambda: LocalOutlierFactor(novelty=True),
        "outlier detection",
        {"label": "predict", "scores": "decision_function"},
    ),
    "k-means": (
        lambda: make_pipeline(StandardScaler(), KMeans(4, random_state=0, n_init=3)),
        "clustering",
        {"label": "predict", "scores": "transform"},
    ),
    "gaussian mixture": (
        lambda: GaussianMixture(3, random_state=0),
        "clustering",
        {"label": "predict", "probabilities": "predict_proba"},
    ),
    "scaler and PCA": (
        lambda: make_pipeline(StandardScaler(), PCA(5)),
        "transformation",
        {"variable": "transform"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_converts_verified_against_each_output_method(case: str, tmp_path: Path) -> None:
    make, task, methods = CASES[case]
    estimator = make().fit(ROWS)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    report = model.last_report(Conversion).result
    assert report.verified
    assert report.details["task"] == task
    assert [s.name for s in model.signature.outputs] == list(methods)
    x = ROWS.astype(model.signature.inputs[0].dtype.numpy)
    got = OrtRunner(model).run({"input": x})
    for output, method in methods.items():
        expected = np.asarray(getattr(estimator, method)(x)).reshape(got[output].shape)
        if expected.dtype.kind in "iu":
            assert (got[output] == expected).mean() >= 0.995, output  # float32 near-ties only
        else:
            np.testing.assert_allclose(got[output], expected, rtol=1e-3, atol=1e-3)


def test_outlier_labels_are_minus_one_and_one(tmp_path: Path) -> None:
    estimator = IsolationForest(random_state=0, contamination=0.1).fit(ROWS)
    model = onnxferry.convert(estimator, tmp_path / "m.onnx")
    labels = OrtRunner(model).run({"input": ROWS.astype(np.float32)})["label"]
    assert set(np.unique(labels)) == {-1, 1}
    assert (labels == -1).mean() == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize(
    ("estimator", "words"),
    [
        (DBSCAN(), "labels only the rows it was fitted on"),
        (LocalOutlierFactor(), "scores only the rows it was fitted on"),
    ],
    ids=["dbscan", "lof without novelty"],
)
def test_estimators_that_cannot_apply_to_new_rows(estimator: Any, words: str) -> None:
    estimator.fit(ROWS)
    with pytest.raises(InputError, match=words) as caught:
        onnxferry.convert(estimator)
    assert caught.value.exit_code == 2
