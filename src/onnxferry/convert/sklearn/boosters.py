"""LightGBM, XGBoost and CatBoost estimators, alone or inside a pipeline, registered with
skl2onnx.

    register_boosters(pipeline)   # before skl2onnx.convert_sklearn; names what it registered
    # ["LGBMClassifier"] for make_pipeline(StandardScaler(), LGBMClassifier()).fit(x, y)

skl2onnx knows scikit-learn's own estimators only. LightGBM's and XGBoost's scikit-learn
classes (``LGBMClassifier``, ``XGBRegressor``, ...) convert with onnxmltools' tree-ensemble
converters once they are registered with skl2onnx, as skl2onnx's own examples do; CatBoost's
(``CatBoostClassifier``, ``CatBoostRegressor``) with CatBoost's own ONNX export, whose tree
node is copied in. This module registers each booster class a pipeline holds, once per
process, with the classifier options (``zipmap``, ``nocl``) the rest of the sklearn path
sets. Rankers are neither classifiers nor regressors and stay refused by ``estimator_task``.

The boosters' own model files and Booster objects become such estimators in
``booster_files``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import InputError
from .estimators import members, said

LIBRARIES = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "catboost": "CatBoost"}
"""The gradient-boosting packages whose scikit-learn style estimators convert here (LightGBM
and XGBoost through onnxmltools, CatBoost through its own ONNX export), and their names."""

_CLASSIFIER_OPTIONS: dict[str, Any] = {
    "nocl": [True, False],
    "zipmap": [True, False, "columns"],
    "raw_scores": [True, False],
}
_registered: set[type] = set()


def booster_package(estimator: Any) -> str | None:
    """ "lightgbm" or "xgboost" for an estimator of theirs (or one over their booster), else
    None."""
    package = getattr(type(estimator), "booster_package", None)
    package = package or type(estimator).__module__.split(".", 1)[0]
    return package if package in LIBRARIES else None


def converters_for(boosters: Sequence[Any]) -> list[str]:
    """What converts these booster estimators besides skl2onnx: ["onnxmltools"] for LightGBM
    and XGBoost, ["CatBoost"] for CatBoost's own export, both, or neither."""
    packages = {booster_package(b) for b in boosters}
    tools = ["onnxmltools"] if packages & {"lightgbm", "xgboost"} else []
    return tools + (["CatBoost"] if "catboost" in packages else [])


def register_boosters(estimator: Any) -> list[str]:
    """Register with skl2onnx the converter of every LightGBM / XGBoost estimator inside
    ``estimator``; the class names registered (or already registered) by this call.
    InputError when onnxmltools is missing."""
    found = [step for step in members(estimator) if booster_package(step) is not None]
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
    if package == "catboost":
        return convert_catboost
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


def convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's converter for a CatBoost model: CatBoost's own ONNX export (one
    TreeEnsembleClassifier, then a ZipMap; or one TreeEnsembleRegressor), its tree node
    copied in with the operator's inputs and outputs (the ZipMap left out: the rest of the
    sklearn path wants probabilities as a tensor)."""
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    exported = convert_to_onnx_object(operator.raw_operator)
    opsets = {o.domain: o.version for o in exported.opset_import}
    node = next(n for n in exported.graph.node if n.op_type.startswith("TreeEnsemble"))
    outputs = [v.full_name for v in operator.outputs][: len(node.output)]
    container.add_node(
        node.op_type,
        [operator.inputs[0].full_name],
        outputs,
        op_domain=node.domain,
        op_version=opsets.get(node.domain),
        name=scope.get_unique_operator_name(node.op_type),
        **{a.name: get_attribute_value(a) for a in node.attribute},
    )


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
        from skl2onnx._parse import sklearn_classifier_list

        if cls not in sklearn_classifier_list:  # CatBoost's are not ClassifierMixin: give
            sklearn_classifier_list.append(cls)  # them skl2onnx's label and probabilities
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
    """A booster's converter, refusing what it would convert wrongly (``_unsupported``),
    given what it can read and with its outputs made to match the estimator's: an XGBoost
    booster fit on a DataFrame converts without its feature names (onnxmltools reads
    features only as ``f0``, ``f1``, ...), and ``multi:softmax``'s probabilities are the
    softmax that ``predict_proba`` gives (onnxmltools leaves margins)."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        estimator = operator.raw_operator
        problem = _unsupported(estimator)
        if problem:
            raise BoosterError(estimator, problem, known=True)
        first = len(container.nodes)
        inputs = operator.inputs
        if booster_package(estimator) == "xgboost":
            operator.raw_operator = _without_feature_names(estimator)
            if getattr(estimator, ZEROS_ARE_MISSING, False):
                operator.inputs = [_zeros_as_missing(scope, container, inputs[0])]
        try:
            converter(scope, operator, container)
        except Exception as e:  # each converter's own errors, one line with the step named
            raise BoosterError(estimator, said(e)) from e
        finally:
            operator.raw_operator = estimator
            operator.inputs = inputs
        transform = None
        if _xgboost_objective(estimator) == "multi:softmax":
            transform = b"SOFTMAX"
        if _raw_scores_asked(container, estimator):  # a calibration wants decision_function
            transform = b"NONE"
        if transform is not None:
            for node in container.nodes[first:]:
                if node.op_type == "TreeEnsembleClassifier":
                    for attribute in node.attribute:
                        if attribute.name == "post_transform":
                            attribute.s = transform

    return convert


