"""What a fitted estimator does, and which of its methods gives each output skl2onnx writes.

    task = task_of(forest, "IsolationForest")      # "outlier detection"
    method_of(forest, task, "scores")              # "decision_function"
    values(forest, task)(x)                        # what the float64 probe compares

The tasks, their estimators, and the method each ONNX output comes from:

- classification (classifiers): ``label`` predict, ``probabilities`` predict_proba (else
  decision_function);
- regression (regressors): ``variable`` predict;
- outlier detection (IsolationForest, OneClassSVM, LocalOutlierFactor(novelty=True), ...):
  ``label`` predict (-1 outlier, 1 inlier), ``scores`` decision_function;
- clustering (KMeans and the like, GaussianMixture): ``label`` predict, ``scores`` transform
  (distances) or ``probabilities`` predict_proba (a mixture's);
- transformation (transformers and pipelines of them: StandardScaler, PCA, ...):
  ``variable`` transform.

An estimator that cannot say anything of a new row (DBSCAN, LocalOutlierFactor without
``novelty``) is refused with what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import InputError

TASKS = ("classification", "regression", "outlier detection", "clustering", "transformation")

_OUTPUTS: dict[str, dict[str, str]] = {
    "classification": {"label": "predict", "probabilities": "predict_proba"},
    "regression": {"variable": "predict"},
    "outlier detection": {"label": "predict", "scores": "decision_function"},
    "clustering": {"label": "predict", "scores": "transform", "probabilities": "predict_proba"},
    "transformation": {"variable": "transform"},
}


def task_of(estimator: Any, name: str) -> str:
    """One of ``TASKS`` for a fitted estimator (named ``name`` in errors); InputError for an
    estimator that cannot be applied to new rows."""
    from sklearn.utils import get_tags

    kind = get_tags(estimator).estimator_type
    if kind == "classifier":
        return "classification"
    if kind == "regressor":
        return "regression"
    if kind == "outlier_detector":
        if not hasattr(estimator, "predict"):
            raise InputError(
                f"the {name} scores only the rows it was fitted on; it cannot score new ones",
                hint="fit it with novelty=True (LocalOutlierFactor) to convert it",
            )
        return "outlier detection"
    if kind in ("clusterer", "density_estimator") and hasattr(estimator, "predict"):
        return "clustering"
    if kind == "clusterer":
        raise InputError(
            f"the {name} labels only the rows it was fitted on; it cannot label new ones",
            hint="convert a clusterer with predict (KMeans, GaussianMixture), or train a "
            "classifier on its labels",
        )
    if hasattr(estimator, "transform"):
        return "transformation"
    raise InputError(
        f"the {name} is not a classifier, regressor, outlier detector, clusterer or transformer",
        hint="convert a fitted estimator of one of those kinds, or a Pipeline that ends in one",
    )


def method_of(estimator: Any, task: str, output: str) -> str:
    """The estimator's method that gives ``output`` (a classifier without predict_proba
    gives decision_function scores)."""
    method = _OUTPUTS[task].get(output, "predict")
    if method == "predict_proba" and not hasattr(estimator, method):
        return "decision_function"
    return method


def values(estimator: Any, task: str) -> Callable[[Any], Any]:
    """The method whose values the float64 rule compares: predict for a regressor, else the
    scores or the transform (a clusterer's distances, a mixture's probabilities)."""
    if task == "outlier detection":
        return estimator.decision_function  # type: ignore[no-any-return]
    if task in ("clustering", "transformation") and hasattr(estimator, "transform"):
        return estimator.transform  # type: ignore[no-any-return]
    if task == "clustering":
        return estimator.predict_proba  # type: ignore[no-any-return]
    return estimator.predict  # type: ignore[no-any-return]
