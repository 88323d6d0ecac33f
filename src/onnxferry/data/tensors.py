"""ONNX tensors and .pb files as numpy arrays, both ways, every dtype.

    tensor = array_to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3), "x")
    tensor_to_array(tensor)                              # the array back
    name, array = read_pb(Path("resnet50/test_data_set_0/input_0.pb"))
    value_to_proto(np.array([np.ones(2), np.zeros(3)], dtype=object), "seq")  # a SequenceProto

bfloat16 and float8 come back as ml_dtypes arrays, strings as object arrays of ``str`` (bytes
kept where not UTF-8). A .pb file holds a TensorProto, or a SequenceProto (of tensors or of
maps) read as a 1-D object array; an OptionalProto reads as a one-element sequence. Tensor
data in external files is refused; anything unreadable raises ``DataError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    import onnx


def tensor_to_array(t: onnx.TensorProto) -> np.ndarray:
    """numpy array of a TensorProto: ml_dtypes for bfloat16/float8, object array of str for
    strings (bytes kept where not UTF-8). Data stored in external files is refused."""
    import onnx
    from onnx import external_data_helper, numpy_helper

    label = f"tensor {t.name!r}" if t.name else "tensor"
    if external_data_helper.uses_external_data(t):
        raise DataError(
            f"{label} keeps its data in an external file",
            hint="save test data with the values inline (onnxferry.save_test_case)",
        )
    if t.data_type == onnx.TensorProto.STRING:
        values = [decode(s) for s in t.string_data]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        try:
            return out.reshape(tuple(t.dims))
        except ValueError as e:
            raise DataError(f"{label} is corrupt: {e}") from e
    try:
        array = numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{label} cannot be read: {e}") from e
    if not array.flags.writeable:
        array = array.copy()
    return array


def array_to_tensor(a: np.ndarray, name: str) -> onnx.TensorProto:
    """TensorProto of an array: any numeric dtype, bool, ml_dtypes, or str/bytes arrays."""
    from onnx import numpy_helper

    a = np.asarray(a)
    if a.dtype.kind == "S":
        a = a.astype(object)
    elif a.dtype.kind == "O":
        bad = next((v for v in a.flat if not isinstance(v, (str, bytes))), None)
        if bad is not None:
            raise DataError(
                f"array {name!r} holds a {type(bad).__name__}; object arrays must hold str "
                "or bytes",
                hint="convert it to a numeric or string array",
            )
    try:
        return numpy_helper.from_array(a, name)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(
            f"array {name!r} has dtype {a.dtype}, which ONNX cannot store",
            hint="cast it to a standard numeric, bool or string dtype",
        ) from e


def read_pb(path: Path) -> tuple[str, np.ndarray]:
    """(name, value) of a TensorProto file, or a SequenceProto/OptionalProto one as a 1-D
    object array. An OptionalProto has the same bytes as a one-element SequenceProto and
    reads as one."""
    import onnx

    data = _read_bytes(path)
    tensor = _parse(onnx.TensorProto, data)
    first_error: DataError | None = None
    if tensor is not None and _looks_like_tensor(tensor):
        try:
            return tensor.name, tensor_to_array(tensor)
        except DataError as e:
            first_error = e
    seq = _parse(onnx.SequenceProto, data)
    if seq is not None and seq.elem_type != onnx.SequenceProto.UNDEFINED:
        return seq.name, _sequence_to_array(seq, path)
    if first_error is not None:
        raise DataError(f"{path} is corrupt: {first_error.message}", hint=_PB_HINT)
    raise DataError(
        f"{path} is empty or not an ONNX TensorProto / SequenceProto file", hint=_PB_HINT
    )


_PB_HINT = "regenerate it (onnxferry.save_test_case writes input_K.pb / output_K.pb)"


def _parse(cls: Any, data: bytes) -> Any:
    """A parsed message, or None when the bytes do not parse as ``cls`` without leftovers."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception:  # google.protobuf DecodeError (untyped); any failure means "not a cls"
        return None
    size = msg.ByteSize()
    msg.DiscardUnknownFields()
    return msg if msg.ByteSize() == size else None


def _looks_like_tensor(t: onnx.TensorProto) -> bool:
    import onnx

    valid = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    if t.data_type not in valid or t.HasField("segment"):
        return False
    return t.data_type == onnx.TensorProto.STRING or not t.string_data


def _sequence_to_array(seq: onnx.SequenceProto, path: Path) -> np.ndarray:
    import onnx

    items: list[Any]
    if seq.elem_type == onnx.SequenceProto.TENSOR:
        items = [tensor_to_array(t) for t in seq.tensor_values]
    elif seq.elem_type == onnx.SequenceProto.MAP:
        items = [_map_to_dict(m, path) for m in seq.map_values]
    else:
        kind = onnx.SequenceProto.DataType.Name(seq.elem_type).lower().replace("_", " ")
        raise DataError(
            f"{path} holds a sequence of {kind} values",
            hint="onnxferry reads tensors, sequences of tensors and sequences of maps",
        )
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _map_to_dict(m: onnx.MapProto, path: Path) -> dict[Any, Any]:
    import onnx

    keys: list[Any]
    if m.key_type == onnx.TensorProto.STRING:
        keys = [decode(k) for k in m.string_keys]
    else:
        keys = list(m.keys)
    if m.values.elem_type != onnx.SequenceProto.TENSOR:
        raise DataError(f"{path} holds a map whose values are not tensors", hint=_PB_HINT)
    values = [tensor_to_array(t) for t in m.values.tensor_values]
    if len(keys) != len(values):
        raise DataError(f"{path} holds a map with {len(keys)} keys but {len(values)} values")
    return {k: v[()] if v.ndim == 0 else v for k, v in zip(keys, values, strict=True)}


def value_to_proto(array: np.ndarray, name: str) -> Any:
    """TensorProto, or SequenceProto for an object array of arrays (a sequence output)."""
    import onnx

    if array.dtype.kind != "O" or not array.size:
        return array_to_tensor(array, name)
    if not all(isinstance(v, np.ndarray) for v in array.flat):
        return array_to_tensor(array, name)
    if array.ndim != 1:
        raise DataError(f"sequence {name!r} must be a 1-D object array of arrays")
    seq = onnx.SequenceProto(name=name, elem_type=onnx.SequenceProto.TENSOR)
    seq.tensor_values.extend(array_to_tensor(v, "") for v in array)
    return seq


def decode(b: bytes) -> str | bytes:
    """UTF-8 text as ``str``; bytes that are not UTF-8 stay bytes."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