ZEROS_ARE_MISSING = "zeros_are_missing"
"""Set (on the exported copy) for an XGBoost estimator fed a sparse matrix: XGBoost takes
the entries a sparse matrix leaves out as missing, not as 0 (a text vectorizer's, a one-hot
encoder's)."""


def _zeros_as_missing(scope: Any, container: Any, source: Any) -> Any:
    """A new variable: ``source`` with every 0 made NaN (Equal, then Where), as XGBoost
    reads the sparse rows it was fitted and predicts on."""
    from skl2onnx.common.data_types import guess_proto_type

    proto_type = guess_proto_type(source.type)
    missing = scope.declare_local_variable("zeros_as_missing", source.type.__class__())
    zero = scope.get_unique_variable_name("zero")
    nan = scope.get_unique_variable_name("nan")
    is_zero = scope.get_unique_variable_name("is_zero")
    container.add_initializer(zero, proto_type, [], [0.0])
    container.add_initializer(nan, proto_type, [], [float("nan")])
    container.add_node(
        "Equal", [source.full_name, zero], is_zero, name=scope.get_unique_operator_name("Equal")
    )
    container.add_node(
        "Where",
        [is_zero, nan, source.full_name],
        missing.full_name,
        name=scope.get_unique_operator_name("Where"),
    )
    return missing


class BoosterError(Exception):
    """This LightGBM / XGBoost / CatBoost estimator does not convert: ``reason`` says why,
    ``tool`` names the converter."""

    hint = (
        "retrain with settings the converter takes (LightGBM: boosting_type 'gbdt', 'dart' or "
        "'goss' without linear_tree, categories one-hot encoded; XGBoost: booster 'gbtree'; "
        "CatBoost: numeric features only), or keep the model out of ONNX"
    )

    def __init__(self, estimator: Any, reason: str, *, known: bool = False) -> None:
        super().__init__(reason)
        self.estimator = estimator
        self.reason = reason
        self.known = known
        """A limit known before converting (not the converter failing): refused at load."""
        catboost = booster_package(estimator) == "catboost"
        self.tool = "CatBoost's ONNX export" if catboost else "onnxmltools"


def _unsupported(estimator: Any) -> str | None:
    """Why its converter would convert this booster wrongly or not at all, or None. Each was
    seen: a LightGBM random forest's probabilities divided by 100 whatever its tree count,
    linear trees' leaves kept constant, categorical splits answering otherwise (labels 99 %
    equal on the category codes themselves), a KeyError on XGBoost's gblinear and dart,
    CatBoost's categorical features failing its own predict on float rows."""
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
        if _lightgbm_category_splits(booster):
            return (
                "LightGBM categorical splits (a pandas category column, or "
                "categorical_feature): onnxmltools' trees answer otherwise on their codes"
            )
        return None
    if booster_package(estimator) == "catboost":
        named = {
            "categorical": estimator.get_cat_feature_indices(),
            "text": estimator.get_text_feature_indices(),
            "embedding": estimator.get_embedding_feature_indices(),
        }
        kinds = [kind for kind, indices in named.items() if indices]
        if kinds:
            return (
                f"CatBoost {' and '.join(kinds)} features: the ONNX model takes one float "
                "tensor, and CatBoost's export computes no such feature"
            )
        return None
    name = json.loads(estimator.get_booster().save_config())["learner"]["gradient_booster"]
    if name.get("name") != "gbtree":
        return f"XGBoost's {name.get('name')!r} booster: onnxmltools converts 'gbtree' only"
    return None


def _lightgbm_category_splits(booster: Any) -> bool:
    """Whether any tree splits on a category (decision type "==", not "<=")."""
    stack = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "decision_type" in node:
            if node["decision_type"] == "==":
                return True
            stack += [node["left_child"], node["right_child"]]
    return False


def _raw_scores_asked(container: Any, estimator: Any) -> bool:
    """skl2onnx's calibration asks a classifier with decision_function (LightGBM 4's gives
    the raw margins) for raw scores, through the ``raw_scores`` option."""
    if not hasattr(estimator, "decision_function") or booster_package(estimator) != "lightgbm":
        return False
    return bool(container.get_options(estimator, {"raw_scores": False})["raw_scores"])


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
