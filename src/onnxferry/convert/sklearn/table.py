"""Table pipelines: a ColumnTransformer that picks DataFrame columns by name, so the ONNX model
takes one input per column.

    table = table_layout(pipeline, ConvertOptions())   # None: the model takes one array
    [(c.name, c.kind) for c in table.columns]          # [("age", "float"), ("sex", "string")]
    table.frame({"age": ages, "sex": sexes})           # the feeds as the DataFrame it was fit on

A pipeline fit on a DataFrame with text categories (a Titanic passenger's sex, a port) cannot
take one float array: scikit-learn refuses string column names without a DataFrame, and the
categories are strings. skl2onnx converts such a pipeline with one ``[batch, 1]`` input per
column, as its DataFrame conversion does. Each column's type comes from the user's sample
inputs (one ``[rows, 1]`` array per column, named after it) when given, else from the encoder
that reads it: string categories make a string input, integer ones an int64 input, anything
else a float one (numbers in float32, or float64 by the float64 rule).
Generated values of a category column are its known categories (``vocabularies``), so a
verification sees the categories the model learned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError, UsageError
from ...feeds import Vocabulary
from ..base import ConvertOptions
from .estimators import walk

_ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")


@dataclass(frozen=True)
class Column:
    """One input column: its name, "string", "int" or "float", and the categories its encoder
    knows (empty for a numeric column)."""

    name: str
    kind: str
    categories: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Table:
    """The columns of a table pipeline, in the order it was fit on."""

    columns: tuple[Column, ...]

    def initial_types(self, dtype: np.dtype[Any]) -> list[tuple[str, Any]]:
        """skl2onnx's initial types: one ``[None, 1]`` tensor per column."""
        from skl2onnx.common.data_types import (
            DoubleTensorType,
            FloatTensorType,
            Int64TensorType,
            StringTensorType,
        )

        floats = DoubleTensorType if dtype == np.float64 else FloatTensorType
        kinds = {"string": StringTensorType, "int": Int64TensorType, "float": floats}
        return [(c.name, kinds[c.kind]([None, 1])) for c in self.columns]

    def element_types(self, dtype: np.dtype[Any]) -> list[tuple[str, np.dtype[Any]]]:
        """Each column's numpy type in the ONNX model."""
        kinds = {"string": np.dtype(object), "int": np.dtype(np.int64), "float": dtype}
        return [(c.name, kinds[c.kind]) for c in self.columns]

    def frame(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The feeds as a pandas DataFrame, one column per input."""
        try:
            import pandas as pd
        except ImportError as e:  # a pipeline fit on a DataFrame: pandas made it
            raise InputError(
                "a table pipeline runs on a pandas DataFrame; pandas is not installed",
                hint="pip install pandas",
            ) from e

        return pd.DataFrame({c.name: np.asarray(feeds[c.name]).reshape(-1) for c in self.columns})

    def batch(self, options: ConvertOptions) -> str:
        """Dim 0 of every column: the name ``--dynamic`` gives it (a table's batch stays
        dynamic); UsageError for a static one or another axis."""
        axes = options.axes_for(self.columns[0].name, 2)
        if set(axes) != {0}:
            raise UsageError(
                "a table pipeline's inputs are [batch, 1] with a dynamic batch",
                hint="leave out --dynamic, or name dim 0 only: --dynamic COLUMN:0=batch",
            )
        return axes[0]

    def computes_in_float64(self, method: Callable[[Any], Any]) -> bool | None:
        """Whether ``method`` (predict, or the task's scores or transform) changes when the
        numeric columns are rounded to float32 (None when it fails on the generated rows), as
        the float64 rule asks."""
        rng = np.random.default_rng(0)
        exact = {}
        for c in self.columns:
            if c.categories:
                exact[c.name] = np.asarray(c.categories, dtype=object)[
                    rng.integers(0, len(c.categories), 64)
                ]
            else:
                exact[c.name] = rng.standard_normal(64)
        rounded = {
            k: v.astype(np.float32).astype(np.float64) if v.dtype.kind == "f" else v
            for k, v in exact.items()
        }
        try:
            first = np.asarray(method(self.frame(exact)), np.float64)
            second = np.asarray(method(self.frame(rounded)), np.float64)
        except Exception:  # the probe is advice; the reference shows real failures
            return None
        return not np.array_equal(first, second, equal_nan=True)

    def vocabularies(self) -> dict[str, Vocabulary]:
        """The categories of each string or integer category column, for generated feeds."""
        kinds: dict[str, Callable[[Any], Any]] = {"string": str, "int": int}
        return {
            c.name: Vocabulary(tuple(kinds[c.kind](v) for v in c.categories), text=False)
            for c in self.columns
            if c.kind in kinds and c.categories
        }


def table_layout(estimator: Any, options: ConvertOptions) -> Table | None:
    """The columns when ``estimator`` (or its first step) is a ColumnTransformer fit on a
    DataFrame that picks columns by name or encodes string categories; else None."""
    names = getattr(estimator, "feature_names_in_", None)
    transformer = column_transformer(estimator)
    if names is None or transformer is None:
        return None
    names = [str(n) for n in names]
    found: dict[str, Column] = {}
    columns: tuple[Column, ...]
    by_name = False
    for _, step, selected in getattr(transformer, "transformers_", []):
        picked = selected_columns(selected, names)
        by_name = by_name or _names_given(selected)
        categories = _categories(step, len(picked))
        for column, known in zip(picked, categories, strict=True):
            found[column] = Column(
                column, _kind(known), tuple(known.tolist()) if known.size else ()
            )
    columns = tuple(found.get(n, Column(n, "float")) for n in names)
    if not by_name and all(c.kind != "string" for c in columns):
        return None  # columns by position, all numbers: one float array serves
    return Table(_given_kinds(columns, options))


def column_transformer(estimator: Any) -> Any | None:
    """The ColumnTransformer at the head of ``estimator`` (through pipelines), or None."""
    head = estimator
    while type(head).__name__ != "ColumnTransformer":
        steps = getattr(head, "steps", None)
        if not isinstance(steps, list) or not steps:
            return None
        head = steps[0][1]
    return head


def selected_columns(selected: Any, names: list[str]) -> list[str]:
    """The column names a transformer was given (names, positions, a mask or a slice)."""
    if isinstance(selected, str):
        return [selected]
    if isinstance(selected, slice):
        return names[selected]
    values = list(np.asarray(selected).reshape(-1))
    if values and isinstance(values[0], (bool, np.bool_)):
        return [n for n, keep in zip(names, values, strict=False) if keep]
    return [str(v) if isinstance(v, str) else names[int(v)] for v in values]


def _names_given(selected: Any) -> bool:
    if isinstance(selected, str):
        return True
    values = list(np.asarray(selected).reshape(-1)) if not isinstance(selected, slice) else []
    return any(isinstance(v, str) for v in values)


def _categories(step: Any, count: int) -> list[np.ndarray]:
    """Per column, the categories of the first encoder in ``step`` (empty arrays without)."""
    for _, part in walk(step):
        if type(part).__name__ in _ENCODERS:
            known = list(getattr(part, "categories_", []))
            if len(known) == count:
                return [np.asarray(k) for k in known]
    return [np.asarray([]) for _ in range(count)]


def _kind(categories: np.ndarray) -> str:
    if not categories.size:
        return "float"
    values = [v for v in categories.tolist() if v is not None and v == v]  # no missing marks
    if any(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return "int"
    return "float"


def _given_kinds(columns: tuple[Column, ...], options: ConvertOptions) -> tuple[Column, ...]:
    """The columns with the kinds the user's samples give; UsageError for an input shape."""
    if options.input_shapes:
        raise UsageError(
            "a table pipeline takes one input per column, each [batch, 1]; --input-shape does "
            "not apply",
            hint="leave out --input-shape (the batch stays dynamic)",
        )
    samples: Sequence[Mapping[str, np.ndarray]] = options.sample_inputs
    if not samples:
        return columns
    names = [c.name for c in columns]
    for sample in samples:
        missing = [n for n in names if n not in sample]
        if missing:
            raise InputError(
                f"sample inputs of a table pipeline name its columns; {missing[0]!r} is missing",
                hint=f"save one array per column: {', '.join(names)}",
            )
    first = samples[0]
    kinds = {"U": "string", "O": "string", "S": "string", "i": "int", "u": "int", "b": "int"}
    return tuple(
        Column(c.name, kinds.get(np.asarray(first[c.name]).dtype.kind, "float"), c.categories)
        for c in columns
    )
