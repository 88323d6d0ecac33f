"""scikit-learn estimators and pipelines to ONNX through skl2onnx, verified against predict.

    source = load_sklearn(pipeline, ConvertOptions())                      # a fitted estimator
    source = load_sklearn("model.joblib", ConvertOptions(trust_pickle=True))  # or a saved one
    source.reference.run({"input": x})          # {"label": ..., "probabilities": ...}
    source.candidates[0].export(Path("model.onnx"))

The ONNX model has one input, "input" [batch, n_features], and skl2onnx's outputs: a
classifier gives "label" [batch] (int64, or string for string classes) and "probabilities"
[batch, n_classes] (predict_proba; decision_function scores for a classifier without it); a
regressor gives "variable" [batch, n_targets]. ``SklearnRunner`` returns the same names,
shapes and dtypes from predict / predict_proba, so the two compare directly.

The element type (the float64 rule), decided once at load:

1. Sample inputs given: their dtype, float32 or float64 (the user's data says how the model
   is fed; float64 samples mean a float64 model, DoubleTensorType end to end).
2. Otherwise a classifier is float32: its probabilities lie in [0, 1], where float32's
   ~1e-7 rounding stays far inside the 1e-4 tolerance.
3. Otherwise a regressor is float64 when its predictions change as its inputs are rounded to
   float32 (probed on generated rows): it then computes in float64 (linear, kernel and
   neighbour models; not trees, which round their inputs to float32 themselves), and its
   outputs are in the user's units, where float32 loses digits wherever large terms cancel.
   The probe cannot know the data's scale, so any change counts. Else float32.

When rule 3 picks float64 but skl2onnx or ONNX Runtime cannot run the estimator in float64
(e.g. SVR, tree ensembles with skl2onnx 1.20), the export falls back to float32 and
``details["dtype_reason"]`` says why; float64 samples (rule 1) turn the same into a
ConversionError. A pickle or joblib file runs code as it loads, so a path is loaded only
with ``trust_pickle``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FerryError, InputError, UsageError, one_line
from ..model import Model
from ..parity import Tolerance
from ..runtime import create_session, runtime_limits
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConversionError, ConvertOptions, Source

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("onnxferry")

INPUT = "input"
"""The name of the one input of every converted scikit-learn model."""

FLOAT32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
FLOAT64_TOLERANCE = Tolerance(atol=1e-8, rtol=1e-7)
"""Default tolerances by the model's float type; float32 outputs of a float64 model (e.g.
a random forest's probabilities) keep the float32 ones."""

_SUFFIXES = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib"}
_PROBE_ROWS = 64
_CONVERTER_HINT = (
    "register a converter for it with skl2onnx.update_registered_converter, or replace the "
    "step with one skl2onnx supports"
)


def load_sklearn(source: Any, options: ConvertOptions) -> Source:
    """A Source for a fitted estimator or Pipeline, or a .pkl/.pickle/.joblib file of one.

        source = load_sklearn(make_pipeline(StandardScaler(), Ridge()).fit(x, y), options)
        source.details["dtype"], source.details["dtype_reason"]   # the float64 rule's choice

    InputError (exit 2) for a path without ``options.trust_pickle``, a missing, corrupt or
    truncated file, something that is not a fitted classifier or regressor; UsageError for
    shapes or axes that do not fit; the candidate raises ConversionError for an estimator or
    step skl2onnx cannot convert, naming it.
    """
    estimator, origin, load_warnings = _load(source, options)
    task = _task(estimator, origin)
    name = describe_estimator(estimator)
    n_features = _n_features(estimator, options)
    batch = _batch_dim(options, n_features)
    dtype, reason, by_user = _choose_dtype(estimator, task, n_features, options)
    opsets = _target_opsets(options)
    proto: onnx.ModelProto | None = None
    error: ConversionError | None = None
    try:
        proto = _convert(estimator, task, n_features, dtype, opsets, batch, by_user)
    except _ExportError as e:
        error = e
        if dtype == np.float64 and not by_user:  # rule 3 falls back to float32
            reason += f", but it cannot run in float64 ({e.detail}); exported in float32"
            dtype = np.dtype(np.float32)
            try:
                proto = _convert(estimator, task, n_features, dtype, opsets, batch, by_user)
                error = None
            except _ExportError as e32:
                error = e32
    signature = (
        Signature.from_onnx(proto)
        if proto is not None
        else _expected_signature(estimator, task, n_features, dtype, batch)
    )
    reference = SklearnRunner(estimator, signature, task, name=f"scikit-learn {name}")

    def export(path: Path) -> None:
        if error is not None:
            raise error
        assert proto is not None
        Model.from_proto(proto).save(path, external_data=False)

    details: dict[str, Any] = {
        "estimator": name,
        "task": task,
        "dtype": dtype.name,
        "dtype_reason": reason,
        "n_features": n_features,
        "origin": origin,
        "target_opset": opsets,
        "versions": _versions(),
    }
    classes = getattr(estimator, "classes_", None)
    if task == "classification" and classes is not None:
        details["classes"] = [_plain(c) for c in np.asarray(classes).tolist()]
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        details["feature_names"] = [str(n) for n in names]  # the column order of "input"
    if load_warnings:
        details["load_warnings"] = load_warnings
    return Source(
        framework="sklearn",
        description=f"scikit-learn {name} ({task}, {n_features} features, {dtype.name})",
        reference=reference,
        candidates=[Candidate("skl2onnx", export)],
        tolerance=_tolerance(dtype, signature),
        details=details,
    )


