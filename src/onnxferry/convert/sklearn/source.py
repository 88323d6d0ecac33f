"""The Source for a scikit-learn model: the skl2onnx candidate and the estimator as reference.

    source = load_sklearn(pipeline, ConvertOptions())
    source.reference.run({"input": x})   # SklearnRunner: {"label": ..., "probabilities": ...}
    source.details["dtype"], source.details["dtype_reason"]   # the float64 rule's choice
    source.tolerance                            # FLOAT32_TOLERANCE for a float32 model

``SklearnRunner`` returns predict / predict_proba with the ONNX model's names, shapes and
dtypes, so the two compare directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...model import Model
from ...parity import Tolerance
from ...signature import Signature, TensorSpec
from ..base import Candidate, ConversionError, ConvertOptions, Source
from .boosters import LIBRARIES, booster_package, converters_for
from .estimators import describe_estimator, estimator_task, members, read_estimator, said
from .export import (
    ExportError,
    convert_estimator,
    expected_signature,
    library_versions,
    target_opsets,
)
from .inputs import INPUT, batch_dim, choose_dtype, feature_count, table_dtype, text_dtype
from .scales import column_scale, table_scales
from .table import Table, table_layout
from .tasks import method_of
from .text import text_options, text_vectorizer, text_vocabulary

if TYPE_CHECKING:
    import onnx

FLOAT32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
FLOAT64_TOLERANCE = Tolerance(atol=1e-8, rtol=1e-7)
"""Default tolerances by the model's float type; float32 outputs of a float64 model (e.g.
a random forest's probabilities) keep the float32 ones."""


def load_sklearn(source: Any, options: ConvertOptions) -> Source:
    """A Source for a fitted estimator or Pipeline, or a .pkl/.pickle/.joblib file of one.

        source = load_sklearn(make_pipeline(StandardScaler(), Ridge()).fit(x, y), options)
        source.details["dtype"], source.details["dtype_reason"]   # the float64 rule's choice

    InputError (exit 2) for a path without ``options.trust_pickle``, a missing, corrupt or
    truncated file, something that is not a fitted classifier or regressor; UsageError for
    shapes or axes that do not fit; the candidate raises ConversionError for an estimator or
    step skl2onnx cannot convert, naming it.
    """
    estimator, origin, load_warnings = read_estimator(source, options)
    task = estimator_task(estimator, origin)
    name = describe_estimator(estimator)
    vectorizer = text_vectorizer(estimator)
    text = vectorizer is not None
    table = None if text else table_layout(estimator, options)
    batch: str | int
    if table is not None:
        n_features, batch = len(table.columns), table.batch(options)
        dtype, reason, by_user = table_dtype(estimator, task, table, options)
    else:
        n_features = feature_count(estimator, options, text=text)
        batch = batch_dim(options, n_features, text=text)
        dtype, reason, by_user = (
            text_dtype(options) if text else choose_dtype(estimator, task, n_features, options)
        )
    opsets = target_opsets(options)
    proto: onnx.ModelProto | None = None
    error: ConversionError | None = None
    try:
        proto = convert_estimator(
            estimator, task, n_features, dtype, opsets, batch, by_user, vectorizer, table
        )
    except ExportError as e:
        if e.refused:
            raise
        error = e
        if dtype == np.float64 and not by_user:  # rule 3 falls back to float32
            reason += f", but it cannot run in float64 ({e.detail}); exported in float32"
            dtype = np.dtype(np.float32)
            try:
                proto = convert_estimator(
                    estimator, task, n_features, dtype, opsets, batch, by_user, vectorizer, table
                )
                error = None
            except ExportError as e32:
                error = e32
    signature = (
        Signature.from_onnx(proto)
        if proto is not None
        else expected_signature(estimator, task, n_features, dtype, batch, text=text, table=table)
    )
    library = LIBRARIES.get(booster_package(estimator) or "", "scikit-learn")
    reference = SklearnRunner(estimator, signature, task, name=f"{library} {name}", table=table)
    boosters = [member for member in members(estimator) if booster_package(member)]
    exporter = " + ".join(["skl2onnx", *converters_for(boosters)])

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
        "versions": library_versions(boosters),
    }
    classes = getattr(estimator, "classes_", None)
    if task == "classification" and classes is not None:
        details["classes"] = [_plain(c) for c in np.asarray(classes).tolist()]
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        details["feature_names"] = [str(n) for n in names]  # the column order of "input"
    if load_warnings:
        details["load_warnings"] = load_warnings
    features = f"{n_features} features"
    scales = {}
    if table is not None:
        scales = table_scales(estimator)
        if scales:
            details["generated_rows"] = (
                f"drawn around the scalers' statistics ({len(scales)} columns)"
            )
    elif vectorizer is None:
        scale, said_by = column_scale(estimator, n_features)
        if scale is not None:
            scales[INPUT] = scale
            details["generated_rows"] = f"drawn around {said_by}"
    vocabularies = {}
    if table is not None:
        features = f"{n_features} columns"
        details["columns"] = {c.name: c.kind for c in table.columns}
        vocabularies = table.vocabularies()
    if vectorizer is not None:
        features = f"text in, {n_features} terms"
        details["text_options"] = text_options(vectorizer)
        vocabularies[INPUT] = text_vocabulary(vectorizer)
    return Source(
        framework="sklearn",
        description=f"{library} {name} ({task}, {features}, {dtype.name})",
        reference=reference,
        candidates=[Candidate(exporter, export)],
        vocabularies=vocabularies,
        column_scales=scales,
        tolerance=_tolerance(dtype, signature),
        details=details,
    )


