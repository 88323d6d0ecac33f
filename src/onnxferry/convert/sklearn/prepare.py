"""The estimator as skl2onnx is given it: what applies only while fitting dropped, subclasses
of estimators skl2onnx knows converted as them, boosters through onnxmltools.

    for_export(resampling)   # Pipeline(StandardScaler, LogisticRegression), the same step
                             # objects, for imbalanced-learn's Pipeline(StandardScaler,
                             # SMOTE, LogisticRegression)

- A resampling step (anything with ``fit_resample``: imbalanced-learn's SMOTE,
  RandomUnderSampler, ...) changes only the rows a pipeline is fitted on; at predict time it
  passes rows through. Such steps are left out of what skl2onnx converts, in a pipeline and
  in the (sampler, estimator) pipelines a balanced bagging ensemble fits.
- A class skl2onnx has no converter for, whose parent class it has (imbalanced-learn's
  BalancedRandomForestClassifier is a RandomForestClassifier, RUSBoostClassifier an
  AdaBoostClassifier, a user's ``class MyForest(RandomForestClassifier)``), converts with the
  parent's converter. Whether that is right for the subclass is for the verification to say:
  a subclass that predicts differently fails it.
- LightGBM and XGBoost estimators register through ``boosters``.

The reference keeps running the original estimator.
"""

from __future__ import annotations

import copy
from typing import Any

from .boosters import register_boosters
from .estimators import walk


def for_export(estimator: Any) -> Any:
    """``estimator`` with resampling steps left out (a new Pipeline holding the same step
    objects; the estimator itself when it has none), every converter it needs registered."""
    register_boosters(estimator)
    for _, step in walk(estimator):
        _register_as_parent(type(step))
    return _without_resampling(estimator)


def _is_resampler(step: Any) -> bool:
    return hasattr(step, "fit_resample") and not hasattr(step, "transform")


def _without_resampling(estimator: Any) -> Any:
    members = getattr(estimator, "estimators_", None)
    if isinstance(members, list):  # bagging over (sampler, estimator) pipelines
        kept_members = [_without_resampling(m) for m in members]
        if any(a is not b for a, b in zip(kept_members, members, strict=True)):
            estimator = copy.copy(estimator)
            estimator.estimators_ = kept_members
        return estimator
    steps = getattr(estimator, "steps", None)
    if not isinstance(steps, list):
        return estimator
    kept = [(name, _without_resampling(step)) for name, step in steps if not _is_resampler(step)]
    if len(kept) == len(steps) and all(a[1] is b[1] for a, b in zip(kept, steps, strict=True)):
        return estimator
    from sklearn.pipeline import Pipeline

    return Pipeline(kept)


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
