"""The estimator as skl2onnx is given it: what applies only while fitting dropped, subclasses
of estimators skl2onnx knows converted as them, boosters registered.

    for_export(resampling)   # Pipeline(StandardScaler, LogisticRegression), the same step
                             # objects, for imbalanced-learn's Pipeline(StandardScaler,
                             # SMOTE, LogisticRegression)

- A fitted search (GridSearchCV, RandomizedSearchCV, the halving ones) predicts with its
  ``best_estimator_``. RFE / RFECV selects its columns (exported as a plain selector of
  them: skl2onnx's RFE converter fails when RFE wraps a classifier), then, at the end of a
  pipeline, predicts with its ``estimator_``. A VotingClassifier's
  ``flatten_transform`` (on by default, refused by skl2onnx) shapes only ``transform``.
  Each is exported as what predicts.
- XGBoost after a step giving sparse rows (a text vectorizer, a one-hot encoder, a
  ColumnTransformer that chose sparse output) is fed rows with every 0 made missing:
  XGBoost reads the entries a sparse matrix leaves out as missing values, not as zeros.
- A resampling step (anything with ``fit_resample``: imbalanced-learn's SMOTE,
  RandomUnderSampler, ...) changes only the rows a pipeline is fitted on; at predict time it
  passes rows through. Such steps are left out of what skl2onnx converts, in a pipeline and
  in the (sampler, estimator) pipelines a balanced bagging ensemble fits.
- A class skl2onnx has no converter for, whose parent class it has (imbalanced-learn's
  BalancedRandomForestClassifier is a RandomForestClassifier, RUSBoostClassifier an
  AdaBoostClassifier, a user's ``class MyForest(RandomForestClassifier)``), converts with the
  parent's converter. Whether that is right for the subclass is for the verification to say:
  a subclass that predicts differently fails it.
- LightGBM, XGBoost and CatBoost estimators register through ``boosters``, wherever they
  sit (a stack's members, a search's best estimator, a calibration's classifier); a
  TransformedTargetRegressor through ``converters``.

The reference keeps running the original estimator.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from .boosters import ZEROS_ARE_MISSING, booster_package, register_boosters
from .converters import register_target_regressor
from .estimators import members


def for_export(estimator: Any) -> Any:
    """``estimator`` as it predicts (new containers holding the same fitted objects; the
    estimator itself when nothing changes), every converter it needs registered."""
    exported = _as_predicting(estimator, final=True)
    register_boosters(exported)
    for member in members(exported):
        if type(member).__name__ == "TransformedTargetRegressor":
            register_target_regressor()
        _register_as_parent(type(member))
    return exported


def _is_resampler(step: Any) -> bool:
    return hasattr(step, "fit_resample") and not hasattr(step, "transform")


def _as_predicting(estimator: Any, final: bool) -> Any:
    """What ``estimator`` runs at predict time (``final``: it gives the predictions, not a
    transform for a later step)."""
    best = getattr(estimator, "best_estimator_", None)
    if best is not None and hasattr(estimator, "cv_results_"):  # any search: its refit best
        return _as_predicting(best, final)
    selected = getattr(estimator, "estimator_", None)
    if selected is not None and hasattr(estimator, "ranking_"):  # RFE / RFECV
        picker = _columns(estimator.support_)
        if not final:
            return picker
        from sklearn.pipeline import Pipeline

        return Pipeline([("select", picker), ("estimator", _as_predicting(selected, True))])
    if hasattr(estimator, "voting") and getattr(estimator, "flatten_transform", False):
        # changes transform only; skl2onnx refuses it
        estimator = copy.copy(estimator)
        estimator.flatten_transform = False
    fitted = getattr(estimator, "estimators_", None)
    if isinstance(fitted, list):  # bagging over (sampler, estimator) pipelines
        kept_members = [_as_predicting(m, True) for m in fitted]
        if any(a is not b for a, b in zip(kept_members, fitted, strict=True)):
            estimator = copy.copy(estimator)
            estimator.estimators_ = kept_members
        return estimator
    steps = getattr(estimator, "steps", None)
    if not isinstance(steps, list):
        return estimator
    last = len(steps) - 1
    kept = [
        (name, _as_predicting(step, final and i == last))
        for i, (name, step) in enumerate(steps)
        if not _is_resampler(step)
    ]
    for i in range(1, len(kept)):
        if _sparse_rows(kept[i - 1][1]) and booster_package(kept[i][1]) == "xgboost":
            fed_sparse = copy.copy(kept[i][1])
            setattr(fed_sparse, ZEROS_ARE_MISSING, True)
            kept[i] = (kept[i][0], fed_sparse)
    if len(kept) == len(steps) and all(a[1] is b[1] for a, b in zip(kept, steps, strict=True)):
        return estimator
    from sklearn.pipeline import Pipeline

    return Pipeline(kept)


def _sparse_rows(step: Any) -> bool:
    """Whether ``step`` gives scipy sparse rows (zeros left out): a text vectorizer, a
    one-hot encoder's default, a ColumnTransformer that chose sparse output when fitted, or
    a pipeline ending in one of those."""
    steps = getattr(step, "steps", None)
    if isinstance(steps, list) and steps:
        return _sparse_rows(steps[-1][1])
    if hasattr(step, "sparse_output_"):  # a fitted ColumnTransformer
        return bool(step.sparse_output_)
    name = type(step).__name__
    if name == "OneHotEncoder":
        return bool(getattr(step, "sparse_output", False))
    return name in ("CountVectorizer", "TfidfVectorizer", "HashingVectorizer", "TfidfTransformer")


def _columns(support: Any) -> Any:
    """A selector keeping the columns ``support`` marks, as RFE does to rows. It is a
    SelectKBest to skl2onnx, which converts it as such (skl2onnx's own RFE converter is
    given classifier options when RFE wraps a classifier, and fails)."""
    import numpy as np

    return _column_selector()(np.asarray(support, dtype=bool))


@functools.cache
def _column_selector() -> type:
    from sklearn.feature_selection import SelectKBest

    class SelectedColumns(SelectKBest):  # type: ignore[misc]
        def __init__(self, mask: Any = None) -> None:
            super().__init__(k="all")
            self.mask = mask
            self.n_features_in_ = 0 if mask is None else len(mask)

        def _get_support_mask(self) -> Any:
            return self.mask

    return SelectedColumns


def _register_as_parent(cls: type) -> None:
    """Give ``cls`` the converter of its nearest parent class skl2onnx knows, when it has
    none of its own."""
    from skl2onnx._parse import sklearn_parsers_map, update_registered_parser
    from skl2onnx._supported_operators import sklearn_operator_name_map

    if cls in sklearn_operator_name_map:
        return
    for parent in cls.__mro__[1:]:
        alias = sklearn_operator_name_map.get(parent)
        if alias is None or not parent.__module__.startswith("sklearn."):
            continue
        sklearn_operator_name_map[cls] = alias
        if parent in sklearn_parsers_map:
            update_registered_parser(cls, sklearn_parsers_map[parent])
        return
