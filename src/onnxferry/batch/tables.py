"""Tables as model input: Parquet and Arrow IPC files (or folders of them), and JSON lines.

    source = TableSource(Path("data.parquet"), model.signature)
    source.rows, source.columns                     # {input: column}
    source.read(0, 2).feeds["x"]                    # rows 0-1 as the model's input
    column_array(pa.array([[1.0, 2.0], [3.0, 4.0]]), "x")   # float64 [2, 2]

A table gives each model input from the column of its name; a one-input model also reads a
table's only column whatever its name. A cell is a scalar, a (nested) list of one length per
row, or an Arrow ``fixed_shape_tensor``. A folder's files are read in sorted path order.
Parquet is read row group by row group with ``pre_buffer`` off and a small buffer, Arrow IPC
record batch by record batch, so memory holds a batch at a time, not a file.

JSON lines: one object per non-blank line with a field per input (a one-input model may take
the bare value), read with ``json``; the trace column ``line`` gives each row's line number.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import DataError
from ..signature import Signature
from .sources import Chunk, Reused, checked_feeds, hash_of

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET = (".parquet", ".pq")
ARROW = (".arrow", ".feather", ".ipc")
_BATCH_ROWS = 4096
_BUFFER_BYTES = 1 << 20


def table_format(path: Path) -> str | None:
    """ "parquet" or "arrow" for such a file or a folder holding such files, else None."""
    if path.is_file():
        suffix = path.suffix.lower()
        return "parquet" if suffix in PARQUET else "arrow" if suffix in ARROW else None
    for pattern, kind in (("*.parquet", "parquet"), ("*.pq", "parquet"), ("*.arrow", "arrow")):
        if next(path.rglob(pattern), None) is not None:
            return kind
    return None


@dataclass(frozen=True)
class _Piece:
    """Rows ``[start, start + rows)``: one row group (Parquet) or record batch (Arrow)."""

    start: int
    rows: int
    file: int
    index: int


class TableSource(Reused):
    """Parquet or Arrow IPC files read piece by piece, front to back."""

    kind = "table"

    def __init__(self, path: Path, signature: Signature) -> None:
        self.path = path
        self.signature = signature
        self.format = table_format(path)
        suffixes = PARQUET if self.format == "parquet" else ARROW
        self.files = (
            [path]
            if path.is_file()
            else sorted(
                (p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file()),
                key=lambda p: p.relative_to(path).as_posix(),
            )
        )
        self._open: tuple[int, Any, Any] | None = None  # (file index, reader, its handle)
        self._cursor: tuple[int, Iterator[pa.RecordBatch]] | None = None  # (piece, batches)
        self._left: pa.RecordBatch | None = None
        self._at = 0  # the row _left starts at
        self.pieces: list[_Piece] = []
        for i, file in enumerate(self.files):
            self.columns = self._columns(file, self._schema(i).names)
            for j, n in enumerate(self._piece_rows(i)):
                start = self.pieces[-1].start + self.pieces[-1].rows if self.pieces else 0
                self.pieces.append(_Piece(start, n, i, j))
        self.rows = self.pieces[-1].start + self.pieces[-1].rows if self.pieces else 0
        self._starts = [p.start for p in self.pieces]

    def _reader(self, file: int) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._open is None or self._open[0] != file:
            self._close_file()
            path = self.files[file]
            handle: Any = None
            try:
                if self.format == "parquet":
                    reader: Any = pq.ParquetFile(path, pre_buffer=False, buffer_size=_BUFFER_BYTES)
                    handle = reader
                else:
                    handle = pa.OSFile(str(path))
                    reader = pa.ipc.open_file(handle)
            except (pa.ArrowException, OSError) as e:
                if handle is not None:
                    handle.close()
                raise DataError(f"cannot read {path}: {e}", hint="check the file") from e
            self._open = (file, reader, handle)
        return self._open[1]

    def _close_file(self) -> None:
        if self._open is not None:
            handle = self._open[2]
            self._open = None
            handle.close()

    def _piece_rows(self, file: int) -> list[int]:
        reader = self._reader(file)
        if self.format == "parquet":
            meta = reader.metadata
            return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]

    def _schema(self, file: int) -> pa.Schema:
        reader = self._reader(file)
        return reader.schema_arrow if self.format == "parquet" else reader.schema

    def _columns(self, file: Path, names: list[str]) -> dict[str, str]:
        inputs = self.signature.input_names
        if all(n in names for n in inputs):
            return {n: n for n in inputs}
        if len(inputs) == 1 and len(names) == 1:
            return {inputs[0]: names[0]}
        missing = next(n for n in inputs if n not in names)
        raise DataError(
            f"{file} has no column for input {missing!r} (it has {', '.join(names)})",
            hint=f"name a column after each input: {', '.join(inputs)}",
        )

    def _batches(self, piece: _Piece) -> Iterator[pa.RecordBatch]:
        reader = self._reader(piece.file)
        columns = list(dict.fromkeys(self.columns.values()))
        if self.format == "parquet":
            yield from reader.iter_batches(
                batch_size=_BATCH_ROWS, row_groups=[piece.index], columns=columns, use_threads=False
            )
        else:
            yield reader.get_batch(piece.index).select(columns)

    def _batch_at(self, row: int) -> None:
        """Make ``_left`` a batch that holds ``row`` (whole pieces before it are not read)."""
        while True:
            left = self._left
            if left is not None and self._at <= row < self._at + left.num_rows:
                return
            if left is not None and row >= self._at + left.num_rows:
                self._at += left.num_rows
                self._left = None
            piece = self.pieces[self._cursor[0]] if self._cursor else None
            if piece is None or not (self._at <= row < piece.start + piece.rows):
                index = bisect.bisect_right(self._starts, row) - 1
                self._cursor = (index, self._batches(self.pieces[index]))
                self._at, self._left = self.pieces[index].start, None
                continue
            assert self._cursor is not None
            batch = next(self._cursor[1], None)
            if batch is None:
                raise DataError(
                    f"{self.files[piece.file]} holds fewer rows than its metadata says",
                    hint="rewrite the file",
                )
            if batch.num_rows:
                self._left = batch

    def read(self, start: int, stop: int) -> Chunk:
        import pyarrow as pa

        parts = []
        row = start
        while row < stop:
            self._batch_at(row)
            assert self._left is not None
            skip = row - self._at
            take = min(self._left.num_rows - skip, stop - row)
            parts.append(self._left.slice(skip, take))
            row += take
        table = pa.Table.from_batches(parts)
        where = f"rows {start}-{stop - 1} of {self.path}"
        arrays = {
            name: column_array(table[col], f"{where}, column {col!r}")
            for name, col in self.columns.items()
        }
        return Chunk(start, stop, checked_feeds(arrays, self.signature, where))

    def fingerprint(self) -> list[Any]:
        stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        return [str(self.path.resolve()), self.rows, hash_of(stats)]

    def close(self) -> None:
        self._cursor, self._left, self._at = None, None, 0
        self._close_file()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": None, "_cursor": None, "_left": None, "_at": 0}


def column_array(column: pa.Array | pa.ChunkedArray, where: str) -> np.ndarray:
    """A column as one numpy array of shape [rows, *cell shape]: scalars, lists of one length
    per level (nested), or fixed_shape_tensor cells; a map column as one dict per row (object
    array); DataError for nulls or ragged lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ExtensionArray):
        if isinstance(array.type, pa.FixedShapeTensorType):
            return np.asarray(array.to_numpy_ndarray())
        array = array.storage
    if pa.types.is_map(array.type):  # one dict per row, as ONNX Runtime gives a ZipMap
        maps = np.empty(len(array), dtype=object)
        maps[:] = [dict(cell) for cell in array.to_pylist()]
        return maps
    rows, dims = len(array), []
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or (pa.types.is_fixed_size_list(array.type))
    ):
        if array.null_count:
            raise DataError(f"{where}: some cells are empty (null)", hint="fill them")
        if pa.types.is_fixed_size_list(array.type):
            size = array.type.list_size
        else:
            lengths = np.unique(pc.list_value_length(array).to_numpy(zero_copy_only=False))
            if len(lengths) > 1:
                raise DataError(
                    f"{where}: lists of different lengths ({lengths[0]} and {lengths[-1]}) "
                    "cannot form one tensor",
                    hint="pad the lists to one length, or give a batch of equal rows",
                )
            size = int(lengths[0]) if len(lengths) else 0
        dims.append(size)
        array = array.flatten()
    if array.null_count:
        raise DataError(f"{where}: the column has empty (null) values", hint="fill them")
    values = array.to_numpy(zero_copy_only=False)
    return np.asarray(values).reshape(rows, *dims)


