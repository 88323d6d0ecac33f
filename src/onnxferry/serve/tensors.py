"""Tensor data in the V2 protocol: a tensor's binary or JSON data to a numpy array that fits
its TensorSpec, and an output array back to binary or JSON data.

    array = from_binary(spec, [2, 3], 6, memoryview(data))   # a view of the bytes when aligned
    array = from_json(spec, [2, 3], 6, [[1, 2, 3], [4, 5, 6]])
    payload = binary_payload("y", outputs["y"], v2_datatype("y", outputs["y"].dtype))

Every problem is a ProtocolError (HTTP 400) naming the tensor. BYTES elements are UTF-8 text
both ways (numpy object arrays of ``str``, what ONNX Runtime reads correctly).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from ..errors import FeedError
from ..signature import TensorSpec, dtype_from_numpy

_UINT32 = struct.Struct("<I")


class ProtocolError(FeedError):
    """A request the V2 protocol or the model's signature rejects (HTTP 400)."""


def from_binary(spec: TensorSpec, shape: list[int], count: int, data: memoryview) -> np.ndarray:
    name = spec.name
    if spec.dtype.kind == "string":
        return _strings_from_binary(name, count, data).reshape(shape)
    need = count * spec.dtype.numpy.itemsize
    if data.nbytes != need:
        raise ProtocolError(
            f"input {name!r} has {data.nbytes} bytes of binary data but shape {shape} "
            f"of {spec.dtype.v2} needs {need}"
        )
    array = np.frombuffer(data, dtype=spec.dtype.numpy)
    if not array.flags.aligned:
        array = array.copy()  # ORT kernels may assume element-aligned data
    if spec.dtype.kind == "bool" and count and array.view(np.uint8).max() > 1:
        raise ProtocolError(f"input {name!r} BOOL data has bytes other than 0 and 1")
    return array.reshape(shape)


