"""A pickle from another scikit-learn version: which version wrote it, and the changes
since that are known and safe to undo.

    pickled = pickled_version(Path("model.joblib"))   # "1.3.2" (None: not said in the file)
    migrate(estimator, pickled)                       # ["DecisionTreeClassifier: ... (x20)"]

scikit-learn does not promise that a model pickled by one version predicts alike in another
(its InconsistentVersionWarning). Measured on models pickled by 1.3.2 and loaded by 1.9.1
(benchmarks/RESULTS.md, "old pickles"): logistic regressions, SVCs, k-NN, PCA, ridge and
forest regressors predict as before; gradient boosting (``sklearn.ensemble._gb_losses``)
and HistGradientBoosting (its Cython losses) do not load at all; TF-IDF loses ``idf_``; and
tree classifiers answer counts for probabilities (a leaf of 50 samples gives 50.0, not
1.0), since scikit-learn 1.4 keeps class fractions in ``tree_.value`` where older versions
kept weighted counts. ``migrate`` turns an old tree classifier's counts into those fractions,
which is what its own ``predict_proba`` did when it was pickled, gives a TfidfTransformer its
``idf_`` back, and sets parameters added since (a forest's ``monotonic_cst``) to their
defaults. Whatever it cannot undo, the verification against this scikit-learn still judges.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path
from typing import Any

from .estimators import members

_VERSION_KEY = b"_sklearn_version"
_VERSION = re.compile(rb"(\d+\.\d+(?:\.\d+)?(?:(?:rc|a|b|\.dev|\.post)\d+)?)")
TREE_FRACTIONS_SINCE = (1, 4)
"""The version from which a tree classifier's ``tree_.value`` holds class fractions."""


def pickled_version(path: Path) -> str | None:
    """The scikit-learn version an (uncompressed) pickle or joblib file was written by, from
    the ``_sklearn_version`` its estimators carry; None where the file does not say."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(_VERSION_KEY)
            if at < 0:
                return None
            near = data[at + len(_VERSION_KEY) : at + len(_VERSION_KEY) + 24]
    except (OSError, ValueError):  # an empty or unreadable file: the loader says why
        return None
    found = _VERSION.search(near)
    return found[1].decode() if found else None


def installed_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def differs(pickled: str | None) -> bool:
    """Whether ``pickled`` is a version other than the installed scikit-learn's."""
    return pickled is not None and pickled != installed_version()


def migrate(estimator: Any, pickled: str | None) -> list[str]:
    """Undo, in place, the changes since ``pickled`` known to keep the model's predictions:
    an old tree classifier's counts become class fractions (before 1.4), a TfidfTransformer's
    ``_idf_diag`` becomes ``idf_``, and parameters added since take their defaults (so
    ``get_params`` works). Returns what was changed, one line per kind."""
    if not differs(pickled):
        return []
    assert pickled is not None
    changed: dict[str, list[str]] = {}
    for member in members(estimator):
        name = type(member).__name__
        for fix in (_tree_fractions(member, pickled), _idf(member), _new_params(member)):
            if fix:
                changed.setdefault(fix, []).append(name)
    return [
        f"{', '.join(sorted(set(names)))}: {fix}" + (f" (x{len(names)})" if len(names) > 1 else "")
        for fix, names in changed.items()
    ]


def _tree_fractions(member: Any, pickled: str) -> str:
    """A tree classifier pickled before 1.4, loaded by 1.4 or later: its weighted counts
    made class fractions (what its predict_proba divided them into when it was pickled)."""
    tree = getattr(member, "tree_", None)
    if tree is None or _release(pickled) >= TREE_FRACTIONS_SINCE:
        return ""
    if _release(installed_version()) < TREE_FRACTIONS_SINCE:
        return ""
    import numpy as np
    from sklearn.base import is_classifier

    if not is_classifier(member):
        return ""
    counts = np.asarray(tree.value)  # [nodes, outputs, classes]
    totals = counts.sum(axis=-1, keepdims=True)
    tree.value[...] = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return (
        f"tree_.value counts from scikit-learn {pickled} made class fractions, as 1.4+ keeps them"
    )


def _idf(member: Any) -> str:
    """A TfidfTransformer that keeps its idf as the diagonal matrix ``_idf_diag`` (before
    1.5): the same weights as ``idf_``, which skl2onnx and scikit-learn now read."""
    state = getattr(member, "__dict__", {})
    if "_idf_diag" not in state or "idf_" in state:
        return ""
    import numpy as np

    member.idf_ = np.asarray(state.pop("_idf_diag").diagonal(), dtype=np.float64)
    return "_idf_diag made idf_"


def _new_params(member: Any) -> str:
    """Parameters added since the pickle, set to their defaults."""
    import inspect

    names: list[str] = getattr(type(member), "_get_param_names", list)()
    missing = [p for p in names if not hasattr(member, p)]
    if not missing:
        return ""
    defaults = inspect.signature(type(member).__init__).parameters
    for name in missing:
        default = defaults[name].default if name in defaults else None
        setattr(member, name, None if default is inspect.Parameter.empty else default)
    return f"parameters added since set to their defaults ({', '.join(missing)})"


def _release(version: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)
