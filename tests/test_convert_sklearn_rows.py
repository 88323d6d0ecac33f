"""The rows a table model is verified on are drawn where its training data lay (its scaler's
statistics, its trees' split thresholds), not from N(0, 1): a difference that shows only
in-distribution is caught, and a kernel model is not verified on rows where it is constant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import onnxferry
from onnxferry.convert.base import ConvertOptions, ParityFailure
from onnxferry.convert.dispatch import Conversion
from onnxferry.convert.sklearn import load_sklearn
from onnxferry.convert.sklearn.scales import column_scale

X, Y = (np.asarray(a) for a in load_breast_cancer(return_X_y=True))  # features up to ~4000


class DriftsOnLargeTumours(RandomForestClassifier):  # type: ignore[misc]
    """Converts as a RandomForestClassifier, but answers otherwise for mean radius > 15, a
    value N(0, 1) rows never reach and a third of the real rows have."""

    def predict_proba(self, x: Any) -> Any:
        p = np.array(super().predict_proba(x))
        p[np.asarray(x)[:, 0] > 15] = 0.5
        return p


def test_a_difference_only_in_distribution_is_caught(tmp_path: Path) -> None:
    model = DriftsOnLargeTumours(n_estimators=10, random_state=0).fit(X, Y)
    assert (X[:, 0] > 15).mean() > 0.2
    with pytest.raises(ParityFailure):
        onnxferry.convert(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def _forests() -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    found: dict[str, Any] = {
        "random forest": RandomForestClassifier(n_estimators=10, random_state=0),
        "histogram boosting": HistGradientBoostingClassifier(max_iter=20),
    }
    for package, cls in (("lightgbm", "LGBMClassifier"), ("xgboost", "XGBClassifier")):
        try:
            module = __import__(package)
        except ImportError:
            continue
        extra = {"verbose": -1} if package == "lightgbm" else {}
        found[package] = getattr(module, cls)(n_estimators=30, **extra)
    return found


@pytest.mark.parametrize("kind", list(_forests()))
def test_rows_around_the_trees_thresholds(kind: str) -> None:
    forest = _forests()[kind].fit(X, Y)
    scale, said_by = column_scale(forest, X.shape[1])
    assert scale is not None
    assert said_by == "the trees' split thresholds"
    rows = scale.rows((400, X.shape[1]), np.random.default_rng(0), np.float64)
    assert 0.2 < forest.predict(rows).mean() < 0.8  # both classes; N(0, 1) rows: nearly one
    assert forest.predict(np.random.default_rng(0).standard_normal((400, 30))).mean() > 0.9


def test_a_scaled_kernel_model_is_verified_where_it_varies(tmp_path: Path) -> None:
    svc = make_pipeline(StandardScaler(), SVC()).fit(X, Y)
    source = load_sklearn(svc, ConvertOptions())
    assert source.details["generated_rows"] == "drawn around the StandardScaler's statistics"
    scores = [source.reference.run(f)["probabilities"][:, 1] for f in source.verification_feeds()]
    assert len(np.unique(np.round(np.concatenate(scores), 6))) > 1
    unscaled = np.random.default_rng(0).standard_normal((4, 30))
    assert len(np.unique(np.round(svc.decision_function(unscaled), 6))) == 1  # what N(0, 1) gave
    model = onnxferry.convert(svc, tmp_path / "m.onnx")
    assert model.last_report(Conversion).result.details["generated_rows"].startswith("drawn")


def test_a_power_transform_is_verified_on_rows_it_can_take(tmp_path: Path) -> None:
    """N(0, 1) rows overflowed the Box-Cox / Yeo-Johnson fitted on values in the thousands:
    the pipeline's own predict failed (exit 2). Its standardized output mapped back says
    where the data lay."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import PowerTransformer

    pipeline = make_pipeline(PowerTransformer(), LogisticRegression()).fit(X, Y)
    model = onnxferry.convert(pipeline, tmp_path / "m.onnx")
    details = model.last_report(Conversion).result.details
    assert details["generated_rows"] == "drawn around the PowerTransformer's statistics"


def test_a_table_pipelines_columns_are_drawn_around_their_scalers() -> None:
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(1, 80, 300),
            "fare": rng.exponential(60, 300),
            "sex": rng.choice(["m", "f"], 300),
        }
    )
    y = ((frame.age < 15) | (frame.sex == "f")).astype(int)
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["age", "fare"]), ("cat", OneHotEncoder(), ["sex"])]
    )
    source = load_sklearn(make_pipeline(columns, SVC()).fit(frame, y), ConvertOptions())
    assert source.details["generated_rows"] == "drawn around the scalers' statistics (2 columns)"
    ages = np.concatenate([f["age"].ravel() for f in source.verification_feeds()])
    assert 20 < ages.mean() < 65  # N(0, 1) ages: a constant SVC again
