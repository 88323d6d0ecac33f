"""How ``Model.save`` writes a model: one file, or its large tensors in an external data file.

    proto = onnxferry.Model.load("model.onnx").proto
    write_model(proto, (), Path("out/model.onnx"), name="model")    # one file when it fits
    write_model(proto, (), Path("big/model.onnx"), name="model", external_data=True)
    sorted(p.name for p in Path("big").iterdir())   # + model.data if a tensor has >= 1 KiB

Files are written under temporary names in the target directory and renamed into place
(``atomic.AtomicFiles``); on failure nothing is left behind. In the data file each tensor
starts aligned, at 64 KiB for tensors of 1 MiB or more (so ONNX Runtime can map them), else at
64 bytes; tensors already in external files (``refs``) are copied over from them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .atomic import AtomicFiles
from .errors import InputError, UsageError
from .graphs import PROTO_LIMIT, copy_model, read_in
from .safety import ExternalRef, copy_external_data, iter_tensors, uses_external_data

if TYPE_CHECKING:
    import onnx

_EXTERNAL_THRESHOLD = 1024
"""Initializers of at least this many bytes go to the data file (onnx's default)."""

_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64}
_BITS |= {14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8}
_BITS |= {25: 2, 26: 2, 27: 6, 28: 6}
"""Bits per element by TensorProto.DataType, to size tensors without copying their data."""


def write_model(
    proto: onnx.ModelProto,
    refs: tuple[ExternalRef, ...],
    target: Path,
    *,
    name: str,
    external_data: bool | None = None,
) -> None:
    """Write ``proto``, whose external tensors ``refs`` names (checked), atomically to
    ``target``; ``name`` is the model's, for errors. ``external_data`` as in ``Model.save``:
    None keeps one file unless there is external data or the model is past 2 GiB, then
    initializers of 1 KiB or more go to ``<stem>.data``; False forces one file (UsageError
    when it cannot fit); True always writes the data file (if any tensor goes there)."""
    inline = _inline_bytes(proto)
    externalize = bool(refs) or inline > PROTO_LIMIT
    if external_data is not None:
        externalize = external_data
    if not externalize and inline + sum(_ref_bytes(r) for r in refs) > PROTO_LIMIT:
        raise _single_file_too_large(name)
    blob: bytes | None = None
    if not externalize:
        blob = _encode(read_in(proto, refs))
        if blob is None:  # larger than estimated: fall back unless told not to
            if external_data is False:
                raise _single_file_too_large(name)
            externalize = True
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with AtomicFiles() as staging:
            if externalize:
                data_target = target.with_name(_data_file_name(target))
                with staging.create(data_target) as f:
                    blob = _externalized(proto, f, data_target.name, refs, name)
                    written = f.tell()
                if not written:  # no tensor large enough: no data file
                    staging.discard(data_target)
            assert blob is not None
            with staging.create(target) as f:
                f.write(blob)
            del blob
            staging.commit()
    except OSError as e:
        raise InputError(
            f"cannot write {target}: {e.strerror or e}",
            hint="check that the directory is writable and the path is not a directory",
        ) from e


def _externalized(
    proto: onnx.ModelProto, f: BinaryIO, location: str, refs: tuple[ExternalRef, ...], name: str
) -> bytes:
    """The serialized model whose large initializers and external tensors are written to
    ``f`` (referenced as ``location``); ``proto`` is not modified."""
    out = copy_model(proto)
    by_index = {ref.index: ref for ref in refs}
    for index, site in enumerate(iter_tensors(out)):
        tensor = site.tensor
        ref = by_index.get(index)
        if ref is not None:
            offset = _align(f, _ref_bytes(ref))
            length = copy_external_data(ref, f)
        elif (
            site.kind == "initializer"
            and tensor.HasField("raw_data")
            and _tensor_bytes(tensor) >= _EXTERNAL_THRESHOLD
        ):
            data = tensor.raw_data
            offset = _align(f, len(data))
            f.write(data)
            length = len(data)
            tensor.ClearField("raw_data")
            del data
        else:
            continue
        _set_external(tensor, location, offset, length)
    blob = _encode(out)
    if blob is None:
        raise InputError(
            f"{name}: protobuf cannot encode the model even with its initializers in "
            "external data (over 2 GiB of graph and inline constants)",
            hint="store large constants as initializers with raw data, or split the model",
        )
    return blob


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's inline data, from its dims (the data itself is not copied)."""
    if uses_external_data(tensor):
        return 0
    if tensor.data_type == 8:  # STRING
        return sum(len(s) for s in tensor.string_data)
    return int(math.prod(tensor.dims)) * _BITS.get(tensor.data_type, 64) // 8


def _inline_bytes(model: onnx.ModelProto) -> int:
    return sum(_tensor_bytes(site.tensor) for site in iter_tensors(model))


def _ref_bytes(ref: ExternalRef) -> int:
    return ref.length if ref.length is not None else ref.path.stat().st_size - ref.offset


def _align(f: BinaryIO, size: int) -> int:
    """Pad ``f`` so the next tensor starts aligned (64 KiB for tensors of 1 MiB or more, so
    ONNX Runtime can map them; 64 bytes otherwise); returns the offset."""
    boundary = 65536 if size >= 1024**2 else 64
    offset = f.tell()
    padding = -offset % boundary
    if padding:
        f.write(b"\0" * padding)
    return offset + padding


def _set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    import onnx

    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key = key
        entry.value = value


def _encode(proto: onnx.ModelProto) -> bytes | None:
    """The serialized proto, or None when protobuf cannot encode it (over 2 GiB)."""
    try:
        return cast(bytes, proto.SerializeToString())
    except Exception:  # google.protobuf's EncodeError (untyped)
        return None


def _single_file_too_large(name: str) -> UsageError:
    return UsageError(
        f"{name}: the model is over protobuf's 2 GiB limit and cannot be saved as one file",
        hint="save it with external_data=True (or None)",
    )


def _data_file_name(target: Path) -> str:
    name = f"{target.stem}.data"
    return name if name != target.name else f"{target.name}.data"
