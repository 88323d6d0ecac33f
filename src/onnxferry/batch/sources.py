"""Where `ferry batch` reads rows: every input kind as a ``Source`` that gives the model's
feeds for any range of rows, read front to back in bounded memory.

    source = open_source(Path("data.npy"), model.signature)     # kind from the path
    source.kind, source.rows
    chunk = source.read(0, 2)                                  # rows [0, 2), checked feeds
    chunk.feeds["x"].shape, chunk.trace                        # trace: {"file": ...} for images

Kinds (``open_source``): ``.npy`` (the one input of a one-input model), ``.npz`` (one member
per input, by name or ``arr_K`` by position; members are streamed, never loaded whole),
Parquet or Arrow IPC files and folders of them (``tables``), JSON lines (``tables``) and a
folder of images (``images``). Row N is the N-th entry along axis 0, in a folder the files'
rows in sorted path order. ``.npy`` files are read with ``pread`` into fresh buffers rather
than memory-mapped, so pages of a file larger than memory never count against the process.

Every chunk's arrays are fitted to the model (a cast within a kind, float64 -> float32; a
trailing axis of 1 added) and checked by ``Signature.validate``: a column of the wrong type or
shape is a DataError naming the rows, the file and the input. Sources hold no open handles when
pickled (the Ray engine ships them to its workers).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from ..data.npz import fit as raw_bytes_as
from ..errors import DataError, FeedError, UsageError
from ..signature import Signature, TensorSpec
from .images import ImagePlan, Preprocess, list_images

TRACE_COLUMNS = ("row", "file", "line")
"""Columns an output has besides the model's outputs: the row number, and for images the file,
for JSON lines the line number."""

_SKIP_BLOCK = 16 << 20


@dataclass
class Chunk:
    """Rows ``[start, stop)``: the model's feeds and the columns that trace each row back."""

    start: int
    stop: int
    feeds: dict[str, np.ndarray]
    trace: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.feeds.values())


class Source(Protocol):
    """Rows of model input, read by range (front to back is the fast way)."""

    kind: str
    path: Path
    rows: int

    def read(self, start: int, stop: int) -> Chunk: ...

    def fingerprint(self) -> list[Any]: ...

    def close(self) -> None:
        """Close what reading opened (a later read opens it again)."""

    def recycle(self, chunk: Chunk) -> None:
        """Take back ``chunk``'s buffers for later reads: the caller holds no reference to its
        feeds any more (a source that reuses nothing ignores it)."""


class Reused:
    """What a source without buffers to reuse does on ``recycle``: nothing."""

    def recycle(self, chunk: Chunk) -> None:
        """Nothing to take back."""


def open_source(
    path: str | Path, signature: Signature, preprocess: Preprocess | None = None
) -> Source:
    """The source for ``path``, matched to the model's inputs; DataError for a file it cannot
    read or that lacks an input, UsageError for image options on something not images."""
    from .tables import JsonLinesSource, TableSource, table_format

    path = Path(path)
    signature = row_signature(signature)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder", hint="check the input path")
    is_images = path.is_dir() and table_format(path) is None
    if preprocess is not None and preprocess.given and not is_images:
        raise UsageError(
            f"--resize, --layout, --scale, --mean and --std apply to a folder of images, not {path}"
        )
    suffix = path.suffix.lower()
    if is_images:
        return ImageSource(path, signature, preprocess or Preprocess())
    if suffix == ".npy":
        return NpySource(path, signature)
    if suffix == ".npz":
        return NpzSource(path, signature)
    if suffix in (".jsonl", ".ndjson"):
        return JsonLinesSource(path, signature)
    if table_format(path) is not None:
        return TableSource(path, signature)
    raise DataError(
        f"{path} is not an input `ferry batch` reads",
        hint="give .parquet, .arrow/.feather, .npy, .npz, .jsonl or a folder of images",
    )