@dataclass
class SklearnRunner:
    """A fitted estimator as a Runner: ``run({"input": x})`` calls predict, and for a
    classifier predict_proba (or decision_function), and returns the outputs with the names,
    shapes and dtypes of ``signature`` (the ONNX model's)."""

    estimator: Any
    model_signature: Signature
    task: str
    name: str = "scikit-learn"

    @property
    def signature(self) -> Signature:
        return self.model_signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.model_signature.validate(feeds)
        x = feeds[self.model_signature.inputs[0].name]
        outputs = self.model_signature.outputs
        with warnings.catch_warnings():
            # Fitted on a DataFrame, fed an array in the same column order.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            values = [self.estimator.predict(x)]
            if self.task == "classification":
                values.append(_scores(self.estimator, x))
        return {spec.name: _shaped(v, spec) for spec, v in zip(outputs, values, strict=True)}


def describe_estimator(estimator: Any) -> str:
    """A short name: "Pipeline(StandardScaler, LogisticRegression)"."""
    if isinstance(estimator, str):
        return estimator  # "passthrough" / "drop" inside a pipeline or column transformer
    if estimator is None:
        return "passthrough"
    children = _children(estimator)
    name = type(estimator).__name__
    if children is None:
        return name
    return f"{name}({', '.join(describe_estimator(step) for _, step in children)})"


# --- loading ---------------------------------------------------------------------------------


def _load(source: Any, options: ConvertOptions) -> tuple[Any, str, list[str]]:
    """(estimator, where it came from, warnings raised while unpickling)."""
    if not isinstance(source, (str, os.PathLike)):
        return source, "object", []
    path = Path(source)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: not a scikit-learn model file (expected .pkl, .pickle or .joblib)",
            hint="save the fitted estimator with joblib.dump(model, 'model.joblib')",
        )
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise InputError(f"{path} {what}", hint="check the path")
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

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(path)  # plain pickles too
        except ImportError as e:
            raise InputError(
                f"{path}: the pickle needs {e.name or 'a module'!r}, which is not installed",
                hint="install the package that defines the model's classes",
            ) from e
        except Exception as e:
            what = type(e).__name__ + (f": {_said(e)}" if str(e).strip() else "")
            raise InputError(
                f"{path}: cannot unpickle the file; it is corrupt, truncated or not a {kind} "
                f"file ({what})",
                hint="re-save the fitted model with joblib.dump(model, path)",
            ) from e
    found = [_said(w.message) for w in caught]
    for text in found:
        log.warning("%s: %s", path, text)
    return estimator, str(path), found


