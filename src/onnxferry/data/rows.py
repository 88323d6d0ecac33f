"""Rows of a table file (CSV with a header row, or Parquet) as one feed set: a column per
input, or a one-input model's features, the file's columns in order.

    feeds = table_feeds(Path("rows.csv"), model.signature)   # {"age": [N, 1], "city": [N, 1]}

A table model (one ``[batch, 1]`` or ``[batch]`` input per column, skl2onnx's DataFrame
layout) takes each input from the column of its name; other columns are ignored. A model of
one ``[batch, features]`` input takes every column, in the file's order. Each value becomes
the input's type: strings as they are, numbers parsed (an empty cell of a float column is
NaN, as pandas reads it), booleans from true/false/1/0. A cell that does not parse is one
line naming its row and column.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..signature import Signature, TensorSpec

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_WANTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def table_feeds(path: Path, signature: Signature | None) -> dict[str, np.ndarray]:
    """The file's rows as the model's inputs (see the module docstring); DataError when a
    column is missing or a cell does not parse, or without a signature: a table's cells take
    their types from the model's inputs (a float64 column would make ``convert`` a float64
    model), so a model still to be converted is compared with its rows once converted."""
    if signature is None:
        raise DataError(
            f"{path}: a table's values take their types from the model's inputs, and the "
            "model is not converted yet",
            hint="convert without --inputs, then check it on the rows: ferry compare OUT.onnx "
            f"SOURCE --inputs {path}",
        )
    columns = _read(path)
    names = signature.input_names
    if all(n in columns for n in names):
        return {s.name: _column(columns[s.name], s, path) for s in signature.inputs}
    if len(names) == 1 and _features(signature.inputs[0]) is not None:
        return {names[0]: _matrix(columns, signature.inputs[0], path)}
    missing = [n for n in names if n not in columns]
    raise DataError(
        f"{path} has no column {', '.join(repr(n) for n in missing)} (its columns: "
        f"{', '.join(list(columns)[:8])})",
        hint=f"name a column after each model input: {names}",
    )


def _read(path: Path) -> dict[str, list[Any]]:
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow", hint="pip install onnxferry[batch]"
        ) from e
    try:
        return dict(pq.read_table(path).to_pydict())
    except Exception as e:  # pyarrow's errors are many and untyped
        raise DataError(f"{path}: not a Parquet file pyarrow reads ({e})") from None


def _read_csv(path: Path) -> dict[str, list[Any]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty", hint="give a header row, then a row per input")
            columns: dict[str, list[Any]] = {name.strip(): [] for name in header}
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path} line {number} has {len(row)} values, the header {len(header)}",
                        hint="give every row a value per column",
                    )
                for values, cell in zip(columns.values(), row, strict=True):
                    values.append(cell)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a CSV file onnxferry reads ({e})") from None
    return columns


def _features(spec: TensorSpec) -> int | None:
    """A ``[batch, features]`` input's feature count (0 when open); None for another shape."""
    if spec.shape is None or len(spec.shape) != 2:
        return None
    return spec.shape[1] if isinstance(spec.shape[1], int) else 0


def _column(values: list[Any], spec: TensorSpec, path: Path) -> np.ndarray:
    if spec.shape is None or len(spec.shape) not in (1, 2) or spec.shape[1:] not in ((), (1,)):
        raise DataError(
            f"{path}: input {spec.name!r} is {spec.shape_text()}, not one value per row",
            hint="give an .npz for inputs that are not one column",
        )
    array = _typed(values, spec, path, spec.name)
    return array.reshape(-1, 1) if len(spec.shape) == 2 else array


def _matrix(columns: dict[str, list[Any]], spec: TensorSpec, path: Path) -> np.ndarray:
    wanted = _features(spec)
    if wanted and wanted != len(columns):
        raise DataError(
            f"{path} has {len(columns)} columns; input {spec.name!r} takes {wanted} features",
            hint=f"give one column per feature, or name a column {spec.name!r} per input",
        )
    typed = [_typed(values, spec, path, name) for name, values in columns.items()]
    return np.stack(typed, axis=1)


def _typed(values: list[Any], spec: TensorSpec, path: Path, column: str) -> np.ndarray:
    kind = spec.dtype.kind
    if kind == "string":
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    out = np.empty(len(values), dtype=spec.dtype.numpy)
    for row, value in enumerate(values):
        try:
            out[row] = _number(value, kind)
        except (TypeError, ValueError):
            raise DataError(
                f"{path} row {row + 1}, column {column!r}: {value!r} is not {_WANTED[kind]} "
                f"for input {spec.name!r} ({spec.dtype.onnx_name})",
                hint="fix the value, or give the rows as an .npz",
            ) from None
    return out


def _number(value: Any, kind: str) -> Any:
    if not isinstance(value, str):
        return np.nan if value is None and kind == "float" else value
    text = value.strip()
    if kind == "bool":
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(text)
        return text.lower() in _TRUE
    if kind == "float":
        return float(text) if text else np.nan
    number = float(text)  # "3" and "3.0" alike; "3.5" is no integer
    if not number.is_integer():
        raise ValueError(text)
    return int(number)