def row_signature(signature: Signature) -> Signature:
    """The signature as the input files hold it: rows first. An input whose rows lie on
    another axis (a recurrent ``state[2, batch, 128]``) has that axis moved first (files
    hold it ``[rows, 2, 128]``; the engine moves it back), and a fixed batch axis is opened
    ("rows"), so a source checks the shape of each row, not the number of rows (the engine
    pads a short batch to a fixed batch size). Where another input's rows are open, a fixed
    leading dim is no batch axis (an LSTM state ``h: [1, 1, 128]`` beside ``input:
    [seq_len, 576]``) and stays as it is."""
    axes = signature.row_axes()
    open_rows = any(
        spec.shape and not isinstance(spec.shape[axes[spec.name] or 0], int)
        for spec in signature.inputs
    )
    inputs = []
    for spec in signature.inputs:
        axis = axes[spec.name]
        spec = spec.axis_first(axis or 0)
        shape = spec.shape
        if shape and isinstance(shape[0], int) and not (open_rows and axis is None):
            spec = dataclasses.replace(spec, shape=("rows", *shape[1:]))
        inputs.append(spec)
    return dataclasses.replace(signature, inputs=tuple(inputs))


def checked_feeds(
    arrays: dict[str, np.ndarray], signature: Signature, where: str
) -> dict[str, np.ndarray]:
    """``arrays`` fitted to the model's inputs (``fit``), then validated; DataError saying
    ``where`` ("rows 0-255 of data.parquet") on a mismatch."""
    feeds = {spec.name: fit(arrays[spec.name], spec, where) for spec in signature.inputs}
    try:
        signature.validate(feeds)
    except FeedError as e:
        raise DataError(f"{where}: {e.message}", hint=e.hint) from e
    return feeds