def _task(estimator: Any, origin: str) -> str:
    """ "classification" or "regression"; InputError for anything else or an unfitted one."""
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        where = "got" if origin == "object" else f"{origin} holds"
        raise InputError(
            f"{where} a {type(estimator).__name__}, not a fitted scikit-learn estimator",
            hint="pass a fitted estimator or Pipeline, or a file saved with joblib.dump",
        )
    from sklearn.base import is_classifier, is_regressor
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
            f"{name} is not a scikit-learn estimator ({_said(e)})",
            hint="pass a fitted estimator or Pipeline",
        ) from None
    if is_classifier(estimator):
        return "classification"
    if is_regressor(estimator):
        return "regression"
    raise InputError(
        f"the {name} is neither a classifier nor a regressor",
        hint="convert a classifier, a regressor, or a Pipeline that ends in one",
    )


# --- the input ---------------------------------------------------------------------------------


def _n_features(estimator: Any, options: ConvertOptions) -> int:
    unknown = [n for n in (*options.input_shapes, *(options.dynamic_axes or {})) if n != INPUT]
    if unknown:
        raise UsageError(
            f"a scikit-learn model has one input, {INPUT!r}, not {unknown[0]!r}",
            hint=f"name it {INPUT!r} in --input-shape and --dynamic",
        )
    shape = options.input_shapes.get(INPUT)
    if shape is not None and len(shape) != 2:
        raise UsageError(
            f"input {INPUT!r} of a scikit-learn model is [batch, n_features], got shape "
            f"{list(shape)}",
            hint=f"give --input-shape {INPUT}=BxN",
        )
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        if shape is None:
            raise InputError(
                f"the {describe_estimator(estimator)} does not say how many features it takes "
                "(no n_features_in_)",
                hint=f"give --input-shape {INPUT}=BxN",
            )
        return int(shape[1])
    if shape is not None and shape[1] != n:
        raise UsageError(
            f"--input-shape gives {shape[1]} features, but the estimator was fitted on {n}",
            hint=f"give --input-shape {INPUT}=Bx{n}",
        )
    return int(n)


def _batch_dim(options: ConvertOptions, n_features: int) -> str | int:
    """Dim 0 of the input and every output: a symbol name, or a fixed size."""
    axes = options.axes_for(INPUT, 2)
    if 1 in axes:
        raise UsageError(
            f"dim 1 of {INPUT!r} is the feature count, fixed at {n_features} for this estimator",
            hint=f"make only dim 0 dynamic: --dynamic {INPUT}:0=batch",
        )
    if 0 in axes:
        return axes[0]
    shape = options.input_shapes.get(INPUT)
    if shape is None:
        raise UsageError(
            f"dim 0 of {INPUT!r} is static, but no batch size is given",
            hint=f"give --input-shape {INPUT}=Bx{n_features}, or keep the batch dynamic",
        )
    return int(shape[0])


def _choose_dtype(
    estimator: Any, task: str, n_features: int, options: ConvertOptions
) -> tuple[np.dtype[Any], str, bool]:
    """(dtype, why, whether the user's samples decided it): the float64 rule above."""
    sample = _sample_dtype(options.sample_inputs)
    if sample is not None:
        return sample, f"the sample inputs are {sample.name}", True
    if task == "classification":
        return (
            np.dtype(np.float32),
            "a classifier: probabilities in [0, 1] keep float32's precision",
            False,
        )
    in_float64 = _computes_in_float64(estimator, n_features)
    if in_float64:
        reason = "a regressor that computes in float64 (its predictions change when inputs "
        return np.dtype(np.float64), reason + "are rounded to float32)", False
    reason = "a regressor whose predictions do not change when inputs are rounded to float32"
    if in_float64 is None:
        reason = "a regressor that the float64 probe could not run"
    return np.dtype(np.float32), reason, False


def _sample_dtype(samples: Sequence[Mapping[str, np.ndarray]]) -> np.dtype[Any] | None:
    found: set[np.dtype[Any]] = set()
    for sample in samples:
        if INPUT in sample:
            array = sample[INPUT]
        elif len(sample) == 1:
            array = next(iter(sample.values()))
        else:
            raise InputError(
                f"sample inputs name {sorted(sample)}, but a scikit-learn model has one input, "
                f"{INPUT!r}",
                hint=f"save the samples as {INPUT!r}",
            )
        found.add(np.asarray(array).dtype)
    if not found:
        return None
    if len(found) > 1:
        raise InputError(
            f"sample inputs mix dtypes {sorted(str(d) for d in found)}",
            hint="give every sample the same dtype, float32 or float64",
        )
    dtype = found.pop()
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(
            f"sample input {INPUT!r} is {dtype}; a scikit-learn model is exported with a "
            "float32 or float64 input",
            hint="cast the samples with .astype(np.float32), or np.float64 to keep float64",
        )
    return dtype


