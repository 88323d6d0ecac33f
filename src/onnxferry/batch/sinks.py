"""Where `ferry batch` writes: shards named by their row range, each written under a temporary
name and renamed into place when complete, so a shard on disk is whole or absent.

    shard = Shard(0, 1000)
    shard.name                                   # "part-000000000000-000000001000"
    with ShardWriter(Path("out"), shard, "parquet") as writer:
        writer.write(output_table(rows, {}, {"y": y}))   # batches in row order
        writer.commit()
    shard.done(Path("out"), "parquet")           # True
    read_output(Path("out"))["y"]                # every shard's rows, in row order

Parquet shards (``part-<start>-<stop>.parquet``, ``stop`` exclusive) hold a ``row`` column
(the input's row number), the trace columns of the source (``file`` for images, ``line`` for
JSON lines) and one column per model output: scalars as plain columns, tensors as Arrow
``fixed_shape_tensor``, a sequence of maps (scikit-learn's ZipMap probabilities) as Arrow
``map<key, value>``, an output sized by the data (a detector's ``[boxes, 4]`` after
non-max suppression: ``ragged_row``) as a ``list<fixed_size_list<4>>`` holding each row's
own count, read back as one array per row. Outputs are written as they come (a row group per
~16 MiB), never held for a whole shard. ``.npy`` shards are one file per column,
``part-<start>-<stop>.<column>.npy`` (``file_part``: characters a file name should not hold
become ``_``), committed together; a map column there is its table, one value per key in key
order (scikit-learn's ``classes_``); string columns (image files) are held for the shard and
written as str arrays at its end; an output sized by the data has no form there (refused).
A kill leaves at most the temporary files of the shard in progress, which the next run
removes (atomic.remove_stale_temps) and writes again.
"""

from __future__ import annotations

import contextlib
import functools
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..atomic import AtomicFiles
from ..errors import DataError, UsageError
from ..runtime import map_keys, map_order, map_table

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("parquet", "npy")
ROW_GROUP_BYTES = 16 << 20
"""Outputs buffered before a Parquet row group is written."""
_SHARD = re.compile(r"part-(\d{12})-(\d{12})(?:\.(.+))?\.(parquet|npy)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of the input, and their output files."""

    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"part-{self.start:012d}-{self.stop:012d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def files(self, outdir: Path, output_format: str, columns: list[str]) -> list[Path]:
        """The files this shard is made of (``columns`` matter for .npy shards)."""
        if output_format == "parquet":
            return [outdir / f"{self.name}.parquet"]
        return [outdir / f"{self.name}.{file_part(c)}.npy" for c in columns]

    def done(self, outdir: Path, output_format: str, columns: list[str] | None = None) -> bool:
        """Whether every file of the shard is in place (a finished shard)."""
        return all(p.is_file() for p in self.files(outdir, output_format, columns or []))

    def batches(self, batch_size: int) -> list[tuple[int, int]]:
        """The (start, stop) of each batch of ``batch_size`` rows in the shard, in order."""
        return [
            (a, min(a + batch_size, self.stop)) for a in range(self.start, self.stop, batch_size)
        ]


def file_part(column: str) -> str:
    """A column's name as it appears in an .npy shard's file name (``/``, ``:`` and other
    characters a file name should not hold become ``_``)."""
    return _UNSAFE.sub("_", column)


def shards(rows: int, shard_rows: int) -> list[Shard]:
    """``rows`` cut into shards of ``shard_rows`` (the last one shorter)."""
    return [Shard(s, min(s + shard_rows, rows)) for s in range(0, rows, shard_rows)]


def output_table(
    rows: np.ndarray, trace: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> pa.Table:
    """One Arrow table: ``row``, the trace columns, then the outputs (tensors as
    ``fixed_shape_tensor``); UsageError for an output named like a trace column."""
    import pyarrow as pa

    clash = [name for name in outputs if name in ("row", *trace)]
    if clash:
        raise UsageError(
            f"the model's output {clash[0]!r} has the name of a trace column",
            hint="rename the output (trace columns: row, file, line)",
        )
    columns: dict[str, Any] = {"row": pa.array(rows, pa.int64())}
    for name, values in {**trace, **outputs}.items():
        columns[name] = _arrow(name, values)
    return pa.table(columns)


def _arrow(name: str, values: np.ndarray) -> Any:
    import pyarrow as pa

    if values.dtype.type.__module__.startswith("ml_dtypes"):
        values = values.astype(np.float32)  # bfloat16 and float8, exactly: Arrow has neither
    if values.dtype.kind == "O":
        keys = map_keys(values)
        if keys is not None:  # scikit-learn's ZipMap: an Arrow map per row
            return _map_array(name, values, keys)
        if values.ndim == 1 and values.size and all(isinstance(v, np.ndarray) for v in values):
            return _ragged_array(name, values)
        return pa.array(values.tolist() if values.ndim > 1 else values)  # strings, nested
    if values.ndim == 1:
        return pa.array(values)
    try:
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
        return pa.ExtensionArray.from_storage(
            _tensor_type(values.dtype.str, values.shape[1:]), storage
        )
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise DataError(f"output {name!r} of type {values.dtype} cannot be stored: {e}") from e


def ragged_row(value: np.ndarray) -> np.ndarray:
    """One row's output whose size follows the data (a detector's ``[boxes, 4]``), as a
    one-row object column that ``output_table`` stores as an Arrow list."""
    cell = np.empty(1, dtype=object)
    cell[0] = value
    return cell


def _ragged_array(name: str, values: np.ndarray) -> Any:
    """Rows of ``[count, *cell]`` arrays (``ragged_row``) as ``list<fixed_size_list<cell>>``
    (``list<value>`` for a 1-D one): each row keeps its own count, zero included."""
    import pyarrow as pa

    rows = list(values)
    cell = rows[0].shape[1:]
    if any(r.ndim == 0 or r.shape[1:] != cell or r.dtype != rows[0].dtype for r in rows):
        raise DataError(
            f"output {name!r} changes its shape beyond the first axis from row to row",
            hint="only a varying first axis (a count of boxes, of selections) can be stored",
        )
    try:
        inner = pa.array(np.concatenate([r.reshape(-1) for r in rows]))
        for size in reversed(cell):  # [count, 3, 4]: list<fixed_size_list<fixed_size_list<4>, 3>>
            inner = pa.FixedSizeListArray.from_arrays(inner, size)
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), inner)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise DataError(f"output {name!r} of type {rows[0].dtype} cannot be stored: {e}") from e


