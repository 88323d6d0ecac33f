"""Pickles from another scikit-learn version: the version is named, tree classifiers from
before 1.4 (counts in ``tree_.value``) are made as they predicted then, and what this
scikit-learn cannot read is one line naming both versions.

An old pickle is made here the way an old scikit-learn wrote it: an estimator fitted now,
its trees' class fractions turned back into weighted counts, and the ``_sklearn_version``
every estimator's state carries set to 1.3 (benchmarks/RESULTS.md, "old pickles", has the
same models pickled by a real scikit-learn 1.3.2).
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

import joblib
import sklearn
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

import onnxferry
from onnxferry.convert import Conversion
from onnxferry.convert.sklearn.versions import migrate, pickled_version
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

OLD = "1.3." + "2" * (len(sklearn.__version__) - 4)
"""A version before 1.4, as long as the installed one (so the pickle's string lengths hold)."""


def _as_old_pickle(estimator: Any, path: Path) -> Path:
    """``estimator`` pickled as scikit-learn before 1.4 wrote it: each tree classifier's
    ``tree_.value`` in weighted counts, each state's ``_sklearn_version`` set to ``OLD``."""
    for member in [estimator, *getattr(estimator, "estimators_", [])]:
        tree = getattr(member, "tree_", None)
        if tree is not None:
            tree.value[...] = tree.value * tree.weighted_n_node_samples[:, None, None]
    joblib.dump(estimator, path)
    data = path.read_bytes()
    now = b"_sklearn_version\x94\x8c" + bytes([len(sklearn.__version__)])
    assert now + sklearn.__version__.encode() in data, "pickle layout: protocol 4+ strings"
    path.write_bytes(data.replace(now + sklearn.__version__.encode(), now + OLD.encode()))
    return path


@pytest.mark.parametrize(
    ("make", "data"),
    [
        (lambda: DecisionTreeClassifier(random_state=0), load_iris),
        (lambda: RandomForestClassifier(20, random_state=0), load_breast_cancer),
    ],
)
def test_an_old_tree_classifier_converts_as_it_predicted(
    tmp_path: Path, ferry: Run, make: Any, data: Any
) -> None:
    """Unpickled as they are, an old tree's probabilities here are its counts (50.0 for a
    leaf of 50 irises); ferry makes them fractions again, and the ONNX model gives what the
    model gave before it was pickled."""
    x, y = data(return_X_y=True)
    fitted = make().fit(x, y)
    expected = fitted.predict_proba(x)
    path = _as_old_pickle(fitted, tmp_path / "old.joblib")
    assert pickled_version(path) == OLD
    with pytest.warns(sklearn.exceptions.InconsistentVersionWarning):
        as_loaded = joblib.load(path)
    assert as_loaded.predict_proba(x).max() > 1  # what scikit-learn alone makes of it

    code, _, err = ferry("convert", path, "-o", tmp_path / "m.onnx", "--trust-pickle")
    assert code == 0, err
    assert f"pickled by scikit-learn {OLD}, loaded by {sklearn.__version__}" in err
    assert "made class fractions" in err
    runner = OrtRunner(onnxferry.Model.load(tmp_path / "m.onnx"))
    got = runner.run({"input": x.astype(np.float32)})["probabilities"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    model = onnxferry.convert(path, tmp_path / "again.onnx", trust_pickle=True)
    warnings = model.last_report(Conversion).result.details["load_warnings"]
    assert len(warnings) == 2  # one line for the version, however many trees; the fix


def test_an_old_tfidf_pipeline_gets_its_idf_back(tmp_path: Path, ferry: Run) -> None:
    """Before 1.5 a TfidfTransformer kept its weights as the diagonal matrix ``_idf_diag``;
    loaded now it has no ``idf_``, and skl2onnx could not convert it (exit 2)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["good movie", "bad film", "great plot", "awful acting", "fine work"] * 8
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression())
    pipeline.fit(texts, [1, 0, 1, 0, 1] * 8)
    held_out = ["good plot", "awful film", "great acting, bad plot"]
    expected = pipeline.predict_proba(held_out)
    transformer = pipeline.steps[0][1]._tfidf
    transformer._idf_diag = sparse.diags(transformer.__dict__.pop("idf_"))
    path = _as_old_pickle(pipeline, tmp_path / "text.joblib")
    code, _, err = ferry("convert", path, "-o", tmp_path / "m.onnx", "--trust-pickle")
    assert code == 0, err
    assert "TfidfTransformer: _idf_diag made idf_" in err
    runner = OrtRunner(onnxferry.Model.load(tmp_path / "m.onnx"))
    got = runner.run({"input": np.array(held_out, dtype=object)})["probabilities"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_migrate_leaves_a_pickle_of_this_version_alone() -> None:
    x, y = load_iris(return_X_y=True)
    tree = DecisionTreeClassifier(random_state=0).fit(x, y)
    before = np.array(tree.tree_.value)
    assert migrate(tree, sklearn.__version__) == [] and migrate(tree, "1.4.0") == []
    assert migrate(tree, None) == []
    np.testing.assert_array_equal(tree.tree_.value, before)


class _Loss:
    """Stands in for a class of a module a later scikit-learn removed."""


def test_a_pickle_this_scikit_learn_cannot_read_names_both_versions(
    tmp_path: Path, ferry: Run
) -> None:
    """GradientBoosting pickles of 1.3 need ``sklearn.ensemble._gb_losses``, gone since 1.4:
    one line with both versions and where to convert it, not "install the package"."""
    gone = types.ModuleType("sklearn.ensemble._gone_losses")
    _Loss.__module__ = gone.__name__
    gone._Loss = _Loss  # type: ignore[attr-defined]
    sys.modules[gone.__name__] = gone
    try:
        state = {"loss": _Loss(), "_sklearn_version": OLD}
        (tmp_path / "gb.pkl").write_bytes(pickle.dumps(state, protocol=4))
    finally:
        del sys.modules[gone.__name__]
    code, _, err = ferry(
        "convert", tmp_path / "gb.pkl", "-o", tmp_path / "m.onnx", "--trust-pickle"
    )
    assert code == 2
    assert f"pickled by scikit-learn {OLD}, which scikit-learn {sklearn.__version__}" in err
    assert f"pip install scikit-learn=={OLD}" in err and "_gone_losses" in err
    assert err.count("\n") == 1


def test_a_module_the_installed_package_lacks_is_not_called_missing(
    tmp_path: Path, ferry: Run
) -> None:
    """A pickle that records no version but names a module scikit-learn no longer has
    (``sklearn.linear_model.logistic`` before 0.22's private modules): not "install the
    package", which is installed, but another version of it."""
    gone = types.ModuleType("sklearn.linear_model._gone_logistic")
    _Loss.__module__ = gone.__name__
    gone._Loss = _Loss  # type: ignore[attr-defined]
    sys.modules[gone.__name__] = gone
    try:
        (tmp_path / "lr.pkl").write_bytes(pickle.dumps({"model": _Loss()}, protocol=4))
    finally:
        del sys.modules[gone.__name__]
    code, _, err = ferry(
        "convert", tmp_path / "lr.pkl", "-o", tmp_path / "m.onnx", "--trust-pickle"
    )
    assert code == 2 and err.count("\n") == 1, err
    assert f"which sklearn {sklearn.__version__} here does not have" in err
    assert "not installed" not in err
