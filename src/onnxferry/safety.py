"""Safe-load lint for external tensor data: every reference stays inside the model's directory.

    refs = check_external_data(proto, Path("models/resnet"))   # UnsafeModelError if not
    files = external_files(refs)                                # distinct data files, in order
    data = read_external_data(refs[0])                          # bounds re-checked on read
    for site in iter_tensors(proto):                            # every TensorProto, anywhere
        print(site.label)

A reference is refused when its location is absolute or climbs with ``..``, when it goes through
a symbolic link, when the file is missing, not a regular file or hard-linked (ONNX Runtime follows
hard links that onnx refuses), and when offset and length are not non-negative integers that fit
inside the file. Tensors are found everywhere ONNX allows them: graph initializers, sparse
initializers, node attributes (``t``, ``tensors``, ``sparse_tensor``, ``sparse_tensors``), If /
Loop / Scan subgraphs at any depth, and model-local functions.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO

from .errors import UnsafeModelError

if TYPE_CHECKING:
    import onnx

_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL, without importing onnx
_DIGITS = re.compile(r"[0-9]+")
_CHUNK = 16 * 1024**2

_INSIDE_HINT = (
    "keep external data as plain files inside the model's directory, referenced by relative paths"
)
_CORRUPT_HINT = "the model or its data file is corrupt or truncated; re-export or re-copy both"


@dataclass(frozen=True)
class TensorSite:
    """One TensorProto of a model, with a description of where it sits."""

    tensor: onnx.TensorProto
    where: str
    kind: str  # "initializer", "sparse_initializer" or "attribute"

    @property
    def label(self) -> str:
        """E.g. "tensor 'w1' (initializer of graph 'mlp')"; unnamed tensors by place only."""
        name = self.tensor.name
        return f"tensor {name!r} ({self.where})" if name else f"the tensor in {self.where}"


@dataclass(frozen=True)
class ExternalRef:
    """A checked reference from a tensor to a byte range of a data file."""

    site: TensorSite
    index: int  # position of the tensor in iter_tensors() order
    location: str  # as written in the model
    path: Path  # the data file, resolved
    offset: int
    length: int | None  # None: to the end of the file


def iter_tensors(model: onnx.ModelProto) -> Iterator[TensorSite]:
    """Every TensorProto of the model, in a fixed order (the same for a copy of the model)."""
    yield from _graph_tensors(model.graph, f"graph {model.graph.name!r}")
    for fn in model.functions:
        scope = f"function {(fn.domain + '.' if fn.domain else '') + fn.name!r}"
        yield from _node_tensors(fn.node, scope)


def uses_external_data(tensor: onnx.TensorProto) -> bool:
    """Whether the tensor's data lives in a file rather than in the model."""
    return bool(tensor.data_location == _EXTERNAL)


def check_external_data(model: onnx.ModelProto, model_dir: Path) -> tuple[ExternalRef, ...]:
    """Check every external-data reference of ``model`` against ``model_dir``; UnsafeModelError
    naming the tensor and its location for the first one that is not safe."""
    base = Path(os.path.abspath(model_dir))
    return tuple(
        _check_one(site, index, base)
        for index, site in enumerate(iter_tensors(model))
        if uses_external_data(site.tensor)
    )


def external_files(refs: Iterable[ExternalRef]) -> tuple[Path, ...]:
    """The distinct data files of ``refs``, in order of first reference."""
    return tuple(dict.fromkeys(ref.path for ref in refs))


def read_external_data(ref: ExternalRef) -> bytes:
    """The bytes ``ref`` points to, opened without following links and bounds-checked again."""
    with open(_open_nofollow(ref), "rb") as f:
        length = _seek(ref, f)
        data = f.read(length)
    if len(data) != length:
        raise _changed(ref)
    return data


def read_data_file(ref: ExternalRef) -> bytes:
    """The whole data file ``ref`` points into (what ONNX Runtime takes in memory, offsets
    and all), opened without following links, after checking it still holds ``ref``'s bytes."""
    with open(_open_nofollow(ref), "rb") as f:
        _seek(ref, f)
        f.seek(0)
        return f.read()


def copy_external_data(ref: ExternalRef, dst: BinaryIO) -> int:
    """Stream the bytes ``ref`` points to into ``dst`` (16 MiB at a time); returns the count."""
    with open(_open_nofollow(ref), "rb") as f:
        length = _seek(ref, f)
        remaining = length
        while remaining:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                raise _changed(ref)
            dst.write(chunk)
            remaining -= len(chunk)
    return length


# --- the walk ------------------------------------------------------------------------------


def _graph_tensors(graph: onnx.GraphProto, scope: str) -> Iterator[TensorSite]:
    for t in graph.initializer:
        yield TensorSite(t, f"initializer of {scope}", "initializer")
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse, "sparse initializer", f"of {scope}", "sparse_initializer")
    yield from _node_tensors(graph.node, scope)


def _sparse(
    sparse: onnx.SparseTensorProto, what: str, rest: str, kind: str
) -> Iterator[TensorSite]:
    name = sparse.values.name
    full = f"{what} {name!r} {rest}" if name else f"{what} {rest}"
    yield TensorSite(sparse.values, f"values of {full}", kind)
    yield TensorSite(sparse.indices, f"indices of {full}", kind)