def _map_array(name: str, values: np.ndarray, keys: frozenset[Any]) -> Any:
    """A sequence of maps (what ``map_keys`` accepts) as an Arrow ``map<key, value>`` column,
    each row's entries in ``map_order``."""
    import pyarrow as pa

    order = map_order(keys)
    sample = values[0]
    key_type = pa.string() if isinstance(order[0], str) else pa.int64()
    floats = any(isinstance(v, (float, np.floating)) for v in sample.values())
    value_type = pa.float32() if floats else pa.int64()
    try:
        return pa.array(
            [[(k, m[k]) for k in order] for m in values.tolist()],
            pa.map_(key_type, value_type),
        )
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise DataError(f"output {name!r} (a sequence of maps) cannot be stored: {e}") from e


@functools.cache
def _tensor_type(dtype: str, shape: tuple[int, ...]) -> Any:
    """The ``fixed_shape_tensor`` type of rows of ``shape`` (made once: building one costs
    more than filling a batch's column)."""
    import pyarrow as pa

    return pa.fixed_shape_tensor(pa.from_numpy_dtype(np.dtype(dtype)), list(shape))


class ShardWriter:
    """Writes one shard: batches in row order into temporary files, renamed into place by
    ``commit``; leaving the ``with`` block without a commit removes them."""

    def __init__(self, outdir: Path, shard: Shard, output_format: str) -> None:
        if output_format not in FORMATS:
            raise UsageError(f"unknown output format {output_format!r}", hint="use parquet or npy")
        self.outdir, self.shard, self.format = outdir, shard, output_format
        self._files = AtomicFiles()  # temporary files, removed on leaving unless committed
        self._stack = ExitStack()  # the files being written (flushed and fsynced on close)
        self._parquet: Any = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._npy: dict[str, BinaryIO] = {}
        self._strings: dict[str, list[Any]] = {}
        self.written = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            if self._parquet is not None:
                self._parquet.close()
        try:
            self._stack.close()
        finally:
            self._files.__exit__(kind, error, tb)

    def write(self, table: pa.Table) -> None:
        """Append the next rows (``output_table``'s form, following the last rows written).
        The shard's temporary file exists from its first rows on."""
        if self.format == "npy":
            self._write_npy(table)
        else:
            self._open_parquet(table.schema)
            self._buffer.append(table)
            self._buffered += table.nbytes
            if self._buffered >= ROW_GROUP_BYTES:
                self._flush()
        self.written += table.num_rows

    def _open_parquet(self, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        if self._parquet is None:
            target = self.outdir / f"{self.shard.name}.parquet"
            f = self._stack.enter_context(self._files.create(target))
            # Dictionaries and statistics only where they pay: strings and the row numbers.
            # A dictionary on float tensors makes the file bigger and costs ~6x the CPU.
            traced = [n for n in schema.names if n in ("row", "file", "line")]
            strings = [
                n for n in schema.names if str(schema.field(n).type) in ("string", "large_string")
            ]
            self._parquet = pq.ParquetWriter(
                f, schema, use_dictionary=strings or False, write_statistics=traced
            )
        elif not schema.equals(self._parquet.schema):
            raise DataError(
                f"rows {self.shard.start + self.written}- of {self.shard.name} change the "
                f"columns ({schema} after {self._parquet.schema})",
                hint="outputs must keep one shape per row within a run",
            )

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self._parquet.write_table(pa.concat_tables(self._buffer))
            self._buffer, self._buffered = [], 0

    def _write_npy(self, table: pa.Table) -> None:
        import pyarrow as pa

        for name in table.column_names:
            values = _numpy(table[name])
            if pa.types.is_map(table[name].type):  # one value per key, in key order
                values = map_table(values)
            if values.dtype.kind == "O":  # strings: their width is known at the shard's end
                self._strings.setdefault(name, []).extend(values.tolist())
                continue
            f = self._npy.get(name)
            if f is None:
                target = self.outdir / f"{self.shard.name}.{file_part(name)}.npy"
                f = self._stack.enter_context(self._files.create(target))
                header = {
                    "descr": np.lib.format.dtype_to_descr(values.dtype),
                    "fortran_order": False,
                    "shape": (self.shard.rows, *values.shape[1:]),
                }
                np.lib.format.write_array_header_2_0(f, header)
                self._npy[name] = f
            f.write(np.ascontiguousarray(values).tobytes())

    def commit(self) -> None:
        """Put the shard's files in place; DataError if fewer rows came than the shard has."""
        if self.written != self.shard.rows:
            raise DataError(f"{self.shard.name} got {self.written} of {self.shard.rows} rows")
        if self.format == "parquet":
            self._flush()
            self._parquet.close()
            self._parquet = None
        for name, strings in self._strings.items():
            target = self.outdir / f"{self.shard.name}.{file_part(name)}.npy"
            f = self._stack.enter_context(self._files.create(target))
            np.save(f, np.array(strings, dtype=str), allow_pickle=False)
        self._stack.close()  # flush and fsync every file (the ``create`` blocks end)
        self._files.commit()


def _numpy(column: Any) -> np.ndarray:
    """A column as ``column_array`` gives it; a ragged output (``ragged_row``) as one array per
    row, in an object array."""
    import pyarrow as pa

    from .tables import column_array

    kind = column.type
    if pa.types.is_list(kind):
        cell, numeric = [], kind.value_type
        while pa.types.is_fixed_size_list(numeric):
            cell.append(numeric.list_size)
            numeric = numeric.value_type
        if pa.types.is_integer(numeric) or pa.types.is_floating(numeric):
            dtype = numeric.to_pandas_dtype()
            rows = np.empty(len(column), dtype=object)
            rows[:] = [np.asarray(v, dtype).reshape(-1, *cell) for v in column.to_pylist()]
            return rows
    return column_array(column, "output")


def read_output(outdir: str | Path) -> dict[str, np.ndarray]:
    """Every finished shard under ``outdir`` (Parquet, from either engine, or .npy) as one
    array per column, sorted by ``row``; DataError when there are none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    outdir = Path(outdir)
    parquet = sorted(p for p in outdir.glob("*.parquet") if not p.name.startswith((".", "_")))
    if parquet:
        table = pa.concat_tables([pq.read_table(p) for p in parquet])
        columns = {name: _numpy(table[name]) for name in table.column_names}
    else:
        found: dict[str, list[tuple[int, np.ndarray]]] = {}
        for p in sorted(outdir.glob("part-*.npy")):
            m = _SHARD.fullmatch(p.name)
            if m and m.group(3):
                found.setdefault(m.group(3), []).append((int(m.group(1)), np.load(p)))
        if not found:
            raise DataError(f"{outdir} holds no output shards", hint="run `ferry batch` first")
        columns = {
            k: np.concatenate([a for _, a in sorted(v, key=lambda t: t[0])])
            for k, v in found.items()
        }
    order = np.argsort(columns["row"], kind="stable")
    return {name: values[order] for name, values in columns.items()}
