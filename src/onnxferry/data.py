"""Feeds and golden test data on disk: .npz, .npy, ONNX TensorProto .pb and test_data_set dirs.

    feeds = load_feeds("feeds.npz", model.signature)        # [{"x": array}, ...]
    cases = load_test_cases("resnet50/", model.signature)   # model zoo: test_data_set_N/*.pb
    for case in cases:
        case.name, case.inputs, case.outputs
    save_test_case("golden/test_data_set_0", feeds[0], outputs)  # input_K.pb / output_K.pb
    save_npz("feeds.npz", feeds[0])                              # atomic
    parse_toml(text)                                          # recipes, ferry.toml

Every tensor type in ``signature.DTYPES`` round-trips: bfloat16 and float8 come back as
ml_dtypes arrays, strings as object arrays of ``str`` (what ONNX Runtime accepts). numpy
cannot name bfloat16/float8 in an .npz, so ``save_npz`` stores their raw bytes and the loaders
give them back their type from the signature. Files are never unpickled (unpickling can run
code): an .npz holding object arrays is refused. Anything unreadable raises ``DataError``.
"""

from __future__ import annotations

import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_write, write_bytes_atomic
from .errors import DataError, one_line
from .signature import Signature, TensorSpec

if TYPE_CHECKING:
    import onnx

__all__ = [
    "TestCase",
    "array_to_tensor",
    "load_feeds",
    "load_test_cases",
    "save_npz",
    "save_test_case",
    "tensor_to_array",
]

_PB_RE = re.compile(r"^(input|output)_(\d+)\.pb$")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_LAYOUTS = (
    "a test_data_set directory of input_K.pb / output_K.pb files, a directory of "
    "test_data_set_N directories (the ONNX model zoo layout), an .npz file or a directory "
    "of .npz files"
)
_NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,  # zipfile: an unsupported compression method
    RuntimeError,  # zipfile: a member marked as encrypted
)
"""What numpy and zipfile raise on a corrupt .npz / .npy (the bytes are untrusted)."""


@dataclass
class TestCase:
    """One golden test: the feeds and the outputs a correct model gives for them."""

    __test__ = False  # not a pytest test class

    name: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


# --- public API -----------------------------------------------------------------------------


def load_feeds(path: str | Path, signature: Signature | None = None) -> list[dict[str, np.ndarray]]:
    """Feed sets from an .npz, .npy or .pb file, or a directory in the ONNX test-data layout.

    With a signature, unnamed arrays are matched to inputs by position, every input must be
    present, feeds come back in the model's input order, and expected outputs stored beside
    the inputs (golden .npz, output_K.pb) are skipped.
    """
    path = Path(path)
    if path.is_dir():
        kind, items = _layout(path)
        if kind == "npz":
            return [_npz_feeds(p, signature) for p in items]
        return [_read_set(p, signature, outputs=False).inputs for p in items]
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return [_npz_feeds(path, signature)]
    if suffix == ".npy":
        return [_single_feed(path, "", _load_npy(path), signature)]
    if suffix == ".pb":
        name, array = _read_pb(path)
        return [_single_feed(path, name, array, signature)]
    raise DataError(
        f"{path} is not a feeds file onnxferry reads",
        hint="give an .npz (one array per input), .npy, .pb or a test_data_set directory",
    )


def load_test_cases(path: str | Path, signature: Signature) -> list[TestCase]:
    """Golden test data: ``DIR/test_data_set_N/{input,output}_K.pb`` (model zoo layout too),
    a single test_data_set directory, one .npz or a directory of .npz files.

    .pb tensors are matched to the model by name, or by position K when the name is empty
    or unknown; .npz keys must be input or output names.
    """
    path = Path(path)
    if path.is_dir():
        kind, items = _layout(path)
        if kind == "npz":
            return [_npz_case(p, signature) for p in items]
        return [_read_set(p, signature, outputs=True) for p in items]
    _require_file(path)
    if path.suffix.lower() == ".npz":
        return [_npz_case(path, signature)]
    raise DataError(f"{path} is not golden test data", hint=f"give {_LAYOUTS}")