def _strings_from_binary(name: str, count: int, data: memoryview) -> np.ndarray:
    raw = data.tobytes()
    size = len(raw)
    if count * 4 > size:
        raise ProtocolError(
            f"input {name!r} has {size} bytes of BYTES data, too few for {count} elements"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > size:
            raise ProtocolError(f"input {name!r} BYTES data ends after {i} of {count} elements")
        (length,) = _UINT32.unpack_from(raw, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise ProtocolError(
                f"input {name!r} BYTES element {i} claims {length} bytes but only "
                f"{size - offset} remain"
            )
        try:
            out[i] = raw[offset:end].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                f"input {name!r} BYTES element {i} is not UTF-8",
                hint="ONNX Runtime string tensors hold text",
            ) from None
        offset = end
    if offset != size:
        raise ProtocolError(
            f"input {name!r} has {size - offset} bytes of BYTES data after its {count} elements"
        )
    return out


def from_json(spec: TensorSpec, shape: list[int], count: int, data: Any) -> np.ndarray:
    name = spec.name
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r} 'data' must be a list")
    if spec.dtype.kind == "string":
        strings = _flatten(data)
        if len(strings) != count:
            raise ProtocolError(
                f"input {name!r} has {len(strings)} values in 'data' but shape {shape} "
                f"needs {count}"
            )
        if not all(isinstance(s, str) for s in strings):
            raise ProtocolError(f"input {name!r} BYTES 'data' must hold only strings")
        try:
            "".join(strings).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"input {name!r} has a string that is not valid Unicode") from None
        out = np.empty(count, dtype=object)
        out[:] = strings
        return out.reshape(shape)

    try:
        raw = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ProtocolError(f"input {name!r} 'data' must be a (nested) list of numbers") from None
    if raw.size != count:
        raise ProtocolError(
            f"input {name!r} has {raw.size} values in 'data' but shape {shape} needs {count}"
        )
    kind = spec.dtype.kind
    if count and kind == "bool" and raw.dtype.kind != "b":
        raise ProtocolError(f"input {name!r} expects BOOL 'data' of true and false")
    if count and kind == "int":
        return _ints_from_json(spec, shape, data, raw)
    if count and kind == "float" and not _numbers(raw):
        raise ProtocolError(f"input {name!r} expects {spec.dtype.v2} 'data' of numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e300 as FP32 is inf, as in C
            out = raw.astype(spec.dtype.numpy)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(f"input {name!r} expects {spec.dtype.v2} 'data' of numbers") from None
    return out.reshape(shape)


def _ints_from_json(spec: TensorSpec, shape: list[int], data: Any, raw: np.ndarray) -> np.ndarray:
    """Integers, checked against the target's range (Triton wraps them silently)."""
    target = spec.dtype.numpy
    info = np.iinfo(target)
    out: np.ndarray | None = None
    if raw.dtype.kind in "iu":
        if raw.min() >= info.min and raw.max() <= info.max:
            out = raw.astype(target)
    elif raw.dtype.kind in "fO":
        # numpy widened to float64 or object: huge unsigned values mixed with small ones,
        # or real floats. Convert the Python values exactly, then reject any fractions.
        try:
            with np.errstate(all="raise"):
                out = np.array(data, dtype=target)
        except (OverflowError, ValueError, TypeError, FloatingPointError):
            out = None
        if out is not None and raw.dtype.kind == "f" and not np.array_equal(out, raw):
            out = None
    if out is None:
        raise ProtocolError(
            f"input {spec.name!r} expects {spec.dtype.v2} 'data': integers from "
            f"{info.min} to {info.max}"
        )
    return out.reshape(shape)


def _numbers(raw: np.ndarray) -> bool:
    if raw.dtype.kind in "fiu":
        return True
    # object: ints too big for int64 (fine as floats), or None and friends (not fine)
    return raw.dtype.kind == "O" and all(
        type(v) is int or type(v) is float for v in raw.reshape(-1).tolist()
    )


def _flatten(data: list[Any]) -> list[Any]:
    """Leaves of a nested list in row-major order (iterative: JSON may nest deep)."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def check_finite(name: str, array: np.ndarray) -> None:
    if not _is_float_like(array.dtype) or array.size == 0:
        return
    finite = np.isfinite(array)
    if not finite.all():
        where = int(np.flatnonzero(~finite)[0])
        raise ProtocolError(
            f"input {name!r} has a non-finite value ({array.reshape(-1)[where]}) "
            f"at flat index {where}",
            hint="this model accepts only finite numbers",
        )


def _is_float_like(dtype: np.dtype[Any]) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16"


_V2_BY_NUMPY: dict[np.dtype[Any], str] = {}


def v2_datatype(name: str, dtype: np.dtype[Any]) -> str:
    found = _V2_BY_NUMPY.get(dtype)
    if found is None:
        try:
            v2 = dtype_from_numpy(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype).v2
        except FeedError:
            v2 = None
        if v2 is None:
            raise ProtocolError(f"output {name!r} has dtype {dtype}, which V2 cannot carry")
        found = _V2_BY_NUMPY[dtype] = v2
    return found


def binary_payload(name: str, array: np.ndarray, datatype: str) -> memoryview:
    """The tensor's bytes as the binary extension lays them out (a view where possible)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for i, item in enumerate(array.reshape(-1).tolist()):
            data = item if isinstance(item, bytes) else _utf8(name, i, item)
            parts.append(_UINT32.pack(len(data)))
            parts.append(data)
        return memoryview(b"".join(parts))
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return flat.view(np.uint8).data


def _utf8(name: str, index: int, item: Any) -> bytes:
    try:
        return _text(item).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"output {name!r} element {index} is not valid Unicode") from None


def json_payload(name: str, array: np.ndarray, datatype: str) -> list[Any]:
    flat: list[Any] = array.reshape(-1).tolist()
    if datatype != "BYTES":
        return flat
    out: list[str] = []
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(
                    f"output {name!r} element {i} is not UTF-8 and cannot be sent as JSON",
                    hint="request it with binary_data: true",
                ) from None
        out.append(_text(item))
    return out


def _text(item: Any) -> str:
    """One BYTES element as text. Elements of sequence and map outputs (scikit-learn's ZipMap
    probabilities: a sequence of {label: probability}) are JSON, one document per element;
    map keys become JSON strings ({"0": 0.25, "1": 0.75})."""
    if isinstance(item, str):
        return item
    if isinstance(item, (dict, list, tuple)):
        return json.dumps(_plain(item), allow_nan=True)
    return str(item)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays inside a sequence or map output, as JSON-ready values."""
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value
