"""LightGBM's and XGBoost's own model files and Booster objects, as scikit-learn estimators.

    kind = booster_file_kind(Path("model.txt"))     # "lightgbm", "xgboost", "catboost", None
    estimator = read_booster(Path("model.json"))     # an XGBClassifier / XGBRegressor
    estimator = read_booster(lightgbm_booster)       # a LightGBMBoosterClassifier / ...Regressor

A booster saved by its library (``booster.save_model("model.txt")`` in LightGBM,
``save_model("model.json")`` or ``.ubj`` in XGBoost, ``save_model("model.cbm")`` in
CatBoost) is data, not code: it loads without ``--trust-pickle``. The objective in the file
says classifier or regressor. XGBoost and CatBoost read their files into their own
scikit-learn style classes (``load_model``); LightGBM has no such loader, so a
LightGBM booster becomes ``LightGBMBoosterClassifier`` / ``LightGBMBoosterRegressor``: predict
and predict_proba from ``Booster.predict``, and the attributes onnxmltools' converter reads.
From there the file converts like a fitted estimator.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, one_line

_SNIFF = 4096
_CATBOOST_RANKING = ("YetiRank", "PairLogit", "Query", "StochasticRank", "LambdaMart")
_CLASSIFIER_OBJECTIVES = ("binary", "multiclass", "multiclassova", "cross_entropy", "xentropy")


def booster_file_kind(path: Path) -> str | None:
    """ "lightgbm" for LightGBM's text model file, "xgboost" for XGBoost's JSON or UBJSON
    model file, else None (read from the first bytes, whatever the suffix)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF)
    except OSError:
        return None
    if head.startswith(b"tree\n") and b"\nversion=v" in head:
        return "lightgbm"
    if head.startswith(b"CBM1"):
        return "catboost"
    if path.suffix.lower() == ".ubj" and head.startswith(b"{"):
        return "xgboost"
    if head.lstrip().startswith(b"{") and b'"learner"' in head:
        return "xgboost"
    return None


def is_booster(source: Any) -> bool:
    """A ``lightgbm.Booster``, ``xgboost.Booster`` or ``catboost.CatBoost`` (the class a
    model loaded without its task is) object."""
    cls = type(source)
    package = cls.__module__.split(".", 1)[0]
    return (cls.__name__, package) in (
        ("Booster", "lightgbm"),
        ("Booster", "xgboost"),
        ("CatBoost", "catboost"),
    )


def read_booster(source: Path | Any) -> Any:
    """The fitted scikit-learn estimator for a booster model file or Booster object;
    InputError for a file its library cannot read or an objective with no such estimator."""
    if isinstance(source, Path):
        kind = booster_file_kind(source)
        origin = str(source)
    else:
        kind = type(source).__module__.split(".", 1)[0]
        origin = f"the {kind} Booster"
    try:
        if kind == "lightgbm":
            return _lightgbm(source, origin)
        if kind == "catboost":
            return _catboost(source, origin)
        return _xgboost(source, origin)
    except InputError:
        raise
    except ImportError as e:
        raise InputError(
            f"{origin} is a {kind} model, and {kind} is not installed",
            hint=f"pip install {kind}",
        ) from e
    except Exception as e:
        raise InputError(
            f"{origin}: {kind} cannot read the model ({one_line(e, 200, line='first')})",
            hint=f"re-save it with {kind}'s save_model",
        ) from e


def _objective_kind(objective: str, origin: str) -> str:
    name = objective.split(" ", 1)[0].split(":", 1)
    family = name[0] if len(name) == 1 else name[0] + ":"
    if family in _CLASSIFIER_OBJECTIVES or family in ("binary:", "multi:"):
        return "classification"
    if family in ("rank:", "lambdarank", "rank_xendcg", "survival:"):
        raise _ranking(objective, origin, "survival" if family == "survival:" else "ranking")
    return "regression"


def _ranking(objective: str, origin: str, what: str = "ranking") -> InputError:
    return InputError(
        f"{origin} has the {what} objective {objective!r}; onnxferry converts classifiers "
        "and regressors",
        hint="convert a model trained for classification or regression",
    )


def saved_booster(kind: str, path: str) -> bytes:
    """(In a spawned worker.) The model file read by its library and saved again: LightGBM's
    text, XGBoost's UBJSON, CatBoost's own format. LightGBM aborts the process on some
    truncated files."""
    if kind == "lightgbm":
        import lightgbm

        return str(lightgbm.Booster(model_file=path).model_to_string()).encode()
    if kind == "catboost":
        import catboost

        model = catboost.CatBoost()
        model.load_model(path)
        return bytes(model._serialize_model())
    import xgboost

    return bytes(xgboost.Booster(model_file=path).save_raw(raw_format="ubj"))