class JsonLinesSource(Reused):
    """JSON lines, one row per non-blank line; trace column ``line`` (1-based)."""

    kind = "jsonl"

    def __init__(self, path: Path, signature: Signature) -> None:
        self.path = path
        self.signature = signature
        with path.open("rb") as f:
            self.rows = sum(1 for line in f if line.strip())
        self._file: BinaryIO | None = None
        self._row = 0  # the row the next non-blank line holds
        self._line = 0  # line numbers read so far

    def _next(self) -> tuple[int, bytes]:
        assert self._file is not None
        while True:
            raw = self._file.readline()
            self._line += 1
            if not raw:
                raise DataError(f"{self.path} changed while it was read", hint="run again")
            if raw.strip():
                self._row += 1
                return self._line, raw

    def read(self, start: int, stop: int) -> Chunk:
        if self._file is None or self._row > start:
            if self._file is not None:
                self._file.close()
            self._file = self.path.open("rb")
            self._row = self._line = 0
        while self._row < start:
            self._next()
        lines, records = [], []
        for _ in range(stop - start):
            number, raw = self._next()
            try:
                records.append(json.loads(raw))
            except ValueError as e:
                raise DataError(f"line {number} of {self.path} is not JSON: {e}") from e
            lines.append(number)
        where = f"lines {lines[0]}-{lines[-1]} of {self.path}"
        arrays = {
            spec.name: self._array(records, spec.name, lines, where)
            for spec in self.signature.inputs
        }
        feeds = checked_feeds(arrays, self.signature, where)
        return Chunk(start, stop, feeds, {"line": np.asarray(lines, dtype=np.int64)})

    def _array(self, records: list[Any], name: str, lines: list[int], where: str) -> np.ndarray:
        bare = len(self.signature.inputs) == 1
        values = []
        for number, record in zip(lines, records, strict=True):
            if isinstance(record, dict) and name in record:
                values.append(record[name])
            elif bare and not isinstance(record, dict):
                values.append(record)
            else:
                raise DataError(
                    f"line {number} of {self.path} has no field {name!r}",
                    hint=f"give every line an object with {', '.join(self.signature.input_names)}",
                )
        spec = self.signature.input(name)
        dtype = object if spec.dtype.kind == "string" else None
        try:
            return np.asarray(values, dtype=dtype)
        except ValueError as e:
            raise DataError(f"{where}: field {name!r} does not form one tensor: {e}") from e

    def fingerprint(self) -> list[Any]:
        st = self.path.stat()
        return [str(self.path.resolve()), st.st_size, st.st_mtime_ns]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_row": 0, "_line": 0}
