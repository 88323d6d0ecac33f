"""LightGBM and XGBoost estimators, alone or inside a pipeline, through onnxmltools' converters.

    register_boosters(pipeline)   # before skl2onnx.convert_sklearn; names what it registered
    # ["LGBMClassifier"] for make_pipeline(StandardScaler(), LGBMClassifier()).fit(x, y)

skl2onnx knows scikit-learn's own estimators only; LightGBM's and XGBoost's scikit-learn
classes (``LGBMClassifier``, ``XGBRegressor``, ...) convert with onnxmltools' tree-ensemble
converters once they are registered with skl2onnx, as skl2onnx's own examples do. This
module registers each booster class a pipeline holds, once per process, with the
classifier options (``zipmap``, ``nocl``) the rest of the sklearn path sets. Rankers are
neither classifiers nor regressors and stay refused by ``estimator_task``.

The boosters' own model files and Booster objects become such estimators in
``booster_files``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from ...errors import InputError
from .estimators import said, walk

LIBRARIES = {"lightgbm": "LightGBM", "xgboost": "XGBoost"}
"""The packages whose scikit-learn estimators convert through onnxmltools, and their names."""

_CLASSIFIER_OPTIONS: dict[str, Any] = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
_registered: set[type] = set()


def booster_package(estimator: Any) -> str | None:
    """ "lightgbm" or "xgboost" for an estimator of theirs (or one over their booster), else
    None."""
    package = getattr(type(estimator), "booster_package", None)
    package = package or type(estimator).__module__.split(".", 1)[0]
    return package if package in LIBRARIES else None


def register_boosters(estimator: Any) -> list[str]:
    """Register with skl2onnx the converter of every LightGBM / XGBoost estimator inside
    ``estimator``; the class names registered (or already registered) by this call.
    InputError when onnxmltools is missing."""
    found = [step for _, step in walk(estimator) if booster_package(step) is not None]
    names = []
    for step in found:
        cls = type(step)
        names.append(cls.__name__)
        if cls in _registered:
            continue
        _register(step, _converter_for(booster_package(step) or ""))
        _registered.add(cls)
    return names


def _converter_for(package: str) -> Callable[..., Any]:
    try:
        if package == "lightgbm":
            from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (
                convert_lightgbm,
            )

            return convert_lightgbm  # type: ignore[no-any-return]
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        return convert_xgboost  # type: ignore[no-any-return]
    except ImportError as e:
        raise InputError(
            f"converting a {package} model needs onnxmltools, which is not installed ({e})",
            hint="pip install 'onnxferry[sklearn]' (it brings onnxmltools)",
        ) from e


def _register(estimator: Any, converter: Callable[..., Any]) -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    cls = type(estimator)
    package = booster_package(estimator) or ""
    alias = f"{package.capitalize()}{cls.__name__}"
    converter = _fixed(converter)
    if is_classifier(estimator):
        update_registered_converter(
            cls,
            alias,
            calculate_linear_classifier_output_shapes,
            converter,
            options=_CLASSIFIER_OPTIONS,
        )
    else:
        split = {"split": None} if package == "lightgbm" else None
        update_registered_converter(
            cls, alias, calculate_linear_regressor_output_shapes, converter, options=split
        )


def _fixed(converter: Callable[..., Any]) -> Callable[..., Any]:
    """onnxmltools' converter, given what it can read and with its outputs made to match the
    estimator's: an XGBoost booster fit on a DataFrame converts without its feature names
    (onnxmltools reads features only as ``f0``, ``f1``, ...), and ``multi:softmax``'s
    probabilities are the softmax that ``predict_proba`` gives (onnxmltools leaves margins)."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        estimator = operator.raw_operator
        problem = _unsupported(estimator)
        if problem:
            raise BoosterError(estimator, problem)
        first = len(container.nodes)
        if booster_package(estimator) == "xgboost":
            operator.raw_operator = _without_feature_names(estimator)
        try:
            converter(scope, operator, container)
        except (RuntimeError, ValueError, KeyError, NotImplementedError) as e:
            raise BoosterError(estimator, said(e)) from e
        finally:
            operator.raw_operator = estimator
        if _xgboost_objective(estimator) == "multi:softmax":
            for node in container.nodes[first:]:
                for attribute in node.attribute:
                    if node.op_type == "TreeEnsembleClassifier" and (
                        attribute.name == "post_transform"
                    ):
                        attribute.s = b"SOFTMAX"

    return convert


class BoosterError(Exception):
    """onnxmltools cannot convert this LightGBM / XGBoost estimator: ``reason`` says why."""

    hint = (
        "train with settings onnxmltools converts (LightGBM: boosting_type 'gbdt', 'dart' or "
        "'goss' without linear_tree; XGBoost: booster 'gbtree'), or keep the model out of ONNX"
    )

    def __init__(self, estimator: Any, reason: str) -> None:
        super().__init__(reason)
        self.estimator = estimator
        self.reason = reason


def _unsupported(estimator: Any) -> str | None:
    """Why onnxmltools would convert this booster wrongly or not at all, or None. Each was
    seen: a random forest's probabilities divided by 100 whatever its tree count, linear
    trees' leaves kept constant, a KeyError on gblinear and dart."""
    if booster_package(estimator) == "lightgbm":
        booster = estimator.booster_
        params = booster.params
        if estimator.boosting_type == "rf" or params.get("boosting") in ("rf", "random_forest"):
            return (
                "LightGBM's random-forest mode (boosting_type='rf'): onnxmltools divides its "
                "output by 100 instead of averaging its trees"
            )
        if str(params.get("linear_tree", "")).lower() in ("true", "1"):
            return (
                "LightGBM linear trees (linear_tree=True): onnxmltools keeps only the "
                "constant part of each leaf"
            )
        return None
    name = json.loads(estimator.get_booster().save_config())["learner"]["gradient_booster"]
    if name.get("name") != "gbtree":
        return f"XGBoost's {name.get('name')!r} booster: onnxmltools converts 'gbtree' only"
    return None


def _without_feature_names(estimator: Any) -> Any:
    booster = estimator.get_booster()
    if booster.feature_names is None:
        return estimator
    renamed = booster.copy()
    renamed.feature_names = None
    view = copy.copy(estimator)
    view._Booster = renamed
    return view


def _xgboost_objective(estimator: Any) -> str | None:
    if booster_package(estimator) != "xgboost":
        return None
    return str(estimator.get_xgb_params().get("objective"))