def _node_tensors(nodes: Iterable[onnx.NodeProto], scope: str) -> Iterator[TensorSite]:
    for node in nodes:
        if node.name:
            node_label = f"node {node.name!r} ({node.op_type})"
        else:
            node_label = f"{node.op_type} node making {next(iter(node.output), '')!r}"
        for attr in node.attribute:
            where = f"attribute {attr.name!r} of {node_label} in {scope}"
            if attr.HasField("t"):
                yield TensorSite(attr.t, where, "attribute")
            for t in attr.tensors:
                yield TensorSite(t, where, "attribute")
            if attr.HasField("sparse_tensor"):
                yield from _sparse(attr.sparse_tensor, "sparse tensor", f"in {where}", "attribute")
            for sparse in attr.sparse_tensors:
                yield from _sparse(sparse, "sparse tensor", f"in {where}", "attribute")
            sub_scope = f"graph {attr.name!r} of {node_label} in {scope}"
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g, sub_scope)
            for g in attr.graphs:
                yield from _graph_tensors(g, sub_scope)


# --- one reference ---------------------------------------------------------------------------


def _check_one(site: TensorSite, index: int, base: Path) -> ExternalRef:
    entries: dict[str, str] = {}
    for entry in site.tensor.external_data:
        if entry.key in entries:
            raise _unsafe(site, f"gives external data key {entry.key!r} twice", _CORRUPT_HINT)
        entries[entry.key] = entry.value
    location = entries.get("location", "")
    if not location:
        raise _unsafe(site, "is marked as external data but gives no location", _CORRUPT_HINT)
    offset = _integer(site, entries, "offset", location)
    length = _integer(site, entries, "length", location)
    path, size = _resolve(site, base, location)
    start = offset or 0
    if start > size:
        problem = f"is {size} bytes long, shorter than offset {start}"
        raise _unsafe(site, _refers(location, problem), _CORRUPT_HINT)
    if length is not None and start + length > size:
        problem = f"is {size} bytes long, too short for offset {start} + length {length}"
        raise _unsafe(site, _refers(location, problem), _CORRUPT_HINT)
    return ExternalRef(site, index, location, path, start, length)


def _integer(site: TensorSite, entries: dict[str, str], key: str, location: str) -> int | None:
    value = entries.get(key)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        problem = f"has {key} {value!r}, not a non-negative integer"
        raise _unsafe(site, _refers(location, problem), _CORRUPT_HINT)
    return int(value)


def _resolve(site: TensorSite, base: Path, location: str) -> tuple[Path, int]:
    """The data file inside ``base`` and its size, after every check on the way there."""
    if "\0" in location:
        raise _unsafe(site, _refers(location, "contains a NUL byte"), _INSIDE_HINT)
    if location.startswith(("/", "\\")) or PureWindowsPath(location).drive:
        raise _unsafe(site, _refers(location, "is an absolute path"), _INSIDE_HINT)
    if ".." in re.split(r"[/\\]", location):
        raise _unsafe(site, _refers(location, "climbs out with '..'"), _INSIDE_HINT)
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if not parts:
        raise _unsafe(site, _refers(location, "is not a file"), _INSIDE_HINT)
    current = base
    for depth, part in enumerate(parts, 1):
        current = current / part
        shown = "/".join(parts[:depth])
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            problem = f"does not exist in {base}"
            hint = "copy the data file into the model's directory, where the model expects it"
            raise _unsafe(site, _refers(location, problem), hint) from None
        except OSError as e:
            problem = f"cannot be inspected ({e.strerror or e})"
            raise _unsafe(site, _refers(location, problem), _INSIDE_HINT) from None
        if stat.S_ISLNK(st.st_mode):
            problem = f"goes through a symbolic link ({shown!r})"
            raise _unsafe(site, _refers(location, problem), _INSIDE_HINT)
    if not stat.S_ISREG(st.st_mode):
        raise _unsafe(site, _refers(location, "is not a regular file"), _INSIDE_HINT)
    if st.st_nlink > 1:
        problem = f"is a hard link ({st.st_nlink} links to the same file)"
        raise _unsafe(site, _refers(location, problem), _INSIDE_HINT)
    resolved = current.resolve()
    if not resolved.is_relative_to(base.resolve()):  # unreachable after the checks above
        raise _unsafe(site, _refers(location, "resolves outside the model directory"), _INSIDE_HINT)
    return resolved, st.st_size


def _open_nofollow(ref: ExternalRef) -> int:
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        return os.open(ref.path, flags)  # non-blocking: a FIFO swapped in cannot hang us
    except OSError as e:
        problem = f"cannot be opened ({e.strerror or e})"
        raise _unsafe(ref.site, _refers(ref.location, problem), _INSIDE_HINT) from None


def _seek(ref: ExternalRef, f: BinaryIO) -> int:
    """Seek to the reference's offset after re-checking it against the open file's size."""
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        raise _changed(ref)
    length = ref.length if ref.length is not None else st.st_size - ref.offset
    if length < 0 or ref.offset + length > st.st_size:
        raise _changed(ref)
    f.seek(ref.offset)
    return length


def _changed(ref: ExternalRef) -> UnsafeModelError:
    problem = "changed on disk since the model was loaded (it no longer holds the tensor's bytes)"
    return _unsafe(ref.site, _refers(ref.location, problem), "load the model again")


def _refers(location: str, problem: str) -> str:
    return f"refers to external data {location!r}, which {problem}"


def _unsafe(site: TensorSite, problem: str, hint: str) -> UnsafeModelError:
    return UnsafeModelError(f"{site.label} {problem}", hint=hint)