def _read_file(kind: str, path: Path) -> bytes:
    """``saved_booster`` in a spawned worker, so that a file that crashes the library is one
    InputError here."""
    from ...native import spawned_worker

    with spawned_worker(
        f"{path}: {kind} crashed reading the file; it is truncated or corrupt",
        hint=f"re-save the model with {kind}'s save_model",
    ) as worker:
        return worker.submit(saved_booster, kind, str(path)).result()


def _xgboost(source: Path | Any, origin: str) -> Any:
    import xgboost

    booster: Any = source
    if isinstance(source, Path):
        booster = xgboost.Booster(model_file=bytearray(_read_file("xgboost", source)))
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    task = _objective_kind(objective, origin)
    estimator = xgboost.XGBClassifier() if task == "classification" else xgboost.XGBRegressor()
    estimator.load_model(bytearray(booster.save_raw(raw_format="ubj")))
    if estimator.n_estimators is None:  # onnxmltools counts classes as trees / n_estimators
        per_round = max(1, int(config["learner"]["learner_model_param"].get("num_class", 0)))
        estimator.n_estimators = booster.num_boosted_rounds() or len(booster.get_dump()) // (
            per_round
        )
    return estimator


def _catboost(source: Path | Any, origin: str) -> Any:
    import catboost

    if isinstance(source, Path):
        blob = _read_file("catboost", source)
    else:
        blob = bytes(source._serialize_model())
    probe = catboost.CatBoost()
    probe.load_model(blob=blob)
    objective = str(probe.get_all_params().get("loss_function", "RMSE"))
    classifier = objective in ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
    estimator = catboost.CatBoostClassifier() if classifier else catboost.CatBoostRegressor()
    if objective.startswith(_CATBOOST_RANKING):
        raise _ranking(objective, origin)
    estimator.load_model(blob=blob)
    if not getattr(estimator, "n_features_in_", 0):  # CatBoost 1.2 leaves 0 after load_model
        estimator._n_features_in = len(estimator.feature_names_)
    return estimator


def _lightgbm(source: Path | Any, origin: str) -> Any:
    import lightgbm

    booster: Any = source
    if isinstance(source, Path):
        booster = lightgbm.Booster(model_str=_read_file("lightgbm", source).decode())
    objective = str(booster.dump_model(num_iteration=1).get("objective", "regression"))
    classifier, regressor = lightgbm_estimators()
    if _objective_kind(objective, origin) == "classification":
        return classifier(booster)
    return regressor(booster)


class _LightGBMBooster:
    """What onnxmltools' converter and the reference read from a LightGBM booster."""

    booster_package = "lightgbm"

    def __init__(self, booster: Any) -> None:
        self.booster = self.booster_ = booster
        self.n_features_in_ = int(booster.num_feature())
        self.boosting_type = "rf" if _averages(booster) else "gbdt"

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a booster read from a file is already trained")

    def raw(self, x: Any) -> np.ndarray:
        return np.asarray(self.booster_.predict(np.asarray(x, dtype=np.float64)))


class _LightGBMClassification(_LightGBMBooster):
    def __init__(self, booster: Any) -> None:
        super().__init__(booster)
        classes = int(booster.dump_model(num_iteration=1).get("num_class", 1))
        self.classes_ = np.arange(max(classes, 2))

    def predict_proba(self, x: Any) -> np.ndarray:
        p = self.raw(x)
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_[np.argmax(self.predict_proba(x), axis=1)])


class _LightGBMRegression(_LightGBMBooster):
    def predict(self, x: Any) -> np.ndarray:
        return self.raw(x)


def _averages(booster: Any) -> bool:
    """A random forest (its output the trees' average), from the model's own parameters."""
    text = booster.model_to_string(num_iteration=1)
    return "average_output" in text.split("end of trees", 1)[0] or any(
        line.strip() in ("[boosting: rf]", "[boosting: random_forest]")
        for line in text.splitlines()
    )


@functools.cache
def lightgbm_estimators() -> tuple[type, type]:
    """(LightGBMBoosterClassifier, LightGBMBoosterRegressor): scikit-learn estimators over a
    LightGBM booster, made on first use (scikit-learn imports slowly)."""
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    class LightGBMBoosterClassifier(
        ClassifierMixin,  # type: ignore[misc]
        _LightGBMClassification,
        BaseEstimator,  # type: ignore[misc]
    ):
        """A LightGBM classification booster: ``predict`` and ``predict_proba``."""

    class LightGBMBoosterRegressor(
        RegressorMixin,  # type: ignore[misc]
        _LightGBMRegression,
        BaseEstimator,  # type: ignore[misc]
    ):
        """A LightGBM regression booster: ``predict``."""

    return LightGBMBoosterClassifier, LightGBMBoosterRegressor
