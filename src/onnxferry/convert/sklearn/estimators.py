"""The estimator: an object or a trusted pickle, its task, its steps, and naming it.

    estimator, origin, caught = read_estimator("model.joblib", ConvertOptions(trust_pickle=True))
    estimator_task(estimator, origin)           # "classification" (fitted, or InputError)
    describe_estimator(pipeline)                # "Pipeline(StandardScaler, LogisticRegression)"
    [path for path, _ in walk(pipeline)]        # ["", "standardscaler", "logisticregression"]
    members(search)                             # the GridSearchCV, its best_estimator_, ...
    final_step(pipeline)                        # the LogisticRegression at the end

A pickle or joblib file runs code as it loads, so a path is loaded only with
``ConvertOptions.trust_pickle``; warnings raised while unpickling (a scikit-learn version
mismatch) are logged and kept for the report. ``said`` is ``one_line`` as skl2onnx's errors
want it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import InputError, one_line
from ..base import ConvertOptions
from .booster_files import booster_file_kind, is_booster, read_booster
from .tasks import task_of

log = logging.getLogger("onnxferry")

_SUFFIXES = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib"}


def is_pickle(path: Path) -> bool:
    """Whether ``path`` opens as a pickle of protocol 2 or newer does (``\\x80`` and the
    protocol), whatever its name (talon's ``signature/data/classifier``)."""
    with path.open("rb") as file:
        head = file.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read_estimator(source: Any, options: ConvertOptions) -> tuple[Any, str, list[str]]:
    """(estimator, where it came from, warnings raised while unpickling)."""
    if not isinstance(source, (str, os.PathLike)):
        if is_booster(source):
            return read_booster(source), "object", []
        return source, "object", []
    path = Path(source)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise InputError(f"{path} {what}", hint="check the path")
    if booster_file_kind(path) is not None:  # data, not code: no pickle to trust
        return read_booster(path), str(path), []
    kind = _SUFFIXES.get(path.suffix.lower()) or ("pickle" if is_pickle(path) else None)
    if kind is None:
        raise InputError(
            f"{path}: not a scikit-learn model file (expected .pkl, .pickle or .joblib, or "
            "a LightGBM .txt / XGBoost .json or .ubj model file)",
            hint="save the fitted estimator with joblib.dump(model, 'model.joblib')",
        )
    if path.stat().st_size == 0:
        raise InputError(
            f"{path}: the file is empty, not a {kind} file",
            hint="re-save the fitted model with joblib.dump(model, path)",
        )
    if not options.trust_pickle:
        raise InputError(
            f"{path}: loading a {kind} file runs code from it, so onnxferry does not load it "
            "unless told to",
            hint="pass --trust-pickle (trust_pickle=True) if the file comes from a trusted source",
        )
    import joblib

    from .versions import migrate, pickled_version

    pickled = pickled_version(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(path)  # plain pickles too
        except Exception as e:
            raise _unpickling_error(path, kind, e, pickled) from e
    messages = [w.message for w in caught]
    said_by_warning = [getattr(m, "original_sklearn_version", None) for m in messages]
    pickled = pickled or next((v for v in said_by_warning if v), None)  # a compressed file
    found = _load_warnings(messages) + migrate(estimator, pickled)
    for text in found:
        log.warning("%s: %s", path, text)
    return estimator, str(path), found


_DISTRIBUTIONS = {"sklearn": "scikit-learn"}
"""Import names whose distribution (for its version) is named otherwise."""


def _unpickling_error(path: Path, kind: str, error: Exception, pickled: str | None) -> InputError:
    """Why ``path`` did not unpickle, in one line: a module or class the installed
    scikit-learn lacks when another version wrote it, a missing package, or a bad file."""
    from .versions import differs, installed_version

    what = type(error).__name__ + (f": {said(error)}" if str(error).strip() else "")
    if differs(pickled):
        installed = installed_version()
        return InputError(
            f"{path}: pickled by scikit-learn {pickled}, which scikit-learn {installed} here "
            f"cannot read ({what})",
            hint=f"convert it where scikit-learn {pickled} is installed (pip install "
            f"scikit-learn=={pickled}), or load it there and re-save it from a version that "
            "reads it",
        )
    if isinstance(error, ImportError):
        module = error.name or ""
        package = module.split(".")[0]
        if package != module and importlib.util.find_spec(package) is not None:
            version = importlib.metadata.version(_DISTRIBUTIONS.get(package, package))
            return InputError(
                f"{path}: the pickle needs {module!r}, which {package} {version} here does "
                f"not have: another version of {package} wrote it",
                hint=f"load it where the {package} that wrote it is installed and re-save it "
                "from a version that reads it",
            )
        return InputError(
            f"{path}: the pickle needs {module or 'a module'!r}, which is not installed",
            hint="install the package that defines the model's classes",
        )
    return InputError(
        f"{path}: cannot unpickle the file; it is corrupt, truncated or not a {kind} file ({what})",
        hint="re-save the fitted model with joblib.dump(model, path)",
    )


def _load_warnings(messages: list[Warning | str]) -> list[str]:
    """The warnings raised while unpickling, one line each; scikit-learn's version warning,
    raised once per estimator inside (each tree of a forest), as one line."""
    from sklearn.exceptions import InconsistentVersionWarning

    versions = [m for m in messages if isinstance(m, InconsistentVersionWarning)]
    found = [said(m) for m in messages if not isinstance(m, InconsistentVersionWarning)]
    if versions:
        first = versions[0]
        found.insert(
            0,
            f"pickled by scikit-learn {first.original_sklearn_version}, loaded by "
            f"{first.current_sklearn_version} ({len(versions)} estimators): scikit-learn does "
            "not promise the same predictions, and the verification judges against it",
        )
    return found


_SAVED_AS = {
    "torch": "a PyTorch model: save it with torch.save, or give a factory FILE.py:FUNCTION "
    "that unpickles and returns it",
    "keras": "a Keras model: save it with model.save('model.keras'), or give a factory "
    "FILE.py:FUNCTION that returns it",
    "tensorflow": "a TensorFlow object: export a SavedModel, or give a factory "
    "FILE.py:FUNCTION that returns it",
}


def _other_framework_hint(value: Any) -> str | None:
    """What to do with another framework's model found in a pickle, or None."""
    for cls in type(value).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in _SAVED_AS:
            return f"it is {_SAVED_AS[root]}"
    return None


def estimator_task(estimator: Any, origin: str) -> str:
    """One of ``tasks.TASKS`` ("classification", "regression", "outlier detection",
    "clustering", "transformation"); InputError for anything else or an unfitted one."""
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        where = "got" if origin == "object" else f"{origin} holds"
        raise InputError(
            f"{where} a {type(estimator).__name__}, not a fitted scikit-learn estimator",
            hint=_other_framework_hint(estimator)
            or "pass a fitted estimator or Pipeline, or a file saved with joblib.dump",
        )
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    name = describe_estimator(estimator)
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise InputError(
            f"the {name} is not fitted", hint="call fit(X, y) on it before converting"
        ) from None
    except TypeError as e:
        raise InputError(
            f"{name} is not a scikit-learn estimator ({said(e)})",
            hint="pass a fitted estimator or Pipeline",
        ) from None
    return task_of(estimator, name)


def describe_estimator(estimator: Any) -> str:
    """A short name: "Pipeline(StandardScaler, LogisticRegression)"."""
    if isinstance(estimator, str):
        return estimator  # "passthrough" / "drop" inside a pipeline or column transformer
    if estimator is None:
        return "passthrough"
    children = steps_of(estimator)
    name = type(estimator).__name__
    if children is None:
        return name
    return f"{name}({', '.join(describe_estimator(step) for _, step in children)})"


def steps_of(estimator: Any) -> list[tuple[str, Any]] | None:
    """Named steps of a Pipeline, FeatureUnion or ColumnTransformer; None for a leaf."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        return [(str(s[0]), s[1]) for s in steps]
    transformers = getattr(estimator, "transformer_list", None)
    if isinstance(transformers, list):
        return [(str(t[0]), t[1]) for t in transformers]
    fitted = getattr(estimator, "transformers_", None)
    if isinstance(fitted, list):
        return [(str(t[0]), t[1]) for t in fitted]
    return None


def walk(estimator: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, step) for the estimator and every step inside it, e.g. ("features/num", ...)."""
    yield prefix, estimator
    for name, step in steps_of(estimator) or []:
        yield from walk(step, f"{prefix}/{name}" if prefix else name)


def members(estimator: Any) -> list[Any]:
    """The estimator and every estimator inside it: pipeline steps, and what meta-estimators
    hold (a search's best_estimator_, a stack's or vote's estimators_, a calibration's
    classifiers, a multi-output wrapper's estimators), found through their attributes."""
    found: list[Any] = []
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if id(value) in seen or isinstance(value, (str, bytes, int, float, type(None))):
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif hasattr(value, "fit") and hasattr(value, "get_params"):
            found.append(value)
            for item in vars(value).values() if hasattr(value, "__dict__") else ():
                visit(item)
        elif type(value).__name__ == "_CalibratedClassifier":  # holds the fitted estimator
            visit(vars(value))

    visit(estimator)
    return found


def final_step(estimator: Any) -> Any:
    """The estimator at the end of (nested) pipelines."""
    steps = getattr(estimator, "steps", None)
    while isinstance(steps, list) and steps:
        estimator = steps[-1][1]
        steps = getattr(estimator, "steps", None)
    return estimator


_BOILERPLATE = re.compile(r"\s*You may raise an issue at \S+")


def said(error: BaseException | Warning | str) -> str:
    """``one_line`` as skl2onnx errors want it: the first line, without the issue-tracker
    advice, at most 200 characters and without a final period (the hint follows it)."""
    return one_line(error, 200, line="first", drop=_BOILERPLATE, period=False)
