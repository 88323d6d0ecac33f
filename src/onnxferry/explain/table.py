"""Table models: one ``[batch, 1]`` input per column (skl2onnx's DataFrame layout), explained
as one row of columns, category columns among them.

    columns = table_columns(model.signature)          # ["age", "city", "n", "member"], or None
    coder = TableCoder.fit(model, columns, [feeds])    # a number per column value
    rows = coder.encode(feeds)                         # [N, 4] float64: age, city's code, ...
    coder.decode(rows)                                 # {"age": [N, 1], "city": [N, 1], ...}

Explaining the first input alone held every other column fixed: a pipeline of age, city and
a class number was explained by age, with one feature. Here the explainers see one row of
numbers per table row: a number column as it is, a string column (or an integer column that
a category encoder reads: ``feeds.input_vocabularies``) as the code of its category, in the
categories the inputs, the background and the model's encoders know. ``decode`` turns
perturbed rows back into the model's inputs, a code rounded to the nearest category; LIME is
told which columns are categories (``categorical``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..signature import Signature

if TYPE_CHECKING:
    from ..model import Model
    from .kinds import Layout


def table_rows(
    model: Model,
    columns: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    background: Any,
    notes: list[str],
) -> tuple[TableCoder, Layout, np.ndarray, np.ndarray | None]:
    """(coder, layout, rows, background rows) for explaining a table model: ``background``
    is arrays by column (or an .npz of them), None for the inputs themselves."""
    from ..data import load_npz_arrays
    from ..errors import DataError
    from .inputs import default_background
    from .kinds import Layout

    if isinstance(background, (str, Path)):
        background = load_npz_arrays(background)
    if background is not None and (
        not isinstance(background, Mapping) or any(c not in background for c in columns)
    ):
        held = sorted(background) if isinstance(background, Mapping) else "one array"
        raise DataError(
            f"a table's background needs an array per column ({', '.join(columns)}); it holds "
            f"{held}",
            hint="save the background rows with one array per model input",
        )
    coder = TableCoder.fit(model, columns, [feeds, *([background] if background else [])])
    rows = coder.encode(feeds)
    layout = Layout("tabular", batch_axis=True, fixed_batch=None, sample_shape=(len(columns),))
    data = coder.encode(background) if background else default_background(layout, rows, notes)
    named = ", ".join(columns[j] for j in coder.categorical)
    notes.append(
        f"a table of {len(columns)} columns, explained column by column"
        + (f" ({named}: categories, coded in the order of their values)" if named else "")
    )
    return coder, layout, rows, data


def table_columns(signature: Signature) -> list[str] | None:
    """The inputs as columns of one table: two or more inputs, each ``[batch]`` or
    ``[batch, 1]`` on one open batch axis; None for any other model."""
    specs = signature.inputs
    if len(specs) < 2 or any(s.shape is None for s in specs):
        return None
    batch = {s.shape[0] for s in specs if s.shape}
    one_column = all(
        s.shape is not None and len(s.shape) in (1, 2) and s.shape[1:] in ((), (1,)) for s in specs
    )
    if not one_column or len(batch) != 1 or isinstance(next(iter(batch)), int):
        return None
    return [s.name for s in specs]


@dataclass(frozen=True)
class TableCoder:
    """Each column's place in a row of numbers: ``categories[j]`` for a category column
    (its values, coded 0, 1, ...), absent for a number column."""

    columns: tuple[str, ...]
    dtypes: tuple[np.dtype[Any], ...]
    ranks: tuple[int, ...]
    """Each input's rank: 1 (``[batch]``) or 2 (``[batch, 1]``)."""
    categories: Mapping[int, tuple[Any, ...]]

    @classmethod
    def fit(
        cls, model: Model, columns: Sequence[str], tables: Sequence[Mapping[str, np.ndarray]]
    ) -> TableCoder:
        """The coder for ``columns`` of ``model``, its categories from the arrays in
        ``tables`` (the inputs, the background) and the model's own encoders."""
        from ..feeds import input_vocabularies

        known = input_vocabularies(model.proto, model.signature)
        dtypes, ranks, categories = [], [], {}
        for j, name in enumerate(columns):
            spec = model.signature.input(name)
            dtypes.append(np.dtype(spec.dtype.numpy))
            ranks.append(len(spec.shape or (0, 0)))
            vocabulary = known.get(name)
            if spec.dtype.kind != "string" and (vocabulary is None or vocabulary.text):
                continue
            seen = [np.asarray(t[name]).reshape(-1).tolist() for t in tables if name in t]
            words = vocabulary.words if vocabulary is not None and not vocabulary.text else ()
            values = [_plain(v) for v in [*(v for s in seen for v in s), *words]]
            categories[j] = tuple(sorted(dict.fromkeys(values), key=str))
        return cls(tuple(columns), tuple(dtypes), tuple(ranks), categories)

    @property
    def categorical(self) -> tuple[int, ...]:
        """The columns that are categories, by position."""
        return tuple(sorted(self.categories))

    def encode(self, table: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, columns]`` float64: numbers as they are, categories as their codes."""
        encoded = []
        for j, name in enumerate(self.columns):
            values = np.asarray(table[name]).reshape(-1)
            if j in self.categories:
                index = {v: i for i, v in enumerate(self.categories[j])}
                encoded.append(np.array([index[_plain(v)] for v in values], np.float64))
            else:
                encoded.append(values.astype(np.float64))
        return np.stack(encoded, axis=1)

    def decode(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of numbers back to the model's inputs (``[N, 1]`` or ``[N]``, as each takes);
        a category's code rounded to the nearest one it has."""
        rows = np.asarray(rows, np.float64).reshape(len(rows), len(self.columns))
        feeds = {}
        for j, (name, dtype) in enumerate(zip(self.columns, self.dtypes, strict=True)):
            column = rows[:, j]
            if j in self.categories:
                known = np.asarray(self.categories[j], dtype=object)
                codes = np.clip(np.rint(column), 0, len(known) - 1).astype(np.int64)
                values = known[codes] if dtype.kind == "O" else known[codes].astype(dtype)
            else:
                values = column.astype(dtype)
            feeds[name] = values.reshape(-1, 1) if self.ranks[j] == 2 else values
        return feeds

    def baseline(self, means: np.ndarray, data: np.ndarray | None) -> np.ndarray:
        """What hides a feature: ``means`` (the background's), a category column at the
        background's most common category instead (a mean code is no category)."""
        if data is None:
            return means
        hidden = np.array(means, np.float64)
        for j in self.categories:
            codes, counts = np.unique(np.rint(data[:, j]), return_counts=True)
            hidden[j] = codes[np.argmax(counts)]
        return hidden

    def value(self, column: int, number: float) -> Any:
        """A row's value of ``column`` as the model reads it (a category, not its code)."""
        if column in self.categories:
            known = self.categories[column]
            return known[int(np.clip(np.rint(number), 0, len(known) - 1))]
        return number


def _plain(value: Any) -> Any:
    """A value as a dictionary key: bytes as text, numpy scalars as Python ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value
