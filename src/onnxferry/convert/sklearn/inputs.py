"""The input of the ONNX model: its features, its batch dim, and its element type.

    options = ConvertOptions(sample_inputs=[{"input": x}])
    feature_count(pipeline, options), batch_dim(options, 4)   # 4, "batch"
    choose_dtype(pipeline, "classification", 4, options)       # float32: the samples' dtype

The model has one input, ``INPUT`` [batch, n_features]. Its element type follows the float64
rule in the package's docstring: the samples' dtype, else float32 for a classifier, else
float64 for an estimator whose outputs change when its inputs are rounded to float32.
A text pipeline's input is strings (``text_dtype``: its weights float32); a table pipeline's
numeric columns follow the same rule (``table_dtype``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InputError, UsageError
from ..base import ConvertOptions
from .estimators import describe_estimator, said
from .table import Table
from .tasks import values
from .text import check_text_samples, text_vectorizer

log = logging.getLogger("onnxferry")

INPUT = "input"
"""The name of the one input of every converted scikit-learn model."""

_PROBE_ROWS = 64
_WHAT = {
    "outlier detection": "an outlier detector",
    "clustering": "a clusterer",
    "transformation": "a transformer",
}


def feature_count(estimator: Any, options: ConvertOptions, *, text: bool = False) -> int:
    """The features the estimator takes (``n_features_in_``, else the input shape given);
    for a text pipeline (``text``), the terms of its vocabulary. UsageError for another input
    name or a shape that disagrees."""
    unknown = [n for n in (*options.input_shapes, *(options.dynamic_axes or {})) if n != INPUT]
    if unknown:
        raise UsageError(
            f"a scikit-learn model has one input, {INPUT!r}, not {unknown[0]!r}",
            hint=f"name it {INPUT!r} in --input-shape and --dynamic",
        )
    shape = options.input_shapes.get(INPUT)
    if text:
        if shape is not None and len(shape) != 1:
            raise UsageError(
                f"input {INPUT!r} of a text pipeline is [batch], one string per row, got "
                f"shape {list(shape)}",
                hint=f"give --input-shape {INPUT}=B, or leave the batch dynamic",
            )
        return len(getattr(text_vectorizer(estimator), "vocabulary_", None) or {})
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


def batch_dim(options: ConvertOptions, n_features: int, *, text: bool = False) -> str | int:
    """Dim 0 of the input and every output: a symbol name, or a fixed size."""
    axes = options.axes_for(INPUT, 1 if text else 2)
    if text and set(axes) - {0}:
        raise UsageError(
            f"input {INPUT!r} of a text pipeline is [batch], one string per row; it has no "
            f"dim {max(axes)}",
            hint=f"make only dim 0 dynamic: --dynamic {INPUT}:0=batch",
        )
    if 1 in axes:
        raise UsageError(
            f"dim 1 of {INPUT!r} is the feature count, fixed at {n_features} for this estimator",
            hint=f"make only dim 0 dynamic: --dynamic {INPUT}:0=batch",
        )
    if 0 in axes:
        return axes[0]
    shape = options.input_shapes.get(INPUT)
    if shape is None:
        shape_hint = "B" if text else f"Bx{n_features}"
        raise UsageError(
            f"dim 0 of {INPUT!r} is static, but no batch size is given",
            hint=f"give --input-shape {INPUT}={shape_hint}, or keep the batch dynamic",
        )
    return int(shape[0])


def choose_dtype(
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
    what = _WHAT.get(task, "a regressor")
    in_float64 = _computes_in_float64(values(estimator, task), n_features)
    if in_float64:
        reason = f"{what} that computes in float64 (its outputs change when inputs "
        return np.dtype(np.float64), reason + "are rounded to float32)", False
    reason = f"{what} whose outputs do not change when inputs are rounded to float32"
    if in_float64 is None:
        reason = f"{what} that the float64 probe could not run"
    return np.dtype(np.float32), reason, False


def text_dtype(options: ConvertOptions) -> tuple[np.dtype[Any], str, bool]:
    """``choose_dtype`` for a text pipeline: float32 (skl2onnx's term weights); InputError
    unless the samples are strings."""
    check_text_samples(options, INPUT)
    return np.dtype(np.float32), "text input: skl2onnx computes the term weights in float32", False


def table_dtype(
    estimator: Any, task: str, table: Table, options: ConvertOptions
) -> tuple[np.dtype[Any], str, bool]:
    """``choose_dtype`` for a table pipeline: the type of its numeric columns by the same
    rule (the samples' float type, float32 for a classifier, else the probe, which rounds
    only the numeric columns)."""
    floats = {
        np.asarray(sample[c.name]).dtype
        for sample in options.sample_inputs
        for c in table.columns
        if c.kind == "float" and np.asarray(sample[c.name]).dtype.kind == "f"
    }
    if len(floats) == 1:
        dtype = floats.pop()
        return dtype, f"the sample inputs' numeric columns are {dtype.name}", True
    if task == "classification":
        return np.dtype(np.float32), "a classifier: numeric columns in float32", False
    if table.computes_in_float64(values(estimator, task)):
        what = _WHAT.get(task, "a regressor")
        return np.dtype(np.float64), f"{what} that computes in float64", False
    return (
        np.dtype(np.float32),
        f"{_WHAT.get(task, 'a regressor')} whose outputs keep float32 inputs",
        False,
    )


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


def _computes_in_float64(method: Callable[[Any], Any], n_features: int) -> bool | None:
    """True when ``method`` (predict, or the task's scores or transform) gives other values
    for the same rows rounded to float32 (None when it fails on the generated rows)."""
    x = np.random.default_rng(0).standard_normal((_PROBE_ROWS, n_features))
    rounded = x.astype(np.float32).astype(np.float64)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            exact = np.asarray(method(x), dtype=np.float64)
            coarse = np.asarray(method(rounded), dtype=np.float64)
    except Exception as e:  # the probe is advice; the reference shows real failures
        log.debug("float64 probe failed: %s", said(e))
        return None
    return not np.array_equal(exact, coarse, equal_nan=True)
