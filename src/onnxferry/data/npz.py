""".npz and .npy files without pickle: every dtype in, the signature's types back out.

    save_npz("copy.npz", {"x": np.ones((2, 4), np.float32)})   # atomic
    arrays = load_npz_arrays("feeds.npz")                      # {"x": array}; pickles refused
    fit(arrays["x"], model.signature.inputs[0], "input 'x'")   # str/bytes/raw bytes restored
    np.save("x.npy", arrays["x"])
    load_npy(Path("x.npy"))                                    # the one array of an .npy

numpy cannot name bfloat16/float8 in an .npz, so ``save_npz`` stores their raw bytes and
``fit`` gives them back their type from the signature; strings are stored as numpy str arrays
and read back as object arrays of ``str``. Files are never unpickled (unpickling can run code):
a pickle, or an .npz holding object arrays, is refused with ``DataError``.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError, one_line
from ..signature import TensorSpec
from .tensors import decode

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
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


def load_npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz by name (never unpickles); DataError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="check the path")
    return load_npz(path)


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


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file that exists; DataError for a pickle or a corrupt file."""
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


def load_npy(path: Path) -> np.ndarray:
    """The array of an .npy file that exists; DataError for a pickle or a corrupt file."""
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


def fit(array: np.ndarray, spec: TensorSpec | None, label: str) -> np.ndarray:
    """Strings as object arrays of str; raw bytes (saved bfloat16/float8) as the spec's type."""
    kind = array.dtype.kind
    if kind == "U":
        return array.astype(object)
    if kind == "S":
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [decode(b) for b in array.flat]
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