def _computes_in_float64(estimator: Any, n_features: int) -> bool | None:
    """True when predict gives other values for the same rows rounded to float32 (None when
    predict fails on the generated rows)."""
    x = np.random.default_rng(0).standard_normal((_PROBE_ROWS, n_features))
    rounded = x.astype(np.float32).astype(np.float64)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            exact = np.asarray(estimator.predict(x), dtype=np.float64)
            coarse = np.asarray(estimator.predict(rounded), dtype=np.float64)
    except Exception as e:  # the probe is advice; the reference shows real failures
        log.debug("float64 probe failed: %s", _said(e))
        return None
    return not np.array_equal(exact, coarse, equal_nan=True)


# --- conversion --------------------------------------------------------------------------------


class _ExportError(ConversionError):
    """A ConversionError that keeps skl2onnx's (or ONNX Runtime's) bare reason."""

    def __init__(self, message: str, *, hint: str, detail: str) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail


def _target_opsets(options: ConvertOptions) -> dict[str, int]:
    import skl2onnx

    main = options.opset or min(skl2onnx.get_latest_tested_opset_version(), runtime_limits()[1])
    ml = 3 if main >= 18 else 2 if main >= 15 else 1  # skl2onnx's pairing of the two
    return {"": main, "ai.onnx.ml": ml}


def _convert(
    estimator: Any,
    task: str,
    n_features: int,
    dtype: np.dtype[Any],
    opsets: dict[str, int],
    batch: str | int,
    by_user: bool,
) -> onnx.ModelProto:
    """The ONNX model, checked to load in ONNX Runtime when float64; _ExportError if not."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = DoubleTensorType if dtype == np.float64 else FloatTensorType
    initial = [(INPUT, tensor_type([None, n_features]))]
    final = _final_step(estimator)
    options: dict[int, dict[str, Any]] | None = None
    if task == "classification":
        options = {id(final): {"zipmap": False}}  # probabilities as a tensor, not maps
    try:
        try:
            proto = convert_sklearn(
                estimator, initial_types=initial, target_opset=opsets, options=options
            )
        except NameError as e:
            if "zipmap" not in str(e):  # a classifier without the option: tensors already
                raise
            proto = convert_sklearn(estimator, initial_types=initial, target_opset=opsets)
    except Exception as e:
        raise _conversion_error(estimator, e, dtype, by_user) from e
    model: onnx.ModelProto = proto
    _tidy(model, batch)
    if dtype == np.float64:
        problem = _ort_problem(model)
        if problem:
            raise _conversion_error(estimator, problem, dtype, by_user)
    return model


def _conversion_error(
    estimator: Any, error: Exception | str, dtype: np.dtype[Any], by_user: bool
) -> _ExportError:
    """One line naming the step skl2onnx failed on (matched by class name in its error)."""
    text = _said(error)
    name = describe_estimator(estimator)
    for path, step in _walk(estimator):
        cls = type(step).__name__
        leaf = path and step is not None and not isinstance(step, str) and not _children(step)
        if leaf and re.search(rf"\b{re.escape(cls)}\b", text):
            return _ExportError(
                f"skl2onnx cannot convert step {path!r} ({cls}) of the {name}: {text}",
                hint=_CONVERTER_HINT,
                detail=text,
            )
    if dtype == np.float64:
        hint = "pass float32 sample inputs (x.astype(np.float32)) to export in float32"
        if not by_user:
            hint = _CONVERTER_HINT
        return _ExportError(
            f"skl2onnx cannot export the {name} in float64: {text}", hint=hint, detail=text
        )
    return _ExportError(
        f"skl2onnx cannot convert the {name}: {text}",
        hint=_CONVERTER_HINT + ", or try another opset (--opset)",
        detail=text,
    )


def _ort_problem(proto: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime cannot load the model (skl2onnx writes some float64 models that
    neither the onnx checker nor ONNX Runtime accepts), or None."""
    try:
        create_session(Model.from_proto(proto))
    except FerryError as e:
        return e.message.split(": ", 1)[-1]  # without "onnxruntime cannot load <name>: "
    return None