def fit(values: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """``values`` as ``spec`` takes them: strings as object arrays, numbers cast within their
    kind (float64 -> float32, int64 -> int32, float32 -> bfloat16), raw bytes of the spec's
    size as its type, a trailing axis of 1 added to a column of scalars; DataError for a type
    that does not cast."""
    want = spec.dtype.numpy
    if spec.dtype.kind == "string":
        if values.dtype.kind in "US":
            values = values.astype(object)
        if values.dtype.kind != "O":
            raise DataError(f"{where}: input {spec.name!r} takes strings, got {values.dtype}")
    elif values.dtype != want:
        if values.dtype.kind == "V":  # numpy saves bfloat16 and float8 as raw bytes
            values = raw_bytes_as(values, spec, f"{where}: input {spec.name!r}")
        # ml_dtypes' bfloat16 and float8 are no numpy float kind: floats cast to them
        floats = spec.dtype.kind == "float" and values.dtype.kind == "f"
        if values.dtype != want and (
            values.dtype.kind in "OUSV"
            or not (floats or np.can_cast(values.dtype, want, "same_kind"))
        ):
            raise DataError(
                f"{where}: input {spec.name!r} takes {want}, the data holds {values.dtype}",
                hint=f"store the column as {want}",
            )
        values = values.astype(want)
    shape = spec.shape
    if shape is not None and values.ndim == len(shape) - 1 and shape[-1] == 1:
        values = values[..., None]
    return values


def _one_input(signature: Signature, path: Path) -> TensorSpec:
    if len(signature.inputs) != 1:
        raise DataError(
            f"{path} holds one array; the model takes {len(signature.inputs)} inputs "
            f"({', '.join(signature.input_names)})",
            hint="give an .npz with one array per input, or a table with one column per input",
        )
    return signature.inputs[0]


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


# --- numpy files --------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.shape[1:], dtype=np.int64))


def _read_header(f: IO[bytes], where: str, size: int) -> _NpyHeader:
    """The header of the .npy array in ``f`` (``size`` bytes in all), checked: rows, not an
    object array nor Fortran order, and no more data than the file holds."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(f)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"{where} is not a numpy .npy array: {e}", hint="save it with np.save"
        ) from e
    if dtype.hasobject:
        raise DataError(
            f"{where} holds object arrays, which need pickle; onnxferry never unpickles",
            hint="save strings as str arrays",
        )
    if not shape:
        raise DataError(f"{where} holds a scalar, not rows", hint="give an array of rows")
    if fortran and len(shape) > 1:
        raise DataError(
            f"{where} is in Fortran order, which cannot be read row by row",
            hint="save np.ascontiguousarray(a) instead",
        )
    header = _NpyHeader(tuple(shape), dtype, f.tell())
    needed = header.offset + header.row_bytes * shape[0]
    if needed > size:
        raise DataError(
            f"{where} is shorter than its header says: {list(shape)} {dtype} needs {needed} "
            f"bytes, the file holds {size}",
            hint="the file is cut short or its header is wrong; save it again with np.save",
        )
    return header


class NpySource:
    """Rows of one .npy file, read with ``pread`` (no memory map) into buffers that
    ``recycle`` gives back: a fresh large buffer costs a page fault per page, which on some
    machines is slower than the read itself."""

    kind = "npy"
    POOL = 8

    def __init__(self, path: Path, signature: Signature) -> None:
        self.path = path
        self.signature = signature
        self.spec = _one_input(signature, path)
        with path.open("rb") as f:
            self.header = _read_header(f, str(path), os.fstat(f.fileno()).st_size)
        self.rows = self.header.shape[0]
        self._fd: int | None = None
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def _buffer(self, rows: int) -> np.ndarray:
        shape = (rows, *self.header.shape[1:])
        with self._lock:
            for i, buffer in enumerate(self._free):
                if buffer.shape == shape:
                    return self._free.pop(i)
        return np.empty(shape, dtype=self.header.dtype)

    def recycle(self, chunk: Chunk) -> None:
        """Take back the buffer of a chunk nothing references any more."""
        feed = chunk.feeds.get(self.spec.name)
        base = feed.base if feed is not None and feed.base is not None else feed
        if isinstance(base, np.ndarray) and base.dtype == self.header.dtype:
            with self._lock:
                if len(self._free) < self.POOL and base.shape[1:] == self.header.shape[1:]:
                    self._free.append(base)

    def read(self, start: int, stop: int) -> Chunk:
        h = self.header
        out = self._buffer(stop - start)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):  # read ahead: rows come front to back
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        view = out.reshape(-1).view(np.uint8).data
        offset, done = h.offset + start * h.row_bytes, 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise DataError(f"{self.path} is shorter than its header says", hint="re-save it")
            done += got
        where = f"rows {start}-{stop - 1} of {self.path}"
        return Chunk(start, stop, checked_feeds({self.spec.name: out}, self.signature, where))

    def fingerprint(self) -> list[Any]:
        return _stat(self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_free": [], "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


class NpzSource(Reused):
    """Rows of an .npz, one member per input, each streamed front to back (members are
    compressed or not; neither is loaded whole); a scalar input's member is its one value,
    given to every batch."""

    kind = "npz"

    def __init__(self, path: Path, signature: Signature) -> None:
        self.path = path
        self.signature = signature
        scalars = {spec.name for spec in signature.inputs if spec.shape == ()}
        self.held: dict[str, np.ndarray] = {}
        """Scalar inputs (a sample rate, a threshold): read once, given to every batch."""
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n.removesuffix(".npy") for n in zf.namelist()]
                self.members = self._members(names)
                headers = {}
                for name, member in list(self.members.items()):
                    with zf.open(f"{member}.npy") as f:
                        if name in scalars:
                            self.held[name] = _scalar(f, f"{path} member {member!r}", name)
                            del self.members[name]
                            continue
                        size = zf.getinfo(f"{member}.npy").file_size
                        headers[name] = _read_header(f, f"{path} member {member!r}", size)
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise DataError(
                f"{path} is not a readable .npz: {e}", hint="save it with np.savez"
            ) from e
        self.headers = headers
        if not headers:
            raise DataError(
                f"{path}: every input of the model is a scalar, so there are no rows to run",
                hint="run the model once (ferry compare, or onnxruntime) instead",
            )
        counts = {h.shape[0] for h in headers.values()}
        whole = [
            spec
            for spec in signature.inputs
            if spec.name in headers and spec.shape and all(isinstance(d, int) for d in spec.shape)
        ]
        if len(counts) != 1 and whole and len(whole) < len(headers):
            spec = whole[0]
            raise DataError(
                f"{path}: input {spec.name!r} {spec.shape_text()} has no rows axis: the model "
                "takes it whole for each call, so its rows may depend on each other (a "
                "stream's state, carried from row to row), and batch runs rows apart",
                hint="run the model once over the whole sequence (onnxruntime), or export "
                f"{spec.name!r} with a batch axis",
            )
        if len(counts) != 1:
            raise DataError(
                f"{path}: the arrays have different numbers of rows "
                f"({', '.join(f'{n}: {h.shape[0]}' for n, h in headers.items())})",
                hint="give every input the same number of rows, first (a recurrent state "
                "[2, batch, 64] as [rows, 2, 64]: np.moveaxis(state, 1, 0))",
            )
        self.rows = counts.pop()
        self._zip: zipfile.ZipFile | None = None
        self._streams: dict[str, tuple[IO[bytes], int]] = {}  # input: (stream, next row)

    def _members(self, names: list[str]) -> dict[str, str]:
        inputs = self.signature.input_names
        if all(n in names for n in inputs):
            return {n: n for n in inputs}
        positional = [f"arr_{i}" for i in range(len(inputs))]
        if all(n in names for n in positional):
            return dict(zip(inputs, positional, strict=True))
        missing = next(n for n in inputs if n not in names)
        raise DataError(
            f"{self.path} has no array for input {missing!r} (it holds {', '.join(names)})",
            hint=f"name the arrays after the inputs: {', '.join(inputs)}",
        )

    def read(self, start: int, stop: int) -> Chunk:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        arrays = {}
        for name, member in self.members.items():
            h = self.headers[name]
            stream, at = self._streams.get(name, (None, 0))
            if stream is None or at > start:
                stream = self._zip.open(f"{member}.npy")
                stream.seek(h.offset)
                at = 0
            _skip(stream, (start - at) * h.row_bytes)
            data = stream.read((stop - start) * h.row_bytes)
            if len(data) != (stop - start) * h.row_bytes:
                raise DataError(f"{self.path} member {member!r} is truncated", hint="re-save it")
            out = np.frombuffer(data, dtype=h.dtype).reshape(stop - start, *h.shape[1:])
            self._streams[name] = (stream, stop)
            arrays[name] = out
        arrays.update(self.held)
        return Chunk(
            start,
            stop,
            checked_feeds(arrays, self.signature, f"rows {start}-{stop - 1} of {self.path}"),
        )

    def fingerprint(self) -> list[Any]:
        return _stat(self.path)

    def close(self) -> None:
        for stream, _ in self._streams.values():
            stream.close()
        self._streams = {}
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None, "_streams": {}}


def _scalar(f: IO[bytes], where: str, name: str) -> np.ndarray:
    """A scalar input's one value (a 0-d array, or an array of one element)."""
    try:
        value: np.ndarray = np.load(f, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{where} is not a numpy array of numbers: {e}") from e
    if value.size != 1:
        raise DataError(
            f"{where}: input {name!r} is a scalar, but the array has shape {list(value.shape)}",
            hint="save the one value every row shares, e.g. np.array(16000)",
        )
    return value.reshape(())


def _skip(stream: IO[bytes], count: int) -> None:
    while count > 0:
        got = len(stream.read(min(count, _SKIP_BLOCK)))
        if got == 0:
            raise DataError("an .npz member is truncated", hint="re-save it")
        count -= got


# --- images -------------------------------------------------------------------------------


class ImageSource(Reused):
    """A folder of images, one row per file in sorted order, preprocessed for the model's one
    input; the trace column ``file`` holds each row's path relative to the folder."""

    kind = "images"

    def __init__(self, path: Path, signature: Signature, preprocess: Preprocess) -> None:
        self.path = path
        self.signature = signature
        self.spec = _one_input(signature, path)
        self.preprocess = preprocess
        self.plan: ImagePlan = preprocess.resolve(self.spec)
        self.files = list_images(path)
        self.rows = len(self.files)

    def read(self, start: int, stop: int) -> Chunk:
        names = self.files[start:stop]
        images = [self.plan.load(self.path / name) for name in names]
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            first, other = (
                images[0].shape,
                next(a.shape for a in images if a.shape != images[0].shape),
            )
            raise DataError(
                f"images {start}-{stop - 1} of {self.path} differ in size ({first} and {other})",
                hint="give --resize WxH",
            )
        where = f"images {start}-{stop - 1} of {self.path}"
        feeds = checked_feeds({self.spec.name: np.stack(images)}, self.signature, where)
        return Chunk(start, stop, feeds, {"file": np.array(names, dtype=object)})

    def fingerprint(self) -> list[Any]:
        stats = [(n, (self.path / n).stat().st_size) for n in self.files]
        return [str(self.path.resolve()), len(stats), hash_of(stats), self.preprocess.to_dict()]

    def close(self) -> None:
        pass


def hash_of(value: Any) -> str:
    """A short sha256 of ``value``'s JSON."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
