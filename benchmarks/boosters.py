"""LightGBM, XGBoost and CatBoost through `ferry convert`: what converts, how close, how fast.

    .venv/bin/python benchmarks/boosters.py [--rounds 5] [--only a,b]

Each case is trained here on a data set scikit-learn bundles (breast cancer, wine, digits,
diabetes), then converted by ``onnxferry.convert`` (verified against the library's own
predictions, or refused in one line). For each converted model: the worst absolute difference
from the library's ``predict_proba`` / ``predict`` over every row of its data set, and the
library's predict against ONNX Runtime's ``session.run`` side by side in this process, one
call of each in turn for ``--rounds`` rounds of 200 calls: the p50 at one row and the rows per
second at 1024 rows, with their ratio (ONNX Runtime / library; over 1 is faster). Thread
counts are each library's defaults. The CPU and its extensions go first. One Markdown row per
case.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from machine import cpu_summary

QUIET: dict[str, Any] = {"verbose": -1}


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    x, y = loader(return_X_y=True)
    return np.asarray(x), np.asarray(y)


def cases() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (a function making the fitted estimator or the model file's path, its data)."""
    import catboost
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cancer, wine, digits, diabetes = "breast_cancer", "wine", "digits", "diabetes"

    def fit(estimator: Any, data: str) -> tuple[Callable[[], Any], str]:
        return (lambda: estimator.fit(*_data(data))), data

    def saved(train: Callable[..., Any], data: str, suffix: str) -> tuple[Callable[[], Any], str]:
        def make() -> Path:
            path = Path(tempfile.mkdtemp()) / f"model{suffix}"
            train(*_data(data)).save_model(str(path))
            return path

        return make, data

    def lgb_binary(x: np.ndarray, y: np.ndarray) -> Any:
        return lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(x, y), 100)

    def xgb_softprob(x: np.ndarray, y: np.ndarray) -> Any:
        params = {"objective": "multi:softprob", "num_class": 3}
        return xgb.train(params, xgb.DMatrix(x, y), 100)

    def cbm(x: np.ndarray, y: np.ndarray) -> Any:
        return catboost.CatBoostClassifier(
            iterations=100, verbose=0, allow_writing_files=False
        ).fit(x, y)

    rf: dict[str, Any] = {"boosting_type": "rf", "bagging_freq": 1, "bagging_fraction": 0.7}
    return {
        "LGBMClassifier, 100 trees": fit(lgb.LGBMClassifier(**QUIET), cancer),
        "StandardScaler + LGBMClassifier": fit(
            make_pipeline(StandardScaler(), lgb.LGBMClassifier(**QUIET)), cancer
        ),
        "LGBMClassifier, 10 classes": fit(lgb.LGBMClassifier(n_estimators=50, **QUIET), digits),
        "LGBMRegressor, 1000 trees": fit(lgb.LGBMRegressor(n_estimators=1000, **QUIET), diabetes),
        "LGBMRegressor, poisson": fit(lgb.LGBMRegressor(objective="poisson", **QUIET), diabetes),
        "LGBMClassifier, dart": fit(lgb.LGBMClassifier(boosting_type="dart", **QUIET), cancer),
        "LGBMClassifier, rf": fit(lgb.LGBMClassifier(**rf, **QUIET), cancer),
        "LGBMRegressor, linear_tree": fit(lgb.LGBMRegressor(linear_tree=True, **QUIET), diabetes),
        "XGBClassifier, 100 trees": fit(xgb.XGBClassifier(), cancer),
        "XGBClassifier, multi:softmax": fit(xgb.XGBClassifier(objective="multi:softmax"), wine),
        "XGBClassifier, 10 classes": fit(xgb.XGBClassifier(n_estimators=50), digits),
        "XGBRegressor, 1000 trees": fit(xgb.XGBRegressor(n_estimators=1000), diabetes),
        "XGBRFClassifier": fit(xgb.XGBRFClassifier(), cancer),
        "XGBRegressor, gblinear": fit(xgb.XGBRegressor(booster="gblinear"), diabetes),
        "CatBoostClassifier, 100 trees": fit(
            catboost.CatBoostClassifier(iterations=100, verbose=0, allow_writing_files=False),
            cancer,
        ),
        "CatBoostClassifier, 3 classes": fit(
            catboost.CatBoostClassifier(iterations=100, verbose=0, allow_writing_files=False), wine
        ),
        "CatBoostRegressor, 1000 trees": fit(
            catboost.CatBoostRegressor(verbose=0, allow_writing_files=False), diabetes
        ),
        "LightGBM model.txt, binary": saved(lgb_binary, cancer, ".txt"),
        "XGBoost model.json, softprob": saved(xgb_softprob, wine, ".json"),
        "CatBoost model.cbm, binary": saved(cbm, cancer, ".cbm"),
    }


def _library(estimator: Any) -> Callable[[np.ndarray], Any]:
    """The library call a user makes today: predict_proba, or predict for a regressor."""
    return getattr(estimator, "predict_proba", estimator.predict)  # type: ignore[no-any-return]


def _side_by_side(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median seconds per call of ``a`` and ``b``, called in turn."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for _ in range(200):
            for fn, out in ((a, times[0]), (b, times[1])):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def row(name: str, make: Callable[[], Any], data: str, rounds: int) -> str:
    import onnxruntime as ort

    import onnxferry
    from onnxferry.convert.base import ConvertOptions
    from onnxferry.convert.sklearn.estimators import read_estimator
    from onnxferry.errors import FerryError

    source = make()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.onnx"
        try:
            onnxferry.convert(source if not isinstance(source, Path) else str(source), out)
        except FerryError as e:
            return f"| {name} | exit {e.exit_code}: {e.message.split(': ', 2)[-1][:110]} | | | |"
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        estimator = read_estimator(source, ConvertOptions())[0]
        dtype = np.float64 if "double" in session.get_inputs()[0].type else np.float32
        x = _data(data)[0].astype(dtype)
        got = session.run(None, {"input": x})[-1]
        expected = np.asarray(_library(estimator)(x)).reshape(got.shape)
        worst = float(np.abs(got - expected).max())
        cells = []
        for rows in (1, 1024):
            batch = np.ascontiguousarray(np.resize(x, (rows, x.shape[1])))
            lib, onnx = _side_by_side(
                functools.partial(_library(estimator), batch),
                functools.partial(session.run, None, {"input": batch}),
                rounds,
            )
            if rows == 1:
                cells.append(f"{lib * 1e3:.3f} / {onnx * 1e3:.3f} ms ({lib / onnx:.1f}x)")
            else:
                cells.append(f"{rows / lib:,.0f} / {rows / onnx:,.0f} ({lib / onnx:.1f}x)")
        return f"| {name} | ok | {worst:.1e} | {' | '.join(cells)} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="cases whose name contains one of these, e.g. XGB,rf")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print()
    print(
        "| model | convert | max abs, all rows | p50 at 1 row: library / ORT | "
        "rows/s at 1024 rows: library / ORT |"
    )
    print("|---|---|---|---|---|")
    for name, (make, data) in cases().items():
        if options.only and not any(part in name for part in options.only.split(",")):
            continue
        print(row(name, make, data, options.rounds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
