"""Feeds and golden test cases from any layout onnxferry reads, matched to a signature.

    feeds = load_feeds("feeds.npz", model.signature)        # [{"x": array}, ...]
    cases = load_test_cases("resnet50/", model.signature)   # model zoo: test_data_set_N/*.pb
    load_feeds(Path("resnet50/test_data_set_0/input_0.pb"))  # one named tensor, no signature

An .npz is keyed by input (and for test cases output) name, or ``arr_0``, ``arr_1``, ... by
position; an .npy or .pb file is the one input of a one-input model; a directory is read as
``testsets.layout`` says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..signature import Signature
from .npz import fit, load_npy, load_npz
from .rows import TABLE_SUFFIXES, table_feeds
from .tensors import read_pb
from .testsets import (
    LAYOUTS,
    TestCase,
    layout,
    natural,
    ordered,
    read_set,
    require_inputs,
    spec_of,
)


def load_feeds(path: str | Path, signature: Signature | None = None) -> list[dict[str, np.ndarray]]:
    """Feed sets from an .npz, .npy or .pb file, a table (.csv, .parquet: ``rows``), or a
    directory in the ONNX test-data layout.

    With a signature, unnamed arrays are matched to inputs by position, every input must be
    present, feeds come back in the model's input order, and expected outputs stored beside
    the inputs (golden .npz, output_K.pb) are skipped.
    """
    path = Path(path)
    if path.is_dir():
        kind, items = layout(path)
        if kind == "npz":
            return [_npz_feeds(p, signature) for p in items]
        return [read_set(p, signature, outputs=False).inputs for p in items]
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return [_npz_feeds(path, signature)]
    if suffix == ".npy":
        return [_single_feed(path, "", load_npy(path), signature)]
    if suffix == ".pb":
        name, array = read_pb(path)
        return [_single_feed(path, name, array, signature)]
    if suffix in TABLE_SUFFIXES:
        return [table_feeds(path, signature)]
    raise DataError(
        f"{path} is not a feeds file onnxferry reads",
        hint="give an .npz (one array per input), .npy, .pb, a .csv or .parquet table, or a "
        "test_data_set directory",
    )


def load_test_cases(path: str | Path, signature: Signature) -> list[TestCase]:
    """Golden test data: ``DIR/test_data_set_N/{input,output}_K.pb`` (model zoo layout too),
    a single test_data_set directory, one .npz or a directory of .npz files.

    .pb tensors are matched to the model by name, or by position K when the name is empty
    or unknown; .npz keys must be input or output names.
    """
    path = Path(path)
    if path.is_dir():
        kind, items = layout(path)
        if kind == "npz":
            return [_npz_case(p, signature) for p in items]
        return [read_set(p, signature, outputs=True) for p in items]
    _require_file(path)
    if path.suffix.lower() == ".npz":
        return [_npz_case(path, signature)]
    raise DataError(f"{path} is not golden test data", hint=f"give {LAYOUTS}")


def _npz_feeds(path: Path, signature: Signature | None) -> dict[str, np.ndarray]:
    arrays = load_npz(path)
    if signature is None:
        return {k: fit(v, None, f"array {k!r} in {path}") for k, v in arrays.items()}
    names = signature.input_names
    keys = list(arrays)
    positional = [f"arr_{i}" for i in range(len(names))]
    if sorted(keys, key=natural) == positional and not set(keys) & set(names):
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
        k: fit(v, spec_of(signature.inputs, k), f"input {k!r} in {path}") for k, v in arrays.items()
    }
    require_inputs(feeds, signature, str(path))
    return ordered(feeds, names)


def _npz_case(path: Path, signature: Signature) -> TestCase:
    arrays = load_npz(path)
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
        k: fit(v, spec_of(signature.inputs, k), f"input {k!r} in {path}")
        for k, v in arrays.items()
        if k in ins
    }
    expected = {
        k: fit(v, spec_of(signature.outputs, k), f"output {k!r} in {path}")
        for k, v in arrays.items()
        if k in outs
    }
    require_inputs(feeds, signature, label)
    return TestCase(path.stem, ordered(feeds, ins), ordered(expected, outs))


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
        return {name: fit(array, None, f"array in {path}")}
    names = signature.input_names
    if len(names) != 1:
        raise DataError(
            f"{path} holds one array but the model has {len(names)} inputs {names}",
            hint="use an .npz keyed by input name, or a test_data_set directory",
        )
    return {names[0]: fit(array, signature.inputs[0], f"input {names[0]!r} in {path}")}


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file or directory")
