"""test_data_set directories: input_K.pb / output_K.pb files matched to a model's signature.

    case = read_set(Path("resnet50/test_data_set_0"), model.signature, outputs=True)
    case.name, case.inputs, case.outputs          # "test_data_set_0", {"x": ...}, {"probs": ...}
    layout(Path("resnet50"))                      # ("sets", [.../test_data_set_0])
    save_test_case("golden/test_data_set_0", case.inputs, case.outputs)

A directory is one test set when it holds numbered .pb files, else the ``test_data_set_N``
directories in it are (the ONNX model zoo layout), else its .npz files. Each file's tensor is
matched to the model by its name, or by position K when the name is empty or unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import DataError
from ..signature import Signature, TensorSpec
from .npz import fit
from .tensors import read_pb, value_to_proto

PB_RE = re.compile(r"^(input|output)_(\d+)\.pb$")
"""A numbered test-data file: ``input_K.pb`` or ``output_K.pb``."""

LAYOUTS = (
    "a test_data_set directory of input_K.pb / output_K.pb files, a directory of "
    "test_data_set_N directories (the ONNX model zoo layout), an .npz file or a directory "
    "of .npz files"
)
"""The test-data layouts onnxferry reads, for hints."""


@dataclass
class TestCase:
    """One golden test: the feeds and the outputs a correct model gives for them."""

    __test__ = False  # not a pytest test class

    name: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def save_test_case(
    directory: str | Path,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
) -> Path:
    """Write ``input_K.pb`` / ``output_K.pb`` (named tensors, in mapping order) into
    ``directory``, each file atomically; stale numbered .pb files left there are removed."""
    directory = Path(directory)
    protos = {
        f"{role}_{k}.pb": value_to_proto(np.asarray(array), name)
        for role, arrays in (("input", inputs), ("output", outputs))
        for k, (name, array) in enumerate(arrays.items())
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for filename, proto in protos.items():
            write_bytes_atomic(directory / filename, proto.SerializeToString())
        for p in directory.iterdir():
            if PB_RE.match(p.name) and p.name not in protos:
                p.unlink()
    except OSError as e:
        raise DataError(f"cannot write test data to {directory}: {e.strerror or e}") from e
    return directory


def natural(name: str) -> tuple[Any, ...]:
    """A sort key that puts ``test_data_set_2`` before ``test_data_set_10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def layout(directory: Path) -> tuple[str, list[Path]]:
    """("sets", [test_data_set dirs]) or ("npz", [files]); a set dir is a one-item "sets"."""
    try:
        entries = sorted(directory.iterdir(), key=lambda p: natural(p.name))
    except OSError as e:
        raise DataError(f"cannot list {directory}: {e.strerror or e}") from e
    if any(p.is_file() and PB_RE.match(p.name) for p in entries):
        return "sets", [directory]
    sets = [p for p in entries if p.is_dir() and p.name.startswith("test_data_set")]
    if sets:
        return "sets", sets
    npzs = [p for p in entries if p.is_file() and p.suffix.lower() == ".npz"]
    if npzs:
        return "npz", npzs
    raise DataError(f"no test data found in {directory}", hint=f"give {LAYOUTS}")


def read_set(directory: Path, signature: Signature | None, *, outputs: bool) -> TestCase:
    """The feeds (and with ``outputs`` the expected outputs) of one test_data_set directory."""
    files: dict[str, list[tuple[int, Path]]] = {"input": [], "output": []}
    try:
        entries = list(directory.iterdir())
    except OSError as e:
        raise DataError(f"cannot list {directory}: {e.strerror or e}") from e
    for p in entries:
        m = PB_RE.match(p.name)
        if m and p.is_file():
            files[m.group(1)].append((int(m.group(2)), p))
    label = f"test data set {directory.name!r} ({directory})"
    specs = signature.inputs if signature is not None else None
    feeds = _assign(files["input"], specs, label, "input")
    if signature is not None:
        require_inputs(feeds, signature, label)
    expected: dict[str, np.ndarray] = {}
    if outputs:
        out_specs = signature.outputs if signature is not None else None
        expected = _assign(files["output"], out_specs, label, "output")
        if signature is not None:
            expected = ordered(expected, signature.output_names)
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
        name, array = read_pb(path)
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
        result[key] = fit(array, spec_of(specs, key), f"{role} {key!r} in {label}")
    return result


def require_inputs(feeds: Mapping[str, np.ndarray], signature: Signature, label: str) -> None:
    """DataError naming the first model input that ``feeds`` lacks."""
    missing = [n for n in signature.input_names if n not in feeds]
    if missing:
        raise DataError(
            f"{label} is missing input {missing[0]!r}",
            hint=f"give one array per model input: {signature.input_names}",
        )


def spec_of(specs: Sequence[TensorSpec] | None, name: str) -> TensorSpec | None:
    """The spec named ``name``, or None."""
    return next((s for s in specs or () if s.name == name), None)


def ordered(arrays: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """``arrays`` in the order of ``names`` (others last)."""
    order = {n: i for i, n in enumerate(names)}
    return dict(sorted(arrays.items(), key=lambda kv: order.get(kv[0], len(order))))