@dataclass
class SklearnRunner:
    """A fitted estimator as a Runner: ``run({"input": x})`` calls, for each output of
    ``signature`` (the ONNX model's), the method that gives it (``tasks.method_of``: predict,
    predict_proba, decision_function or transform), with its name, shape and dtype."""

    estimator: Any
    model_signature: Signature
    task: str
    name: str = "scikit-learn"
    table: Table | None = None
    """A table pipeline's columns: the feeds go to it as a DataFrame."""

    @property
    def signature(self) -> Signature:
        return self.model_signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.model_signature.validate(feeds)
        x: Any = feeds[self.model_signature.inputs[0].name]
        if self.table is not None:
            x = self.table.frame(feeds)
        elif self.model_signature.inputs[0].dtype.kind == "string":
            x = [str(text) for text in x]  # a text vectorizer takes an iterable of str
        outputs = self.model_signature.outputs
        results = {}
        # numpy's warnings on values (a FunctionTransformer's log1p of -2) are the parity
        # check's to judge, not lines on the terminal
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # Fitted on a DataFrame, fed an array in the same column order.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            for spec in outputs:
                method = method_of(self.estimator, self.task, spec.name)
                try:
                    value = getattr(self.estimator, method)(x)
                except Exception as e:
                    dtype = np.dtype(self.model_signature.inputs[0].dtype.numpy)
                    raise ConversionError(
                        f"the {self.name}'s own {method} fails on {dtype.name} rows: {said(e)}",
                        hint="give sample inputs it takes (--inputs samples.npz), in the "
                        "dtype it is fed in production",
                    ) from e
                results[spec.name] = _shaped(value, spec)
        return results


def _tolerance(dtype: np.dtype[Any], signature: Signature) -> Tolerance:
    if dtype != np.float64:
        return FLOAT32_TOLERANCE
    low = FLOAT32_TOLERANCE.atol, FLOAT32_TOLERANCE.rtol
    per_output = {s.name: low for s in signature.outputs if s.dtype.onnx_name == "FLOAT"}
    return Tolerance(FLOAT64_TOLERANCE.atol, FLOAT64_TOLERANCE.rtol, per_output)


def _shaped(values: Any, spec: TensorSpec) -> np.ndarray:
    """predict's values with the spec's dtype and rank (a binary decision_function d as
    [-d, d] when the model gives two score columns)."""
    array = np.asarray(values)
    if spec.shape is not None and len(spec.shape) == 1 and array.ndim == 2:
        array = array.reshape(-1)  # CatBoost's multiclass predict gives labels as [n, 1]
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
