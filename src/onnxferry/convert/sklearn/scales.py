"""Where a fitted estimator's features lie, from what it kept of the data it was fitted on.

    scale, said_by = column_scale(pipeline, 4)   # a ColumnScale and "the StandardScaler's
                                                 # statistics", or (None, "")

Verification rows drawn from N(0, 1) miss a table model whose features lie in the
thousands: every row takes the same branch of every tree, or every kernel value is 0. The
rows are drawn around what the estimator says instead, read in this order:

- the first step, when it scales its input: StandardScaler (mean and scale), RobustScaler
  (center and interquartile range), MinMaxScaler and KBinsDiscretizer (the data's range),
  MaxAbsScaler, QuantileTransformer (its quantiles), PowerTransformer (its standardized
  output's -1, 0 and 1 mapped back);
- else, for a tree ensemble fed the raw features (scikit-learn's forests, gradient and
  histogram boosting, LightGBM, XGBoost), each feature's split thresholds: rows land on both
  sides of them.

A table pipeline (one input per DataFrame column) gets the same per column, from the scaler
its ColumnTransformer branch starts with (``table_scales``). A feature nothing says anything
of stays N(0, 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...feeds import ColumnScale
from .estimators import members
from .table import column_transformer, selected_columns

_IQR = 1.349  # interquartile range of N(0, 1)


def column_scale(estimator: Any, n_features: int) -> tuple[ColumnScale | None, str]:
    """(where the features lie, what said so), or (None, "") when nothing does."""
    first = estimator
    while isinstance(getattr(first, "steps", None), list) and first.steps:
        first = first.steps[0][1]
    found = _from_scaler(first, n_features)
    if found is not None:
        return found, f"the {type(first).__name__}'s statistics"
    if not isinstance(getattr(estimator, "steps", None), list):
        found = _from_thresholds(estimator, n_features)
        if found is not None:
            return found, "the trees' split thresholds"
    return None, ""


def table_scales(estimator: Any) -> dict[str, ColumnScale]:
    """A table pipeline's numeric columns, each ``[batch, 1]`` input around the statistics
    of the scaler its ColumnTransformer branch starts with (none for a branch without)."""
    transformer = column_transformer(estimator)
    names = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
    if transformer is None or not names:
        return {}
    found: dict[str, ColumnScale] = {}
    for _, branch, selected in getattr(transformer, "transformers_", []):
        if isinstance(branch, str):  # "passthrough" / "drop"
            continue
        picked = selected_columns(selected, names)
        first = branch
        while isinstance(getattr(first, "steps", None), list) and first.steps:
            first = first.steps[0][1]
        whole = _from_scaler(first, len(picked))
        if whole is None:
            continue
        for i, column in enumerate(picked):
            found[column] = ColumnScale(whole.center[i : i + 1], whole.spread[i : i + 1])
    return found


def _scale(center: Any, spread: Any, n_features: int) -> ColumnScale | None:
    center = np.broadcast_to(np.asarray(center, dtype=np.float64), (n_features,))
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float64), (n_features,))
    if not (np.isfinite(center).all() and np.isfinite(spread).all()):
        return None
    return ColumnScale(center.copy(), np.where(spread > 0, spread, 1.0))


def _from_scaler(step: Any, n: int) -> ColumnScale | None:
    name = type(step).__name__
    if getattr(step, "n_features_in_", None) != n:
        return None
    if name == "StandardScaler":
        mean = 0.0 if step.mean_ is None else step.mean_
        return _scale(mean, 1.0 if step.scale_ is None else step.scale_, n)
    if name == "RobustScaler":
        center = 0.0 if step.center_ is None else step.center_
        return _scale(center, 1.0 if step.scale_ is None else step.scale_ / _IQR, n)
    if name == "MinMaxScaler":
        low, high = step.data_min_, step.data_max_
        return _scale((low + high) / 2, (high - low) / 4, n)
    if name == "MaxAbsScaler":
        return _scale(0.0, step.max_abs_ / 2, n)
    if name == "QuantileTransformer":
        q = np.asarray(step.quantiles_)
        middle = np.quantile(q, [0.25, 0.5, 0.75], axis=0)
        return _scale(middle[1], (middle[2] - middle[0]) / _IQR, n)
    if name == "PowerTransformer" and step.standardize:  # its output is N(0, 1): map back
        below, middle, above = step.inverse_transform(np.outer([-1.0, 0.0, 1.0], np.ones(n)))
        return _scale(middle, np.abs(above - below) / 2, n)
    if name == "KBinsDiscretizer":
        edges = step.bin_edges_
        low = np.array([e[0] for e in edges])
        high = np.array([e[-1] for e in edges])
        return _scale((low + high) / 2, (high - low) / 4, n)
    return None


def _from_thresholds(estimator: Any, n: int) -> ColumnScale | None:
    """Each feature's split thresholds' middle and half range, over every tree inside."""
    splits: list[tuple[np.ndarray, np.ndarray]] = []
    for member in members(estimator):
        splits.extend(_tree_splits(member))
    if not splits:
        return None
    features = np.concatenate([f for f, _ in splits]).astype(np.int64)
    thresholds = np.concatenate([t for _, t in splits]).astype(np.float64)
    keep = (features >= 0) & (features < n) & np.isfinite(thresholds)
    features, thresholds = features[keep], thresholds[keep]
    center, spread = np.zeros(n), np.ones(n)
    for feature in np.unique(features):
        values = thresholds[features == feature]
        low, high = float(values.min()), float(values.max())
        center[feature] = (low + high) / 2
        spread[feature] = max((high - low) / 2, abs(center[feature]) * 0.1, 1e-3)
    return _scale(center, spread, n)


def _tree_splits(member: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(feature index, threshold) of every split of a scikit-learn tree, a LightGBM booster
    or an XGBoost booster; [] for anything else."""
    tree = getattr(member, "tree_", None)
    if tree is not None and hasattr(tree, "threshold"):
        inner = tree.feature >= 0
        return [(tree.feature[inner], tree.threshold[inner])]
    predictors = getattr(member, "_predictors", None)  # HistGradientBoosting's trees
    if isinstance(predictors, list):
        found = []
        for predictor in (p for stage in predictors for p in stage):
            nodes = getattr(predictor, "nodes", None)
            if nodes is None or "num_threshold" not in (nodes.dtype.names or ()):
                continue
            inner = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)
            found.append((nodes["feature_idx"][inner], nodes["num_threshold"][inner]))
        return found
    package = type(member).__module__.split(".", 1)[0]
    booster_package = getattr(type(member), "booster_package", None)
    try:
        if package == "lightgbm" or booster_package == "lightgbm":
            booster = member.booster_
            names = {name: i for i, name in enumerate(booster.feature_name())}
            table = booster.trees_to_dataframe().dropna(subset=["split_feature"])
            index = table["split_feature"].map(names).to_numpy(dtype=np.float64)
            return [(index, table["threshold"].to_numpy(dtype=np.float64))]
        if package == "xgboost":
            table = member.get_booster().trees_to_dataframe()
            table = table[table["Feature"] != "Leaf"]
            names = member.get_booster().feature_names
            lookup = {name: i for i, name in enumerate(names)} if names else {}
            index = [lookup.get(f, int(f[1:]) if f[1:].isdigit() else -1) for f in table["Feature"]]
            return [(np.asarray(index, dtype=np.float64), table["Split"].to_numpy(np.float64))]
    except (ImportError, AttributeError, KeyError, ValueError):  # no pandas, another version
        return []
    return []