def _tidy(proto: onnx.ModelProto, batch: str | int) -> None:
    """Name dim 0 of the input and outputs (skl2onnx leaves it unnamed) and drop the
    duplicate opset imports skl2onnx writes."""
    for value in (*proto.graph.input, *proto.graph.output):
        if not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and not dims[0].dim_param:
            if isinstance(batch, str):
                dims[0].dim_param = batch
            else:
                dims[0].dim_value = batch
    versions: dict[str, int] = {}
    for opset in proto.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), int(opset.version))
    del proto.opset_import[:]
    for domain, version in versions.items():
        entry = proto.opset_import.add()
        entry.domain, entry.version = domain, version


def _expected_signature(
    estimator: Any, task: str, n_features: int, dtype: np.dtype[Any], batch: str | int
) -> Signature:
    """The signature skl2onnx would give, for a reference whose estimator did not convert."""
    float_type = dtype_from_numpy(dtype)
    inputs = (TensorSpec(INPUT, float_type, (batch, n_features)),)
    outputs: tuple[TensorSpec, ...]
    if task == "classification":
        classes = np.asarray(getattr(estimator, "classes_", []))
        label = dtype_from_numpy(object if classes.dtype.kind in "OUS" else np.int64)
        outputs = (
            TensorSpec("label", label, (batch,)),
            TensorSpec("probabilities", float_type, (batch, len(classes))),
        )
    else:
        outputs = (TensorSpec("variable", float_type, (batch, 1)),)
    return Signature(inputs, outputs)


def _tolerance(dtype: np.dtype[Any], signature: Signature) -> Tolerance:
    if dtype != np.float64:
        return FLOAT32_TOLERANCE
    low = FLOAT32_TOLERANCE.atol, FLOAT32_TOLERANCE.rtol
    per_output = {s.name: low for s in signature.outputs if s.dtype.onnx_name == "FLOAT"}
    return Tolerance(FLOAT64_TOLERANCE.atol, FLOAT64_TOLERANCE.rtol, per_output)


# --- the reference's outputs -------------------------------------------------------------------


def _scores(estimator: Any, x: np.ndarray) -> np.ndarray:
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(x))
    return np.asarray(estimator.decision_function(x))


def _shaped(values: Any, spec: TensorSpec) -> np.ndarray:
    """predict's values with the spec's dtype and rank (a binary decision_function d as
    [-d, d] when the model gives two score columns)."""
    array = np.asarray(values)
    if spec.shape is not None and len(spec.shape) == 2 and array.ndim == 1:
        if spec.shape[1] == 2 and spec.dtype.kind == "float":
            array = np.stack([-array, array], axis=1)
        else:
            array = array.reshape(-1, 1)
    if spec.dtype.kind == "string":
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [_text(v) for v in array.flat]
        return out
    return array.astype(spec.dtype.numpy, copy=False)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    """A class label as JSON can hold it."""
    return value if isinstance(value, (int, float, str, bool)) else str(value)


# --- pipelines ----------------------------------------------------------------------------------


def _children(estimator: Any) -> list[tuple[str, Any]] | None:
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


def _walk(estimator: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, step) for the estimator and every step inside it, e.g. ("features/num", ...)."""
    yield prefix, estimator
    for name, step in _children(estimator) or []:
        yield from _walk(step, f"{prefix}/{name}" if prefix else name)


def _final_step(estimator: Any) -> Any:
    """The estimator at the end of (nested) pipelines."""
    steps = getattr(estimator, "steps", None)
    while isinstance(steps, list) and steps:
        estimator = steps[-1][1]
        steps = getattr(estimator, "steps", None)
    return estimator


_BOILERPLATE = re.compile(r"\s*You may raise an issue at \S+")


def _said(error: BaseException | Warning | str) -> str:
    """``one_line`` as skl2onnx errors want it: the first line, without the issue-tracker
    advice, at most 200 characters and without a final period (the hint follows it)."""
    return one_line(error, 200, line="first", drop=_BOILERPLATE, period=False)


def _versions() -> dict[str, str]:
    import skl2onnx
    import sklearn

    return {"scikit-learn": str(sklearn.__version__), "skl2onnx": str(skl2onnx.__version__)}