def save_test_case(
    directory: str | Path,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
) -> Path:
    """Write ``input_K.pb`` / ``output_K.pb`` (named tensors, in mapping order) into
    ``directory``, each file atomically; stale numbered .pb files left there are removed."""
    directory = Path(directory)
    protos = {
        f"{role}_{k}.pb": _value_to_proto(np.asarray(array), name)
        for role, arrays in (("input", inputs), ("output", outputs))
        for k, (name, array) in enumerate(arrays.items())
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for filename, proto in protos.items():
            write_bytes_atomic(directory / filename, proto.SerializeToString())
        for p in directory.iterdir():
            if _PB_RE.match(p.name) and p.name not in protos:
                p.unlink()
    except OSError as e:
        raise DataError(f"cannot write test data to {directory}: {e.strerror or e}") from e
    return directory


def load_npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz by name (never unpickles); DataError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the path")
    return _load_npz(path)


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to an .npz atomically (temp file in the same directory, then rename).

    Strings are stored as numpy str arrays and bfloat16/float8 as raw bytes, so the file
    loads without pickle; ``load_feeds`` / ``load_test_cases`` restore their types.
    """
    path = Path(path)
    stored = {name: _npz_storable(name, np.asarray(a)) for name, a in arrays.items()}
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", allowZip64=True) as zf:
        for name, array in stored.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return path


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
        values = [_decode(s) for s in t.string_data]
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


# --- .pb files -------------------------------------------------------------------------------


def _read_pb(path: Path) -> tuple[str, np.ndarray]:
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
        keys = [_decode(k) for k in m.string_keys]
    else:
        keys = list(m.keys)
    if m.values.elem_type != onnx.SequenceProto.TENSOR:
        raise DataError(f"{path} holds a map whose values are not tensors", hint=_PB_HINT)
    values = [tensor_to_array(t) for t in m.values.tensor_values]
    if len(keys) != len(values):
        raise DataError(f"{path} holds a map with {len(keys)} keys but {len(values)} values")
    return {k: v[()] if v.ndim == 0 else v for k, v in zip(keys, values, strict=True)}


def _value_to_proto(array: np.ndarray, name: str) -> Any:
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


def _decode(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


# --- directories and test sets ---------------------------------------------------------------


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _layout(directory: Path) -> tuple[str, list[Path]]:
    """("sets", [test_data_set dirs]) or ("npz", [files]); a set dir is a one-item "sets"."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: _natural(p.name))
    except OSError as e:
        raise DataError(f"cannot list {directory}: {e.strerror or e}") from e
    if any(p.is_file() and _PB_RE.match(p.name) for p in entries):
        return "sets", [directory]
    sets = [p for p in entries if p.is_dir() and p.name.startswith("test_data_set")]
    if sets:
        return "sets", sets
    npzs = [p for p in entries if p.is_file() and p.suffix.lower() == ".npz"]
    if npzs:
        return "npz", npzs
    raise DataError(f"no test data found in {directory}", hint=f"give {_LAYOUTS}")


def _read_set(directory: Path, signature: Signature | None, *, outputs: bool) -> TestCase:
    files: dict[str, list[tuple[int, Path]]] = {"input": [], "output": []}
    try:
        entries = list(directory.iterdir())
    except OSError as e:
        raise DataError(f"cannot list {directory}: {e.strerror or e}") from e
    for p in entries:
        m = _PB_RE.match(p.name)
        if m and p.is_file():
            files[m.group(1)].append((int(m.group(2)), p))
    label = f"test data set {directory.name!r} ({directory})"
    specs = signature.inputs if signature is not None else None
    feeds = _assign(files["input"], specs, label, "input")
    if signature is not None:
        _require_inputs(feeds, signature, label)
    expected: dict[str, np.ndarray] = {}
    if outputs:
        out_specs = signature.outputs if signature is not None else None
        expected = _assign(files["output"], out_specs, label, "output")
        if signature is not None:
            expected = _ordered(expected, signature.output_names)
    return TestCase(directory.name, feeds, expected)


def _assign(
    files: list[tuple[int, Path]],
    specs: Sequence[TensorSpec] | None,
    label: str,
    role: str,
) -> dict[str, np.ndarray]:
    """Name each file's tensor: its own name if the model has it, else position K."""
    names = [s.name for s in specs] if specs is not None else None
    result: dict[str, np.ndarray] = {}
    for k, path in sorted(files):
        name, array = _read_pb(path)
        if names is None:
            if not name:
                raise DataError(
                    f"{path.name} in {label} has no tensor name",
                    hint="pass the model's signature so it is matched by position",
                )
            key = name
        elif name in names:
            key = name
        elif k < len(names):
            key = names[k]
        else:
            raise DataError(
                f"{path.name} in {label} matches no {role} of the model: it has "
                f"{len(names)} {role}s {names}",
                hint=f"remove the file or give its tensor the name of a model {role}",
            )
        if key in result:
            raise DataError(
                f"{label} has two files for {role} {key!r} (one is {path.name})",
                hint=f"keep one {role}_K.pb per model {role}",
            )
        result[key] = _fit(array, _spec(specs, key), f"{role} {key!r} in {label}")
    return result


def _require_inputs(feeds: Mapping[str, np.ndarray], signature: Signature, label: str) -> None:
    missing = [n for n in signature.input_names if n not in feeds]
    if missing:
        raise DataError(
            f"{label} is missing input {missing[0]!r}",
            hint=f"give one array per model input: {signature.input_names}",
        )


def _spec(specs: Sequence[TensorSpec] | None, name: str) -> TensorSpec | None:
    return next((s for s in specs or () if s.name == name), None)


def _ordered(arrays: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    order = {n: i for i, n in enumerate(names)}
    return dict(sorted(arrays.items(), key=lambda kv: order.get(kv[0], len(order))))


# --- .npz / .npy -----------------------------------------------------------------------------


def _npz_feeds(path: Path, signature: Signature | None) -> dict[str, np.ndarray]:
    arrays = _load_npz(path)
    if signature is None:
        return {k: _fit(v, None, f"array {k!r} in {path}") for k, v in arrays.items()}
    names = signature.input_names
    keys = list(arrays)
    positional = [f"arr_{i}" for i in range(len(names))]
    if sorted(keys, key=_natural) == positional and not set(keys) & set(names):
        arrays = {names[int(k[len("arr_") :])]: v for k, v in arrays.items()}
    outputs = set(signature.output_names) - set(names)
    arrays = {k: v for k, v in arrays.items() if k not in outputs}  # golden outputs: skip
    unknown = [k for k in arrays if k not in names]
    if unknown:
        raise DataError(
            f"{path} holds {unknown}, not {'an input' if len(unknown) == 1 else 'inputs'} "
            "of the model",
            hint=f"name the arrays after the model's inputs: {names}",
        )
    feeds = {
        k: _fit(v, _spec(signature.inputs, k), f"input {k!r} in {path}") for k, v in arrays.items()
    }
    _require_inputs(feeds, signature, str(path))
    return _ordered(feeds, names)


def _npz_case(path: Path, signature: Signature) -> TestCase:
    arrays = _load_npz(path)
    ins, outs = signature.input_names, signature.output_names
    unknown = [k for k in arrays if k not in ins and k not in outs]
    if unknown:
        raise DataError(
            f"{path} holds {unknown} which {'is' if len(unknown) == 1 else 'are'} neither an "
            "input nor an output of the model",
            hint=f"name the arrays after the inputs {ins} and outputs {outs}",
        )
    label = f"test data {path.name!r} ({path})"
    feeds = {
        k: _fit(v, _spec(signature.inputs, k), f"input {k!r} in {path}")
        for k, v in arrays.items()
        if k in ins
    }
    expected = {
        k: _fit(v, _spec(signature.outputs, k), f"output {k!r} in {path}")
        for k, v in arrays.items()
        if k in outs
    }
    _require_inputs(feeds, signature, label)
    return TestCase(path.stem, _ordered(feeds, ins), _ordered(expected, outs))


def _single_feed(
    path: Path, name: str, array: np.ndarray, signature: Signature | None
) -> dict[str, np.ndarray]:
    """A feed set from a one-array file (.npy or .pb)."""
    if signature is None:
        if not name:
            raise DataError(
                f"{path} holds one unnamed array",
                hint="pass the model's signature, or use an .npz keyed by input name",
            )
        return {name: _fit(array, None, f"array in {path}")}
    names = signature.input_names
    if len(names) != 1:
        raise DataError(
            f"{path} holds one array but the model has {len(names)} inputs {names}",
            hint="use an .npz keyed by input name, or a test_data_set directory",
        )
    return {names[0]: _fit(array, signature.inputs[0], f"input {names[0]!r} in {path}")}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    _check_magic(path, _ZIP_MAGICS, ".npz")
    arrays: dict[str, np.ndarray] = {}
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            for key in z.files:
                value = z[key]
                if not isinstance(value, np.ndarray):
                    raise DataError(f"{path} member {key!r} is not a numpy array")
                arrays[key] = value
    except DataError:
        raise
    except _NPZ_ERRORS as e:
        raise _npy_error(path, e) from e
    if not arrays:
        raise DataError(f"{path} holds no arrays", hint="save one array per model input")
    return arrays


def _load_npy(path: Path) -> np.ndarray:
    _check_magic(path, (_NPY_MAGIC,), ".npy")
    try:
        with path.open("rb") as f:
            value = np.load(f, allow_pickle=False)
    except _NPZ_ERRORS as e:
        raise _npy_error(path, e) from e
    if not isinstance(value, np.ndarray):
        raise DataError(f"{path} is not a numpy .npy array")
    return value


def _check_magic(path: Path, magics: tuple[bytes, ...], kind: str) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    if head.startswith(magics):
        return
    if head[:1] == b"\x80":
        raise DataError(
            f"{path} is a Python pickle, which onnxferry never loads (unpickling can run code)",
            hint=f"save the arrays with numpy as {kind}, strings as str arrays",
        )
    raise DataError(
        f"{path} is not a numpy {kind} file (it is empty or has a wrong header)",
        hint="save it with numpy (np.save / np.savez) or onnxferry.save_npz",
    )


def _npy_error(path: Path, e: Exception) -> DataError:
    text = one_line(e, None)
    if "allow_pickle" in text or "pickled" in text:
        return DataError(
            f"{path} holds object arrays, which need pickle to load; onnxferry never unpickles "
            "(it can run code)",
            hint="save strings as str arrays (np.array(list_of_str)) or use onnxferry.save_npz",
        )
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    hint = "re-save it with np.savez or onnxferry.save_npz"
    if "descr" in text:  # np.save names float8 '<f1', which numpy cannot read back
        hint = "numpy cannot store float8 types by name; save with onnxferry.save_npz"
    return DataError(f"{path} is unreadable or corrupt: {text}", hint=hint)


def _npz_storable(name: str, a: np.ndarray) -> np.ndarray:
    """What an .npz can hold without pickle: str arrays for strings, raw bytes for ml_dtypes."""
    if a.dtype.kind == "O":
        flat = list(a.flat)
        if all(isinstance(v, str) for v in flat):
            return a.astype(np.str_)
        if all(isinstance(v, bytes) for v in flat):
            return a.astype(np.bytes_)
        raise DataError(
            f"array {name!r} is an object array not of str; .npz cannot hold it without pickle",
            hint="convert it to a numeric or string array",
        )
    if a.dtype.type.__module__.startswith("ml_dtypes"):
        return a.view(f"V{a.dtype.itemsize}")
    return a


def _fit(array: np.ndarray, spec: TensorSpec | None, label: str) -> np.ndarray:
    """Strings as object arrays of str; raw bytes (saved bfloat16/float8) as the spec's type."""
    kind = array.dtype.kind
    if kind == "U":
        return array.astype(object)
    if kind == "S":
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [_decode(b) for b in array.flat]
        return out
    if array.dtype.type is np.void and array.dtype.names is None:
        want = spec.dtype.numpy if spec is not None else None
        if want is None or want.kind == "O" or want.itemsize != array.dtype.itemsize:
            raise DataError(
                f"{label} holds raw {array.dtype} bytes of unknown type (numpy saves bfloat16 "
                "and float8 this way)",
                hint="pass the model's signature, or save .pb test data with "
                "onnxferry.save_test_case",
            )
        return array.view(want)
    return array


# --- TOML ------------------------------------------------------------------------------------


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text (a recipe, ``ferry.toml``) as a dict, with tomllib (tomli before Python 3.11).
    Malformed text raises the library's TOMLDecodeError, a ValueError; callers name the file."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import tomli

    data: dict[str, Any] = tomli.loads(text)
    return data


# --- small helpers ---------------------------------------------------------------------------


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file or directory")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
